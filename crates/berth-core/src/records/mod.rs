//! What berth stores: one record type per resource, typed, with the desired half (written
//! by the API and controllers) apart from the observed half (written from agent reports).

mod cluster;
mod instance;
mod service;
mod task;
mod task_definition;

pub use cluster::ClusterRecord;
pub use instance::{AgentBinding, InstanceRecord, VersionInfo};
pub use service::{
    CircuitBreaker, Deployment, DeploymentConfig, ServiceDeploymentRecord, ServiceEvent,
    ServiceRecord, ServiceSpec, MAX_SERVICE_EVENTS,
};
pub use task::{
    ContainerDesired, ContainerObserved, ContainerOverrideSpec, ContainerReport, NetworkBinding,
    StopOrder, TaskDesired, TaskObserved, TaskOverrides, TaskRecord, TaskReport,
};
pub use task_definition::{
    ContainerSpec, PlacementConstraintSpec, PlacementStrategySpec, PortMappingSpec,
    TaskDefinitionRecord, TaskSpec,
};

use serde::{Deserialize, Serialize};

/// A resource tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// A name/value pair (cluster settings, attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: Option<String>,
}
