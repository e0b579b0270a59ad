//! Time from RunTask to RUNNING (all tasks RUNNING as seen through DescribeTasks), for 1 and
//! for 20 tasks, on the real Docker Engine through `berth dev`. Prints a table.
//!
//! `cargo bench -p berth --bench task_startup` (needs `scripts/build-test-images`).
//! BERTH_BENCH_RUNS sets the runs per size (default 7).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

mod support;

use support::{Berth, Client};

async fn all_in(client: &Client, cluster: &str, tasks: &[String], status: &str) -> bool {
    for chunk in tasks.chunks(100) {
        let v = client
            .call("DescribeTasks", json!({"cluster": cluster, "tasks": chunk}))
            .await;
        let ok = v["tasks"]
            .as_array()
            .is_some_and(|t| t.len() == chunk.len() && t.iter().all(|t| t["lastStatus"] == status));
        if !ok {
            return false;
        }
    }
    true
}

fn containers_left(cluster: &str) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.amazonaws.ecs.cluster={cluster}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

/// One measurement: RunTask for `count` tasks until all are RUNNING.
async fn measure(client: &Client, cluster: &str, count: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut remaining = count;
    while remaining > 0 {
        // ECS caps RunTask at 10 tasks per call.
        let n = remaining.min(10);
        let v = client
            .call(
                "RunTask",
                json!({"cluster": cluster, "taskDefinition": "bench", "count": n}),
            )
            .await;
        assert_eq!(v["failures"], json!([]), "placement failed: {v}");
        tasks.extend(
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["taskArn"].as_str().unwrap().to_string()),
        );
        remaining -= n;
    }
    while !all_in(client, cluster, &tasks, "RUNNING").await {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "tasks did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    for t in &tasks {
        client
            .call("StopTask", json!({"cluster": cluster, "task": t}))
            .await;
    }
    while !all_in(client, cluster, &tasks, "STOPPED").await || containers_left(cluster) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    elapsed
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    // Stopped containers are removed at once (not kept 3 h), so "stopped" includes cleanup.
    let berth = Berth::dev(&["--task-cleanup-wait", "0s"]);
    let client = berth.client(reqwest::Client::new());
    let cluster = format!("bench-{}", std::process::id());
    client.cluster_with_instance(&cluster).await;
    client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "bench", "containerDefinitions": [{
                "name": "main", "image": "berth-test/busybox:latest", "memory": 16, "cpu": 8,
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"], "stopTimeout": 2
            }]}),
        )
        .await;
    // Warm-up: first container start on a host pays one-off engine costs.
    measure(&client, &cluster, 1).await;

    println!("RunTask -> all RUNNING (berth dev, Docker Engine, {runs} runs each)");
    println!(
        "{:>6} | {:>9} | {:>9} | {:>9}",
        "tasks", "min", "median", "max"
    );
    println!("{:->6}-+-{:->9}-+-{:->9}-+-{:->9}", "", "", "", "");
    for count in [1usize, 20] {
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(measure(&client, &cluster, count).await);
        }
        samples.sort();
        println!(
            "{:>6} | {:>9} | {:>9} | {:>9}",
            count,
            ms(samples[0]),
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() - 1])
        );
    }
}
