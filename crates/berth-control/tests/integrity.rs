//! Placement integrity under concurrency, and what a task's life does to the accounting.
//! These are the regression tests for the overcommit and stuck-state defects.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_control::launch::Target;
use berth_core::records::ContainerOverrideSpec;
use berth_core::status::{DesiredStatus, StopCode, TaskStatus};
use berth_core::ErrorKind;
use common::*;

#[tokio::test]
async fn stopped_tasks_free_their_resources_and_observed_state_only_moves_forward() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let i = instance(&f.cp, &c, 1024, 1000).await;
    definition(&f.cp, "f", vec![container("main", 100, None)]).await;
    let t = run(&f.cp, &c, "f", 1).await.remove(0);
    assert_eq!(remaining_memory(&f.cp, &c, &i).await, 900);
    agent_report(&f.cp, &c, &t, &report(TaskStatus::Running, None))
        .await
        .unwrap();
    let view =
        f.cp.clusters
            .describe(std::slice::from_ref(&c), false)
            .await
            .unwrap();
    let counts = view[0].as_ref().unwrap().counts;
    assert_eq!((counts.running_tasks, counts.pending_tasks), (1, 0));
    // A late PENDING report does not move the task back.
    agent_report(&f.cp, &c, &t, &report(TaskStatus::Pending, None))
        .await
        .unwrap();
    let task =
        f.cp.tasks
            .describe(&c, std::slice::from_ref(&t), false)
            .await
            .unwrap();
    assert_eq!(
        task[0].as_ref().unwrap().record.observed.status,
        TaskStatus::Running
    );
    agent_report(&f.cp, &c, &t, &report(TaskStatus::Stopped, Some(3)))
        .await
        .unwrap();
    assert_eq!(remaining_memory(&f.cp, &c, &i).await, 1000);
    let task =
        f.cp.tasks
            .describe(&c, std::slice::from_ref(&t), false)
            .await
            .unwrap();
    let record = &task[0].as_ref().unwrap().record;
    assert_eq!(record.observed.status, TaskStatus::Stopped);
    assert_eq!(record.desired.status, DesiredStatus::Stopped);
    assert_eq!(record.observed.containers[0].exit_code, Some(3));
    // STOPPED is final and frees nothing twice.
    agent_report(&f.cp, &c, &t, &report(TaskStatus::Stopped, Some(0)))
        .await
        .unwrap();
    assert_eq!(remaining_memory(&f.cp, &c, &i).await, 1000);
}

/// Issue: 20 concurrent RunTask calls of 300 MiB tasks on a 1,000 MiB instance placed up to
/// 8 tasks when the cluster held many STOPPED tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_run_task_never_overcommits() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    // Many STOPPED tasks first: the old race window grew with the cluster.
    let filler = instance(&f.cp, &c, 100_000, 100_000).await;
    definition(&f.cp, "small", vec![container("main", 8, None)]).await;
    for _ in 0..150 {
        for t in run(&f.cp, &c, "small", 10).await {
            agent_report(&f.cp, &c, &t, &report(TaskStatus::Stopped, Some(0)))
                .await
                .unwrap();
        }
    }
    f.cp.instances
        .deregister(&c, &filler, false, &f.cp.tasks)
        .await
        .unwrap();
    let i = instance(&f.cp, &c, 10_000, 1000).await;
    definition(&f.cp, "big", vec![container("main", 300, None)]).await;
    for round in 0..3 {
        let mut handles = Vec::new();
        for _ in 0..20 {
            let cp = Arc::clone(&f.cp);
            let c = c.clone();
            handles.push(tokio::spawn(async move {
                cp.launcher.launch(&spec(&c, "big"), &place(1)).await
            }));
        }
        let mut placed = Vec::new();
        for h in handles {
            let outcome = h.await.unwrap().unwrap();
            placed.extend(outcome.tasks.into_iter().map(|t| t.id));
        }
        assert_eq!(
            placed.len(),
            3,
            "round {round}: 3 × 300 MiB fit in 1,000 MiB"
        );
        assert_eq!(remaining_memory(&f.cp, &c, &i).await, 100);
        for t in placed {
            agent_report(&f.cp, &c, &t, &report(TaskStatus::Stopped, Some(0)))
                .await
                .unwrap();
        }
    }
}

/// Issue: a negative memoryReservation override turned a 1,000 MiB instance into
/// 1,001,000 MiB free. Overrides are validated at the API edge; here the accounting itself
/// is checked not to wrap whatever it is given.
#[tokio::test]
async fn huge_overrides_cannot_create_capacity() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let i = instance(&f.cp, &c, 1024, 1000).await;
    definition(&f.cp, "f", vec![container("main", 100, None)]).await;
    let mut spec = spec(&c, "f");
    spec.overrides.containers.push(ContainerOverrideSpec {
        name: "main".into(),
        memory_reservation: Some(u64::MAX),
        ..Default::default()
    });
    let outcome = f.cp.launcher.launch(&spec, &place(1)).await.unwrap();
    assert!(outcome.tasks.is_empty());
    assert_eq!(outcome.failures[0].reason, "RESOURCE:MEMORY");
    assert_eq!(remaining_memory(&f.cp, &c, &i).await, 1000);
}

/// Issue: DeleteCluster raced RunTask and deleted clusters with live tasks (the `berth dev`
/// agent's own instance does not block deletion, so only the tasks do).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_cluster_never_leaves_live_tasks_behind() {
    let f = fixture();
    definition(&f.cp, "f", vec![container("main", 8, None)]).await;
    let mut deleted_rounds = 0;
    let mut refused_rounds = 0;
    for round in 0..30 {
        let c = cluster(&f.cp, &format!("race{round}")).await;
        f.cp.agents
            .register(
                &f.cp.instances,
                berth_control::agents::AgentRegistration {
                    instance: instance_request(&c, 10_000, 10_000),
                    agent_id: "i-dev".into(),
                    credential: None,
                    join_token: Some(
                        f.cp.join_tokens
                            .mint(
                                berth_control::join_tokens::JoinScope::AllClusters,
                                berth_control::join_tokens::DEFAULT_LIFETIME,
                                "test",
                            )
                            .await
                            .unwrap(),
                    ),
                    follows_all_clusters: true,
                },
            )
            .await
            .unwrap();
        let runner = {
            let cp = Arc::clone(&f.cp);
            let c = c.clone();
            tokio::spawn(async move {
                let mut placed = 0;
                for _ in 0..4 {
                    if let Ok(o) = cp.launcher.launch(&spec(&c, "f"), &place(1)).await {
                        placed += o.tasks.len();
                    }
                    tokio::task::yield_now().await;
                }
                placed
            })
        };
        // Let the runner get going on some rounds and not on others.
        for _ in 0..(round % 4) {
            tokio::task::yield_now().await;
        }
        let deleted = f.cp.clusters.delete(&c).await;
        let placed = runner.await.unwrap();
        match deleted {
            Ok(_) => {
                deleted_rounds += 1;
                // Deleted: nothing of the cluster may remain, and a new cluster of the same
                // name starts empty and can be deleted again.
                let c = cluster(&f.cp, &format!("race{round}")).await;
                let view =
                    f.cp.clusters
                        .describe(std::slice::from_ref(&c), false)
                        .await
                        .unwrap();
                let counts = view[0].as_ref().unwrap().counts;
                assert_eq!(
                    (
                        counts.running_tasks,
                        counts.pending_tasks,
                        counts.registered_instances
                    ),
                    (0, 0, 0),
                    "round {round}: a recreated cluster has leftovers ({placed} tasks were placed)"
                );
                f.cp.clusters.delete(&c).await.unwrap();
            }
            Err(e) => {
                refused_rounds += 1;
                assert_eq!(
                    e.kind,
                    ErrorKind::ClusterContainsTasks,
                    "round {round}: {e}"
                );
                assert!(placed > 0, "round {round}: refused with no tasks placed");
            }
        }
    }
    eprintln!("deleted {deleted_rounds} rounds, refused {refused_rounds}");
}

/// Issue: DeregisterContainerInstance (force=false) raced RunTask and left live tasks on an
/// INACTIVE instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deregister_without_force_never_strands_tasks() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    definition(&f.cp, "f", vec![container("main", 8, None)]).await;
    for round in 0..20 {
        let i = instance(&f.cp, &c, 10_000, 10_000).await;
        let runner = {
            let cp = Arc::clone(&f.cp);
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    let _ = cp.launcher.launch(&spec(&c, "f"), &place(1)).await;
                }
            })
        };
        let result = f.cp.instances.deregister(&c, &i, false, &f.cp.tasks).await;
        runner.await.unwrap();
        let view =
            f.cp.instances
                .describe(&c, std::slice::from_ref(&i), false)
                .await
                .unwrap();
        let view = view[0].as_ref().unwrap();
        if result.is_ok() {
            assert_eq!(
                view.usage.tasks(),
                0,
                "round {round}: live tasks on a deregistered instance"
            );
        } else {
            // Clean up for the next round.
            f.cp.instances
                .deregister(&c, &i, true, &f.cp.tasks)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn force_deregistration_stops_the_instances_tasks() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let i = instance(&f.cp, &c, 1024, 1000).await;
    definition(&f.cp, "f", vec![container("main", 100, None)]).await;
    let tasks = run(&f.cp, &c, "f", 2).await;
    let err =
        f.cp.instances
            .deregister(&c, &i, false, &f.cp.tasks)
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Client);
    f.cp.instances
        .deregister(&c, &i, true, &f.cp.tasks)
        .await
        .unwrap();
    for v in f.cp.tasks.describe(&c, &tasks, false).await.unwrap() {
        let r = v.unwrap().record;
        assert_eq!(r.observed.status, TaskStatus::Stopped);
        assert_eq!(r.stop_code(), Some(StopCode::TaskFailedToStart));
        assert_eq!(
            r.stopped_reason(),
            Some(berth_control::instances::REASON_DEREGISTERED)
        );
    }
    // The cluster can go now.
    f.cp.clusters.delete(&c).await.unwrap();
}

#[tokio::test]
async fn a_lost_agents_tasks_are_declared_stopped() {
    let mut config = config();
    config.agent_timeout = Duration::from_millis(300);
    config.agent_lost_after = Duration::from_secs(600);
    let f = fixture_with(config);
    let c = cluster(&f.cp, "c").await;
    let i = instance(&f.cp, &c, 1024, 1000).await;
    definition(&f.cp, "f", vec![container("main", 100, None)]).await;
    let t = run(&f.cp, &c, "f", 1).await.remove(0);
    // Nothing renews the instance's session: it expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v =
            f.cp.instances
                .describe(&c, std::slice::from_ref(&i), false)
                .await
                .unwrap();
        if !v[0].as_ref().unwrap().agent_connected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requeue =
        f.cp.instances
            .reconcile_liveness(&c, &i, &f.cp.tasks)
            .await
            .unwrap();
    assert_eq!(requeue, Some(Duration::from_secs(600)));
    f.clock.advance(Duration::from_secs(300));
    let requeue =
        f.cp.instances
            .reconcile_liveness(&c, &i, &f.cp.tasks)
            .await
            .unwrap();
    assert_eq!(requeue, Some(Duration::from_secs(300)));
    let still =
        f.cp.tasks
            .describe(&c, std::slice::from_ref(&t), false)
            .await
            .unwrap();
    assert_eq!(
        still[0].as_ref().unwrap().record.observed.status,
        TaskStatus::Provisioning
    );
    f.clock.advance(Duration::from_secs(301));
    assert_eq!(
        f.cp.instances
            .reconcile_liveness(&c, &i, &f.cp.tasks)
            .await
            .unwrap(),
        None
    );
    let stopped =
        f.cp.tasks
            .describe(&c, std::slice::from_ref(&t), false)
            .await
            .unwrap();
    let r = &stopped[0].as_ref().unwrap().record;
    assert_eq!(r.observed.status, TaskStatus::Stopped);
    assert!(
        r.stopped_reason().unwrap().contains("unreachable"),
        "{:?}",
        r.stopped_reason()
    );
    assert_eq!(remaining_memory(&f.cp, &c, &i).await, 1000);
}

#[tokio::test]
async fn client_token_makes_run_task_idempotent() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    instance(&f.cp, &c, 1024, 1000).await;
    definition(&f.cp, "f", vec![container("main", 100, None)]).await;
    let mut s = spec(&c, "f");
    s.client_token = Some("once".into());
    let first = f.cp.launcher.launch(&s, &place(2)).await.unwrap();
    let again = f.cp.launcher.launch(&s, &place(2)).await.unwrap();
    let ids = |o: &berth_control::launch::LaunchOutcome| {
        o.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again));
    let third =
        f.cp.launcher
            .launch(&spec(&c, "f"), &place(1))
            .await
            .unwrap();
    assert_eq!(third.tasks.len(), 1, "{:?}", third.failures);
    let view =
        f.cp.clusters
            .describe(std::slice::from_ref(&c), false)
            .await
            .unwrap();
    assert_eq!(view[0].as_ref().unwrap().counts.pending_tasks, 3);
}

#[tokio::test]
async fn start_task_names_instances_and_sees_its_own_earlier_placements() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let i = instance(&f.cp, &c, 1024, 250).await;
    definition(&f.cp, "f", vec![container("main", 100, Some(8080))]).await;
    let outcome =
        f.cp.launcher
            .launch(
                &spec(&c, "f"),
                &Target::Instances(vec![i.clone(), i.clone()]),
            )
            .await
            .unwrap();
    assert_eq!(outcome.tasks.len(), 1);
    assert_eq!(outcome.failures[0].reason, "RESOURCE:PORTS");
}
