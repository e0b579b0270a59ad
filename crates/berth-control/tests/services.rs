//! The service scheduler's reconcile, driven directly (no Docker, no controller loop):
//! tasks are reported by hand as an agent would.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_control::services::{CreateService, ServiceSchedulerConfig, UpdateService};
use berth_control::tasks::ListTasks;
use berth_control::PageRequest;
use berth_core::ids::{
    ClusterName, Family, ServiceName, TaskDefinitionId, TaskDefinitionRef, TaskId,
};
use berth_core::records::{CircuitBreaker, ContainerReport, ServiceRecord, TaskRecord, TaskReport};
use berth_core::status::{
    ContainerStatus, DesiredStatus, LaunchType, PropagateTags, RolloutState, SchedulingStrategy,
    ServiceStatus, StopCode, TaskStatus,
};
use berth_core::ErrorKind;
use common::*;

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn create(cluster: &ClusterName, name: &str, family: &str, desired: u32) -> CreateService {
    CreateService {
        cluster: cluster.clone(),
        name: svc(name),
        task_definition: TaskDefinitionRef::Latest(Family::new(family).unwrap()),
        desired_count: Some(desired),
        launch_type: LaunchType::Ec2,
        scheduling_strategy: SchedulingStrategy::Replica,
        minimum_healthy_percent: None,
        maximum_percent: None,
        circuit_breaker: CircuitBreaker::default(),
        alarms: None,
        placement_constraints: vec![],
        placement_strategies: vec![],
        health_check_grace_period_secs: None,
        propagate_tags: PropagateTags::None,
        enable_ecs_managed_tags: false,
        enable_execute_command: false,
        role_arn: None,
        tags: vec![],
        client_token: None,
    }
}

async fn fixture_for_services() -> (Fixture, ClusterName) {
    let f = fixture();
    f.cp.services.set_scheduler_config(ServiceSchedulerConfig {
        unchecked_task_settle: Duration::ZERO,
        ..Default::default()
    });
    let c = cluster(&f.cp, "c").await;
    instance(&f.cp, &c, 100_000, 100_000).await;
    definition(&f.cp, "app", vec![container("main", 64, None)]).await;
    (f, c)
}

async fn live_tasks(f: &Fixture, c: &ClusterName, service: &str) -> Vec<TaskRecord> {
    let mut out = Vec::new();
    for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let page =
            f.cp.tasks
                .list(&ListTasks {
                    cluster: c.clone(),
                    instance: None,
                    family: None,
                    started_by: None,
                    group: Some(format!("service:{service}")),
                    desired,
                    launch_type: None,
                    page: PageRequest {
                        next_token: None,
                        max_results: Some(100),
                    },
                })
                .await
                .unwrap();
        for v in f.cp.tasks.describe(c, &page.items, false).await.unwrap() {
            let t = v.unwrap().record;
            if t.is_live() {
                out.push(t);
            }
        }
    }
    out
}

async fn report_all(
    f: &Fixture,
    c: &ClusterName,
    tasks: &[TaskRecord],
    status: TaskStatus,
    exit: Option<i32>,
) {
    for t in tasks {
        let mut r = report(status, exit);
        if status.is_terminal() {
            r.stop_code = Some(StopCode::EssentialContainerExited);
        }
        agent_report(&f.cp, c, &t.id, &r).await.unwrap();
    }
}

async fn service(f: &Fixture, c: &ClusterName, name: &str) -> ServiceRecord {
    f.cp.services
        .describe(c, &[svc(name)], false)
        .await
        .unwrap()
        .remove(0)
        .unwrap()
        .record
}

async fn reconcile(f: &Fixture, c: &ClusterName, name: &str) {
    f.cp.services.reconcile(c, &svc(name)).await.unwrap();
}

/// Reconciles and "runs" whatever the scheduler started, until nothing changes.
async fn settle(f: &Fixture, c: &ClusterName, name: &str) {
    for _ in 0..20 {
        reconcile(f, c, name).await;
        let fresh: Vec<TaskRecord> = live_tasks(f, c, name)
            .await
            .into_iter()
            .filter(|t| {
                t.observed.status < TaskStatus::Running
                    && t.desired.status == DesiredStatus::Running
            })
            .collect();
        let stopping: Vec<TaskRecord> = live_tasks(f, c, name)
            .await
            .into_iter()
            .filter(|t| t.desired.status == DesiredStatus::Stopped)
            .collect();
        if fresh.is_empty() && stopping.is_empty() {
            reconcile(f, c, name).await;
            return;
        }
        report_all(f, c, &fresh, TaskStatus::Running, None).await;
        report_all(f, c, &stopping, TaskStatus::Stopped, Some(0)).await;
    }
    panic!("service {name} did not settle");
}

#[tokio::test]
async fn a_service_keeps_its_desired_count_and_replaces_stopped_tasks() {
    let (f, c) = fixture_for_services().await;
    f.cp.services
        .create(create(&c, "web", "app", 3))
        .await
        .unwrap();
    reconcile(&f, &c, "web").await;
    let tasks = live_tasks(&f, &c, "web").await;
    assert_eq!(tasks.len(), 3);
    let s = service(&f, &c, "web").await;
    let primary = s.primary().unwrap().clone();
    for t in &tasks {
        assert_eq!(t.desired.group, "service:web");
        assert_eq!(t.desired.started_by.as_deref(), Some(primary.id.as_str()));
    }
    settle(&f, &c, "web").await;
    let s = service(&f, &c, "web").await;
    assert_eq!((s.running_count, s.pending_count), (3, 0));
    assert_eq!(s.primary().unwrap().rollout_state, RolloutState::Completed);
    assert!(s.is_stable());
    assert!(
        s.events[0].message.contains("has reached a steady state"),
        "{:?}",
        s.events
    );
    // One task dies (a container exits): it is replaced.
    let victim = live_tasks(&f, &c, "web").await.remove(0);
    report_all(
        &f,
        &c,
        std::slice::from_ref(&victim),
        TaskStatus::Stopped,
        Some(137),
    )
    .await;
    reconcile(&f, &c, "web").await;
    let tasks = live_tasks(&f, &c, "web").await;
    assert_eq!(tasks.len(), 3);
    assert!(!tasks.iter().any(|t| t.id == victim.id));
    // Reconciling again (or many times) starts nothing more.
    for _ in 0..5 {
        reconcile(&f, &c, "web").await;
    }
    assert_eq!(live_tasks(&f, &c, "web").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reconciles_never_start_a_slot_twice() {
    let (f, c) = fixture_for_services().await;
    f.cp.services
        .create(create(&c, "web", "app", 5))
        .await
        .unwrap();
    for (round, desired) in [5u32, 9, 2, 7, 12].into_iter().enumerate() {
        f.cp.services
            .update(
                &c,
                &svc("web"),
                UpdateService {
                    desired_count: Some(desired),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // An old and a new leader (or any callers) reconciling at once.
        let mut handles = Vec::new();
        for _ in 0..8 {
            let cp = Arc::clone(&f.cp);
            let c = c.clone();
            handles.push(tokio::spawn(async move {
                let _ = cp.services.reconcile(&c, &svc("web")).await;
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let wanted = live_tasks(&f, &c, "web")
            .await
            .into_iter()
            .filter(|t| t.desired.status == DesiredStatus::Running)
            .count();
        assert!(
            wanted <= desired as usize,
            "round {round}: {wanted} tasks for {desired}"
        );
        settle(&f, &c, "web").await;
        let wanted = live_tasks(&f, &c, "web").await.len();
        assert_eq!(wanted, desired as usize, "round {round}");
    }
}

#[tokio::test]
async fn rolling_update_keeps_the_minimum_healthy_and_the_maximum() {
    let (f, c) = fixture_for_services().await;
    f.cp.services
        .create(create(&c, "web", "app", 4))
        .await
        .unwrap();
    settle(&f, &c, "web").await;
    definition(&f.cp, "app", vec![container("main", 65, None)]).await;
    f.cp.services
        .update(
            &c,
            &svc("web"),
            UpdateService {
                task_definition: Some(TaskDefinitionRef::Latest(Family::new("app").unwrap())),
                minimum_healthy_percent: Some(50),
                maximum_percent: Some(150),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let new_def = TaskDefinitionId::new(Family::new("app").unwrap(), 2);
    for _ in 0..20 {
        reconcile(&f, &c, "web").await;
        let live = live_tasks(&f, &c, "web").await;
        let wanted: Vec<&TaskRecord> = live
            .iter()
            .filter(|t| t.desired.status == DesiredStatus::Running)
            .collect();
        let healthy = wanted
            .iter()
            .filter(|t| t.observed.status == TaskStatus::Running)
            .count();
        assert!(live.len() <= 6, "more than 150 % of 4: {}", live.len());
        assert!(healthy >= 2, "fewer than 50 % of 4 healthy: {healthy}");
        let s = service(&f, &c, "web").await;
        if s.deployments.len() == 1 && s.primary().unwrap().rollout_state == RolloutState::Completed
        {
            assert!(live.iter().all(|t| t.desired.task_definition == new_def));
            assert_eq!(live.len(), 4);
            return;
        }
        let fresh: Vec<TaskRecord> = live
            .iter()
            .filter(|t| t.observed.status < TaskStatus::Running)
            .cloned()
            .collect();
        let stopping: Vec<TaskRecord> = live
            .iter()
            .filter(|t| t.desired.status == DesiredStatus::Stopped)
            .cloned()
            .collect();
        report_all(&f, &c, &fresh, TaskStatus::Running, None).await;
        report_all(&f, &c, &stopping, TaskStatus::Stopped, Some(0)).await;
    }
    panic!("the rollout never completed");
}

#[tokio::test]
async fn the_circuit_breaker_fails_the_deployment_and_rolls_back() {
    let (f, c) = fixture_for_services().await;
    let mut req = create(&c, "web", "app", 2);
    req.circuit_breaker = CircuitBreaker {
        enable: true,
        rollback: true,
    };
    f.cp.services.create(req).await.unwrap();
    settle(&f, &c, "web").await;
    let good = service(&f, &c, "web").await.primary().unwrap().clone();
    definition(&f.cp, "app", vec![container("main", 66, None)]).await;
    f.cp.services
        .update(
            &c,
            &svc("web"),
            UpdateService {
                task_definition: Some(TaskDefinitionRef::Latest(Family::new("app").unwrap())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let bad_def = TaskDefinitionId::new(Family::new("app").unwrap(), 2);
    // Every new task fails to start; threshold for 2 desired is 3.
    for _ in 0..10 {
        reconcile(&f, &c, "web").await;
        let failing: Vec<TaskRecord> = live_tasks(&f, &c, "web")
            .await
            .into_iter()
            .filter(|t| {
                t.desired.task_definition == bad_def && t.desired.status == DesiredStatus::Running
            })
            .collect();
        if failing.is_empty() {
            break;
        }
        report_all(&f, &c, &failing, TaskStatus::Stopped, Some(1)).await;
    }
    let s = service(&f, &c, "web").await;
    assert!(
        s.events.iter().any(|e| e
            .message
            .contains("deployment failed: tasks failed to start")),
        "{:?}",
        s.events
    );
    assert_eq!(s.spec.task_definition, good.task_definition, "rolled back");
    assert!(s.primary().unwrap().rollback_of.is_some());
    settle(&f, &c, "web").await;
    let s = service(&f, &c, "web").await;
    assert_eq!(s.primary().unwrap().rollout_state, RolloutState::Completed);
    assert_eq!(s.running_count, 2);
    let history = f.cp.services.deployments(&c, &svc("web")).await.unwrap();
    assert!(history
        .iter()
        .any(|h| h.status == berth_core::status::ServiceDeploymentStatus::RollbackSuccessful));
}

#[tokio::test]
async fn daemon_runs_one_task_per_instance_including_later_ones() {
    let (f, c) = fixture_for_services().await;
    instance(&f.cp, &c, 100_000, 100_000).await;
    let mut req = create(&c, "agent", "app", 0);
    req.desired_count = None;
    req.scheduling_strategy = SchedulingStrategy::Daemon;
    f.cp.services.create(req).await.unwrap();
    settle(&f, &c, "agent").await;
    let tasks = live_tasks(&f, &c, "agent").await;
    assert_eq!(tasks.len(), 2);
    let instances: std::collections::BTreeSet<_> =
        tasks.iter().map(|t| t.desired.instance.clone()).collect();
    assert_eq!(instances.len(), 2);
    instance(&f.cp, &c, 100_000, 100_000).await;
    settle(&f, &c, "agent").await;
    assert_eq!(live_tasks(&f, &c, "agent").await.len(), 3);
    let s = service(&f, &c, "agent").await;
    assert_eq!(s.spec.desired_count, 3);
    assert_eq!(
        (
            s.spec.deployment.minimum_healthy_percent,
            s.spec.deployment.maximum_percent
        ),
        (0, 100)
    );
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let (f, c) = fixture_for_services().await;
    f.cp.services
        .create(create(&c, "web", "app", 1))
        .await
        .unwrap();
    let before = service(&f, &c, "web").await;
    let err =
        f.cp.services
            .create(create(&c, "web", "app", 2))
            .await
            .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (
            ErrorKind::InvalidParameter,
            "Creation of service was not idempotent."
        )
    );
    // Identical parameters: the existing service.
    assert_eq!(
        f.cp.services
            .create(create(&c, "web", "app", 1))
            .await
            .unwrap(),
        before
    );
    let mut bad = create(&c, "other", "app", 1);
    bad.minimum_healthy_percent = Some(150);
    assert_eq!(
        f.cp.services.create(bad).await.unwrap_err().kind,
        ErrorKind::InvalidParameter
    );
    let mut daemon_count = create(&c, "d", "app", 3);
    daemon_count.scheduling_strategy = SchedulingStrategy::Daemon;
    assert_eq!(
        f.cp.services.create(daemon_count).await.unwrap_err().kind,
        ErrorKind::InvalidParameter
    );
    let err =
        f.cp.services
            .create(create(&c, "x", "missing", 1))
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Client);
    let err =
        f.cp.services
            .delete(&c, &svc("web"), false)
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidParameter);
    let err =
        f.cp.services
            .update(&c, &svc("nope"), UpdateService::default())
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ServiceNotFound);
    assert_eq!(service(&f, &c, "web").await, before);
    let listed =
        f.cp.services
            .list(&c, None, None, &PageRequest::default())
            .await
            .unwrap();
    assert_eq!(listed.items, vec![svc("web")]);
    // Deleted: DRAINING, then INACTIVE once its tasks are down; updates are refused.
    f.cp.services.delete(&c, &svc("web"), true).await.unwrap();
    settle(&f, &c, "web").await;
    assert_eq!(service(&f, &c, "web").await.status, ServiceStatus::Inactive);
    let err =
        f.cp.services
            .update(&c, &svc("web"), UpdateService::default())
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ServiceNotActive);
}

#[tokio::test]
async fn unhealthy_tasks_are_replaced() {
    let (f, c) = fixture_for_services().await;
    let mut checked = container("main", 64, None);
    checked.health_check = true;
    definition(&f.cp, "checked", vec![checked]).await;
    f.cp.services
        .create(create(&c, "web", "checked", 1))
        .await
        .unwrap();
    reconcile(&f, &c, "web").await;
    let task = live_tasks(&f, &c, "web").await.remove(0);
    let unhealthy = TaskReport {
        containers: vec![ContainerReport {
            name: "main".into(),
            runtime_id: None,
            status: ContainerStatus::Running,
            exit_code: None,
            reason: None,
            bindings: None,
            health: Some(berth_core::status::HealthStatus::Unhealthy),
            image_digest: None,
        }],
        ..report(TaskStatus::Running, None)
    };
    agent_report(&f.cp, &c, &task.id, &unhealthy).await.unwrap();
    reconcile(&f, &c, "web").await;
    let described =
        f.cp.tasks
            .describe(&c, std::slice::from_ref(&task.id), false)
            .await
            .unwrap();
    let stopped = &described[0].as_ref().unwrap().record;
    assert_eq!(stopped.desired.status, DesiredStatus::Stopped);
    assert_eq!(
        stopped.stopped_reason(),
        Some("Task failed container health checks")
    );
    assert_eq!(
        stopped.stop_code(),
        Some(StopCode::ServiceSchedulerInitiated)
    );
    let live: Vec<TaskId> = live_tasks(&f, &c, "web")
        .await
        .into_iter()
        .filter(|t| t.desired.status == DesiredStatus::Running)
        .map(|t| t.id)
        .collect();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0], task.id);
}
