//! The agent channel, version 1: what a berth agent and the control plane say to each
//! other over HTTP (`POST /agent/v1/<message>`, JSON bodies).
//!
//! - `register`: the agent registers its host in a cluster and receives the instance's
//!   credential; every later message about that instance carries it. A new instance needs
//!   a cluster join token; re-registering an instance needs that instance's credential.
//! - `poll`: a long-poll for the tasks assigned to the agent's instances; answered as soon
//!   as the assignment differs from the digest the agent already has. Each poll is also
//!   the agent's heartbeat.
//! - `report`: what the agent observed of one of its tasks.
//! - `ownership`: whether tasks that containers on the host claim to belong to are still
//!   live (so a new agent identity can clean up after a lost one).
//! - `task-secrets`: the values of a task's `secrets`, resolved by the control plane with
//!   the task's execution role, for the agent to put in the containers' environment only.
//! - `task-credentials`: temporary credentials for a task's role (`taskRoleArn`), which the
//!   agent serves to the task's containers on its credentials endpoint.
//!
//! Errors come back as AWS JSON errors: `{"__type": code, "message": text}` with HTTP 4xx/5xx.
//! Statuses are berth-core's enums, serialized with ECS's spellings.

use berth_core::records::{NameValue, TaskReport, VersionInfo};
use berth_core::resources::InstanceResources;
use berth_core::status::{DesiredStatus, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version in every path.
pub const VERSION: &str = "v1";

pub mod paths {
    pub const REGISTER: &str = "/agent/v1/register";
    pub const POLL: &str = "/agent/v1/poll";
    pub const REPORT: &str = "/agent/v1/report";
    pub const OWNERSHIP: &str = "/agent/v1/ownership";
    pub const TASK_SECRETS: &str = "/agent/v1/task-secrets";
    pub const TASK_CREDENTIALS: &str = "/agent/v1/task-credentials";
}

/// Docker labels berth puts on task containers (the first five are the ECS agent's).
pub mod labels {
    pub const TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
    pub const CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
    pub const FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
    pub const REVISION: &str = "com.amazonaws.ecs.task-definition-version";
    pub const CLUSTER: &str = "com.amazonaws.ecs.cluster";
    /// Which berth agent (host identity) made the container.
    pub const AGENT: &str = "berth.agent-id";
    /// Which control plane the task belongs to; agents leave other control planes' containers alone.
    pub const CONTROL_PLANE: &str = "berth.control-plane";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub cluster: String,
    /// The host's identity (reported as `ec2InstanceId`).
    pub agent_id: String,
    /// The instance and credential from an earlier registration, to come back as the same
    /// instance.
    pub container_instance_arn: Option<String>,
    pub credential: Option<String>,
    /// A cluster join token (`bjt_<id>.<secret>`), for registering a new instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    pub resources: InstanceResources,
    pub attributes: Vec<NameValue>,
    pub version_info: VersionInfo,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    /// `berth dev`: the agent joins every cluster by itself and lets go when it is deleted.
    pub follow_all_clusters: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub container_instance_arn: String,
    /// Presented with every later message about this instance. Kept secret by the agent.
    pub credential: String,
    /// The control plane's identity, for the `berth.control-plane` container label.
    pub control_plane_id: String,
}

/// One instance an agent speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCredential {
    pub cluster: String,
    pub container_instance_arn: String,
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    pub instances: Vec<InstanceCredential>,
    pub follow_all_clusters: bool,
    /// The digest of the assignment the agent has; the answer comes when it differs.
    pub known_digest: Option<String>,
    pub wait_seconds: u64,
}

/// A task an agent must run, or stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedTask {
    pub task_arn: String,
    pub cluster: String,
    pub container_instance_arn: String,
    pub desired_status: DesiredStatus,
    /// The last status the control plane has for the task: the agent never starts a task
    /// twice, so a task already past PENDING whose containers are gone is over.
    pub known_status: TaskStatus,
    pub family: String,
    pub revision: u32,
    /// The task definition as registered (ECS's `TaskDefinition` document).
    pub task_definition: Value,
    /// RunTask/StartTask overrides (ECS's `TaskOverride` document).
    pub overrides: Value,
    /// Task-level CPU units and MiB, if the definition or overrides set them.
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    /// The task's group (`family:<name>`, `service:<name>`, ...), for the task metadata
    /// endpoint's `ServiceName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Container ARNs by container name, for the task metadata endpoint.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub container_arns: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    pub digest: String,
    pub tasks: Vec<AssignedTask>,
    /// The polled instances that are still registered; the agent forgets the others.
    pub active_instances: Vec<String>,
    /// With `followAllClusters`: every ACTIVE cluster's name.
    pub clusters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRequest {
    pub instance: InstanceCredential,
    pub task_arn: String,
    pub report: TaskReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResponse {
    /// The task's desired status after the report (the agent stops a task the control
    /// plane wants stopped).
    pub desired_status: DesiredStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipRequest {
    pub instance: InstanceCredential,
    pub task_arns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipResponse {
    /// The tasks (of those asked about) that are not live: their containers are orphans.
    pub orphaned: Vec<String>,
}

/// Asks for something of one of the agent's own live tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRequest {
    pub instance: InstanceCredential,
    pub task_arn: String,
}

/// One resolved secret. Its `Debug` hides the value, so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    /// The environment variable to set.
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({}=***)", self.name)
    }
}

/// The secrets of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecrets {
    pub container_name: String,
    pub secrets: Vec<SecretValue>,
}

/// The answer to `task-secrets`: every container's values, or why they cannot be had (the
/// task's `stoppedReason`: the agent stops the task without starting a container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSecretsResponse {
    pub containers: Vec<ContainerSecrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Temporary credentials of a task's role, in the ECS container credentials shape.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCredentialsResponse {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    /// RFC 3339, UTC (`2026-01-01T00:00:00.000Z`).
    pub expiration: String,
    /// The lifetime the credentials were issued for, in seconds (the agent refreshes them
    /// when a quarter of it is left).
    pub lifetime_seconds: u64,
}

impl std::fmt::Debug for TaskCredentialsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCredentialsResponse")
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_use_ecs_spellings_on_the_wire() {
        let poll = PollResponse {
            digest: "d".into(),
            tasks: vec![AssignedTask {
                task_arn: "arn".into(),
                cluster: "c".into(),
                container_instance_arn: "ci".into(),
                desired_status: DesiredStatus::Stopped,
                known_status: TaskStatus::Running,
                family: "f".into(),
                revision: 1,
                task_definition: Value::Null,
                overrides: Value::Null,
                cpu: None,
                memory: Some(64),
                group: Some("family:f".into()),
                availability_zone: None,
                container_arns: [("web".to_string(), "arn:c".to_string())].into(),
            }],
            active_instances: vec![],
            clusters: vec![],
        };
        let v = serde_json::to_value(&poll).unwrap();
        assert_eq!(v["tasks"][0]["desiredStatus"], "STOPPED");
        assert_eq!(v["tasks"][0]["knownStatus"], "RUNNING");
        let back: PollResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, poll);
    }

    #[test]
    fn secret_values_stay_out_of_debug_output() {
        let v = SecretValue {
            name: "DB_PASSWORD".into(),
            value: "hunter2".into(),
        };
        assert!(!format!("{v:?}").contains("hunter2"));
        let c = TaskCredentialsResponse {
            role_arn: "arn:aws:iam::1:role/r".into(),
            access_key_id: "ASIA".into(),
            secret_access_key: "s3cr3t".into(),
            token: "t0k3n".into(),
            expiration: "2026-01-01T00:00:00Z".into(),
            lifetime_seconds: 3600,
        };
        let text = format!("{c:?}");
        assert!(!text.contains("s3cr3t") && !text.contains("t0k3n"));
    }
}
