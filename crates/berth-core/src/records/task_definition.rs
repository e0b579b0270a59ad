use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::ids::TaskDefinitionId;
use crate::status::{
    DependencyCondition, LaunchType, NetworkMode, PlacementConstraintType, PlacementStrategyType,
    Protocol, TaskDefinitionStatus,
};

/// A registered task definition revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinitionRecord {
    pub id: TaskDefinitionId,
    pub status: TaskDefinitionStatus,
    pub registered_at: Timestamp,
    pub deregistered_at: Option<Timestamp>,
    pub registered_by: String,
    /// What the control plane acts on, parsed and validated at registration.
    pub spec: TaskSpec,
    /// The definition as registered (ECS's `TaskDefinition` document without the members
    /// berth computes: ARN, revision, status, times). Describe returns it; agents run it.
    pub document: Value,
}

/// The parts of a task definition the control plane acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub network_mode: NetworkMode,
    /// Task-level CPU units and MiB.
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub requires_compatibilities: Vec<LaunchType>,
    pub compatibilities: Vec<LaunchType>,
    pub placement_constraints: Vec<PlacementConstraintSpec>,
    pub containers: Vec<ContainerSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub essential: bool,
    pub cpu: u64,
    /// Hard limit, MiB.
    pub memory: Option<u64>,
    /// Soft limit, MiB.
    pub memory_reservation: Option<u64>,
    pub port_mappings: Vec<PortMappingSpec>,
    /// Has a health check that is not `["NONE"]`.
    pub health_check: bool,
    pub depends_on: Vec<(String, DependencyCondition)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMappingSpec {
    pub container_port: u16,
    /// `None` (or 0 on the wire): a dynamic host port in bridge mode.
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementConstraintSpec {
    pub kind: PlacementConstraintType,
    pub expression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementStrategySpec {
    pub kind: PlacementStrategyType,
    pub field: Option<String>,
}

impl TaskSpec {
    pub fn container(&self, name: &str) -> Option<&ContainerSpec> {
        self.containers.iter().find(|c| c.name == name)
    }
}
