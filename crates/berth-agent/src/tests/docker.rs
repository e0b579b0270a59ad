//! One task on the real Docker Engine (busybox test image from `scripts/build-test-images`),
//! in real time. Skipped, with a message, when no daemon answers or the image is missing.

use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::labels;
use berth_core::status::{ContainerStatus, HealthStatus, StopCode, TaskStatus};
use berth_core::SystemClock;
use berth_runtime::{ContainerRuntime, DockerRuntime};
use serde_json::json;
use tokio::sync::watch;

use super::fake::FakeControlPlane;
use super::{container_report, init_logs};
use crate::{Agent, AgentConfig};

const BUSYBOX: &str = "berth-test/busybox:latest";

async fn docker() -> Option<DockerRuntime> {
    let rt = match DockerRuntime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("SKIPPED: no Docker daemon answers: {e}");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(15), rt.ensure_image(BUSYBOX)).await {
        Ok(Ok(())) => Some(rt),
        other => {
            eprintln!(
                "SKIPPED: {BUSYBOX} is not available ({other:?}); see scripts/build-test-images"
            );
            None
        }
    }
}

#[tokio::test]
async fn a_task_runs_and_stops_on_docker() {
    init_logs();
    let Some(runtime) = docker().await else {
        return;
    };
    let fake = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(&fake.url, dir.path());
    config.host_bind_ip = "127.0.0.1".into();
    config.poll_wait = Duration::from_secs(2);
    config.task_cleanup_wait = Duration::ZERO;
    // Other test runs may share this engine: no second orphan check within the test.
    config.orphan_check_interval = Duration::from_secs(3600);
    let runtime = Arc::new(runtime);
    let agent = Agent::new(config, Arc::clone(&runtime) as _, Arc::new(SystemClock))
        .await
        .unwrap();
    let (shutdown, rx) = watch::channel(false);
    let join = tokio::spawn(agent.run(rx));
    let instance = fake.instance("default").await;
    // A unique family keeps container names apart from concurrent runs.
    let family = format!("agent-docker-{}", uuid::Uuid::new_v4().simple());
    let task = fake.assign(
        &instance,
        json!({"family": family, "revision": 1, "containerDefinitions": [
            {"name": "db", "image": BUSYBOX, "essential": false, "memory": 32,
             "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
             "healthCheck": {"command": ["CMD-SHELL", "pidof sleep"], "interval": 1, "retries": 10},
             "portMappings": [{"containerPort": 8080}]},
            {"name": "app", "image": BUSYBOX, "memory": 32,
             "command": ["sh", "-c", "sleep 2; exit 3"],
             "environment": [{"name": "A", "value": "1"}],
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
        ]}),
    );
    let running = fake.wait_status(&task, TaskStatus::Running).await;
    let db = container_report(&running, "db");
    assert_eq!(db.health, Some(HealthStatus::Healthy));
    assert!(db.bindings.as_ref().unwrap()[0].host_port > 0);

    let stopped = fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(container_report(&stopped, "app").exit_code, Some(3));
    let db = container_report(&stopped, "db");
    assert_eq!(
        (db.status, db.exit_code),
        (ContainerStatus::Stopped, Some(0))
    );

    // The runner removes the containers after reporting STOPPED.
    let removed = async {
        while !runtime
            .list_labelled(labels::TASK_ARN, &task)
            .await
            .unwrap()
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), removed)
        .await
        .expect("the task's containers are removed");
    shutdown.send_replace(true);
    join.await.unwrap().unwrap();
}
