//! Crash safety and agent liveness: kill -9 and restart, re-adoption without duplicates,
//! and a separate `berth agent` whose death shows as agentConnected=false.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn kill9_restart_keeps_state_and_readopts_containers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = unique("restart");
    let mut berth = Berth::dev(dir.path());
    let api = berth.api();
    api.ok(
        "CreateCluster",
        json!({"clusterName": cluster, "tags": [{"key": "k", "value": "v"}]}),
    )
    .await;
    api.wait_instances(&cluster, 1).await;
    api.register_busybox("survivor", SLEEP_FOREVER).await;
    api.register_busybox("survivor", SLEEP_FOREVER).await;
    let (tasks, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "survivor:2", "count": 2}))
        .await;
    api.wait_tasks(&cluster, &tasks, "RUNNING", Duration::from_secs(60))
        .await;
    // One more task that we stop before the crash: it must stay STOPPED afterwards.
    let (done, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "survivor:1"}))
        .await;
    api.wait_tasks(&cluster, &done, "RUNNING", Duration::from_secs(60))
        .await;
    api.ok("StopTask", json!({"cluster": cluster, "task": done[0]}))
        .await;
    api.wait_tasks(&cluster, &done, "STOPPED", Duration::from_secs(60))
        .await;

    let before: Vec<Vec<String>> = tasks.iter().map(|t| containers_of_task(t)).collect();
    assert!(before.iter().all(|ids| ids.len() == 1), "{before:?}");
    let instances_before = api.wait_instances(&cluster, 1).await;

    berth.kill9();
    // The containers outlive the crash.
    for ids in &before {
        let c = inspect_container(&ids[0]).expect("container survived");
        assert_eq!(c["State"]["Running"], true);
    }

    let berth = Berth::dev(dir.path());
    let api = berth.api();
    // Everything written before the crash is there.
    let clusters = api
        .ok(
            "DescribeClusters",
            json!({"clusters": [cluster], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(clusters["clusters"][0]["status"], "ACTIVE");
    assert_eq!(
        clusters["clusters"][0]["tags"],
        json!([{"key": "k", "value": "v"}])
    );
    let defs = api
        .ok("ListTaskDefinitions", json!({"familyPrefix": "survivor"}))
        .await;
    assert_eq!(defs["taskDefinitionArns"].as_array().unwrap().len(), 2);
    let described = api.describe_tasks(&cluster, &tasks).await;
    assert_eq!(described.len(), 2);
    assert!(described.iter().all(|t| t["lastStatus"] == "RUNNING"));
    let stopped = api.describe_tasks(&cluster, &done).await;
    assert_eq!(stopped[0]["lastStatus"], "STOPPED");

    // The agent comes back as the same instance and re-adopts rather than duplicating.
    eventually(
        "the agent to come back",
        Duration::from_secs(30),
        || async {
            let instance = api.describe_instance(&cluster, &instances_before[0]).await;
            if instance["agentConnected"] == true && instance["runningTasksCount"] == 2 {
                Ok(())
            } else {
                Err(instance)
            }
        },
    )
    .await;
    assert_eq!(api.wait_instances(&cluster, 1).await, instances_before);
    // Give the agent time to (wrongly) start duplicates, then check it did not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<Vec<String>> = tasks.iter().map(|t| containers_of_task(t)).collect();
    assert_eq!(before, after, "containers were replaced or duplicated");
    let still = api.describe_tasks(&cluster, &tasks).await;
    assert!(still.iter().all(|t| t["lastStatus"] == "RUNNING"));

    // The adopted tasks are fully managed: they stop on request and their containers go.
    for t in &tasks {
        api.ok("StopTask", json!({"cluster": cluster, "task": t}))
            .await;
    }
    api.wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await;
    for t in &tasks {
        let arn = t.clone();
        wait_until(
            "adopted containers removed",
            Duration::from_secs(20),
            || containers_of_task(&arn).is_empty(),
        )
        .await;
    }
    // And new work still runs.
    let (fresh, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "survivor"}))
        .await;
    api.wait_tasks(&cluster, &fresh, "RUNNING", Duration::from_secs(60))
        .await;
}

#[tokio::test]
async fn stopped_while_agent_was_down_is_cleaned_up_on_return() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = unique("orphans");
    let server_dir = dir.path().join("server");
    let agent_dir = dir.path().join("agent");
    let server = Berth::server(&server_dir, &["--agent-timeout-secs", "3"]);
    let api = server.api();
    api.create_cluster(&cluster).await;
    let token = join_token(&server.url, &cluster);
    let spawn_agent = || {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "agent",
                "--server",
                &server.url,
                "--join-token",
                &token,
                "--cluster",
                &cluster,
                "--host-bind-ip",
                "127.0.0.1",
                "--data-dir",
            ])
            .arg(&agent_dir)
            .env("BERTH_TASK_CLEANUP_WAIT", "0s")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting agent")
    };
    let mut agent = spawn_agent();
    let instances = api.wait_instances(&cluster, 1).await;
    let agent_id: String = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(agent_dir.join("identity.json")).unwrap(),
    )
    .unwrap()["agentId"]
        .as_str()
        .unwrap()
        .to_string();
    let _cleanup = RemoveOnDrop(agent_id);
    api.register_busybox("orphan", SLEEP_FOREVER).await;
    let (tasks, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "orphan"}))
        .await;
    api.wait_tasks(&cluster, &tasks, "RUNNING", Duration::from_secs(60))
        .await;

    // The agent dies: the control plane notices.
    agent.kill().unwrap();
    agent.wait().unwrap();
    eventually(
        "the instance to be disconnected",
        Duration::from_secs(20),
        || async {
            let instance = api.describe_instance(&cluster, &instances[0]).await;
            if instance["agentConnected"] == false {
                Ok(())
            } else {
                Err(instance)
            }
        },
    )
    .await;
    // A disconnected instance takes no new tasks.
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": cluster, "taskDefinition": "orphan"}),
        )
        .await;
    assert_eq!(run["tasks"], json!([]));
    assert_eq!(run["failures"][0]["reason"], "AGENT");

    // Stopped while the agent is away; the agent stops it when it returns.
    api.ok("StopTask", json!({"cluster": cluster, "task": tasks[0]}))
        .await;
    assert_eq!(containers_of_task(&tasks[0]).len(), 1);
    let mut agent = spawn_agent();
    api.wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await;
    let arn = tasks[0].clone();
    wait_until("container removed", Duration::from_secs(20), || {
        containers_of_task(&arn).is_empty()
    })
    .await;
    let instance = api.describe_instance(&cluster, &instances[0]).await;
    assert_eq!(instance["agentConnected"], true);
    agent.kill().unwrap();
    agent.wait().unwrap();
}

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_containers_labelled("berth.agent-id", &self.0);
    }
}
