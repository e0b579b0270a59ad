//! Services: "keep N copies of this task definition running". The spec is written by the
//! API; deployments, counts and events by the service controller.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PlacementConstraintSpec, PlacementStrategySpec};
use crate::clock::Timestamp;
use crate::ids::{ClusterName, DeploymentId, ServiceName, TaskDefinitionId};
use crate::status::{
    DeploymentStatus, LaunchType, PropagateTags, RolloutState, SchedulingStrategy,
    ServiceDeploymentStatus, ServiceStatus,
};

/// ECS keeps the 100 most recent events of a service.
pub const MAX_SERVICE_EVENTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: ServiceName,
    pub cluster: ClusterName,
    pub status: ServiceStatus,
    pub created_at: Timestamp,
    pub created_by: String,
    /// What the user asked for (CreateService/UpdateService).
    pub spec: ServiceSpec,
    /// The newest (PRIMARY) first; INACTIVE ones are dropped.
    pub deployments: Vec<Deployment>,
    /// Newest first, at most [`MAX_SERVICE_EVENTS`].
    pub events: Vec<ServiceEvent>,
    pub running_count: u32,
    pub pending_count: u32,
    /// When the controller last reported "has reached a steady state" (None: not steady
    /// since the last change).
    pub steady_since: Option<Timestamp>,
    /// The idempotency token of the CreateService that made it.
    pub client_token: Option<String>,
    /// The last deployment that completed: what the circuit breaker rolls back to.
    pub last_completed: Option<Deployment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub desired_count: u32,
    pub task_definition: TaskDefinitionId,
    pub launch_type: LaunchType,
    pub scheduling_strategy: SchedulingStrategy,
    pub deployment: DeploymentConfig,
    pub placement_constraints: Vec<PlacementConstraintSpec>,
    pub placement_strategies: Vec<PlacementStrategySpec>,
    pub health_check_grace_period_secs: Option<u32>,
    pub propagate_tags: PropagateTags,
    pub enable_ecs_managed_tags: bool,
    pub enable_execute_command: bool,
    pub role_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentConfig {
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub circuit_breaker: CircuitBreaker,
    /// CloudWatch alarms for the deployment (`DeploymentAlarms`), stored and returned; they
    /// are evaluated once berth has CloudWatch alarms.
    pub alarms: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

/// One version of the service's tasks being rolled out (ECS `Deployment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `ecs-svc/<digits>`, also every task's `startedBy`.
    pub id: DeploymentId,
    pub status: DeploymentStatus,
    pub task_definition: TaskDefinitionId,
    pub desired_count: u32,
    pub pending_count: u32,
    pub running_count: u32,
    pub failed_tasks: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub launch_type: LaunchType,
    pub rollout_state: RolloutState,
    pub rollout_state_reason: String,
    /// A task of this deployment has been RUNNING and healthy: the circuit breaker has
    /// stopped watching it (ECS: failures only count until a task succeeds).
    pub had_healthy_task: bool,
    /// Set on a deployment that rolls another back (the circuit breaker or
    /// StopServiceDeployment): the deployment that failed.
    pub rollback_of: Option<DeploymentId>,
    /// The placement settings the deployment runs with.
    pub placement_constraints: Vec<PlacementConstraintSpec>,
    pub placement_strategies: Vec<PlacementStrategySpec>,
}

/// A service event (`ServiceEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: Timestamp,
    pub message: String,
}

/// The history of one deployment, for ListServiceDeployments/DescribeServiceDeployments;
/// kept after the deployment leaves the service record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDeploymentRecord {
    pub id: DeploymentId,
    pub cluster: ClusterName,
    pub service: ServiceName,
    pub status: ServiceDeploymentStatus,
    pub status_reason: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub target: TaskDefinitionId,
    pub target_desired: u32,
    /// The deployments that were live when this one started (what it replaces).
    pub sources: Vec<(DeploymentId, TaskDefinitionId)>,
    pub deployment: DeploymentConfig,
    /// Set when this deployment rolls back another.
    pub rollback_of: Option<DeploymentId>,
    /// Set when this deployment was rolled back (by the circuit breaker or a user).
    pub rolled_back_to: Option<DeploymentId>,
    /// The deployment circuit breaker failed this deployment.
    #[serde(default)]
    pub circuit_breaker_tripped: bool,
}

impl ServiceRecord {
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    /// Adds an event, newest first, keeping at most [`MAX_SERVICE_EVENTS`].
    pub fn push_event(&mut self, id: String, at: Timestamp, message: String) {
        self.events.insert(
            0,
            ServiceEvent {
                id,
                created_at: at,
                message,
            },
        );
        self.events.truncate(MAX_SERVICE_EVENTS);
    }

    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }

    /// ECS's description: one PRIMARY deployment, finished, whose running count is the
    /// desired count.
    pub fn is_stable(&self) -> bool {
        self.deployments.len() == 1
            && self
                .primary()
                .is_some_and(|p| p.rollout_state == RolloutState::Completed)
            && self
                .primary()
                .is_some_and(|p| p.running_count == self.spec.desired_count)
            && self.running_count == self.spec.desired_count
    }
}

impl CircuitBreaker {
    /// ECS's failure threshold: half the desired count, at least 3 and at most 200 ("How the
    /// Amazon ECS deployment circuit breaker detects failures", ECS Developer Guide; the
    /// `ServiceDeploymentCircuitBreaker.threshold` API docs: "minimum threshold of 3 and a
    /// maximum threshold of 200 ... 0.5 * desired task count").
    pub fn threshold(desired: u32) -> u32 {
        desired.div_ceil(2).clamp(3, 200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_breaker_threshold_is_half_the_desired_count_within_3_and_200() {
        assert_eq!(CircuitBreaker::threshold(0), 3);
        assert_eq!(CircuitBreaker::threshold(1), 3);
        assert_eq!(CircuitBreaker::threshold(6), 3);
        assert_eq!(CircuitBreaker::threshold(7), 4);
        assert_eq!(CircuitBreaker::threshold(10), 5);
        assert_eq!(CircuitBreaker::threshold(1000), 200);
    }
}
