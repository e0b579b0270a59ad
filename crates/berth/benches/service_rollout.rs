//! Rolling deployment of a 10-task service on the real Docker Engine through `berth dev`:
//! time from UpdateService (forceNewDeployment) until the service is stable again (one
//! deployment, rolloutState COMPLETED, runningCount == desiredCount), against the floor of
//! doing the same container work with the Docker CLI alone (start 10 containers of the same
//! image and command, then stop the 10 old ones). Prints a table (min / median / max).
//!
//! `cargo bench -p berth --bench service_rollout` (needs `scripts/build-test-images`).
//! Environment:
//!   BERTH_BENCH_RUNS    runs per row (default 5)
//!   BERTH_BENCH_SETTLE  `--service-task-settle-secs` for berth dev (default 0: ECS waits
//!                       40 s before a task without health checks counts as healthy, which
//!                       would measure that wait instead of berth)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const TASKS: usize = 10;
const IMAGE: &str = "berth-test/busybox:latest";
const SLEEP: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

mod support;

use support::{Berth, Client};

async fn stable(client: &Client, cluster: &str, service: &str) -> bool {
    let v = client
        .call(
            "DescribeServices",
            json!({"cluster": cluster, "services": [service]}),
        )
        .await;
    let s = &v["services"][0];
    let deps = s["deployments"].as_array().cloned().unwrap_or_default();
    deps.len() == 1
        && deps[0]["rolloutState"] == "COMPLETED"
        && s["runningCount"] == s["desiredCount"]
        && s["pendingCount"] == 0
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn running_in(cluster: &str) -> usize {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.amazonaws.ecs.cluster={cluster}"),
    ])
    .split_whitespace()
    .count()
}

/// Starts `n` detached containers in parallel (one `docker run` each, as an agent would
/// issue them concurrently); returns their ids.
fn docker_start(n: usize, label: &str) -> Vec<String> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new("docker")
                .args([
                    "run",
                    "-d",
                    "--label",
                    label,
                    "--memory",
                    "32m",
                    "--cpu-shares",
                    "16",
                    IMAGE,
                    "sh",
                    "-c",
                    SLEEP,
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("docker run")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("docker run");
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect()
}

/// The floor: start 10 new containers, then stop the 10 old ones (stop timeout 2 s as in
/// the task definition), with the Docker CLI alone.
fn docker_floor(label: &str) -> Duration {
    let old = docker_start(TASKS, label);
    let start = Instant::now();
    let new = docker_start(TASKS, label);
    let mut args = vec!["stop", "-t", "2"];
    args.extend(old.iter().map(String::as_str));
    docker(&args);
    let elapsed = start.elapsed();
    let mut rm = vec!["rm", "-f"];
    rm.extend(old.iter().chain(new.iter()).map(String::as_str));
    docker(&rm);
    elapsed
}

async fn berth_rollout(client: &Client, cluster: &str) -> Duration {
    let start = Instant::now();
    client
        .call(
            "UpdateService",
            json!({"cluster": cluster, "service": "bench", "forceNewDeployment": true}),
        )
        .await;
    // The new deployment exists at once; wait for the service to be stable again.
    while !stable(client, cluster, "bench").await {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "rollout did not complete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    // Let the old containers go before the next run.
    while running_in(cluster) > TASKS {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    elapsed
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{:<34} | {:>9} | {:>9} | {:>9}",
        name,
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let settle = std::env::var("BERTH_BENCH_SETTLE").unwrap_or_else(|_| "0".into());
    let berth = Berth::dev(&["--service-task-settle-secs", &settle]);
    let client = berth.client(reqwest::Client::new());
    let cluster = format!("bench-rollout-{}", std::process::id());
    client.cluster_with_instance(&cluster).await;
    client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "bench", "containerDefinitions": [{
                "name": "main", "image": IMAGE, "memory": 32, "cpu": 16,
                "command": ["sh", "-c", SLEEP], "stopTimeout": 2
            }]}),
        )
        .await;
    client
        .call(
            "CreateService",
            json!({"cluster": cluster, "serviceName": "bench", "taskDefinition": "bench",
                   "desiredCount": TASKS,
                   "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
        )
        .await;
    while !stable(&client, &cluster, "bench").await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up rollout (first container starts pay one-off engine costs).
    berth_rollout(&client, &cluster).await;

    let mut berth = Vec::new();
    for _ in 0..runs {
        berth.push(berth_rollout(&client, &cluster).await);
    }
    let label = format!("berth.bench={cluster}-floor");
    docker_floor(&label);
    let mut floor = Vec::new();
    for _ in 0..runs {
        floor.push(docker_floor(&label));
    }

    println!(
        "Rolling deployment of {TASKS} tasks, 100%/200% (berth dev, settle {settle}s, Docker Engine, {runs} runs each)"
    );
    println!("{:<34} | {:>9} | {:>9} | {:>9}", "", "min", "median", "max");
    println!("{:-<34}-+-{:->9}-+-{:->9}-+-{:->9}", "", "", "", "");
    row("berth: UpdateService -> stable", berth);
    row("docker CLI: start 10, stop 10", floor);

    let _ = client
        .call(
            "DeleteService",
            json!({"cluster": cluster, "service": "bench", "force": true}),
        )
        .await;
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.amazonaws.ecs.cluster={cluster}"),
    ]);
    if !ids.is_empty() {
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.split_whitespace());
        docker(&rm);
    }
}
