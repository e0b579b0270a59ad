//! Task definition members the agent applies, on the simulated runtime in paused time:
//! restart policy, cleanup wait (also across an agent restart), task cgroups and their
//! fallback, the pause container, volumes, environment files and the metadata endpoint.

use std::time::Duration;

use berth_core::status::{StopCode, TaskStatus};
use berth_runtime::{ContainerRuntime, MountSource, SimulatedRuntime, VolumeSpec};
use serde_json::{json, Value};

use super::{task_definition, Host};
use crate::spec::{METADATA_ENV, PAUSE_CONTAINER_NAME};

#[tokio::test(start_paused = true)]
async fn restart_policy_restarts_in_place_unless_too_early_or_ignored() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let policy = json!({"enabled": true, "ignoredExitCodes": [9], "restartAttemptPeriod": 60});
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "worker", "image": "sim/app", "restartPolicy": policy,
             "command": ["exit-after", "61", "4"]},
            {"name": "early", "image": "sim/app", "essential": false, "restartPolicy": policy,
             "command": ["exit-after", "10", "3"]},
            {"name": "ignored", "image": "sim/app", "essential": false, "restartPolicy": policy,
             "command": ["exit-after", "70", "9"]},
        ])),
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    let worker = host.container(&task, "worker");
    assert_eq!(worker.times_started, 2, "restarted once, in place");
    assert_eq!(host.container(&task, "early").times_started, 1);
    assert_eq!(host.container(&task, "ignored").times_started, 1);
    // The essential worker's exit did not stop the task.
    let statuses = super::statuses(&host.fake, &task);
    assert_eq!(statuses.last(), Some(&TaskStatus::Running), "{statuses:?}");
    // Its second run also lasts the period: restarted again (once a period at most).
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(host.container(&task, "worker").times_started, 3);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stopped_tasks_keep_their_containers_for_the_cleanup_wait() {
    let host = Host::new().await;
    let mut config = host.config();
    config.task_cleanup_wait = Duration::from_secs(3600);
    let agent = host.start_agent_with(config.clone()).await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app", "command": ["exit", "2"]}])),
    );
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    tokio::time::sleep(Duration::from_secs(3500)).await;
    assert_eq!(host.containers(&task).len(), 1, "kept for the wait");
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(host.containers(&task).is_empty(), "removed after it");

    // Across an agent restart: a task stopped just before the agent went away keeps its
    // containers for the wait, counted from when they stopped, then they go.
    let second = host.fake.assign(
        &instance,
        task_definition(json!([{"name": "app", "image": "sim/app", "command": ["exit", "2"]}])),
    );
    host.fake.wait_status(&second, TaskStatus::Stopped).await;
    agent.stop().await;
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let again = host.start_agent_with(config).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(host.containers(&second).len(), 1, "half the wait: kept");
    tokio::time::sleep(Duration::from_secs(1800)).await;
    assert!(
        host.containers(&second).is_empty(),
        "the next agent removed them"
    );
    again.stop().await;
}

#[tokio::test(start_paused = true)]
async fn task_limits_are_a_group_or_shares_of_it() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let definition = task_definition(json!([
        {"name": "a", "image": "sim/app", "memory": 64, "cpu": 256},
        {"name": "b", "image": "sim/app"},
    ]));
    let task = host.fake.assign_with(&instance, definition.clone(), |t| {
        t.cpu = Some(512);
        t.memory = Some(256);
    });
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let id = task.rsplit('/').next().unwrap();
    let groups = host.runtime.groups();
    let limits = groups[&format!("berth/{id}")];
    assert_eq!(
        (limits.cpu_units, limits.memory_mib),
        (Some(512), Some(256))
    );
    let (a, b) = (host.container(&task, "a"), host.container(&task, "b"));
    assert_eq!(a.spec.cgroup_parent, Some(format!("/berth/{id}")));
    assert_eq!(a.spec.memory_limit_mib, Some(64));
    assert_eq!(b.spec.memory_limit_mib, Some(256));
    assert_eq!(b.spec.cpu_limit_units, None);
    host.fake
        .set_desired(&task, berth_core::status::DesiredStatus::Stopped);
    host.wait_containers_gone(&task).await;
    assert!(host.runtime.groups().is_empty());
    agent.stop().await;

    // An engine without groups: each container gets its share, together within the task's.
    let host = Host::with_runtime(SimulatedRuntime::builder().without_groups().build()).await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign_with(&instance, definition, |t| {
        t.cpu = Some(512);
        t.memory = Some(256);
    });
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let (a, b) = (host.container(&task, "a"), host.container(&task, "b"));
    assert_eq!(a.spec.cgroup_parent, None);
    assert_eq!(
        (a.spec.memory_limit_mib, b.spec.memory_limit_mib),
        (Some(64), Some(192))
    );
    assert_eq!(
        (a.spec.cpu_limit_units, b.spec.cpu_limit_units),
        (Some(256), Some(256))
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shared_namespaces_run_a_pause_container_that_goes_with_the_task() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let mut definition = task_definition(json!([
        {"name": "a", "image": "sim/app",
         "systemControls": [{"namespace": "kernel.shmmax", "value": "1024"}]},
        {"name": "b", "image": "sim/app"},
    ]));
    definition["pidMode"] = json!("task");
    definition["ipcMode"] = json!("task");
    let task = host.fake.assign(&instance, definition);
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let pause = host.container(&task, PAUSE_CONTAINER_NAME);
    assert_eq!(pause.spec.ipc_mode.as_deref(), Some("shareable"));
    assert_eq!(pause.spec.sysctls["kernel.shmmax"], "1024");
    let a = host.container(&task, "a");
    let join = format!("container:{}", pause.id);
    assert_eq!(a.spec.pid_mode.as_deref(), Some(join.as_str()));
    assert_eq!(a.spec.ipc_mode.as_deref(), Some(join.as_str()));
    assert!(
        a.spec.sysctls.is_empty(),
        "the IPC sysctl is the pause container's"
    );
    host.fake
        .set_desired(&task, berth_core::status::DesiredStatus::Stopped);
    host.wait_containers_gone(&task).await;
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn volumes_are_made_for_the_task_and_shared_ones_must_exist_or_be_provisioned() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let mut definition = task_definition(json!([
        {"name": "app", "image": "sim/app", "mountPoints": [
            {"sourceVolume": "scratch", "containerPath": "/scratch"},
            {"sourceVolume": "data", "containerPath": "/data", "readOnly": true},
            {"sourceVolume": "cache", "containerPath": "/cache"}]},
    ]));
    definition["volumes"] = json!([
        {"name": "scratch"},
        {"name": "data", "host": {"sourcePath": "/srv/data"}},
        {"name": "cache", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true}},
    ]);
    let task = host.fake.assign(&instance, definition);
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let app = host.container(&task, "app");
    let scratch = match &app.spec.mounts[0].source {
        MountSource::Volume(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert!(host.runtime.volumes().contains_key(&scratch));
    assert_eq!(
        app.spec.mounts[1].source,
        MountSource::Bind("/srv/data".into())
    );
    assert!(app.spec.mounts[1].read_only);
    assert_eq!(
        app.spec.mounts[2].source,
        MountSource::Volume("cache".into())
    );
    host.fake
        .set_desired(&task, berth_core::status::DesiredStatus::Stopped);
    host.wait_containers_gone(&task).await;
    let volumes = host.runtime.volumes();
    assert!(
        !volumes.contains_key(&scratch),
        "the task's volume goes with it"
    );
    assert!(volumes.contains_key("cache"), "the shared one stays");

    // A shared volume without autoprovision must exist.
    let mut definition = task_definition(json!([
        {"name": "app", "image": "sim/app", "mountPoints": [
            {"sourceVolume": "missing", "containerPath": "/m"}]},
    ]));
    definition["volumes"] = json!([
        {"name": "missing", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": false}},
    ]);
    let task = host.fake.assign(&instance, definition.clone());
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        stopped
            .reason
            .as_deref()
            .unwrap()
            .contains("does not exist"),
        "{stopped:?}"
    );
    host.runtime
        .create_volume(&VolumeSpec {
            name: "missing".into(),
            ..VolumeSpec::default()
        })
        .await
        .unwrap();
    let task = host.fake.assign(&instance, definition);
    host.fake.wait_status(&task, TaskStatus::Running).await;
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn environment_files_are_read_on_the_host() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.env"), dir.path().join("two.env"));
    std::fs::write(&one, "A=1\nB=from one\n# comment\n").unwrap();
    std::fs::write(&two, "B=from two\nC=3\n").unwrap();
    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app",
             "environment": [{"name": "C", "value": "from the definition"}],
             "environmentFiles": [{"value": one, "type": "file"}, {"value": two, "type": "file"}]},
        ])),
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let env = host.container(&task, "app").spec.env;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("A"), Some("1"));
    assert_eq!(get("B"), Some("from two"));
    assert_eq!(get("C"), Some("from the definition"));

    let task = host.fake.assign(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app",
             "environmentFiles": [{"value": "/nonexistent/app.env", "type": "file"}]},
        ])),
    );
    let stopped = host.fake.wait_status(&task, TaskStatus::Stopped).await;
    assert!(
        stopped
            .reason
            .as_deref()
            .unwrap()
            .contains("/nonexistent/app.env"),
        "{stopped:?}"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_metadata_endpoint_serves_each_container_its_task() {
    let host = Host::new().await;
    let agent = host.start_agent().await;
    let instance = host.fake.instance("default").await;
    let task = host.fake.assign_with(
        &instance,
        task_definition(json!([
            {"name": "app", "image": "sim/app", "cpu": 10, "memory": 32,
             "portMappings": [{"containerPort": 80}]},
            {"name": "quiet", "image": "sim/app", "essential": false, "disableNetworking": true},
        ])),
        |t| {
            t.memory = Some(64);
            t.group = Some("service:web".into());
            t.container_arns = [("app".to_string(), "arn:container/app".to_string())].into();
        },
    );
    host.fake.wait_status(&task, TaskStatus::Running).await;
    let app = host.container(&task, "app");
    let uri = app
        .spec
        .env
        .iter()
        .find(|(k, _)| k == METADATA_ENV)
        .map(|(_, v)| v.clone())
        .expect("the metadata URI");
    assert!(uri.starts_with("http://127.0.0.1:"), "{uri}");
    let quiet = host.container(&task, "quiet");
    assert!(quiet.spec.env.iter().all(|(k, _)| k != METADATA_ENV));

    let get = |path: &str| {
        let url = format!("{uri}{path}");
        async move {
            let resp = reqwest::get(&url).await.unwrap();
            assert!(resp.status().is_success(), "{url}: {}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };
    let me = get("").await;
    assert_eq!(me["DockerId"], app.id.as_str());
    assert_eq!(me["Name"], "app");
    assert_eq!(me["Limits"], json!({"CPU": 10, "Memory": 32}));
    assert_eq!(me["ContainerARN"], "arn:container/app");
    assert_eq!(me["Ports"][0]["ContainerPort"], 80);
    let t = get("/task").await;
    assert_eq!(t["TaskARN"], task.as_str());
    assert_eq!(t["ServiceName"], "web");
    assert_eq!(t["Limits"]["Memory"], 64);
    assert_eq!(t["KnownStatus"], "RUNNING");
    assert_eq!(t["Containers"].as_array().unwrap().len(), 2);
    assert!(get("/stats").await["memory_stats"].is_object());
    assert!(get("/task/stats").await[app.id.as_str()].is_object());
    let unknown = reqwest::get(format!(
        "{}/v4/nope/task",
        uri.rsplit_once("/v4/").unwrap().0
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    agent.stop().await;
}
