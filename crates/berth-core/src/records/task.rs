use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::ids::{ClusterName, ContainerId, InstanceId, TaskDefinitionId, TaskId};
use crate::resources::Reservation;
use crate::status::{
    Connectivity, ContainerStatus, DesiredStatus, HealthStatus, LaunchType, Protocol, StopCode,
    TaskStatus,
};

/// A task: what the control plane wants of it and what its agent has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub cluster: ClusterName,
    pub created_at: Timestamp,
    /// ECS's task `version`: bumped on every change.
    pub version: u64,
    pub desired: TaskDesired,
    pub observed: TaskObserved,
}

/// Written by the API and controllers only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDesired {
    pub status: DesiredStatus,
    pub instance: InstanceId,
    pub task_definition: TaskDefinitionId,
    pub launch_type: LaunchType,
    /// `family:<name>`, `service:<name>` or the caller's group.
    pub group: String,
    pub started_by: Option<String>,
    pub overrides: TaskOverrides,
    pub reservation: Reservation,
    pub containers: Vec<ContainerDesired>,
    pub availability_zone: Option<String>,
    pub enable_execute_command: bool,
    /// Set once, by the first stop order (StopTask, a controller, deregistration).
    pub stop: Option<StopOrder>,
    /// Task scale-in protection (UpdateTaskProtection): until when the service scheduler
    /// leaves the task alone when scaling in.
    #[serde(default)]
    pub protected_until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOrder {
    pub reason: String,
    pub code: StopCode,
    pub at: Timestamp,
}

/// RunTask/StartTask overrides: what the control plane accounts for, plus the ECS
/// document the agent applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOverrides {
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub containers: Vec<ContainerOverrideSpec>,
    /// ECS's `TaskOverride` as given (validated), returned by DescribeTasks.
    pub document: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOverrideSpec {
    pub name: String,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub memory_reservation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDesired {
    pub name: String,
    pub id: ContainerId,
    pub image: String,
    pub essential: bool,
    pub cpu: u64,
    pub memory: Option<u64>,
    pub memory_reservation: Option<u64>,
    pub health_check: bool,
}

/// Written from agent reports (and, as the observer of last resort, by the control plane
/// when a task's agent is gone for good).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskObserved {
    pub status: TaskStatus,
    pub containers: Vec<ContainerObserved>,
    pub pull_started_at: Option<Timestamp>,
    pub pull_stopped_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub connectivity: Option<Connectivity>,
    pub connectivity_at: Option<Timestamp>,
    pub execution_stopped_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
    pub stopped_reason: Option<String>,
    pub stop_code: Option<StopCode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerObserved {
    pub name: String,
    pub runtime_id: Option<String>,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub bindings: Vec<NetworkBinding>,
    pub health: HealthStatus,
    pub image_digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkBinding {
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
}

/// What an agent reports about one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub status: TaskStatus,
    pub reason: Option<String>,
    pub stop_code: Option<StopCode>,
    pub containers: Vec<ContainerReport>,
    pub pull_started_at: Option<Timestamp>,
    pub pull_stopped_at: Option<Timestamp>,
    pub execution_stopped_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerReport {
    pub name: String,
    pub runtime_id: Option<String>,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub bindings: Option<Vec<NetworkBinding>>,
    pub health: Option<HealthStatus>,
    pub image_digest: Option<String>,
}

impl TaskRecord {
    pub fn is_live(&self) -> bool {
        self.observed.status.is_live()
    }

    pub fn wants_stop(&self) -> bool {
        self.desired.status == DesiredStatus::Stopped
    }

    /// The task's health by ECS's rule: UNHEALTHY if any essential container with a health
    /// check is; HEALTHY once all of them are; otherwise (or without checks) UNKNOWN.
    pub fn health(&self) -> HealthStatus {
        let checked: Vec<HealthStatus> = self
            .desired
            .containers
            .iter()
            .filter(|c| c.essential && c.health_check)
            .map(|c| {
                self.observed
                    .containers
                    .iter()
                    .find(|o| o.name == c.name)
                    .map_or(HealthStatus::Unknown, |o| o.health)
            })
            .collect();
        if checked.is_empty() {
            HealthStatus::Unknown
        } else if checked.contains(&HealthStatus::Unhealthy) {
            HealthStatus::Unhealthy
        } else if checked.iter().all(|h| *h == HealthStatus::Healthy) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    }

    /// Orders the task stopped. The first order's reason and code stick; returns whether
    /// anything changed.
    pub fn order_stop(&mut self, reason: &str, code: StopCode, now: Timestamp) -> bool {
        if self.desired.status == DesiredStatus::Stopped {
            return false;
        }
        self.desired.status = DesiredStatus::Stopped;
        self.desired.stop = Some(StopOrder {
            reason: reason.to_string(),
            code,
            at: now,
        });
        self.version += 1;
        true
    }

    /// The control plane declares the task over without its agent (the agent is gone for
    /// good): observed STOPPED, containers STOPPED. Returns the status it had.
    pub fn force_stopped(&mut self, reason: &str, code: StopCode, now: Timestamp) -> TaskStatus {
        let before = self.observed.status;
        self.order_stop(reason, code, now);
        if before.is_terminal() {
            return before;
        }
        let observed = &mut self.observed;
        observed.status = TaskStatus::Stopped;
        observed.stopped_at = Some(now);
        observed.execution_stopped_at.get_or_insert(now);
        observed
            .stopped_reason
            .get_or_insert_with(|| reason.to_string());
        observed.stop_code.get_or_insert(code);
        for c in &mut observed.containers {
            c.status = ContainerStatus::Stopped;
        }
        self.version += 1;
        before
    }

    /// Applies an agent report. Observed state only moves forward and STOPPED is final.
    /// Returns the status the task had before (equal to the current one when nothing moved).
    pub fn apply_report(&mut self, report: &TaskReport, now: Timestamp) -> TaskStatus {
        let before = self.observed.status;
        if before.is_terminal() {
            return before;
        }
        let snapshot = self.observed.clone();
        for change in &report.containers {
            let Some(c) = self
                .observed
                .containers
                .iter_mut()
                .find(|c| c.name == change.name)
            else {
                continue;
            };
            if change.runtime_id.is_some() {
                c.runtime_id.clone_from(&change.runtime_id);
            }
            if change.image_digest.is_some() {
                c.image_digest.clone_from(&change.image_digest);
            }
            if change.status >= c.status {
                c.status = change.status;
            }
            if change.exit_code.is_some() {
                c.exit_code = change.exit_code;
            }
            if change.reason.is_some() {
                c.reason.clone_from(&change.reason);
            }
            if let Some(bindings) = &change.bindings {
                c.bindings.clone_from(bindings);
            }
            if let Some(h) = change.health {
                c.health = h;
            }
        }
        let observed = &mut self.observed;
        if let Some(t) = report.pull_started_at {
            observed.pull_started_at.get_or_insert(t);
        }
        if let Some(t) = report.pull_stopped_at {
            observed.pull_stopped_at.get_or_insert(t);
        }
        if report.status > before {
            observed.status = report.status;
            if report.status >= TaskStatus::Running && observed.started_at.is_none() {
                observed.started_at = Some(now);
                observed.connectivity = Some(Connectivity::Connected);
                observed.connectivity_at = Some(now);
            }
            if report.status.is_terminal() {
                observed.stopped_at = Some(now);
                observed.execution_stopped_at = Some(report.execution_stopped_at.unwrap_or(now));
                observed.stopped_reason = report.reason.clone();
                observed.stop_code = report.stop_code;
                for c in &mut observed.containers {
                    c.status = ContainerStatus::Stopped;
                }
                // The agent stopped it on its own: the control plane no longer wants it either.
                if self.desired.status != DesiredStatus::Stopped {
                    self.desired.status = DesiredStatus::Stopped;
                }
            }
        }
        if self.observed != snapshot {
            self.version += 1;
        }
        before
    }

    /// What the task reports as `stoppedReason`: the stop order's, else the agent's.
    pub fn stopped_reason(&self) -> Option<&str> {
        self.desired
            .stop
            .as_ref()
            .map(|s| s.reason.as_str())
            .or(self.observed.stopped_reason.as_deref())
    }

    pub fn stop_code(&self) -> Option<StopCode> {
        self.desired
            .stop
            .as_ref()
            .map(|s| s.code)
            .or(self.observed.stop_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Family;

    fn task() -> TaskRecord {
        let container = |name: &str, health_check| ContainerDesired {
            name: name.into(),
            id: ContainerId::new(format!("c-{name}")).unwrap(),
            image: "img".into(),
            essential: true,
            cpu: 0,
            memory: Some(32),
            memory_reservation: None,
            health_check,
        };
        let observed = |name: &str| ContainerObserved {
            name: name.into(),
            runtime_id: None,
            status: ContainerStatus::Pending,
            exit_code: None,
            reason: None,
            bindings: vec![],
            health: HealthStatus::Unknown,
            image_digest: None,
        };
        TaskRecord {
            id: TaskId::new("t1").unwrap(),
            cluster: ClusterName::new("c").unwrap(),
            created_at: Timestamp::from_millis(0),
            version: 1,
            desired: TaskDesired {
                status: DesiredStatus::Running,
                instance: InstanceId::new("i1").unwrap(),
                task_definition: TaskDefinitionId::new(Family::new("f").unwrap(), 1),
                launch_type: LaunchType::Ec2,
                group: "family:f".into(),
                started_by: None,
                overrides: TaskOverrides::default(),
                reservation: Reservation::default(),
                containers: vec![container("web", true), container("side", false)],
                availability_zone: None,
                enable_execute_command: false,
                stop: None,
                protected_until: None,
            },
            observed: TaskObserved {
                status: TaskStatus::Provisioning,
                containers: vec![observed("web"), observed("side")],
                pull_started_at: None,
                pull_stopped_at: None,
                started_at: None,
                connectivity: None,
                connectivity_at: None,
                execution_stopped_at: None,
                stopped_at: None,
                stopped_reason: None,
                stop_code: None,
            },
        }
    }

    fn report(status: TaskStatus, web: ContainerStatus, exit: Option<i32>) -> TaskReport {
        TaskReport {
            status,
            reason: None,
            stop_code: None,
            containers: vec![ContainerReport {
                name: "web".into(),
                runtime_id: Some("abc".into()),
                status: web,
                exit_code: exit,
                reason: None,
                bindings: None,
                health: Some(HealthStatus::Healthy),
                image_digest: None,
            }],
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: None,
        }
    }

    #[test]
    fn observed_state_only_moves_forward_and_stopped_is_final() {
        let mut t = task();
        let now = Timestamp::from_millis(5);
        t.apply_report(
            &report(TaskStatus::Running, ContainerStatus::Running, None),
            now,
        );
        assert_eq!(t.observed.status, TaskStatus::Running);
        assert_eq!(t.observed.started_at, Some(now));
        let before = t.apply_report(
            &report(TaskStatus::Pending, ContainerStatus::Pending, None),
            now,
        );
        assert_eq!(before, TaskStatus::Running);
        assert_eq!(t.observed.status, TaskStatus::Running);
        assert_eq!(t.observed.containers[0].status, ContainerStatus::Running);
        t.apply_report(
            &report(TaskStatus::Stopped, ContainerStatus::Stopped, Some(3)),
            now,
        );
        assert!(t.observed.status.is_terminal());
        assert_eq!(t.desired.status, DesiredStatus::Stopped);
        let version = t.version;
        t.apply_report(
            &report(TaskStatus::Running, ContainerStatus::Running, Some(0)),
            now,
        );
        assert_eq!(t.observed.status, TaskStatus::Stopped);
        assert_eq!(t.observed.containers[0].exit_code, Some(3));
        assert_eq!(t.version, version);
    }

    #[test]
    fn health_follows_essential_checked_containers() {
        let mut t = task();
        assert_eq!(t.health(), HealthStatus::Unknown);
        t.observed.containers[0].health = HealthStatus::Healthy;
        assert_eq!(t.health(), HealthStatus::Healthy);
        t.observed.containers[0].health = HealthStatus::Unhealthy;
        assert_eq!(t.health(), HealthStatus::Unhealthy);
        t.desired.containers[0].essential = false;
        assert_eq!(t.health(), HealthStatus::Unknown);
    }

    #[test]
    fn first_stop_order_wins() {
        let mut t = task();
        let now = Timestamp::from_millis(1);
        assert!(t.order_stop("user", StopCode::UserInitiated, now));
        assert!(!t.order_stop("later", StopCode::ServiceSchedulerInitiated, now));
        assert_eq!(t.stopped_reason(), Some("user"));
        let before = t.force_stopped("gone", StopCode::TaskFailedToStart, now);
        assert_eq!(before, TaskStatus::Provisioning);
        assert_eq!(t.observed.status, TaskStatus::Stopped);
        assert_eq!(t.stopped_reason(), Some("user"));
        assert_eq!(t.stop_code(), Some(StopCode::UserInitiated));
    }
}
