//! Request, response and resource shapes of the ECS API (JSON 1.1, camelCase members).
//!
//! Every optional member is skipped when absent, as AWS does, so botocore sees the same
//! documents it would from ECS.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_with::skip_serializing_none;

/// Members berth stores and returns but does not interpret.
pub type Extra = Map<String, Value>;

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    pub key: Option<String>,
    pub value: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValuePair {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub arn: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

impl Failure {
    pub fn new(arn: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            arn,
            reason: Some(reason.into()),
            detail: None,
        }
    }
}

// ---------------------------------------------------------------- clusters

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetting {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cluster_arn: Option<String>,
    pub cluster_name: Option<String>,
    pub configuration: Option<Value>,
    pub status: Option<String>,
    pub registered_container_instances_count: Option<i64>,
    pub running_tasks_count: Option<i64>,
    pub pending_tasks_count: Option<i64>,
    pub active_services_count: Option<i64>,
    pub statistics: Option<Vec<KeyValuePair>>,
    pub tags: Option<Vec<Tag>>,
    pub settings: Option<Vec<ClusterSetting>>,
    pub capacity_providers: Option<Vec<String>>,
    pub default_capacity_provider_strategy: Option<Vec<Value>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateClusterRequest {
    pub cluster_name: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub settings: Option<Vec<ClusterSetting>>,
    pub configuration: Option<Value>,
    pub capacity_providers: Option<Vec<String>>,
    pub default_capacity_provider_strategy: Option<Vec<Value>>,
    pub service_connect_defaults: Option<Value>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterResponse {
    pub cluster: Option<Cluster>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteClusterRequest {
    pub cluster: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeClustersRequest {
    pub clusters: Option<Vec<String>>,
    pub include: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeClustersResponse {
    pub clusters: Vec<Cluster>,
    pub failures: Vec<Failure>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageRequest {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersResponse {
    pub cluster_arns: Vec<String>,
    pub next_token: Option<String>,
}

// ---------------------------------------------------------------- task definitions

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: Option<i64>,
    pub host_port: Option<i64>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
    pub container_port_range: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub retries: Option<i64>,
    pub start_period: Option<i64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    pub name: String,
    pub soft_limit: i64,
    pub hard_limit: i64,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    pub hostname: String,
    pub ip_address: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: Option<String>,
    pub image: Option<String>,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub port_mappings: Option<Vec<PortMapping>>,
    pub essential: Option<bool>,
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub environment: Option<Vec<KeyValuePair>>,
    pub depends_on: Option<Vec<ContainerDependency>>,
    pub start_timeout: Option<i64>,
    pub stop_timeout: Option<i64>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub working_directory: Option<String>,
    pub disable_networking: Option<bool>,
    pub privileged: Option<bool>,
    pub readonly_root_filesystem: Option<bool>,
    pub dns_servers: Option<Vec<String>>,
    pub dns_search_domains: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<HostEntry>>,
    pub docker_labels: Option<std::collections::BTreeMap<String, String>>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub health_check: Option<HealthCheck>,
    pub interactive: Option<bool>,
    pub pseudo_terminal: Option<bool>,
    /// Everything else ECS accepts (logConfiguration, mountPoints, secrets, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ContainerDefinition {
    /// ECS treats a container as essential unless told otherwise.
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub expression: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStrategy {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub field: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub task_definition_arn: Option<String>,
    pub container_definitions: Vec<ContainerDefinition>,
    pub family: Option<String>,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub network_mode: Option<String>,
    pub revision: Option<i64>,
    pub volumes: Option<Vec<Value>>,
    pub status: Option<String>,
    pub requires_attributes: Option<Vec<Attribute>>,
    pub placement_constraints: Option<Vec<PlacementConstraint>>,
    pub compatibilities: Option<Vec<String>>,
    pub runtime_platform: Option<Value>,
    pub requires_compatibilities: Option<Vec<String>>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub inference_accelerators: Option<Vec<Value>>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    pub proxy_configuration: Option<Value>,
    pub registered_at: Option<f64>,
    pub deregistered_at: Option<f64>,
    pub registered_by: Option<String>,
    pub ephemeral_storage: Option<Value>,
    pub enable_fault_injection: Option<bool>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterTaskDefinitionRequest {
    pub family: Option<String>,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub network_mode: Option<String>,
    pub container_definitions: Option<Vec<ContainerDefinition>>,
    pub volumes: Option<Vec<Value>>,
    pub placement_constraints: Option<Vec<PlacementConstraint>>,
    pub requires_compatibilities: Option<Vec<String>>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    pub proxy_configuration: Option<Value>,
    pub inference_accelerators: Option<Vec<Value>>,
    pub ephemeral_storage: Option<Value>,
    pub runtime_platform: Option<Value>,
    pub enable_fault_injection: Option<bool>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionResponse {
    pub task_definition: Option<TaskDefinition>,
    pub tags: Option<Vec<Tag>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTaskDefinitionRequest {
    pub task_definition: Option<String>,
    pub include: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionsRequest {
    pub family_prefix: Option<String>,
    pub status: Option<String>,
    pub sort: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionsResponse {
    pub task_definition_arns: Vec<String>,
    pub next_token: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionFamiliesResponse {
    pub families: Vec<String>,
    pub next_token: Option<String>,
}

// ---------------------------------------------------------------- container instances

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub double_value: Option<f64>,
    pub long_value: Option<i64>,
    pub integer_value: Option<i64>,
    pub string_set_value: Option<Vec<String>>,
}

impl Resource {
    pub fn integer(name: &str, value: i64) -> Self {
        Self {
            name: Some(name.to_string()),
            kind: Some("INTEGER".into()),
            double_value: Some(0.0),
            long_value: Some(0),
            integer_value: Some(value),
            string_set_value: None,
        }
    }
    pub fn string_set(name: &str, values: Vec<String>) -> Self {
        Self {
            name: Some(name.to_string()),
            kind: Some("STRINGSET".into()),
            double_value: Some(0.0),
            long_value: Some(0),
            integer_value: Some(0),
            string_set_value: Some(values),
        }
    }
    /// The numeric value, whichever member carries it.
    pub fn number(&self) -> i64 {
        self.integer_value
            .filter(|v| *v != 0)
            .or(self.long_value.filter(|v| *v != 0))
            .or(self.double_value.map(|v| v as i64))
            .unwrap_or(0)
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub agent_version: Option<String>,
    pub agent_hash: Option<String>,
    pub docker_version: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    pub container_instance_arn: Option<String>,
    pub ec2_instance_id: Option<String>,
    pub capacity_provider_name: Option<String>,
    pub version: Option<i64>,
    pub version_info: Option<VersionInfo>,
    pub remaining_resources: Option<Vec<Resource>>,
    pub registered_resources: Option<Vec<Resource>>,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub agent_connected: Option<bool>,
    pub running_tasks_count: Option<i64>,
    pub pending_tasks_count: Option<i64>,
    pub agent_update_status: Option<String>,
    pub attributes: Option<Vec<Attribute>>,
    pub registered_at: Option<f64>,
    pub attachments: Option<Vec<Value>>,
    pub tags: Option<Vec<Tag>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterContainerInstanceRequest {
    pub cluster: Option<String>,
    pub instance_identity_document: Option<String>,
    pub instance_identity_document_signature: Option<String>,
    pub total_resources: Option<Vec<Resource>>,
    pub version_info: Option<VersionInfo>,
    pub container_instance_arn: Option<String>,
    pub attributes: Option<Vec<Attribute>>,
    pub platform_devices: Option<Vec<Value>>,
    pub tags: Option<Vec<Tag>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceResponse {
    pub container_instance: Option<ContainerInstance>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterContainerInstanceRequest {
    pub cluster: Option<String>,
    pub container_instance: Option<String>,
    pub force: Option<bool>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeContainerInstancesRequest {
    pub cluster: Option<String>,
    pub container_instances: Option<Vec<String>>,
    pub include: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeContainerInstancesResponse {
    pub container_instances: Vec<ContainerInstance>,
    pub failures: Vec<Failure>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListContainerInstancesRequest {
    pub cluster: Option<String>,
    pub filter: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub status: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListContainerInstancesResponse {
    pub container_instance_arns: Vec<String>,
    pub next_token: Option<String>,
}

// ---------------------------------------------------------------- tasks

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: Option<String>,
    pub container_port: Option<i64>,
    pub host_port: Option<i64>,
    pub protocol: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub container_arn: Option<String>,
    pub task_arn: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub runtime_id: Option<String>,
    pub last_status: Option<String>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub network_bindings: Option<Vec<NetworkBinding>>,
    pub health_status: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    pub name: Option<String>,
    pub command: Option<Vec<String>>,
    pub environment: Option<Vec<KeyValuePair>>,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    pub container_overrides: Option<Vec<ContainerOverride>>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl TaskOverride {
    pub fn for_container(&self, name: &str) -> Option<&ContainerOverride> {
        self.container_overrides
            .as_ref()?
            .iter()
            .find(|o| o.name.as_deref() == Some(name))
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub attributes: Option<Vec<Attribute>>,
    pub availability_zone: Option<String>,
    pub cluster_arn: Option<String>,
    pub connectivity: Option<String>,
    pub connectivity_at: Option<f64>,
    pub container_instance_arn: Option<String>,
    pub containers: Option<Vec<Container>>,
    pub cpu: Option<String>,
    pub created_at: Option<f64>,
    pub desired_status: Option<String>,
    pub enable_execute_command: Option<bool>,
    pub execution_stopped_at: Option<f64>,
    pub group: Option<String>,
    pub health_status: Option<String>,
    pub last_status: Option<String>,
    pub launch_type: Option<String>,
    pub memory: Option<String>,
    pub overrides: Option<TaskOverride>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub started_by: Option<String>,
    pub stop_code: Option<String>,
    pub stopped_at: Option<f64>,
    pub stopped_reason: Option<String>,
    pub stopping_at: Option<f64>,
    pub tags: Option<Vec<Tag>>,
    pub task_arn: Option<String>,
    pub task_definition_arn: Option<String>,
    pub version: Option<i64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskRequest {
    pub capacity_provider_strategy: Option<Vec<Value>>,
    pub cluster: Option<String>,
    pub count: Option<i64>,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: Option<bool>,
    pub enable_execute_command: Option<bool>,
    pub group: Option<String>,
    pub launch_type: Option<String>,
    pub network_configuration: Option<Value>,
    pub overrides: Option<TaskOverride>,
    pub placement_constraints: Option<Vec<PlacementConstraint>>,
    pub placement_strategy: Option<Vec<PlacementStrategy>>,
    pub platform_version: Option<String>,
    pub propagate_tags: Option<String>,
    pub reference_id: Option<String>,
    pub started_by: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub task_definition: Option<String>,
    pub client_token: Option<String>,
    pub volume_configurations: Option<Vec<Value>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTaskRequest {
    pub cluster: Option<String>,
    pub container_instances: Option<Vec<String>>,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: Option<bool>,
    pub enable_execute_command: Option<bool>,
    pub group: Option<String>,
    pub network_configuration: Option<Value>,
    pub overrides: Option<TaskOverride>,
    pub propagate_tags: Option<String>,
    pub reference_id: Option<String>,
    pub started_by: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub task_definition: Option<String>,
    pub volume_configurations: Option<Vec<Value>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TasksResponse {
    pub tasks: Vec<Task>,
    pub failures: Vec<Failure>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTaskRequest {
    pub cluster: Option<String>,
    pub task: Option<String>,
    pub reason: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTaskResponse {
    pub task: Option<Task>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTasksRequest {
    pub cluster: Option<String>,
    pub tasks: Option<Vec<String>>,
    pub include: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    pub cluster: Option<String>,
    pub container_instance: Option<String>,
    pub family: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub started_by: Option<String>,
    pub service_name: Option<String>,
    pub desired_status: Option<String>,
    pub launch_type: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksResponse {
    pub task_arns: Vec<String>,
    pub next_token: Option<String>,
}

// ---------------------------------------------------------------- agent state reports

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateChange {
    pub container_name: Option<String>,
    pub image_digest: Option<String>,
    pub runtime_id: Option<String>,
    pub exit_code: Option<i64>,
    pub network_bindings: Option<Vec<NetworkBinding>>,
    pub reason: Option<String>,
    pub status: Option<String>,
    /// berth extension: the container's Docker health status.
    pub health_status: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitTaskStateChangeRequest {
    pub cluster: Option<String>,
    pub task: Option<String>,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub containers: Option<Vec<ContainerStateChange>>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
    /// berth extension: why the agent stopped the task (ECS TaskStopCode).
    pub stop_code: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgmentResponse {
    pub acknowledgment: Option<String>,
}

// ---------------------------------------------------------------- tags

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceRequest {
    pub resource_arn: Option<String>,
    pub tags: Option<Vec<Tag>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagResourceRequest {
    pub resource_arn: Option<String>,
    pub tag_keys: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceRequest {
    pub resource_arn: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceResponse {
    pub tags: Vec<Tag>,
}

// ---------------------------------------------------------------- agent protocol (berth's own)

/// One container instance an agent speaks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollInstance {
    pub cluster: String,
    pub container_instance_arn: String,
}

/// What an agent asks for when it long-polls for its assigned tasks. The poll doubles as
/// the agent's heartbeat for every instance it names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    pub instances: Vec<PollInstance>,
    /// `berth dev`: the agent joins every active cluster, so it wants to hear about new ones.
    #[serde(default)]
    pub follow_all_clusters: bool,
    /// The digest of the assignment the agent already has; the server answers when it differs.
    pub known_digest: Option<String>,
    pub wait_seconds: Option<u64>,
}

/// A task assigned to an agent together with everything needed to run it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedTask {
    pub task: Task,
    pub task_definition: TaskDefinition,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    pub digest: String,
    pub tasks: Vec<AssignedTask>,
    /// Which of the polled instances are still ACTIVE; the agent forgets the others.
    pub active_instances: Vec<String>,
    /// With `followAllClusters`: the names of all ACTIVE clusters.
    pub clusters: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_definition_keeps_unknown_members() {
        let json = serde_json::json!({
            "name": "web", "image": "nginx", "memory": 128,
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
            "mountPoints": []
        });
        let def: ContainerDefinition = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(def.memory, Some(128));
        assert!(def.extra.contains_key("logConfiguration"));
        assert_eq!(serde_json::to_value(&def).unwrap(), json);
    }

    #[test]
    fn absent_members_are_not_serialized() {
        let task = Task {
            task_arn: Some("arn".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&task).unwrap(),
            r#"{"taskArn":"arn"}"#
        );
    }

    #[test]
    fn network_binding_uses_ecs_member_names() {
        let b = NetworkBinding {
            bind_ip: Some("0.0.0.0".into()),
            container_port: Some(80),
            host_port: Some(32768),
            protocol: Some("tcp".into()),
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["bindIP"], "0.0.0.0");
        assert_eq!(v["hostPort"], 32768);
    }
}
