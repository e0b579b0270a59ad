use serde::{Deserialize, Serialize};

use super::NameValue;
use crate::clock::Timestamp;
use crate::ids::{ClusterName, InstanceId};
use crate::resources::InstanceResources;
use crate::status::InstanceStatus;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub agent_version: Option<String>,
    pub agent_hash: Option<String>,
    pub docker_version: Option<String>,
}

/// A berth agent that registered the instance over the agent channel. Its reports are
/// accepted only with the instance's credential, which is stored as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentBinding {
    /// The agent's host identity (`ec2InstanceId`).
    pub agent_id: String,
    /// SHA-256 (hex) of the instance credential handed to the agent at registration.
    pub credential_sha256: String,
    /// The control plane the agent registered with (labels on its containers).
    pub follows_all_clusters: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub cluster: ClusterName,
    pub ec2_instance_id: String,
    pub status: InstanceStatus,
    pub status_reason: Option<String>,
    pub registered: InstanceResources,
    /// Built-in (`ecs.*`) and custom attributes, in registration order.
    pub attributes: Vec<NameValue>,
    pub version_info: VersionInfo,
    pub registered_at: Timestamp,
    /// Bumped on every change ECS reports through `version`.
    pub version: u64,
    /// Set when a berth agent registered the instance over the agent channel.
    pub agent: Option<AgentBinding>,
    /// When the agent's session was last seen gone (cleared when it comes back); whether it
    /// is connected now is whether its session key exists.
    pub disconnected_at: Option<Timestamp>,
    pub capacity_provider_name: Option<String>,
}

impl InstanceRecord {
    /// Registered and not deregistered (ACTIVE or DRAINING).
    pub fn is_registered(&self) -> bool {
        matches!(
            self.status,
            InstanceStatus::Active | InstanceStatus::Draining
        )
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
    }

    /// Adds or replaces an attribute by name.
    pub fn set_attribute(&mut self, name: &str, value: Option<String>) {
        match self.attributes.iter_mut().find(|a| a.name == name) {
            Some(a) => a.value = value,
            None => self.attributes.push(NameValue {
                name: name.to_string(),
                value,
            }),
        }
    }

    /// Instances a `berth dev` agent joined by itself let go when their cluster is deleted.
    pub fn follows_all_clusters(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| a.follows_all_clusters)
    }
}
