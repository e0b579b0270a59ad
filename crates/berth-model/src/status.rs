//! ECS task and container lifecycle statuses.

pub const PROVISIONING: &str = "PROVISIONING";
pub const PENDING: &str = "PENDING";
pub const ACTIVATING: &str = "ACTIVATING";
pub const RUNNING: &str = "RUNNING";
pub const DEACTIVATING: &str = "DEACTIVATING";
pub const STOPPING: &str = "STOPPING";
pub const DEPROVISIONING: &str = "DEPROVISIONING";
pub const STOPPED: &str = "STOPPED";

/// The task state machine in order; observed state only ever moves forward along it.
pub const TASK_ORDER: [&str; 8] = [
    PROVISIONING,
    PENDING,
    ACTIVATING,
    RUNNING,
    DEACTIVATING,
    STOPPING,
    DEPROVISIONING,
    STOPPED,
];

/// Position of a status in [`TASK_ORDER`]; `None` for a status ECS does not have.
pub fn task_rank(status: &str) -> Option<usize> {
    TASK_ORDER.iter().position(|s| *s == status)
}

pub mod stop_code {
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    pub const USER_INITIATED: &str = "UserInitiated";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_ecs_lifecycle() {
        assert!(task_rank(PROVISIONING) < task_rank(PENDING));
        assert!(task_rank(RUNNING) < task_rank(DEPROVISIONING));
        assert_eq!(task_rank(STOPPED), Some(7));
        assert_eq!(task_rank("BOGUS"), None);
    }
}
