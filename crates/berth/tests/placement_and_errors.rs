//! Placement over simulated container instances (registered through the API, no agent),
//! and the error contract: every bad input gets ECS's error shape and changes nothing.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

async fn register_sized(api: &Api, family: &str, memory: i64, host_port: Option<i64>) {
    let mut container = json!({"name": "c", "image": BUSYBOX, "cpu": 128, "memory": memory});
    if let Some(port) = host_port {
        container["portMappings"] = json!([{"containerPort": 80, "hostPort": port}]);
    }
    api.ok(
        "RegisterTaskDefinition",
        json!({"family": family, "containerDefinitions": [container]}),
    )
    .await;
}

fn placement_counts(run: &Value) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for t in run["tasks"].as_array().unwrap() {
        *counts
            .entry(t["containerInstanceArn"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

async fn remaining(api: &Api, cluster: &str, instance: &str, resource: &str) -> i64 {
    let v = api
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": cluster, "containerInstances": [instance]}),
        )
        .await;
    v["containerInstances"][0]["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == resource)
        .unwrap()["integerValue"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn binpack_spread_constraints_and_resource_failures() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    register_sized(&api, "small", 128, None).await;
    register_sized(&api, "huge", 4096, None).await;
    register_sized(&api, "port80", 64, Some(8080)).await;

    // binpack on memory: fill one instance before touching the other.
    api.create_cluster("binpack").await;
    let a = api
        .register_instance("binpack", 1024, 512, "us-east-1a", json!([]))
        .await;
    let b = api
        .register_instance("binpack", 1024, 512, "us-east-1b", json!([]))
        .await;
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": "binpack", "taskDefinition": "small", "count": 4,
            "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
        )
        .await;
    let counts = placement_counts(&run);
    assert_eq!(counts.len(), 1, "binpack used both instances: {counts:?}");
    let full = counts.keys().next().unwrap().clone();
    let empty = if full == a { &b } else { &a };
    assert_eq!(remaining(&api, "binpack", &full, "MEMORY").await, 0);
    assert_eq!(remaining(&api, "binpack", empty, "MEMORY").await, 512);
    assert_eq!(
        remaining(&api, "binpack", &full, "CPU").await,
        1024 - 4 * 128
    );
    // The next task no longer fits on the full instance and goes to the other.
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": "binpack", "taskDefinition": "small",
            "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
        )
        .await;
    assert_eq!(run["tasks"][0]["containerInstanceArn"], json!(empty));

    // spread over instanceId alternates.
    api.create_cluster("spread").await;
    api.register_instance("spread", 1024, 512, "us-east-1a", json!([]))
        .await;
    api.register_instance("spread", 1024, 512, "us-east-1b", json!([]))
        .await;
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": "spread", "taskDefinition": "small", "count": 4,
            "placementStrategy": [{"type": "spread", "field": "instanceId"}]}),
        )
        .await;
    let counts = placement_counts(&run);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![2, 2],
        "{counts:?}"
    );

    // Oversized: every instance answers RESOURCE:MEMORY and no task is created.
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": "spread", "taskDefinition": "huge"}),
        )
        .await;
    assert_eq!(run["tasks"], json!([]));
    let failures = run["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        failures.iter().all(|f| f["reason"] == "RESOURCE:MEMORY"),
        "{failures:?}"
    );

    // Static host port: one per instance, then RESOURCE:PORTS.
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": "spread", "taskDefinition": "port80", "count": 3}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 2);
    assert!(run["failures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["reason"] == "RESOURCE:PORTS"));

    // distinctInstance and memberOf.
    api.create_cluster("constrained").await;
    let gpu = api
        .register_instance(
            "constrained",
            4096,
            4096,
            "us-east-1a",
            json!([{"name": "kind", "value": "gpu"}]),
        )
        .await;
    api.register_instance(
        "constrained",
        4096,
        4096,
        "us-east-1b",
        json!([{"name": "kind", "value": "cpu"}]),
    )
    .await;
    let run = api
        .ok(
            "RunTask",
            json!({"cluster": "constrained", "taskDefinition": "small", "count": 3,
            "placementConstraints": [{"type": "distinctInstance"}]}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 2);
    assert!(run["failures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["reason"] == "DistinctInstance placement constraint unsatisfied."));
    let run = api
        .ok("RunTask", json!({"cluster": "constrained", "taskDefinition": "small", "count": 3,
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:kind == gpu and attribute:ecs.availability-zone in [us-east-1a, us-east-1c]"}]}))
        .await;
    let counts = placement_counts(&run);
    assert_eq!(counts.get(&gpu), Some(&3), "{counts:?}");
    api.err(
        "RunTask",
        json!({"cluster": "constrained", "taskDefinition": "small",
               "placementConstraints": [{"type": "memberOf", "expression": "attribute:kind =="}]}),
        "InvalidParameterException",
    )
    .await;
    // The query language also filters ListContainerInstances.
    let listed = api
        .ok(
            "ListContainerInstances",
            json!({"cluster": "constrained", "filter": "attribute:kind == gpu"}),
        )
        .await;
    assert_eq!(listed["containerInstanceArns"], json!([gpu]));

    // StartTask on a named instance.
    let started = api
        .ok("StartTask", json!({"cluster": "constrained", "taskDefinition": "small", "containerInstances": [gpu]}))
        .await;
    assert_eq!(started["tasks"][0]["containerInstanceArn"], json!(gpu));
    assert_eq!(started["tasks"][0]["lastStatus"], "PROVISIONING");

    // An empty cluster says so.
    api.create_cluster("empty").await;
    let msg = api
        .err(
            "RunTask",
            json!({"cluster": "empty", "taskDefinition": "small"}),
            "InvalidParameterException",
        )
        .await;
    assert!(msg.contains("No Container Instances"), "{msg}");
}

/// Everything a client can read back, to compare before and after bad requests.
async fn visible_state(api: &Api) -> Value {
    json!({
        "clusters": api.ok("DescribeClusters", json!({"clusters": ["keep", "default"], "include": ["TAGS"]})).await,
        "list": api.ok("ListClusters", json!({})).await,
        "defs": api.ok("ListTaskDefinitions", json!({})).await,
        "families": api.ok("ListTaskDefinitionFamilies", json!({"status": "ALL"})).await,
        "td": api.ok("DescribeTaskDefinition", json!({"taskDefinition": "keep", "include": ["TAGS"]})).await,
        "instances": api.ok("ListContainerInstances", json!({"cluster": "keep"})).await,
        "tasks": api.ok("ListTasks", json!({"cluster": "keep"})).await,
        "stopped": api.ok("ListTasks", json!({"cluster": "keep", "desiredStatus": "STOPPED"})).await,
        "tags": api.ok("ListTagsForResource", json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/keep"})).await,
    })
}

#[tokio::test]
async fn bad_input_gets_ecs_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    api.ok(
        "CreateCluster",
        json!({"clusterName": "keep", "tags": [{"key": "team", "value": "a"}]}),
    )
    .await;
    api.register_instance("keep", 2048, 2048, "us-east-1a", json!([]))
        .await;
    register_sized(&api, "keep", 64, None).await;
    let (tasks, _) = api
        .run_task(json!({"cluster": "keep", "taskDefinition": "keep", "count": 2}))
        .await;
    assert_eq!(tasks.len(), 2);
    let before = visible_state(&api).await;

    let target = |a: &str| format!("AmazonEC2ContainerServiceV20141113.{a}");
    // Malformed JSON.
    let (status, body) = api
        .raw(Some(&target("CreateCluster")), "{\"clusterName\": ")
        .await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("SerializationException")),
        "{body}"
    );
    let (status, body) = api.raw(Some(&target("RunTask")), "[1,2]").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("SerializationException")),
        "{body}"
    );
    // Wrong member type.
    api.err(
        "RunTask",
        json!({"cluster": "keep", "taskDefinition": "keep", "count": "three"}),
        "SerializationException",
    )
    .await;
    // Unknown action, and no/foreign target.
    let (status, body) = api.raw(Some(&target("LaunchRockets")), "{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("UnknownOperationException")),
        "{body}"
    );
    let (status, body) = api.raw(None, "{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("UnknownOperationException")),
        "{body}"
    );
    let (status, body) = api.raw(Some("DynamoDB_20120810.ListTables"), "{}").await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("UnknownOperationException")),
        "{body}"
    );
    // Missing required members.
    api.err(
        "RegisterTaskDefinition",
        json!({"containerDefinitions": [{"name": "c", "image": "i", "memory": 8}]}),
        "InvalidParameterException",
    )
    .await;
    api.err(
        "RegisterTaskDefinition",
        json!({"family": "keep"}),
        "ClientException",
    )
    .await;
    api.err(
        "RegisterTaskDefinition",
        json!({"family": "keep", "containerDefinitions": [{"name": "c", "image": "i"}]}),
        "ClientException",
    )
    .await;
    api.err(
        "RunTask",
        json!({"cluster": "keep"}),
        "InvalidParameterException",
    )
    .await;
    api.err(
        "StopTask",
        json!({"cluster": "keep"}),
        "InvalidParameterException",
    )
    .await;
    api.err(
        "DescribeTasks",
        json!({"cluster": "keep"}),
        "InvalidParameterException",
    )
    .await;
    api.err("DeleteCluster", json!({}), "InvalidParameterException")
        .await;
    // Invalid values.
    api.err(
        "CreateCluster",
        json!({"clusterName": "bad name!"}),
        "InvalidParameterException",
    )
    .await;
    api.err(
        "RunTask",
        json!({"cluster": "keep", "taskDefinition": "keep", "count": 11}),
        "InvalidParameterException",
    )
    .await;
    api.err(
        "RunTask",
        json!({"cluster": "keep", "taskDefinition": "nope"}),
        "ClientException",
    )
    .await;
    api.err("RunTask", json!({"cluster": "keep", "taskDefinition": "keep", "placementStrategy": [{"type": "pack-tightly"}]}), "InvalidParameterException").await;
    api.err(
        "RunTask",
        json!({"cluster": "keep", "taskDefinition": "keep", "launchType": "FARGATE"}),
        "UnsupportedFeatureException",
    )
    .await;
    api.err("RegisterTaskDefinition", json!({"family": "keep", "containerDefinitions": [
        {"name": "a", "image": "i", "memory": 8, "dependsOn": [{"containerName": "b", "condition": "START"}]},
        {"name": "b", "image": "i", "memory": 8, "dependsOn": [{"containerName": "a", "condition": "START"}]}]}), "ClientException").await;
    api.err(
        "StopTask",
        json!({"cluster": "keep", "task": "00000000000000000000000000000000"}),
        "InvalidParameterException",
    )
    .await;
    api.err("TagResource", json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/keep", "tags": [{"key": "aws:no", "value": "x"}]}), "InvalidParameterException").await;
    api.err(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "keep"}),
        "ClientException",
    )
    .await;
    // Unknown cluster.
    for (action, body) in [
        (
            "RunTask",
            json!({"cluster": "ghost", "taskDefinition": "keep"}),
        ),
        ("DescribeTasks", json!({"cluster": "ghost", "tasks": ["x"]})),
        ("ListTasks", json!({"cluster": "ghost"})),
        ("StopTask", json!({"cluster": "ghost", "task": "x"})),
        ("ListContainerInstances", json!({"cluster": "ghost"})),
        ("DeleteCluster", json!({"cluster": "ghost"})),
        (
            "TagResource",
            json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/ghost", "tags": []}),
        ),
    ] {
        api.err(action, body, "ClusterNotFoundException").await;
    }
    // A cluster with work in it cannot go.
    api.err(
        "DeleteCluster",
        json!({"cluster": "keep"}),
        "ClusterContainsTasksException",
    )
    .await;

    let after = visible_state(&api).await;
    assert_eq!(before, after, "a rejected request changed the store");
    // The same holds for the stored bytes after a restart (all of it was durable).
    drop(berth);
    let berth = Berth::server(dir.path(), &[]);
    assert_eq!(before, visible_state(&berth.api()).await);
}

#[tokio::test]
async fn unknown_things_are_failures_not_errors_in_describe_calls() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    api.create_cluster("c1").await;
    let v = api
        .ok("DescribeClusters", json!({"clusters": ["c1", "c2"]}))
        .await;
    assert_eq!(v["clusters"][0]["clusterName"], "c1");
    assert_eq!(v["failures"][0]["reason"], "MISSING");
    assert_eq!(
        v["failures"][0]["arn"],
        "arn:aws:ecs:us-east-1:000000000000:cluster/c2"
    );
    let v = api
        .ok("DescribeTasks", json!({"cluster": "c1", "tasks": ["abc"]}))
        .await;
    assert_eq!(v["tasks"], json!([]));
    assert_eq!(v["failures"][0]["reason"], "MISSING");
}
