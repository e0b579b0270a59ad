//! Test harness: real `berth` processes on 127.0.0.1 and the real Docker Engine.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_iam::sigv4::ClientCredentials;
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
        Self::spawn_listening(args, data_dir, "127.0.0.1:0")
    }

    fn spawn_listening(args: &[&str], data_dir: &Path, listen: &str) -> Self {
        ensure_test_images();
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--listen")
            .arg(listen)
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
        // Clients of this server sign with its admin key (written before it listens).
        if let Some(c) = [
            data_dir.join("credentials"),
            data_dir.join("server/credentials"),
        ]
        .iter()
        .find_map(|f| berth_iam::read_credentials_file(f))
        {
            server_credentials().lock().unwrap().insert(url.clone(), c);
        }
        // An HTTPS server's self-signed CA: its clients and agents trust it.
        if let Some(ca) = [
            data_dir.join("tls/ca.pem"),
            data_dir.join("server/tls/ca.pem"),
        ]
        .into_iter()
        .find(|f| url.starts_with("https://") && f.exists())
        {
            server_cas().lock().unwrap().insert(url.clone(), ca);
        }
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

    /// `berth server` on a fixed address, so that agents find it again after a restart.
    pub fn server_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["server"];
        args.extend_from_slice(extra);
        Self::spawn_listening(&args, data_dir, listen)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// The account root's admin key, which the server writes to its data directory on
    /// first start (`credentials`; `server/credentials` for `berth dev`).
    pub fn admin_credentials(&self) -> Option<ClientCredentials> {
        [
            self.data_dir.join("credentials"),
            self.data_dir.join("server/credentials"),
        ]
        .iter()
        .find_map(|f| berth_iam::read_credentials_file(f))
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

/// The admin keys of the servers this harness started, by URL.
fn server_credentials(
) -> &'static std::sync::Mutex<std::collections::HashMap<String, ClientCredentials>> {
    static KEYS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, ClientCredentials>>,
    > = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// The CA files of the HTTPS servers this harness started, by URL.
pub fn server_cas() -> &'static std::sync::Mutex<std::collections::HashMap<String, PathBuf>> {
    static CAS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    CAS.get_or_init(Default::default)
}

/// A raw ECS JSON 1.1 client, so tests see status codes and bodies as sent.
pub struct Api {
    http: reqwest::Client,
    pub url: String,
    /// Agent credentials of the simulated instances this client registered.
    agents: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, (String, String)>>>,
    /// Signs requests with SigV4 when set (a client without credentials sends none).
    credentials: Option<ClientCredentials>,
    /// Join tokens this client made, by cluster (simulated instances register with them).
    join_tokens: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl Api {
    /// A client of the server at `url`, signing with its admin key when the server was
    /// started by this harness (see [`Berth`]), else unsigned.
    pub fn new(url: &str) -> Self {
        let ca = server_cas().lock().unwrap().get(url).cloned();
        let mut http = reqwest::Client::builder();
        if let Some(ca) = ca {
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).expect("CA file"))
                    .expect("CA certificate"),
            );
        }
        Self {
            http: http.build().expect("client"),
            url: url.to_string(),
            agents: Default::default(),
            credentials: server_credentials().lock().unwrap().get(url).cloned(),
            join_tokens: Default::default(),
        }
    }

    /// A client of an HTTPS server whose certificate `ca_pem` (a PEM file) signed.
    pub fn with_ca(url: &str, ca_pem: &Path) -> Self {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_pem).expect("CA file"))
            .expect("CA certificate");
        Self {
            http: reqwest::Client::builder()
                .add_root_certificate(ca)
                .build()
                .expect("client"),
            ..Self::new(url)
        }
    }

    /// A berth admin call (`BerthAdmin_v1.<operation>`, signed for `berth`).
    pub async fn admin(&self, operation: &str, body: Value) -> (u16, Value) {
        let target = format!("BerthAdmin_v1.{operation}");
        let body = body.to_string();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let mut req = self.http.post(format!("{}/", self.url)).body(body.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = self
            .sign(req, &headers, body.as_bytes(), "berth")
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A join token for `cluster` made with this client's (admin) credentials, reused.
    pub async fn join_token(&self, cluster: &str) -> String {
        if let Some(t) = self.join_tokens.lock().unwrap().get(cluster) {
            return t.clone();
        }
        let (status, v) = self
            .admin("CreateJoinToken", json!({"cluster": cluster}))
            .await;
        assert_eq!(status, 200, "CreateJoinToken: {v}");
        let token = v["token"].as_str().expect("token").to_string();
        self.join_tokens
            .lock()
            .unwrap()
            .insert(cluster.to_string(), token.clone());
        token
    }

    /// This client, signing its requests with `credentials` (SigV4, as the AWS SDKs do).
    pub fn signed_with(mut self, credentials: Option<ClientCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Adds the SigV4 headers for a POST of `body` with `headers` to `/`, signed for
    /// `service` at the current time.
    pub fn sign(
        &self,
        mut req: reqwest::RequestBuilder,
        headers: &[(&str, &str)],
        body: &[u8],
        service: &str,
    ) -> reqwest::RequestBuilder {
        let Some(creds) = &self.credentials else {
            return req;
        };
        let host = self
            .url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut signed: Vec<(&str, &str)> = vec![("host", host)];
        signed.extend_from_slice(headers);
        let added = berth_iam::sigv4::sign_request(
            "POST",
            &format!("{}/", self.url),
            &signed,
            body,
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
        req
    }

    pub async fn raw(&self, target: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/", self.url))
            .header("content-type", "application/x-amz-json-1.1")
            .body(body.to_string());
        let mut headers = vec![("content-type", "application/x-amz-json-1.1")];
        if let Some(t) = target {
            req = req.header("x-amz-target", t);
            headers.push(("x-amz-target", t));
        }
        let req = self.sign(req, &headers, body.as_bytes(), "ecs");
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
    /// Creates `cluster` and waits until a (dev) agent has joined it and is connected.
    pub async fn connected_cluster(&self, cluster: &str) -> String {
        self.create_cluster(cluster).await;
        let instance = self.wait_instances(cluster, 1).await.remove(0);
        eventually(
            "the agent to be connected",
            Duration::from_secs(60),
            || async {
                let i = self.describe_instance(cluster, &instance).await;
                if i["agentConnected"] == true {
                    Ok(())
                } else {
                    Err(i)
                }
            },
        )
        .await;
        cluster.to_string()
    }

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

    /// Registers a simulated container instance the way a berth agent does (over the agent
    /// channel) and keeps its session alive with a background poll loop, so tasks can be
    /// placed on it. No containers run: tests report the tasks' states with
    /// [`agent_report`](Self::agent_report).
    pub async fn register_instance(
        &self,
        cluster: &str,
        cpu: i64,
        memory: i64,
        zone: &str,
        attributes: Value,
    ) -> String {
        let attributes: Vec<Value> = attributes
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| json!({"name": a["name"], "value": a["value"]}))
            .collect();
        let join_token = self.join_token(cluster).await;
        let resp = self
            .http
            .post(format!("{}/agent/v1/register", self.url))
            .json(&json!({
                "cluster": cluster,
                "joinToken": join_token,
                "agentId": format!("i-sim{:013}", rand_suffix()),
                "resources": {"cpu": cpu, "memory": memory, "tcp_ports": [22], "udp_ports": []},
                "attributes": attributes,
                "versionInfo": {"agent_version": "sim", "agent_hash": null, "docker_version": null},
                "availabilityZone": zone,
                "followAllClusters": false,
            }))
            .send()
            .await
            .expect("register");
        assert!(
            resp.status().is_success(),
            "register: {}",
            resp.text().await.unwrap_or_default()
        );
        let v: Value = resp.json().await.expect("json");
        let arn = v["containerInstanceArn"]
            .as_str()
            .expect("instance ARN")
            .to_string();
        let credential = v["credential"].as_str().expect("credential").to_string();
        self.agents
            .lock()
            .unwrap()
            .insert(arn.clone(), (cluster.to_string(), credential.clone()));
        // Keep the instance's session: poll as an agent does, for as long as the test runs.
        let (http, url, instance) = (
            self.http.clone(),
            self.url.clone(),
            json!({"cluster": cluster, "containerInstanceArn": arn, "credential": credential}),
        );
        tokio::spawn(async move {
            let mut digest = Value::Null;
            loop {
                let answer = http
                    .post(format!("{url}/agent/v1/poll"))
                    .json(&json!({"instances": [instance], "followAllClusters": false,
                                  "knownDigest": digest, "waitSeconds": 5}))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap_or_default();
                        digest = v["digest"].clone();
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        arn
    }

    /// Reports a task on a simulated instance as its agent would. `containers` is a list
    /// of ECS-style container changes (`containerName`, `status`, `exitCode`, `runtimeId`).
    pub async fn agent_report(
        &self,
        task_arn: &str,
        status: &str,
        containers: Value,
    ) -> (u16, Value) {
        let described = self.describe_tasks_anywhere(task_arn).await;
        let instance = described["containerInstanceArn"]
            .as_str()
            .expect("task's instance")
            .to_string();
        let (cluster, credential) = self
            .agents
            .lock()
            .unwrap()
            .get(&instance)
            .cloned()
            .expect("a simulated instance");
        let containers: Vec<Value> = containers
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["containerName"], "runtime_id": c.get("runtimeId"),
                       "status": c["status"], "exit_code": c.get("exitCode"),
                       "reason": null, "bindings": null, "health": null, "image_digest": null})
            })
            .collect();
        let resp = self
            .http
            .post(format!("{}/agent/v1/report", self.url))
            .json(&json!({
                "instance": {"cluster": cluster, "containerInstanceArn": instance, "credential": credential},
                "taskArn": task_arn,
                "report": {"status": status, "reason": null, "stop_code": null, "containers": containers,
                           "pull_started_at": null, "pull_stopped_at": null, "execution_stopped_at": null},
            }))
            .send()
            .await
            .expect("report");
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or_default())
    }

    /// DescribeTasks of one task given by ARN (its cluster taken from the ARN).
    async fn describe_tasks_anywhere(&self, task_arn: &str) -> Value {
        let cluster = task_arn.rsplit('/').nth(1).expect("a task ARN");
        let v = self
            .ok(
                "DescribeTasks",
                json!({"cluster": cluster, "tasks": [task_arn]}),
            )
            .await;
        v["tasks"][0].clone()
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

/// A number unique enough to tell simulated agents apart.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1_000_000 + NEXT.fetch_add(1, Ordering::SeqCst)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A free 127.0.0.1 port (bound once and released) for a server that must keep its address.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// Ids of the *running* Docker containers carrying every `label=value` in `labels`.
pub fn running_containers_labelled(labels: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-q", "--no-trunc"]);
    for (label, value) in labels {
        cmd.args(["--filter", &format!("label={label}={value}")]);
    }
    let out = cmd.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A join token for `cluster` from `berth join-token create`, signed with the admin key of
/// the harness's server at `server_url` (the cluster must exist).
pub fn join_token(server_url: &str, cluster: &str) -> String {
    let creds = server_credentials()
        .lock()
        .unwrap()
        .get(server_url)
        .cloned()
        .expect("a server this harness started");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_berth"));
    cli.args([
        "join-token",
        "create",
        "--endpoint",
        server_url,
        "--cluster",
        cluster,
    ]);
    if let Some(ca) = server_cas().lock().unwrap().get(server_url) {
        cli.arg("--ca-cert").arg(ca);
    }
    let out = cli
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key)
        .stderr(Stdio::inherit())
        .output()
        .expect("berth join-token create");
    assert!(out.status.success(), "berth join-token create failed");
    let token = String::from_utf8(out.stdout).expect("utf-8");
    token.trim().to_string()
}

/// A separate `berth agent` process (SIGKILLed when dropped; the containers it made are
/// removed then).
pub struct AgentProcess {
    child: Option<Child>,
    pub data_dir: PathBuf,
    args: Vec<String>,
}

impl AgentProcess {
    /// `berth agent --server URL --cluster CLUSTER --data-dir DIR --host-bind-ip 127.0.0.1`
    /// plus `--attribute` for each `name=value` of `attributes`.
    pub fn start(server_url: &str, cluster: &str, data_dir: &Path, attributes: &[&str]) -> Self {
        Self::start_with(server_url, cluster, data_dir, attributes, &[])
    }

    /// [`AgentProcess::start`] with extra arguments (e.g. `--allow-privileged`).
    pub fn start_with(
        server_url: &str,
        cluster: &str,
        data_dir: &Path,
        attributes: &[&str],
        extra: &[&str],
    ) -> Self {
        ensure_test_images();
        let token = join_token(server_url, cluster);
        let mut args: Vec<String> = [
            "agent",
            "--server",
            server_url,
            "--join-token",
            &token,
            "--cluster",
            cluster,
            "--host-bind-ip",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for a in attributes {
            args.push("--attribute".into());
            args.push(a.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(ca) = server_cas().lock().unwrap().get(server_url) {
            args.push("--ca-cert".into());
            args.push(ca.display().to_string());
        }
        args.push("--data-dir".into());
        args.push(data_dir.display().to_string());
        let mut agent = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            args,
        };
        agent.restart();
        agent
    }

    /// Starts the agent again with the same arguments (after `kill9`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&self.args)
            .env("BERTH_LOG", "info")
            .env("BERTH_TASK_CLEANUP_WAIT", "0s")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting berth agent");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would. Its containers keep running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's id (label `berth.agent-id` on its containers), once it has registered.
    pub fn agent_id(&self) -> Option<String> {
        let bytes = std::fs::read(self.data_dir.join("identity.json")).ok()?;
        let state: Value = serde_json::from_slice(&bytes).ok()?;
        state["agentId"].as_str().map(str::to_string)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
        if let Some(agent) = self.agent_id() {
            remove_containers_labelled("berth.agent-id", &agent);
        }
    }
}
