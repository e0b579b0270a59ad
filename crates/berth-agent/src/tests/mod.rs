//! The agent against a fake control plane (real HTTP) and the simulated runtime, in tokio's
//! paused time: no Docker, no real sleeps.

mod docker;
mod fake;
mod fields;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::labels;
use berth_core::records::{ContainerReport, TaskReport};
use berth_core::status::{
    ContainerStatus, DesiredStatus, HealthStatus, Protocol, StopCode, TaskStatus,
};
use berth_core::{ManualClock, Timestamp};
use berth_runtime::{
    ContainerRuntime, ContainerSpec, HealthScript, ImageBehavior, SimContainer, SimulatedRuntime,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::fake::{FakeControlPlane, CONTROL_PLANE_ID};
use crate::channel::Channel;
use crate::identity::{Identity, SavedInstance};
use crate::orphans::{Asker, Janitor};
use crate::{Agent, AgentConfig};

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "berth_agent=info".into()),
        )
        .try_init();
}

/// What the agents' (manual) clock says.
const START_MILLIS: i64 = 1_700_000_000_000;

/// One host: a control plane, a container engine and the agent's data dir.
struct Host {
    fake: FakeControlPlane,
    runtime: Arc<SimulatedRuntime>,
    dir: tempfile::TempDir,
}

struct RunningAgent {
    agent_id: String,
    shutdown: watch::Sender<bool>,
    join: JoinHandle<anyhow::Result<()>>,
}

impl RunningAgent {
    async fn stop(self) {
        self.shutdown.send_replace(true);
        self.join.await.unwrap().unwrap();
    }
}

impl Host {
    async fn new() -> Self {
        Self::with_runtime(SimulatedRuntime::new()).await
    }

    async fn with_runtime(runtime: SimulatedRuntime) -> Self {
        init_logs();
        Self {
            fake: FakeControlPlane::start().await,
            runtime: Arc::new(runtime),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> AgentConfig {
        let mut config = AgentConfig::new(&self.fake.url, self.dir.path());
        config.poll_wait = Duration::from_secs(10);
        config.host_bind_ip = "127.0.0.1".into();
        config.task_cleanup_wait = Duration::ZERO;
        config
    }

    async fn start_agent(&self) -> RunningAgent {
        self.start_agent_with(self.config()).await
    }

    async fn start_agent_with(&self, config: AgentConfig) -> RunningAgent {
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(START_MILLIS)));
        let runtime: Arc<dyn ContainerRuntime> = Arc::clone(&self.runtime) as _;
        let agent = Agent::new(config, runtime, clock).await.unwrap();
        let agent_id = agent.agent_id().to_string();
        let (shutdown, rx) = watch::channel(false);
        RunningAgent {
            agent_id,
            shutdown,
            join: tokio::spawn(agent.run(rx)),
        }
    }

    fn containers(&self, task: &str) -> Vec<SimContainer> {
        self.runtime
            .containers()
            .into_iter()
            .filter(|c| c.spec.labels.get(labels::TASK_ARN).map(String::as_str) == Some(task))
            .collect()
    }

    fn container(&self, task: &str, name: &str) -> SimContainer {
        self.containers(task)
            .into_iter()
            .find(|c| c.spec.labels[labels::CONTAINER_NAME] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// Waits (in tokio time) until the task has no containers left.
    async fn wait_containers_gone(&self, task: &str) {
        self.fake
            .wait_for("the task's containers to be removed", |_| {
                self.containers(task).is_empty().then_some(())
            })
            .await;
    }
}

fn task_definition(containers: Value) -> Value {
    json!({"family": "web", "revision": 1, "containerDefinitions": containers})
}

fn container_report<'a>(report: &'a TaskReport, name: &str) -> &'a ContainerReport {
    report
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {report:?}"))
}

fn statuses(fake: &FakeControlPlane, task: &str) -> Vec<TaskStatus> {
    let mut out: Vec<TaskStatus> = fake
        .with(|s| s.reports_of(task))
        .into_iter()
        .map(|r| r.status)
        .collect();
    out.dedup();
    out
}

fn delayed_start() -> ImageBehavior {
    ImageBehavior::default().with_start_delay(Duration::from_secs(1))
}

#[tokio::test(start_paused = true)]
async fn a_task_runs_in_dependency_order_and_reports_bindings() {
    let host = Host::with_runtime(
        SimulatedRuntime::builder()
            .image("sim/app", delayed_start())
            .image("sim/db", delayed_start())
            .image("sim/init", delayed_start())
            .build(),
    )
    .await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app", "portMappings": [{"containerPort": 80}],
             "dependsOn": [{"containerName": "init", "condition": "SUCCESS"},
                           {"containerName": "db", "condition": "START"}]},
            {"name": "db", "image": "sim/db"},
            {"name": "init", "image": "sim/init", "essential": false, "command": ["exit", "0"]},
        ])),
    );
    let running = host.fake.wait_status(&task, TaskStatus::Running).await;

    let (app, db, init) = (
        host.container(&task, "app"),
        host.container(&task, "db"),
        host.container(&task, "init"),
    );
    assert!(app.started_at.unwrap() > init.finished_at.unwrap());
    assert!(app.started_at.unwrap() > db.started_at.unwrap());
    assert_eq!(host.runtime.counters().starts, 3);

    let app_report = container_report(&running, "app");
    assert_eq!(app_report.status, ContainerStatus::Running);
    let bindings = app_report.bindings.clone().unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].container_port, 80);
    assert!(bindings[0].host_port >= 32768);
    assert_eq!(bindings[0].protocol, Protocol::Tcp);
    assert_eq!(bindings[0].bind_ip, "127.0.0.1");
    let init_report = container_report(&running, "init");
    assert_eq!(
        (init_report.status, init_report.exit_code),
        (ContainerStatus::Stopped, Some(0))
    );
    // Timestamps come from the injected clock.
    assert_eq!(
        running.pull_started_at,
        Some(Timestamp::from_millis(START_MILLIS))
    );
    assert_eq!(
        running.pull_stopped_at,
        Some(Timestamp::from_millis(START_MILLIS))
    );
    assert_eq!(
        statuses(&host.fake, &task),
        [TaskStatus::Pending, TaskStatus::Running]
    );

    assert_eq!(app.spec.labels[labels::AGENT], agent.agent_id);
    assert_eq!(app.spec.labels[labels::CONTROL_PLANE], CONTROL_PLANE_ID);
    assert_eq!(app.spec.labels[labels::CLUSTER], "default");
    agent.stop().await;
    // A graceful shutdown leaves the task running.
    assert!(host
        .containers(&task)
        .iter()
        .all(|c| c.status.state == berth_runtime::RunState::Running
            || c.spec.labels[labels::CONTAINER_NAME] == "init"));
}

#[tokio::test(start_paused = true)]
async fn an_essential_exit_stops_the_task_and_its_sidecar() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app", "command": ["exit-after", "5", "3"]},
            {"name": "sidecar", "image": "sim/app", "essential": false},
        ])),
    );
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(
        stopped.execution_stopped_at,
        Some(Timestamp::from_millis(START_MILLIS))
    );
    assert_eq!(container_report(&stopped, "app").exit_code, Some(3));
    let sidecar = container_report(&stopped, "sidecar");
    assert_eq!(
        (sidecar.status, sidecar.exit_code),
        (ContainerStatus::Stopped, Some(143))
    );
    assert_eq!(
        statuses(&host.fake, &task),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Stopping,
            TaskStatus::Deprovisioning,
            TaskStatus::Stopped
        ]
    );
    host.wait_containers_gone(&task).await;
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_order_kills_a_container_that_ignores_sigterm_after_its_stop_timeout() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "stubborn", "image": "sim/app", "command": ["ignore-sigterm", "run"],
             "stopTimeout": 5},
            {"name": "polite", "image": "sim/app"},
        ])),
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let ordered = Instant::now();
    host.fake.set_desired(&task, DesiredStatus::Stopped);
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    let took = ordered.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(container_report(&stopped, "stubborn").exit_code, Some(137));
    assert_eq!(container_report(&stopped, "polite").exit_code, Some(143));
    // The control plane's stop order carries the reason.
    assert_eq!((stopped.reason, stopped.stop_code), (None, None));
    host.wait_containers_gone(&task).await;
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_gone_from_the_assignment_is_stopped() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app"}])),
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    // As if force-stopped: the control plane no longer assigns it.
    host.fake.with(|s| s.tasks.remove(&task));
    host.wait_containers_gone(&task).await;
    assert_eq!(host.runtime.counters().stops, 1);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_container_killed_from_outside_is_reported() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app"}])),
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    host.runtime
        .kill(&host.container(&task, "app").id, 137)
        .unwrap();
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(container_report(&stopped, "app").exit_code, Some(137));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pull_failure_fails_the_task_to_start() {
    let host = Host::with_runtime(
        SimulatedRuntime::builder()
            .image(
                "registry.example/missing:1",
                ImageBehavior::default().failing_pull(),
            )
            .build(),
    )
    .await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "registry.example/missing:1"},
        ])),
    );
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.reason.clone().unwrap();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert_eq!(container_report(&stopped, "app").reason, Some(reason));
    assert_eq!(host.runtime.counters().creates, 0);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_healthy_dependency_is_waited_for() {
    let host = Host::with_runtime(
        SimulatedRuntime::builder()
            .image(
                "sim/db",
                ImageBehavior::default()
                    .with_health(HealthScript::HealthyAfter(Duration::from_secs(10))),
            )
            .build(),
    )
    .await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app",
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
            {"name": "db", "image": "sim/db",
             "healthCheck": {"command": ["CMD", "true"], "interval": 5}},
        ])),
    );
    let running = host.fake.wait_status(&task, TaskStatus::Running).await;
    let (app, db) = (host.container(&task, "app"), host.container(&task, "db"));
    let waited = app.started_at.unwrap() - db.started_at.unwrap();
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    assert_eq!(
        container_report(&running, "db").health,
        Some(HealthStatus::Healthy)
    );
    assert_eq!(container_report(&running, "app").health, None);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_never_gets_healthy_times_out() {
    let host = Host::with_runtime(
        SimulatedRuntime::builder()
            .image(
                "sim/db",
                ImageBehavior::default().with_health(HealthScript::NeverReports),
            )
            .build(),
    )
    .await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app",
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
            {"name": "db", "image": "sim/db", "startTimeout": 20,
             "healthCheck": {"command": ["CMD", "true"]}},
        ])),
    );
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.reason.unwrap();
    assert!(reason.contains("db did not reach HEALTHY"), "{reason}");
    assert_eq!(host.container_count_started("app"), 0);
    agent.stop().await;
}

impl Host {
    fn container_count_started(&self, name: &str) -> u32 {
        self.runtime
            .containers()
            .iter()
            .filter(|c| c.spec.labels[labels::CONTAINER_NAME] == name)
            .map(|c| c.times_started)
            .sum()
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_adopts_its_containers_without_starting_them_again() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app", "portMappings": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "sim/app", "essential": false},
        ])),
    );
    let first = host.fake.wait_status(&task, TaskStatus::Running).await;
    agent.stop().await;
    let before = host.runtime.counters();

    let again = host.start_agent().await;
    // The new runner reports the task it adopted.
    let second = host
        .fake
        .wait_for("the adopted task to be reported", |s| {
            let running: Vec<TaskReport> = s
                .reports_of(&task)
                .into_iter()
                .filter(|r| r.status == TaskStatus::Running)
                .collect();
            (running.len() == 2).then(|| running[1].clone())
        })
        .await;
    let after = host.runtime.counters();
    assert_eq!(
        (after.creates, after.starts),
        (before.creates, before.starts)
    );
    assert_eq!(
        container_report(&second, "app").bindings,
        container_report(&first, "app").bindings
    );
    assert_eq!(
        container_report(&second, "app").runtime_id,
        container_report(&first, "app").runtime_id
    );
    // Same instance, by its saved credential.
    host.fake.with(|s| {
        assert_eq!(s.instances.len(), 1);
        assert_eq!(
            s.registrations[1].container_instance_arn.as_deref(),
            Some(instance.as_str())
        );
    });
    // The adopted runner owns the task: it stops it when told.
    host.fake.set_desired(&task, DesiredStatus::Stopped);
    host.fake.wait_status(&task, TaskStatus::Stopped).await;
    host.wait_containers_gone(&task).await;
    again.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_already_ran_is_not_started_again_when_its_containers_are_gone() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign_with(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app"}])),
        |t| t.known_status = TaskStatus::Running,
    );
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert!(stopped.reason.unwrap().contains("lost"));
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    let counters = host.runtime.counters();
    assert_eq!((counters.creates, counters.starts), (0, 0));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_report_answer_that_wants_the_task_stopped_stops_it() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app"}])),
    );
    host.fake
        .with(|s| s.tasks.get_mut(&task).unwrap().answer_desired = Some(DesiredStatus::Stopped));
    host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(host.runtime.counters().starts, 0);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn transient_report_failures_are_retried() {
    let host = Host::new().await;
    host.fake.with(|s| s.fail_reports = 3);
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app"}])),
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    assert_eq!(
        statuses(&host.fake, &task),
        [TaskStatus::Pending, TaskStatus::Running]
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn registration_is_saved_owner_only_and_reused() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    agent.stop().await;

    let saved = Identity::load_or_create(host.dir.path()).unwrap();
    let credential = host
        .fake
        .with(|s| s.instances[&instance].credential.clone());
    assert_eq!(
        saved.instances["default"],
        SavedInstance {
            container_instance_arn: instance.clone(),
            credential: credential.clone(),
        }
    );
    assert_eq!(saved.control_plane_id.as_deref(), Some(CONTROL_PLANE_ID));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Identity::path(host.dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let again = host.start_agent().await;
    host.fake
        .wait_for("the second registration", |s| {
            (s.registrations.len() == 2).then_some(())
        })
        .await;
    host.fake.with(|s| {
        let r = &s.registrations[1];
        assert_eq!(r.container_instance_arn.as_deref(), Some(instance.as_str()));
        assert_eq!(r.credential.as_deref(), Some(credential.as_str()));
        assert_eq!(r.agent_id, saved.agent_id);
        assert_eq!(s.instances[&instance].agent_id, saved.agent_id);
        assert_eq!(r.resources.cpu, 4 * 1024);
        assert_eq!(r.resources.memory, 8 * 1024);
        assert!(r.resources.tcp_ports.contains(&22));
        assert_eq!(s.instances.len(), 1);
    });
    again.stop().await;
}

fn save_bogus_identity(dir: &Path) -> String {
    let mut identity = Identity::load_or_create(dir).unwrap();
    identity.instances.insert(
        "default".into(),
        SavedInstance {
            container_instance_arn:
                "arn:aws:ecs:us-east-1:000000000000:container-instance/default/gone".into(),
            credential: "stale".into(),
        },
    );
    identity.save(dir).unwrap();
    identity.agent_id
}

#[tokio::test(start_paused = true)]
async fn a_refused_credential_registers_a_new_instance() {
    let host = Host::new().await;
    host.fake.with(|s| s.refuse_unknown_credentials = true);
    let agent_id = save_bogus_identity(host.dir.path());
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    host.fake.with(|s| {
        assert_eq!(s.registrations.len(), 2);
        assert_eq!(s.registrations[0].credential.as_deref(), Some("stale"));
        assert_eq!(s.registrations[1].credential, None);
        assert_eq!(s.registrations[1].agent_id, agent_id);
    });
    agent.stop().await;
    let saved = Identity::load_or_create(host.dir.path()).unwrap();
    assert_eq!(saved.instances["default"].container_instance_arn, instance);
}

#[tokio::test(start_paused = true)]
async fn the_default_cluster_is_created_on_first_use() {
    let host = Host::new().await;
    host.fake.with(|s| s.clusters.clear());
    let agent = host.start_agent().await;
    host.fake.instance("default").await;
    assert_eq!(host.fake.with(|s| s.created_clusters.clone()), ["default"]);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_poll_makes_the_agent_register_again() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    // The control plane lost the instance (e.g. its store was reset).
    host.fake.with(|s| s.instances.clear());
    let new = host
        .fake
        .wait_for("a new registration", |s| s.instance_of("default"))
        .await;
    assert_ne!(new, instance);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn following_all_clusters_joins_and_leaves_them() {
    let host = Host::new().await;
    host.fake.with(|s| s.clusters.insert("blue".into()));
    let mut config = host.config();
    config.follow_all_clusters = true;
    let agent = host.start_agent_with(config).await;
    host.fake.instance("default").await;
    let blue = host.fake.instance("blue").await;
    assert!(host
        .fake
        .with(|s| s.registrations.iter().all(|r| r.follow_all_clusters)));
    // Cluster deleted: the instance goes with it.
    host.fake.with(|s| {
        s.clusters.remove("blue");
        s.instances.get_mut(&blue).unwrap().registered = false;
    });
    host.fake
        .wait_for("the agent to forget blue", |_| {
            let saved = Identity::load_or_create(host.dir.path()).ok()?;
            (!saved.instances.contains_key("blue")).then_some(())
        })
        .await;
    agent.stop().await;
    let saved = Identity::load_or_create(host.dir.path()).unwrap();
    assert_eq!(saved.instances.keys().collect::<Vec<_>>(), ["default"]);
}

/// A container as another agent (or none) would have left it.
async fn leave_container(
    runtime: &SimulatedRuntime,
    name: &str,
    task: &str,
    agent: &str,
    control_plane: Option<&str>,
) -> String {
    let mut labels = std::collections::BTreeMap::from([
        (labels::TASK_ARN.to_string(), task.to_string()),
        (labels::CONTAINER_NAME.to_string(), "app".to_string()),
        (labels::AGENT.to_string(), agent.to_string()),
    ]);
    if let Some(cp) = control_plane {
        labels.insert(labels::CONTROL_PLANE.to_string(), cp.to_string());
    }
    runtime.ensure_image("sim/app").await.unwrap();
    let id = runtime
        .create(&ContainerSpec {
            name: name.into(),
            image: "sim/app".into(),
            labels,
            ..ContainerSpec::default()
        })
        .await
        .unwrap();
    runtime.start(&id).await.unwrap();
    id
}

#[tokio::test(start_paused = true)]
async fn orphans_of_a_lost_identity_are_removed_only_after_two_checks_a_grace_apart() {
    let host = Host::new().await;
    let rt = &host.runtime;
    // A task another agent on this engine runs: live.
    let fake_instance = host.fake.with(|s| {
        s.instances.insert(
            "ci-other".into(),
            fake::Instance {
                cluster: "default".into(),
                agent_id: "i-other".into(),
                credential: "c".into(),
                registered: true,
            },
        );
        "ci-other".to_string()
    });
    let live = host.fake.assign(
        &fake_instance,
        task_definition(json!([{"name": "app", "image": "sim/app"}])),
    );
    let gone = "arn:aws:ecs:us-east-1:000000000000:task/default/gone";
    let orphan = leave_container(rt, "orphan", gone, "i-lost", Some(CONTROL_PLANE_ID)).await;
    let alive = leave_container(rt, "alive", &live, "i-other", Some(CONTROL_PLANE_ID)).await;
    let unlabelled = leave_container(rt, "unlabelled", gone, "i-lost", None).await;
    let elsewhere = leave_container(rt, "elsewhere", gone, "i-lost", Some("cp-other")).await;
    let own = leave_container(rt, "own", gone, "i-self", Some(CONTROL_PLANE_ID)).await;

    let mut janitor = Janitor::new(
        Arc::clone(&host.runtime) as _,
        Channel::new(&host.fake.url, None).unwrap(),
        "i-self".into(),
        Duration::from_secs(60),
    );
    let asker = Asker {
        control_plane_id: CONTROL_PLANE_ID.into(),
        instance: berth_agent_proto::InstanceCredential {
            cluster: "default".into(),
            container_instance_arn: fake_instance.clone(),
            credential: "c".into(),
        },
    };
    let present = |id: &str| rt.container(id).is_some();

    janitor.check(&asker).await.unwrap();
    assert!(present(&orphan), "one check is not enough");
    tokio::time::advance(Duration::from_secs(30)).await;
    janitor.check(&asker).await.unwrap();
    assert!(
        present(&orphan),
        "two checks within the grace are not enough"
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    janitor.check(&asker).await.unwrap();
    assert!(!present(&orphan));
    for id in [&alive, &unlabelled, &elsewhere, &own] {
        assert!(present(id));
    }
    // Only the foreign, labelled containers were asked about.
    let asked = host.fake.with(|s| s.ownership_questions.clone());
    assert_eq!(asked.len(), 3);
    let mut first = asked[0].clone();
    first.sort();
    let mut expected = vec![gone.to_string(), live.clone()];
    expected.sort();
    assert_eq!(first, expected);
}

#[tokio::test(start_paused = true)]
async fn an_orphan_that_turns_out_live_is_spared() {
    let host = Host::new().await;
    let instance = host.fake.with(|s| {
        s.instances.insert(
            "ci".into(),
            fake::Instance {
                cluster: "default".into(),
                agent_id: "i-other".into(),
                credential: "c".into(),
                registered: true,
            },
        );
        "ci".to_string()
    });
    let task = "arn:aws:ecs:us-east-1:000000000000:task/default/late";
    let id = leave_container(
        &host.runtime,
        "late",
        task,
        "i-lost",
        Some(CONTROL_PLANE_ID),
    )
    .await;
    let mut janitor = Janitor::new(
        Arc::clone(&host.runtime) as _,
        Channel::new(&host.fake.url, None).unwrap(),
        "i-self".into(),
        Duration::from_secs(60),
    );
    let asker = Asker {
        control_plane_id: CONTROL_PLANE_ID.into(),
        instance: berth_agent_proto::InstanceCredential {
            cluster: "default".into(),
            container_instance_arn: instance.clone(),
            credential: "c".into(),
        },
    };
    janitor.check(&asker).await.unwrap();
    // The task shows up as live in between: the count starts over.
    host.fake.with(|s| {
        s.tasks.insert(
            task.into(),
            fake::Task {
                assigned: berth_agent_proto::AssignedTask {
                    task_arn: task.into(),
                    cluster: "default".into(),
                    container_instance_arn: instance.clone(),
                    desired_status: DesiredStatus::Running,
                    known_status: TaskStatus::Running,
                    family: "f".into(),
                    revision: 1,
                    task_definition: Value::Null,
                    overrides: Value::Null,
                    cpu: None,
                    memory: None,
                    group: None,
                    availability_zone: None,
                    container_arns: Default::default(),
                },
                answer_desired: None,
            },
        )
    });
    tokio::time::advance(Duration::from_secs(60)).await;
    janitor.check(&asker).await.unwrap();
    host.fake.with(|s| s.tasks.clear());
    tokio::time::advance(Duration::from_secs(60)).await;
    janitor.check(&asker).await.unwrap();
    assert!(host.runtime.container(&id).is_some());
}

#[tokio::test(start_paused = true)]
async fn the_running_agent_cleans_up_orphans_after_the_grace() {
    let host = Host::new().await;
    let gone = "arn:aws:ecs:us-east-1:000000000000:task/default/gone";
    let orphan = leave_container(
        &host.runtime,
        "orphan",
        gone,
        "i-lost",
        Some(CONTROL_PLANE_ID),
    )
    .await;
    let started = Instant::now();
    let agent = host.start_agent().await;
    host.fake
        .wait_for("the orphan to be removed", |_| {
            host.runtime.container(&orphan).is_none().then_some(())
        })
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(60) && took < Duration::from_secs(100),
        "{took:?}"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn own_containers_of_tasks_no_longer_assigned_are_removed_at_start() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    host.fake.instance("default").await;
    agent.stop().await;
    let agent_id = Identity::load_or_create(host.dir.path()).unwrap().agent_id;
    let gone = "arn:aws:ecs:us-east-1:000000000000:task/default/stopped-while-away";
    let mine = leave_container(
        &host.runtime,
        "mine",
        gone,
        &agent_id,
        Some(CONTROL_PLANE_ID),
    )
    .await;
    let old = leave_container(&host.runtime, "old", gone, &agent_id, None).await;
    let again = host.start_agent().await;
    host.fake
        .wait_for("the container to be removed", |_| {
            host.runtime.container(&mine).is_none().then_some(())
        })
        .await;
    // Without this control plane's label it is not the agent's to remove.
    assert!(host.runtime.container(&old).is_some());
    again.stop().await;
}

#[tokio::test(start_paused = true)]
async fn tasks_that_cannot_run_fail_to_start_with_a_reason() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let unknown_dependency = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app",
            "dependsOn": [{"containerName": "nope", "condition": "START"}]}])),
    );
    let cycle = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "a", "image": "sim/app", "dependsOn": [{"containerName": "b", "condition": "START"}]},
            {"name": "b", "image": "sim/app", "dependsOn": [{"containerName": "a", "condition": "START"}]},
        ])),
    );
    let awsvpc = host.fake.assign(
        &instance,
        json!({"family": "vpc", "networkMode": "awsvpc",
               "containerDefinitions": [{"name": "app", "image": "sim/app"}]}),
    );
    for (task, expected) in [
        (
            &unknown_dependency,
            "Invalid task definition: container app depends on nope",
        ),
        (
            &cycle,
            "Container dependencies cannot be met: a, b wait on each other",
        ),
        (
            &awsvpc,
            "CannotCreateContainerError: the awsvpc network mode is not supported",
        ),
    ] {
        let stopped = host.fake.wait_status(task, TaskStatus::Stopped).await;
        assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
        let reason = stopped.reason.unwrap();
        assert!(reason.starts_with(expected), "{reason}");
    }
    assert_eq!(host.runtime.counters().starts, 0);
    agent.stop().await;
}
