//! The service scheduler's decision, as a pure function of what it sees: which tasks to
//! start and which to stop, so that a service converges on its desired count and its
//! PRIMARY deployment while staying within ECS's bounds:
//!
//! - `maximumPercent`: at most ⌊desired × max / 100⌋ tasks RUNNING or PENDING;
//! - `minimumHealthyPercent`: at least ⌈desired × min / 100⌉ healthy tasks while
//!   replacing (ECS Developer Guide, "Deployment configuration").
//!
//! A task is healthy once RUNNING and, if any essential container has a health check,
//! HEALTHY. Unhealthy tasks (after the grace period) are replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_core::ids::{DeploymentId, InstanceId, TaskId};
use berth_core::status::{DesiredStatus, HealthStatus, TaskStatus};
use berth_core::Timestamp;

/// One live task of the service, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: TaskId,
    pub deployment: Option<DeploymentId>,
    pub instance: InstanceId,
    pub observed: TaskStatus,
    pub desired: DesiredStatus,
    pub health: HealthStatus,
    /// Whether the task's health comes from health checks (else RUNNING is healthy).
    pub checked: bool,
    pub started_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Scale-in protection is on (UpdateTaskProtection).
    pub protected: bool,
    pub protected_until: Option<Timestamp>,
}

impl TaskView {
    pub fn healthy(&self) -> bool {
        self.observed == TaskStatus::Running
            && (!self.checked || self.health == HealthStatus::Healthy)
    }
}

/// Why the scheduler stops a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// Failed its container health checks (counts against the deployment).
    Unhealthy,
    /// Replaced by the PRIMARY deployment, or no longer wanted (scale-in, draining).
    Scaling,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// REPLICA: how many PRIMARY tasks to place.
    pub launch: u32,
    /// DAEMON: the instances that need a PRIMARY task.
    pub launch_on: Vec<InstanceId>,
    pub stop: Vec<(TaskId, StopCause)>,
}

/// What a REPLICA service looks like to the scheduler.
#[derive(Debug, Clone)]
pub struct Replica<'a> {
    pub desired: u32,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub primary: &'a DeploymentId,
    /// The primary may not start tasks (its rollout failed and is not rolled back).
    pub launch_blocked: bool,
    /// Live tasks (not STOPPED).
    pub tasks: &'a [TaskView],
    /// Instances that are DRAINING: their tasks are replaced elsewhere.
    pub draining: &'a BTreeSet<InstanceId>,
    pub grace: Option<Duration>,
    pub now: Timestamp,
}

fn past_grace(t: &TaskView, grace: Option<Duration>, now: Timestamp) -> bool {
    match (grace, t.started_at) {
        (Some(g), Some(started)) => now.since(started) >= g,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn unhealthy(t: &TaskView, grace: Option<Duration>, now: Timestamp) -> bool {
    t.desired == DesiredStatus::Running
        && t.observed == TaskStatus::Running
        && t.checked
        && t.health == HealthStatus::Unhealthy
        && past_grace(t, grace, now)
}

/// Tasks least worth keeping first: not yet running, then not healthy, then the newest.
fn keep_order(a: &&TaskView, b: &&TaskView) -> std::cmp::Ordering {
    (a.observed == TaskStatus::Running)
        .cmp(&(b.observed == TaskStatus::Running))
        .then(a.healthy().cmp(&b.healthy()))
        .then(b.created_at.cmp(&a.created_at))
}

pub fn replica(s: &Replica<'_>) -> Plan {
    let mut plan = Plan::default();
    let desired = s.desired;
    let upper = (u64::from(desired) * u64::from(s.maximum_percent) / 100) as usize;
    let lower = (u64::from(desired) * u64::from(s.minimum_healthy_percent)).div_ceil(100) as usize;
    let mut stopping: BTreeSet<&TaskId> = BTreeSet::new();
    for t in s.tasks.iter().filter(|t| unhealthy(t, s.grace, s.now)) {
        plan.stop.push((t.id.clone(), StopCause::Unhealthy));
        stopping.insert(&t.id);
    }
    let wanted: Vec<&TaskView> = s
        .tasks
        .iter()
        .filter(|t| t.desired == DesiredStatus::Running && !stopping.contains(&t.id))
        .collect();
    let is_primary = |t: &TaskView| {
        t.deployment.as_ref() == Some(s.primary) && !s.draining.contains(&t.instance)
    };
    let mut primary: Vec<&TaskView> = wanted.iter().copied().filter(|t| is_primary(t)).collect();
    let old: Vec<&TaskView> = wanted.iter().copied().filter(|t| !is_primary(t)).collect();

    // Scale-in: the primary has more than wanted. Protected tasks are left alone.
    if primary.len() > desired as usize {
        primary.sort_by(keep_order);
        let mut excess = primary.len() - desired as usize;
        let mut kept = Vec::with_capacity(primary.len());
        for t in primary {
            if excess > 0 && !t.protected {
                excess -= 1;
                plan.stop.push((t.id.clone(), StopCause::Scaling));
                stopping.insert(&t.id);
            } else {
                kept.push(t);
            }
        }
        primary = kept;
    }
    // Everything still running or starting counts against the maximum, including tasks
    // already on their way down.
    let occupying = s
        .tasks
        .iter()
        .filter(|t| t.desired == DesiredStatus::Stopped || !stopping.contains(&t.id))
        .count();
    if !s.launch_blocked && primary.len() < desired as usize {
        let room = upper.saturating_sub(occupying);
        plan.launch = (desired as usize - primary.len()).min(room) as u32;
    }
    // Replace old tasks without dropping below the minimum healthy count. Old tasks that
    // are not healthy cost nothing to stop.
    let healthy_now = wanted
        .iter()
        .filter(|t| !stopping.contains(&t.id) && t.healthy())
        .count();
    let mut budget = healthy_now.saturating_sub(lower);
    let mut old = old;
    old.sort_by(keep_order);
    for t in old {
        if !t.healthy() {
            plan.stop.push((t.id.clone(), StopCause::Scaling));
        } else if budget > 0 {
            budget -= 1;
            plan.stop.push((t.id.clone(), StopCause::Scaling));
        }
    }
    plan
}

/// What a DAEMON service looks like to the scheduler.
#[derive(Debug, Clone)]
pub struct Daemon<'a> {
    pub primary: &'a DeploymentId,
    pub launch_blocked: bool,
    pub tasks: &'a [TaskView],
    /// ACTIVE instances that satisfy the service's constraints.
    pub eligible: &'a BTreeSet<InstanceId>,
    pub grace: Option<Duration>,
    pub now: Timestamp,
}

/// One task per eligible instance; an instance's old task is stopped before its new one
/// starts (the DAEMON defaults: minimum 0 %, maximum 100 %).
pub fn daemon(s: &Daemon<'_>) -> Plan {
    let mut plan = Plan::default();
    let mut by_instance: BTreeMap<&InstanceId, Vec<&TaskView>> = BTreeMap::new();
    for t in s.tasks {
        by_instance.entry(&t.instance).or_default().push(t);
    }
    for (instance, tasks) in &by_instance {
        let eligible = s.eligible.contains(*instance);
        let mut kept_primary = false;
        let mut sorted = tasks.clone();
        sorted.sort_by(keep_order);
        sorted.reverse();
        for t in sorted {
            if t.desired == DesiredStatus::Stopped {
                continue;
            }
            if unhealthy(t, s.grace, s.now) {
                plan.stop.push((t.id.clone(), StopCause::Unhealthy));
            } else if !eligible || t.deployment.as_ref() != Some(s.primary) || kept_primary {
                plan.stop.push((t.id.clone(), StopCause::Scaling));
            } else {
                kept_primary = true;
            }
        }
    }
    if !s.launch_blocked {
        for instance in s.eligible {
            // Only once the instance has no live task of the service at all.
            if by_instance.get(instance).is_none_or(|ts| ts.is_empty()) {
                plan.launch_on.push(instance.clone());
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(n: u64) -> DeploymentId {
        DeploymentId::from_number(n)
    }

    fn task(id: &str, d: u64, observed: TaskStatus, health: HealthStatus) -> TaskView {
        TaskView {
            id: TaskId::new(id).unwrap(),
            deployment: Some(dep(d)),
            instance: InstanceId::new("i1").unwrap(),
            observed,
            desired: DesiredStatus::Running,
            health,
            checked: true,
            started_at: Some(Timestamp::from_millis(0)),
            created_at: Timestamp::from_millis(id.len() as i64),
            protected: false,
            protected_until: None,
        }
    }

    fn replica_plan(desired: u32, min: u32, max: u32, tasks: &[TaskView]) -> Plan {
        let draining = BTreeSet::new();
        replica(&Replica {
            desired,
            minimum_healthy_percent: min,
            maximum_percent: max,
            primary: &dep(2),
            launch_blocked: false,
            tasks,
            draining: &draining,
            grace: None,
            now: Timestamp::from_millis(1000),
        })
    }

    use HealthStatus::{Healthy, Unhealthy, Unknown};
    use TaskStatus::{Pending, Running};

    #[test]
    fn a_new_service_starts_its_tasks_up_to_the_maximum() {
        assert_eq!(replica_plan(3, 100, 200, &[]).launch, 3);
        assert_eq!(replica_plan(4, 50, 100, &[]).launch, 4);
        let one = [task("a", 2, Pending, Unknown)];
        assert_eq!(replica_plan(3, 100, 200, &one).launch, 2);
    }

    #[test]
    fn min_100_max_200_starts_all_new_before_stopping_any_old() {
        let old: Vec<TaskView> = ["o1", "o22", "o333"]
            .iter()
            .map(|id| task(id, 1, Running, Healthy))
            .collect();
        let plan = replica_plan(3, 100, 200, &old);
        assert_eq!(plan.launch, 3);
        assert!(plan.stop.is_empty(), "{plan:?}");
        // New tasks started but not healthy yet: still nothing old may stop.
        let mut tasks = old.clone();
        tasks.extend(
            ["n1", "n22", "n333"]
                .iter()
                .map(|id| task(id, 2, Running, Unknown)),
        );
        let plan = replica_plan(3, 100, 200, &tasks);
        assert_eq!((plan.launch, plan.stop.len()), (0, 0));
        // Two new ones healthy: two old may go.
        tasks[3].health = Healthy;
        tasks[4].health = Healthy;
        let plan = replica_plan(3, 100, 200, &tasks);
        assert_eq!(plan.stop.len(), 2);
        assert!(plan
            .stop
            .iter()
            .all(|(id, c)| id.as_str().starts_with('o') && *c == StopCause::Scaling));
    }

    #[test]
    fn min_50_max_100_stops_old_first() {
        let old: Vec<TaskView> = ["o1", "o22", "o333", "o4444"]
            .iter()
            .map(|id| task(id, 1, Running, Healthy))
            .collect();
        let plan = replica_plan(4, 50, 100, &old);
        assert_eq!(plan.launch, 0, "no room above 100 %");
        assert_eq!(plan.stop.len(), 2, "two may go while two stay healthy");
    }

    #[test]
    fn unhealthy_tasks_are_replaced_after_the_grace_period() {
        let tasks = [
            task("a", 2, Running, Unhealthy),
            task("b", 2, Running, Healthy),
        ];
        let plan = replica_plan(2, 100, 200, &tasks);
        assert_eq!(
            plan.stop,
            vec![(TaskId::new("a").unwrap(), StopCause::Unhealthy)]
        );
        assert_eq!(plan.launch, 1);
        let draining = BTreeSet::new();
        let within_grace = replica(&Replica {
            desired: 2,
            minimum_healthy_percent: 100,
            maximum_percent: 200,
            primary: &dep(2),
            launch_blocked: false,
            tasks: &tasks,
            draining: &draining,
            grace: Some(Duration::from_secs(60)),
            now: Timestamp::from_millis(30_000),
        });
        assert!(within_grace.stop.is_empty());
    }

    #[test]
    fn scale_in_stops_the_least_useful_tasks() {
        let tasks = [
            task("a", 2, Running, Healthy),
            task("bb", 2, Pending, Unknown),
            task("ccc", 2, Running, Healthy),
        ];
        let plan = replica_plan(1, 100, 200, &tasks);
        let stopped: Vec<&str> = plan.stop.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(stopped, vec!["bb", "ccc"]);
        assert_eq!(plan.launch, 0);
        let gone = replica_plan(0, 100, 200, &tasks);
        assert_eq!(gone.stop.len(), 3);
    }

    #[test]
    fn scale_in_skips_protected_tasks() {
        let mut tasks = vec![
            task("a", 2, Running, Healthy),
            task("bb", 2, Running, Healthy),
            task("ccc", 2, Running, Healthy),
        ];
        tasks[2].protected = true;
        tasks[1].protected = true;
        let plan = replica_plan(1, 100, 200, &tasks);
        let stopped: Vec<&str> = plan.stop.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(stopped, vec!["a"], "the only unprotected one");
    }

    #[test]
    fn tasks_on_draining_instances_are_replaced_before_they_stop() {
        let mut t = task("a", 2, Running, Healthy);
        t.instance = InstanceId::new("drained").unwrap();
        let tasks = [t];
        let draining: BTreeSet<InstanceId> = [InstanceId::new("drained").unwrap()].into();
        let plan = replica(&Replica {
            desired: 1,
            minimum_healthy_percent: 100,
            maximum_percent: 200,
            primary: &dep(2),
            launch_blocked: false,
            tasks: &tasks,
            draining: &draining,
            grace: None,
            now: Timestamp::from_millis(0),
        });
        assert_eq!((plan.launch, plan.stop.len()), (1, 0));
    }

    #[test]
    fn daemon_puts_one_task_per_eligible_instance_and_replaces_old_ones_in_place() {
        let i = |s: &str| InstanceId::new(s).unwrap();
        let mut on_a = task("a", 1, Running, Healthy);
        on_a.instance = i("A");
        let mut on_gone = task("g", 2, Running, Healthy);
        on_gone.instance = i("gone");
        let tasks = [on_a, on_gone];
        let eligible: BTreeSet<InstanceId> = [i("A"), i("B")].into();
        let plan = daemon(&Daemon {
            primary: &dep(2),
            launch_blocked: false,
            tasks: &tasks,
            eligible: &eligible,
            grace: None,
            now: Timestamp::from_millis(0),
        });
        assert_eq!(plan.launch_on, vec![i("B")]);
        let stopped: BTreeSet<&str> = plan.stop.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(stopped, ["a", "g"].into());
    }
}
