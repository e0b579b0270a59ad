//! End to end on the real Docker Engine: `berth dev`, RunTask, RUNNING containers, StopTask.

mod common;

use std::time::Duration;

use bollard::Docker;
use common::*;
use serde_json::json;

#[tokio::test]
async fn three_tasks_run_as_docker_containers_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = unique("lifecycle");
    api.create_cluster(&cluster).await;
    api.wait_instances(&cluster, 1).await;
    api.register_busybox("sleeper", SLEEP_FOREVER).await;

    let (tasks, failures) = api
        .run_task(
            json!({"cluster": cluster, "taskDefinition": "sleeper", "count": 3, "startedBy": "it"}),
        )
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(tasks.len(), 3);
    let running = api
        .wait_tasks(&cluster, &tasks, "RUNNING", Duration::from_secs(60))
        .await;

    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    for task in &running {
        let arn = task["taskArn"].as_str().unwrap();
        let runtime_id = task["containers"][0]["runtimeId"]
            .as_str()
            .expect("runtimeId");
        let inspected = docker.inspect_container(runtime_id, None).await.unwrap();
        assert_eq!(inspected.state.unwrap().running, Some(true));
        let labels = inspected.config.unwrap().labels.unwrap();
        assert_eq!(labels["com.amazonaws.ecs.task-arn"], arn);
        assert_eq!(labels["com.amazonaws.ecs.container-name"], "main");
        assert_eq!(task["containers"][0]["lastStatus"], "RUNNING");
        assert_eq!(task["desiredStatus"], "RUNNING");
        assert!(task["startedAt"].is_number());
        assert_eq!(containers_of_task(arn).len(), 1);
    }
    let listed = api
        .ok(
            "ListTasks",
            json!({"cluster": cluster, "startedBy": "it", "family": "sleeper"}),
        )
        .await;
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 3);

    for task in &tasks {
        let stopped = api
            .ok(
                "StopTask",
                json!({"cluster": cluster, "task": task, "reason": "test says stop"}),
            )
            .await;
        assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    }
    let stopped = api
        .wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await;
    for task in &stopped {
        assert_eq!(task["stoppedReason"], "test says stop");
        assert_eq!(task["stopCode"], "UserInitiated");
        assert!(task["stoppedAt"].is_number());
        assert_eq!(task["containers"][0]["lastStatus"], "STOPPED");
        // The trap makes the container exit 0 on SIGTERM.
        assert_eq!(task["containers"][0]["exitCode"], 0);
        let arn = task["taskArn"].as_str().unwrap().to_string();
        wait_until("task containers removed", Duration::from_secs(20), || {
            containers_of_task(&arn).is_empty()
        })
        .await;
    }
    let none_running = api.ok("ListTasks", json!({"cluster": cluster})).await;
    assert_eq!(none_running["taskArns"], json!([]));
    let stopped_list = api
        .ok(
            "ListTasks",
            json!({"cluster": cluster, "desiredStatus": "STOPPED"}),
        )
        .await;
    assert_eq!(stopped_list["taskArns"].as_array().unwrap().len(), 3);

    // The dev agent joined the cluster by itself, so it does not keep the cluster alive.
    let deleted = api.ok("DeleteCluster", json!({"cluster": cluster})).await;
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    let listed = api.ok("ListClusters", json!({})).await;
    assert!(!listed["clusterArns"].to_string().contains(&cluster));
}

#[tokio::test]
async fn essential_container_exit_stops_task_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = unique("exitcode");
    api.create_cluster(&cluster).await;
    api.wait_instances(&cluster, 1).await;
    api.ok(
        "RegisterTaskDefinition",
        json!({
            "family": "fails",
            "containerDefinitions": [
                {"name": "main", "image": BUSYBOX, "memory": 32, "essential": true,
                 "command": ["sh", "-c", "sleep 1; exit 3"]},
                {"name": "sidecar", "image": BUSYBOX, "memory": 32, "essential": false,
                 "command": ["sh", "-c", SLEEP_FOREVER], "stopTimeout": 2}
            ]
        }),
    )
    .await;
    let (tasks, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "fails"}))
        .await;
    let stopped = api
        .wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await;
    let task = &stopped[0];
    assert_eq!(task["stopCode"], "EssentialContainerExited");
    assert_eq!(task["stoppedReason"], "Essential container in task exited");
    let containers = task["containers"].as_array().unwrap();
    let main = containers.iter().find(|c| c["name"] == "main").unwrap();
    let sidecar = containers.iter().find(|c| c["name"] == "sidecar").unwrap();
    assert_eq!(main["exitCode"], 3);
    assert_eq!(
        sidecar["exitCode"], 0,
        "the sidecar was stopped, not killed"
    );
    assert_eq!(sidecar["lastStatus"], "STOPPED");
    let arn = tasks[0].clone();
    wait_until("task containers removed", Duration::from_secs(20), || {
        containers_of_task(&arn).is_empty()
    })
    .await;
}

#[tokio::test]
async fn port_mappings_health_checks_and_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = unique("web");
    api.create_cluster(&cluster).await;
    api.wait_instances(&cluster, 1).await;
    api.ok(
        "RegisterTaskDefinition",
        json!({
            "family": "web",
            "containerDefinitions": [
                {"name": "init", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sh", "-c", "exit 0"]},
                {"name": "web", "image": HTTP, "memory": 32, "cpu": 64,
                 "portMappings": [{"containerPort": 8080}],
                 "environment": [{"name": "GREETING", "value": "from-env"}],
                 "healthCheck": {"command": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health || exit 1"],
                                 "interval": 5, "timeout": 2, "retries": 3},
                 "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
                 "stopTimeout": 2},
                {"name": "after-healthy", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sh", "-c", SLEEP_FOREVER], "stopTimeout": 2,
                 "dependsOn": [{"containerName": "web", "condition": "HEALTHY"}]}
            ]
        }),
    )
    .await;
    let (tasks, _) = api
        .run_task(json!({
            "cluster": cluster, "taskDefinition": "web",
            "overrides": {"containerOverrides": [{"name": "web", "environment": [{"name": "GREETING", "value": "overridden"}]}]}
        }))
        .await;
    let running = api
        .wait_tasks(&cluster, &tasks, "RUNNING", Duration::from_secs(90))
        .await;
    let containers = running[0]["containers"].as_array().unwrap();
    let web = containers.iter().find(|c| c["name"] == "web").unwrap();
    let init = containers.iter().find(|c| c["name"] == "init").unwrap();
    assert_eq!(init["exitCode"], 0);
    assert_eq!(init["lastStatus"], "STOPPED");
    assert_eq!(web["healthStatus"], "HEALTHY");
    let binding = &web["networkBindings"][0];
    assert_eq!(binding["containerPort"], 8080);
    assert_eq!(binding["bindIP"], "127.0.0.1");
    let host_port = binding["hostPort"].as_u64().expect("host port");
    assert!(host_port > 0);
    let body = reqwest::get(format!("http://127.0.0.1:{host_port}/env/GREETING"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "overridden");
    // Health is reported upwards too.
    eventually(
        "the task to be HEALTHY",
        Duration::from_secs(30),
        || async {
            let described = api.describe_tasks(&cluster, &tasks).await;
            if described[0]["healthStatus"] == "HEALTHY" {
                Ok(())
            } else {
                Err(described[0].clone())
            }
        },
    )
    .await;
    api.ok("StopTask", json!({"cluster": cluster, "task": tasks[0]}))
        .await;
    let stopped = api
        .wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await;
    assert_eq!(stopped[0]["stoppedReason"], "Task stopped by user");
}
