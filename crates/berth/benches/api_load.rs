//! DescribeClusters, ListTasks and RunTask under load, with 0, 2,000 and 20,000 tasks in
//! the cluster (half of them STOPPED), on a real `berth server` with simulated instances
//! (registered through the API; no containers run). 16 concurrent clients per measurement.
//! Prints a table: requests/s, p50 and p99.
//!
//! Requests are signed (SigV4) with the admin key the server writes to its data directory,
//! and simulated agents join with a join token, as real clients and agents do; a baseline
//! binary that predates authentication ignores both.
//!
//! `cargo bench -p berth --bench api_load`
//! - BERTH_BENCH_SECONDS: length of each measurement (default 5)
//! - BERTH_BENCH_SIZES: comma-separated task counts (default 0,2000,20000)
//! - BERTH_BASELINE_BIN: another berth binary (e.g. a build of an older commit) to measure
//!   the same way, side by side, in the same run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CLIENTS: usize = 16;

struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        // The simulated instances never poll: keep their sessions for the whole run.
        .args([
            "server",
            "--agent-timeout-secs",
            "1000000",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting berth");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("berth exited").unwrap();
        if let Some(url) = line.strip_prefix("berth: listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, url, dir }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    /// The server's admin key; None for a server that writes none (the baseline).
    credentials: Option<berth_iam::sigv4::ClientCredentials>,
}

impl Client {
    /// A signed POST of `body` to `/` for `service`, with `headers`.
    fn post(
        &self,
        service: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}/", self.url);
        let mut req = self.http.post(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(creds) = &self.credentials {
            let host = self.url.trim_start_matches("http://");
            let mut signed: Vec<(&str, &str)> = vec![("host", host)];
            signed.extend_from_slice(headers);
            let added = berth_iam::sigv4::sign_request(
                "POST",
                &url,
                &signed,
                body.as_bytes(),
                creds,
                &berth_iam::sigv4::SigningTarget {
                    region: "us-east-1",
                    service,
                    time: std::time::SystemTime::now(),
                },
            )
            .expect("signing");
            for (k, v) in added {
                req = req.header(k, v);
            }
        }
        req.body(body)
    }

    /// A join token for the cluster (None from a server without join tokens).
    async fn join_token(&self, cluster: &str) -> Option<String> {
        self.credentials.as_ref()?;
        let resp = self
            .post(
                "berth",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "BerthAdmin_v1.CreateJoinToken"),
                ],
                json!({"cluster": cluster}).to_string(),
            )
            .send()
            .await
            .ok()?;
        let v: Value = resp.json().await.ok()?;
        v["token"].as_str().map(str::to_string)
    }

    async fn call(&self, action: &str, body: &Value) -> Value {
        match self.try_call(action, body).await {
            Ok(v) => v,
            Err(e) => panic!("{action}: {e}"),
        }
    }

    async fn try_call(&self, action: &str, body: &Value) -> Result<Value, String> {
        let target = format!("AmazonEC2ContainerServiceV20141113.{action}");
        let resp = self
            .post(
                "ecs",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", target.as_str()),
                ],
                body.to_string(),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    }
}

async fn fill(c: &Client, tasks: usize) {
    c.call("CreateCluster", &json!({"clusterName": "load"}))
        .await;
    // Simulated instances, registered as berth agents do (the baseline binary, which has
    // no agent channel, takes them through RegisterContainerInstance).
    let mut credentials = std::collections::HashMap::new();
    let join_token = c.join_token("load").await;
    for n in 0..40 {
        let agent = c
            .http
            .post(format!("{}/agent/v1/register", c.url))
            .json(&json!({
                "cluster": "load", "agentId": format!("i-{n:017}"), "joinToken": join_token,
                "resources": {"cpu": 1_000_000, "memory": 1_000_000, "tcp_ports": [], "udp_ports": []},
                "attributes": [], "versionInfo": {"agent_version": "sim", "agent_hash": null, "docker_version": null},
                "followAllClusters": false,
            }))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        match agent {
            Some(r) => {
                let v: Value = r.json().await.unwrap();
                credentials.insert(
                    v["containerInstanceArn"].as_str().unwrap().to_string(),
                    v["credential"].as_str().unwrap().to_string(),
                );
            }
            None => {
                c.call(
                    "RegisterContainerInstance",
                    &json!({
                        "cluster": "load",
                        "instanceIdentityDocument": json!({"instanceId": format!("i-{n:017}")}).to_string(),
                        "totalResources": [
                            {"name": "CPU", "type": "INTEGER", "integerValue": 1_000_000},
                            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1_000_000},
                        ],
                    }),
                )
                .await;
            }
        }
    }
    let credentials = std::sync::Arc::new(credentials);
    c.call(
        "RegisterTaskDefinition",
        &json!({"family": "load", "containerDefinitions": [
            {"name": "main", "image": "berth-test/busybox:latest", "cpu": 1, "memory": 8}]}),
    )
    .await;
    // Fill with 4 writers in parallel; every other batch is reported STOPPED.
    let per_writer = tasks / 10 / 4;
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = c.clone();
        let credentials = std::sync::Arc::clone(&credentials);
        writers.push(tokio::spawn(async move {
            for b in 0..per_writer {
                let v = c
                    .call(
                        "RunTask",
                        &json!({"cluster": "load", "taskDefinition": "load", "count": 10}),
                    )
                    .await;
                if (w + b) % 2 == 0 {
                    for t in v["tasks"].as_array().unwrap() {
                        let instance = t["containerInstanceArn"].as_str().unwrap();
                        match credentials.get(instance) {
                            Some(credential) => {
                                let r = c
                                    .http
                                    .post(format!("{}/agent/v1/report", c.url))
                                    .json(&json!({
                                        "instance": {"cluster": "load", "containerInstanceArn": instance, "credential": credential},
                                        "taskArn": t["taskArn"],
                                        "report": {"status": "STOPPED", "reason": null, "stop_code": null, "containers": [],
                                                   "pull_started_at": null, "pull_stopped_at": null, "execution_stopped_at": null},
                                    }))
                                    .send()
                                    .await
                                    .unwrap();
                                assert!(r.status().is_success());
                            }
                            None => {
                                c.call(
                                    "SubmitTaskStateChange",
                                    &json!({"cluster": "load", "task": t["taskArn"], "status": "STOPPED"}),
                                )
                                .await;
                            }
                        }
                    }
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
}

struct Measured {
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(c: &Client, action: &'static str, body: Value, seconds: u64) -> Measured {
    let body = Arc::new(body);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for _ in 0..CLIENTS {
        let c = c.clone();
        let body = Arc::clone(&body);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                match c.try_call(action, &body).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.await.unwrap();
        all.extend(l);
        errors += e;
    }
    if all.is_empty() {
        return Measured {
            errors,
            rps: 0.0,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
        };
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Measured {
        errors,
        rps: all.len() as f64 / seconds as f64,
        p50_ms: pct(0.50).as_secs_f64() * 1000.0,
        p99_ms: pct(0.99).as_secs_f64() * 1000.0,
    }
}

fn main() {
    let seconds: u64 = std::env::var("BERTH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let sizes: Vec<usize> = std::env::var("BERTH_BENCH_SIZES")
        .unwrap_or_else(|_| "0,2000,20000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut binaries = vec![("berth".to_string(), env!("CARGO_BIN_EXE_berth").to_string())];
    if let Ok(baseline) = std::env::var("BERTH_BASELINE_BIN") {
        binaries.push(("baseline".to_string(), baseline));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{CLIENTS} concurrent clients, {seconds} s per cell; half the tasks STOPPED");
    println!();
    println!("| binary | tasks | operation | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for size in &sizes {
        for (label, bin) in &binaries {
            let server = start(bin);
            let client = Client {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(CLIENTS)
                    .build()
                    .unwrap(),
                url: server.url.clone(),
                credentials: berth_iam::read_credentials_file(
                    &server.dir.path().join("credentials"),
                ),
            };
            runtime.block_on(async {
                let fill_started = Instant::now();
                fill(&client, *size).await;
                eprintln!(
                    "{label}: filled {size} tasks in {:.1} s",
                    fill_started.elapsed().as_secs_f64()
                );
                for (action, body) in [
                    ("DescribeClusters", json!({"clusters": ["load"]})),
                    ("ListTasks", json!({"cluster": "load", "maxResults": 100})),
                    (
                        "RunTask",
                        json!({"cluster": "load", "taskDefinition": "load"}),
                    ),
                ] {
                    let m = measure(&client, action, body, seconds).await;
                    println!(
                        "| {label} | {size} | {action} | {:.0} | {:.2} | {:.2} | {} |",
                        m.rps, m.p50_ms, m.p99_ms, m.errors
                    );
                }
            });
        }
    }
}
