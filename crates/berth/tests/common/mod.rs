//! Test harness: real `berth` processes on 127.0.0.1 and the real Docker Engine.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BUSYBOX: &str = "berth-test/busybox:latest";
pub const HTTP: &str = "berth-test/http:latest";
/// A busybox command that runs until told to stop and then exits promptly.
pub const SLEEP_FOREVER: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

/// A running `berth` process, SIGKILLed when dropped; containers its agent made are removed.
pub struct Berth {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
}

fn ensure_test_images() {
    for image in [BUSYBOX, HTTP] {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "image {image} is missing: run scripts/build-test-images first"
        );
    }
}

impl Berth {
    fn spawn(args: &[&str], data_dir: &Path) -> Self {
        ensure_test_images();
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .env("BERTH_LOG", "info")
            // Tests check that a stopped task's containers go: no cleanup wait unless a test
            // asks for one with --task-cleanup-wait.
            .env("BERTH_TASK_CLEANUP_WAIT", "0s")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting berth");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("berth: listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("berth did not report its listening address");
        Self {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// `berth dev`: control plane + agent on the local Docker Engine.
    pub fn dev(data_dir: &Path) -> Self {
        Self::spawn(&["dev"], data_dir)
    }

    /// `berth server`: control plane only.
    pub fn server(data_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["server"];
        args.extend_from_slice(extra);
        Self::spawn(&args, data_dir)
    }

    /// `berth dev` with extra options (e.g. `--service-task-settle-secs 1`).
    pub fn dev_with(data_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["dev"];
        args.extend_from_slice(extra);
        Self::spawn(&args, data_dir)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// The process id (for /proc measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The dev agent's id (label `berth.agent-id` on its containers).
    pub fn agent_id(&self) -> Option<String> {
        let bytes = std::fs::read(self.data_dir.join("agent/identity.json")).ok()?;
        let state: Value = serde_json::from_slice(&bytes).ok()?;
        state["agentId"].as_str().map(str::to_string)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill9();
        if let Some(agent) = self.agent_id() {
            remove_containers_labelled("berth.agent-id", &agent);
        }
    }
}

pub fn remove_containers_labelled(label: &str, value: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}={value}")])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
}

/// A raw ECS JSON 1.1 client, so tests see status codes and bodies as sent.
pub struct Api {
    http: reqwest::Client,
    pub url: String,
}

impl Api {
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }

    pub async fn raw(&self, target: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/", self.url))
            .header("content-type", "application/x-amz-json-1.1")
            .body(body.to_string());
        if let Some(t) = target {
            req = req.header("x-amz-target", t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn call(&self, action: &str, body: Value) -> (u16, Value) {
        self.raw(
            Some(&format!("AmazonEC2ContainerServiceV20141113.{action}")),
            &body.to_string(),
        )
        .await
    }

    /// Calls an action that must succeed.
    pub async fn ok(&self, action: &str, body: Value) -> Value {
        let (status, value) = self.call(action, body).await;
        assert_eq!(status, 200, "{action} failed: {value}");
        value
    }

    /// Calls an action that must fail with `error_type` and HTTP 400.
    pub async fn err(&self, action: &str, body: Value, error_type: &str) -> String {
        let (status, value) = self.call(action, body).await;
        assert_eq!(status, 400, "{action} should fail: {value}");
        assert_eq!(value["__type"], error_type, "{action}: {value}");
        value["message"].as_str().unwrap_or_default().to_string()
    }

    pub async fn describe_tasks(&self, cluster: &str, tasks: &[String]) -> Vec<Value> {
        let v = self
            .ok("DescribeTasks", json!({"cluster": cluster, "tasks": tasks}))
            .await;
        v["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until every task has `lastStatus == status`; returns their descriptions.
    pub async fn wait_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
        status: &str,
        timeout: Duration,
    ) -> Vec<Value> {
        eventually(&format!("tasks to reach {status}"), timeout, || async {
            let described = self.describe_tasks(cluster, tasks).await;
            if described.len() == tasks.len() && described.iter().all(|t| t["lastStatus"] == status)
            {
                Ok(described)
            } else {
                Err(Value::Array(described))
            }
        })
        .await
    }

    /// Waits until the cluster has `n` container instances (the dev agent joins new clusters).
    pub async fn wait_instances(&self, cluster: &str, n: usize) -> Vec<String> {
        let what = format!("{n} container instance(s) in {cluster}");
        eventually(&what, Duration::from_secs(30), || async {
            let v = self
                .ok("ListContainerInstances", json!({"cluster": cluster}))
                .await;
            let arns = strings(&v["containerInstanceArns"]);
            if arns.len() >= n {
                Ok(arns)
            } else {
                Err(v)
            }
        })
        .await
    }

    /// DescribeContainerInstances of one instance.
    pub async fn describe_instance(&self, cluster: &str, instance: &str) -> Value {
        let v = self
            .ok(
                "DescribeContainerInstances",
                json!({"cluster": cluster, "containerInstances": [instance]}),
            )
            .await;
        v["containerInstances"][0].clone()
    }

    /// Registers a simulated container instance the way an agent would (no agent runs it).
    pub async fn register_instance(
        &self,
        cluster: &str,
        cpu: i64,
        memory: i64,
        zone: &str,
        attributes: Value,
    ) -> String {
        let v = self
            .ok(
                "RegisterContainerInstance",
                json!({
                    "cluster": cluster,
                    "instanceIdentityDocument": json!({"availabilityZone": zone}).to_string(),
                    "totalResources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
                        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
                    ],
                    "attributes": attributes,
                }),
            )
            .await;
        v["containerInstance"]["containerInstanceArn"]
            .as_str()
            .expect("instance ARN")
            .to_string()
    }

    pub async fn create_cluster(&self, name: &str) {
        self.ok("CreateCluster", json!({"clusterName": name})).await;
    }

    pub async fn register_busybox(&self, family: &str, command: &str) -> String {
        let v = self
            .ok(
                "RegisterTaskDefinition",
                json!({
                    "family": family,
                    "containerDefinitions": [{
                        "name": "main",
                        "image": BUSYBOX,
                        "cpu": 16,
                        "memory": 32,
                        "essential": true,
                        "command": ["sh", "-c", command],
                        "stopTimeout": 2,
                    }]
                }),
            )
            .await;
        v["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .expect("arn")
            .to_string()
    }

    pub async fn run_task(&self, body: Value) -> (Vec<String>, Vec<Value>) {
        let v = self.ok("RunTask", body).await;
        let arns = v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
            .collect();
        let failures = v["failures"].as_array().cloned().unwrap_or_default();
        (arns, failures)
    }
}

/// Docker container ids (running or not) carrying the ECS task-arn label for `task_arn`.
pub fn containers_of_task(task_arn: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.amazonaws.ecs.task-arn={task_arn}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `docker inspect` of one container, or None if it does not exist.
pub fn inspect_container(id: &str) -> Option<Value> {
    let out = Command::new("docker").args(["inspect", id]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

/// Polls `probe` until it answers `Ok`; after `timeout` the test fails showing the last
/// state `probe` saw (its `Err`).
pub async fn eventually<T, Fut>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, Value>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(last) => assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last seen: {}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The strings of a JSON array (empty for anything else).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}
