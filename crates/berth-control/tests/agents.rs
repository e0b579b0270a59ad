//! The agent channel: credentials, ownership of reports, and polls that only wake for their
//! own instance.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_control::agents::{AgentRegistration, Poll, PolledInstance};
use berth_control::join_tokens::{JoinScope, JoinTokenSecret, DEFAULT_LIFETIME};
use berth_core::ids::{ClusterName, InstanceId};
use berth_core::status::{DesiredStatus, TaskStatus};
use berth_core::ErrorKind;
use common::*;

async fn agent(f: &Fixture, c: &ClusterName, id: &str) -> (InstanceId, String) {
    let (view, credential) =
        f.cp.agents
            .register(
                &f.cp.instances,
                AgentRegistration {
                    instance: instance_request(c, 1024, 1000),
                    agent_id: id.into(),
                    credential: None,
                    join_token: Some(
                        f.cp.join_tokens
                            .mint(JoinScope::AllClusters, DEFAULT_LIFETIME, "test")
                            .await
                            .unwrap(),
                    ),
                    follows_all_clusters: false,
                },
            )
            .await
            .unwrap();
    (view.record.id, credential)
}

fn poll(
    c: &ClusterName,
    id: &InstanceId,
    credential: &str,
    digest: Option<String>,
    wait: Duration,
) -> Poll {
    Poll {
        instances: vec![PolledInstance {
            cluster: c.clone(),
            id: id.clone(),
            credential: credential.into(),
        }],
        follow_all_clusters: false,
        known_digest: digest,
        wait,
    }
}

#[tokio::test]
async fn reports_come_only_from_the_owning_agent() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let (a, cred_a) = agent(&f, &c, "i-a").await;
    let (b, cred_b) = agent(&f, &c, "i-b").await;
    definition(&f.cp, "f", vec![container("main", 600, None)]).await;
    let tasks = run(&f.cp, &c, "f", 2).await;
    let described = f.cp.tasks.describe(&c, &tasks, false).await.unwrap();
    let on_a = described
        .iter()
        .map(|v| v.as_ref().unwrap().record.clone())
        .find(|t| t.desired.instance == a)
        .unwrap();
    let stopped = report(TaskStatus::Stopped, Some(0));
    // Another agent, with its own valid credential, cannot report on a's task.
    let err =
        f.cp.agents
            .report(&f.cp.tasks, &c, &b, &cred_b, &on_a.id, &stopped)
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    // Nor can anyone with a's instance id but not its credential.
    let err =
        f.cp.agents
            .report(&f.cp.tasks, &c, &a, &cred_b, &on_a.id, &stopped)
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    // Nor the public SubmitTaskStateChange (the forged STOPPED of the issue).
    let err =
        f.cp.tasks
            .submit_state_change(&c, &on_a.id, &stopped)
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    let still =
        f.cp.tasks
            .describe(&c, std::slice::from_ref(&on_a.id), false)
            .await
            .unwrap();
    assert_eq!(
        still[0].as_ref().unwrap().record.observed.status,
        TaskStatus::Provisioning
    );
    // The owner can.
    let after =
        f.cp.agents
            .report(
                &f.cp.tasks,
                &c,
                &a,
                &cred_a,
                &on_a.id,
                &report(TaskStatus::Running, None),
            )
            .await
            .unwrap();
    assert_eq!(after.observed.status, TaskStatus::Running);
}

#[tokio::test]
async fn re_registration_needs_the_credential() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let (a, cred) = agent(&f, &c, "i-a").await;
    let again = |credential: Option<String>, join_token: Option<JoinTokenSecret>| {
        let mut req = instance_request(&c, 1024, 1_000_000_000);
        req.existing = Some(a.clone());
        AgentRegistration {
            instance: req,
            agent_id: "i-a".into(),
            credential,
            join_token,
            follows_all_clusters: false,
        }
    };
    let (same, cred2) =
        f.cp.agents
            .register(&f.cp.instances, again(Some(cred.clone()), None))
            .await
            .unwrap();
    assert_eq!(same.record.id, a);
    assert_eq!(cred2, cred);
    // A wrong credential, or none (even with a valid join token), is refused and the
    // instance is untouched.
    let before = f.cp.instances.get(&c, &a).await.unwrap().unwrap();
    let token =
        f.cp.join_tokens
            .mint(JoinScope::AllClusters, DEFAULT_LIFETIME, "test")
            .await
            .unwrap();
    for (credential, token) in [
        (Some("wrong".to_string()), None),
        (None, Some(token.clone())),
        (Some("wrong".to_string()), Some(token.clone())),
    ] {
        let err =
            f.cp.agents
                .register(&f.cp.instances, again(credential, token))
                .await
                .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AccessDenied, "{err}");
    }
    assert_eq!(f.cp.instances.get(&c, &a).await.unwrap().unwrap(), before);
    // And the public RegisterContainerInstance cannot rewrite an agent's instance.
    let mut public = instance_request(&c, 1024, 1_000_000_000);
    public.existing = Some(a.clone());
    let err = f.cp.instances.register(public).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Client);
}

#[tokio::test]
async fn unknown_instances_and_bad_credentials_are_refused() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let (a, _) = agent(&f, &c, "i-a").await;
    let bogus = InstanceId::new("0123456789abcdef0123456789abcdef").unwrap();
    let err =
        f.cp.agents
            .poll(
                &f.cp.task_definitions,
                poll(&c, &bogus, "x", None, Duration::ZERO),
            )
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidParameter);
    let err =
        f.cp.agents
            .poll(
                &f.cp.task_definitions,
                poll(&c, &a, "x", None, Duration::ZERO),
            )
            .await
            .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_wakes_for_its_own_assignments_only() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let (a, cred_a) = agent(&f, &c, "i-a").await;
    let (b, cred_b) = agent(&f, &c, "i-b").await;
    definition(&f.cp, "f", vec![container("main", 100, None)]).await;
    let first_a =
        f.cp.agents
            .poll(
                &f.cp.task_definitions,
                poll(&c, &a, &cred_a, None, Duration::ZERO),
            )
            .await
            .unwrap();
    let first_b =
        f.cp.agents
            .poll(
                &f.cp.task_definitions,
                poll(&c, &b, &cred_b, None, Duration::ZERO),
            )
            .await
            .unwrap();
    assert!(first_a.tasks.is_empty() && first_b.tasks.is_empty());
    let wait_a = {
        let cp = Arc::clone(&f.cp);
        let (c, a, cred_a, d) = (c.clone(), a.clone(), cred_a.clone(), first_a.digest.clone());
        tokio::spawn(async move {
            cp.agents
                .poll(
                    &cp.task_definitions,
                    poll(&c, &a, &cred_a, Some(d), Duration::from_secs(10)),
                )
                .await
        })
    };
    let wait_b = {
        let cp = Arc::clone(&f.cp);
        let (c, b, cred_b, d) = (c.clone(), b.clone(), cred_b.clone(), first_b.digest.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let answer = cp
                .agents
                .poll(
                    &cp.task_definitions,
                    poll(&c, &b, &cred_b, Some(d), Duration::from_secs(2)),
                )
                .await;
            (answer, started.elapsed())
        })
    };
    // Place one task, on a: binpack onto the instance with least memory left.
    let mut s = spec(&c, "f");
    s.started_by = Some("me".into());
    let placed =
        f.cp.launcher
            .launch(
                &s,
                &berth_control::launch::Target::Instances(vec![a.clone()]),
            )
            .await
            .unwrap();
    assert_eq!(placed.tasks.len(), 1);
    let answer_a = tokio::time::timeout(Duration::from_secs(5), wait_a)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer_a.tasks.len(), 1);
    assert_eq!(
        answer_a.tasks[0].task.desired.status,
        DesiredStatus::Running
    );
    // b's poll sat until its deadline: nothing of its own changed.
    let (answer_b, waited) = wait_b.await.unwrap();
    assert!(answer_b.unwrap().tasks.is_empty());
    assert!(waited >= Duration::from_secs(2), "b woke after {waited:?}");
    // StopTask changes a's assignment: its next poll answers at once.
    let again = {
        let cp = Arc::clone(&f.cp);
        let (c, a, cred_a, d) = (
            c.clone(),
            a.clone(),
            cred_a.clone(),
            answer_a.digest.clone(),
        );
        tokio::spawn(async move {
            cp.agents
                .poll(
                    &cp.task_definitions,
                    poll(&c, &a, &cred_a, Some(d), Duration::from_secs(10)),
                )
                .await
        })
    };
    f.cp.tasks
        .stop(&c, &placed.tasks[0].id, None)
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), again)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stopped.tasks[0].task.desired.status, DesiredStatus::Stopped);
}

#[tokio::test]
async fn new_instances_need_a_live_join_token_for_their_cluster() {
    let f = fixture();
    let c = cluster(&f.cp, "c").await;
    let other = cluster(&f.cp, "other").await;
    let register = |join_token: Option<JoinTokenSecret>| AgentRegistration {
        instance: instance_request(&c, 1024, 1000),
        agent_id: "i-new".into(),
        credential: None,
        join_token,
        follows_all_clusters: false,
    };
    let refused = |err: berth_core::Error, words: &str| {
        assert_eq!(err.kind, ErrorKind::AccessDenied, "{err}");
        assert!(err.message.contains(words), "{err}");
    };
    let create = |scope: JoinScope, lifetime: Duration| {
        f.cp.join_tokens
            .create(berth_control::join_tokens::CreateJoinToken {
                scope,
                lifetime,
                description: None,
                created_by: None,
            })
    };
    let err =
        f.cp.agents
            .register(&f.cp.instances, register(None))
            .await
            .unwrap_err();
    refused(err, "needs a cluster join token");

    // Right id, wrong secret: refused like an unknown token.
    let (_, good) = create(JoinScope::Cluster(c.clone()), DEFAULT_LIFETIME)
        .await
        .unwrap();
    let forged = JoinTokenSecret::parse(&format!("bjt_{}.{}", good.id(), "0".repeat(64))).unwrap();
    let err =
        f.cp.agents
            .register(&f.cp.instances, register(Some(forged)))
            .await
            .unwrap_err();
    refused(err, "not valid");

    // Another cluster's token.
    let (_, elsewhere) = create(JoinScope::Cluster(other.clone()), DEFAULT_LIFETIME)
        .await
        .unwrap();
    let err =
        f.cp.agents
            .register(&f.cp.instances, register(Some(elsewhere)))
            .await
            .unwrap_err();
    refused(err, "not valid for cluster c");

    // Expired.
    let (_, short) = create(JoinScope::Cluster(c.clone()), Duration::from_secs(60))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(61));
    let err =
        f.cp.agents
            .register(&f.cp.instances, register(Some(short)))
            .await
            .unwrap_err();
    refused(err, "expired");

    // Revoked.
    f.cp.join_tokens.revoke(good.id()).await.unwrap();
    let err =
        f.cp.agents
            .register(&f.cp.instances, register(Some(good.clone())))
            .await
            .unwrap_err();
    refused(err, "revoked");
    let listed =
        f.cp.instances
            .list(&c, None, None, &Default::default())
            .await
            .unwrap();
    assert!(listed.items.is_empty());

    // A live one admits, as often as it is used.
    let (record, live) = create(JoinScope::Cluster(c.clone()), DEFAULT_LIFETIME)
        .await
        .unwrap();
    assert!(!serde_json::to_string(&record)
        .unwrap()
        .contains(live.expose()));
    for _ in 0..2 {
        f.cp.agents
            .register(&f.cp.instances, register(Some(live.clone())))
            .await
            .unwrap();
    }
}
