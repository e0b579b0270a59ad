//! Lifecycle statuses and other closed vocabularies, as ordered enums.
//!
//! Each enum maps to ECS's wire spelling only through [`as_str`](TaskStatus::as_str) and
//! [`parse`](TaskStatus::parse), called by the API and agent-protocol layers; everything
//! inside berth compares variants. Stored records serialize the same spelling.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares an enum with its ECS wire spellings, in order.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every variant, in order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }

            /// Parses the wire spelling (exact, case-sensitive as AWS is).
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The wire spellings, for error messages.
            pub fn expected() -> String {
                [$($wire),+].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// ECS's task lifecycle; observed state only moves forward along it.
    TaskStatus {
        Provisioning => "PROVISIONING",
        Pending => "PENDING",
        Activating => "ACTIVATING",
        Running => "RUNNING",
        Deactivating => "DEACTIVATING",
        Stopping => "STOPPING",
        Deprovisioning => "DEPROVISIONING",
        Stopped => "STOPPED",
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        self == Self::Stopped
    }
    /// Still holding resources on its instance.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }
    /// Counted as pending by ECS (cluster and instance pendingTasksCount).
    pub fn is_pending(self) -> bool {
        self < Self::Running
    }
}

wire_enum! {
    /// What the control plane wants a task to be.
    DesiredStatus {
        Pending => "PENDING",
        Running => "RUNNING",
        Stopped => "STOPPED",
    }
}

wire_enum! {
    ContainerStatus {
        Pending => "PENDING",
        Running => "RUNNING",
        Stopped => "STOPPED",
    }
}

wire_enum! {
    HealthStatus {
        Healthy => "HEALTHY",
        Unhealthy => "UNHEALTHY",
        Unknown => "UNKNOWN",
    }
}

wire_enum! {
    ClusterStatus {
        Active => "ACTIVE",
        Provisioning => "PROVISIONING",
        Deprovisioning => "DEPROVISIONING",
        Failed => "FAILED",
        Inactive => "INACTIVE",
    }
}

wire_enum! {
    InstanceStatus {
        Registering => "REGISTERING",
        RegistrationFailed => "REGISTRATION_FAILED",
        Active => "ACTIVE",
        Draining => "DRAINING",
        Deregistering => "DEREGISTERING",
        Inactive => "INACTIVE",
    }
}

wire_enum! {
    TaskDefinitionStatus {
        Active => "ACTIVE",
        Inactive => "INACTIVE",
        DeleteInProgress => "DELETE_IN_PROGRESS",
    }
}

wire_enum! {
    LaunchType {
        Ec2 => "EC2",
        Fargate => "FARGATE",
        External => "EXTERNAL",
        ManagedInstances => "MANAGED_INSTANCES",
    }
}

wire_enum! {
    NetworkMode {
        Bridge => "bridge",
        Host => "host",
        Awsvpc => "awsvpc",
        None => "none",
    }
}

wire_enum! {
    Protocol {
        Tcp => "tcp",
        Udp => "udp",
    }
}

wire_enum! {
    /// Why a task stopped (ECS `TaskStopCode`).
    StopCode {
        TaskFailedToStart => "TaskFailedToStart",
        EssentialContainerExited => "EssentialContainerExited",
        UserInitiated => "UserInitiated",
        ServiceSchedulerInitiated => "ServiceSchedulerInitiated",
        SpotInterruption => "SpotInterruption",
        TerminationNotice => "TerminationNotice",
    }
}

wire_enum! {
    Connectivity {
        Connected => "CONNECTED",
        Disconnected => "DISCONNECTED",
    }
}

wire_enum! {
    DependencyCondition {
        Start => "START",
        Complete => "COMPLETE",
        Success => "SUCCESS",
        Healthy => "HEALTHY",
    }
}

wire_enum! {
    /// `pidMode` / `ipcMode`.
    NamespaceMode {
        Host => "host",
        Task => "task",
        None => "none",
    }
}

wire_enum! {
    PlacementConstraintType {
        DistinctInstance => "distinctInstance",
        MemberOf => "memberOf",
    }
}

wire_enum! {
    PlacementStrategyType {
        Random => "random",
        Spread => "spread",
        Binpack => "binpack",
    }
}

wire_enum! {
    ServiceStatus {
        Active => "ACTIVE",
        Draining => "DRAINING",
        Inactive => "INACTIVE",
    }
}

wire_enum! {
    SchedulingStrategy {
        Replica => "REPLICA",
        Daemon => "DAEMON",
    }
}

wire_enum! {
    /// A deployment's place in its service (`Deployment.status`).
    DeploymentStatus {
        Primary => "PRIMARY",
        Active => "ACTIVE",
        Inactive => "INACTIVE",
    }
}

wire_enum! {
    RolloutState {
        InProgress => "IN_PROGRESS",
        Completed => "COMPLETED",
        Failed => "FAILED",
    }
}

wire_enum! {
    /// The newer ServiceDeployment API's status.
    ServiceDeploymentStatus {
        Pending => "PENDING",
        Successful => "SUCCESSFUL",
        Stopped => "STOPPED",
        StopRequested => "STOP_REQUESTED",
        InProgress => "IN_PROGRESS",
        RollbackRequested => "ROLLBACK_REQUESTED",
        RollbackInProgress => "ROLLBACK_IN_PROGRESS",
        RollbackSuccessful => "ROLLBACK_SUCCESSFUL",
        RollbackFailed => "ROLLBACK_FAILED",
    }
}

wire_enum! {
    PropagateTags {
        TaskDefinition => "TASK_DEFINITION",
        Service => "SERVICE",
        None => "NONE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_status_is_ordered_like_the_ecs_lifecycle() {
        assert!(TaskStatus::Provisioning < TaskStatus::Pending);
        assert!(TaskStatus::Running < TaskStatus::Deprovisioning);
        assert!(TaskStatus::Stopped.is_terminal());
        assert!(!TaskStatus::Stopping.is_terminal());
        assert!(TaskStatus::Activating.is_pending());
        assert!(!TaskStatus::Running.is_pending());
        assert_eq!(TaskStatus::ALL.len(), 8);
        assert_eq!(TaskStatus::ALL.iter().max(), Some(&TaskStatus::Stopped));
    }

    #[test]
    fn wire_spellings_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(*s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert_eq!(NetworkMode::parse("awsvpc"), Some(NetworkMode::Awsvpc));
        assert_eq!(NetworkMode::parse("AWSVPC"), None);
        assert_eq!(TaskStatus::parse("BOGUS"), None);
        assert_eq!(
            LaunchType::expected(),
            "EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES"
        );
    }
}
