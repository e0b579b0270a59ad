//! Bounded input and bounded resources on a real `berth server`: stalled connections,
//! made-up agents, oversized members, repeated identifiers.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Issue: with no read timeouts and no connection cap, 1,100 idle sockets locked every
/// client out, the agents' polls included.
#[tokio::test]
async fn stalled_connections_do_not_lock_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &["--max-connections", "64"]);
    let addr = berth.url.trim_start_matches("http://").to_string();
    // Four times the cap in sockets that never send a request, and some that send half a
    // request and stall.
    let mut idle = Vec::new();
    for n in 0..256 {
        let mut s = TcpStream::connect(&addr).unwrap();
        if n % 4 == 0 {
            let _ = s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n");
        }
        idle.push(s);
    }
    let api = berth.api();
    for _ in 0..20 {
        let health = reqwest::get(format!("{}/healthz", berth.url))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        api.ok("ListClusters", json!({})).await;
    }
    drop(idle);
}

/// Issue: polls for made-up container instances were remembered in a map nothing pruned
/// (300 polls: 11 → 326 MiB RSS).
#[tokio::test]
async fn polls_for_unknown_instances_are_refused_and_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let http = reqwest::Client::new();
    let poll = |n: usize| {
        json!({
            "instances": [{
                "cluster": "default",
                "containerInstanceArn": format!("arn:aws:ecs:us-east-1:000000000000:container-instance/default/{n:032x}"),
                "credential": "x".repeat(64),
            }],
            "followAllClusters": false,
            "knownDigest": null,
            "waitSeconds": 10,
        })
    };
    berth.api().create_cluster("default").await;
    // Warm up, then measure.
    for n in 0..50 {
        let r = http
            .post(format!("{}/agent/v1/poll", berth.url))
            .json(&poll(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    let before = rss_kib(berth.pid());
    for n in 50..2050 {
        let r = http
            .post(format!("{}/agent/v1/poll", berth.url))
            .json(&poll(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["__type"], "InvalidParameterException");
    }
    let after = rss_kib(berth.pid());
    assert!(
        after < before + 16 * 1024,
        "2,000 bogus polls grew the server from {before} KiB to {after} KiB"
    );
}

/// Issue: 1.5 MB strings were stored in task definitions, overrides and reasons, and
/// DescribeTasks repeated one task 100 times (300 MiB answers).
#[tokio::test]
async fn stored_sizes_are_capped_and_describe_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    api.create_cluster("c").await;
    let big = "x".repeat(70 * 1024);
    let msg = api
        .err(
            "RegisterTaskDefinition",
            json!({"family": "big", "containerDefinitions": [
                {"name": "a", "image": BUSYBOX, "memory": 32, "command": [big]}]}),
            "ClientException",
        )
        .await;
    assert!(msg.contains("maximum size"), "{msg}");
    api.register_instance("c", 1024, 1024, "zone-a", json!([]))
        .await;
    api.register_busybox("small", "true").await;
    let override_env: Vec<_> = (0..200)
        .map(|i| json!({"name": format!("V{i}"), "value": "y".repeat(40)}))
        .collect();
    let msg = api
        .err(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "small",
                   "overrides": {"containerOverrides": [{"name": "main", "environment": override_env}]}}),
            "InvalidParameterException",
        )
        .await;
    assert!(msg.contains("8192"), "{msg}");
    let (tasks, _) = api
        .run_task(json!({"cluster": "c", "taskDefinition": "small"}))
        .await;
    let msg = api
        .err(
            "StopTask",
            json!({"cluster": "c", "task": tasks[0], "reason": "r".repeat(256)}),
            "InvalidParameterException",
        )
        .await;
    assert!(msg.contains("255"), "{msg}");
    let msg = api
        .err(
            "SubmitTaskStateChange",
            json!({"cluster": "c", "task": tasks[0], "status": "RUNNING", "reason": "r".repeat(256)}),
            "InvalidParameterException",
        )
        .await;
    assert!(msg.contains("255"), "{msg}");
    let same: Vec<String> = std::iter::repeat_n(tasks[0].clone(), 100).collect();
    let described = api.describe_tasks("c", &same).await;
    assert_eq!(described.len(), 1);
    // A body beyond the server's cap is refused before it is parsed.
    let huge = format!("{{\"clusterName\": \"{}\"}}", "z".repeat(2 * 1024 * 1024));
    let (status, _) = api
        .raw(
            Some("AmazonEC2ContainerServiceV20141113.CreateCluster"),
            &huge,
        )
        .await;
    assert_eq!(status, 413);
}

/// Numeric members are checked as ECS does and never wrap (issue: a negative
/// memoryReservation override made 1,000,000 MiB appear).
#[tokio::test]
async fn negative_and_overflowing_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    api.create_cluster("c").await;
    let instance = api
        .register_instance("c", 1024, 1000, "zone-a", json!([]))
        .await;
    api.register_busybox("small", "true").await;
    for (member, value) in [
        ("memoryReservation", json!(-1_000_000)),
        ("memory", json!(-5)),
        ("cpu", json!(-1)),
        ("memory", json!(1)),
    ] {
        api.err(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "small",
                   "overrides": {"containerOverrides": [{"name": "main", member: value}]}}),
            "InvalidParameterException",
        )
        .await;
    }
    // Beyond i32: the wire type itself refuses it.
    api.err(
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "small",
               "overrides": {"containerOverrides": [{"name": "main", "memory": 1_u64 << 40}]}}),
        "SerializationException",
    )
    .await;
    let v = api
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c", "containerInstances": [instance]}),
        )
        .await;
    let memory = v["containerInstances"][0]["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "MEMORY")
        .unwrap()["integerValue"]
        .clone();
    assert_eq!(memory, 1000);
}
