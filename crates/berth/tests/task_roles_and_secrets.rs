//! Task roles and secrets on a real `berth dev` and Docker: `secrets` from Secrets Manager
//! and SSM reach the container's environment (and nothing else: no Describe* answer, no
//! log); an execution role that may not read them stops the task with ECS's
//! `ResourceInitializationError`; a container signs ECS requests with its task role's
//! credentials from the credentials endpoint and gets exactly what the role allows.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use berth_iam::sigv4::ClientCredentials;
use common::*;
use serde_json::{json, Value};

const RUNNING: Duration = Duration::from_secs(60);
const ACCOUNT: &str = "000000000000";

/// `berth dev` listening on `listen`, its log (stderr) in a file; SIGKILLed when dropped,
/// with the containers its agent made.
struct Dev {
    child: Child,
    url: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Dev {
    fn start(data_dir: &Path, listen: &str) -> Self {
        let log = data_dir.join("berth.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["dev", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .env("BERTH_LOG", "debug")
            .env("BERTH_TASK_CLEANUP_WAIT", "0s")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting berth dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("berth: listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("berth did not report its listening address");
        Self {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    fn admin(&self) -> ClientCredentials {
        berth_iam::read_credentials_file(&self.data_dir.join("server/credentials"))
            .expect("admin credentials")
    }

    fn api(&self) -> Api {
        Api::new(&self.url).signed_with(Some(self.admin()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let identity = std::fs::read(self.data_dir.join("agent/identity.json")).ok();
        let agent = identity
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["agentId"].as_str().map(str::to_string));
        if let Some(agent) = agent {
            remove_containers_labelled("berth.agent-id", &agent);
        }
    }
}

/// Percent-encoding for a form body.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A signed request to berth's endpoint: (status, body).
async fn send(api: &Api, service: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/", api.url))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = api
        .sign(req, headers, body.as_bytes(), service)
        .send()
        .await
        .expect("request");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

/// An IAM (query protocol) action that must succeed.
async fn iam(api: &Api, action: &str, params: &[(&str, &str)]) -> String {
    let mut pairs = vec![("Action", action), ("Version", "2010-05-08")];
    pairs.extend_from_slice(params);
    let (status, body) = send(
        api,
        "iam",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        &form_encode(&pairs),
    )
    .await;
    assert_eq!(status, 200, "{action}: {body}");
    body
}

/// A JSON 1.1 call of Secrets Manager or SSM that must succeed.
async fn json_call(api: &Api, service: &str, target: &str, body: Value) -> Value {
    let body = body.to_string();
    let (status, text) = send(
        api,
        service,
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{target}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// A role ECS tasks may assume, with `policy` (if any) inline.
async fn task_role(api: &Api, name: &str, policy: Option<Value>) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam(
        api,
        "CreateRole",
        &[
            ("RoleName", name),
            ("AssumeRolePolicyDocument", &trust.to_string()),
        ],
    )
    .await;
    if let Some(policy) = policy {
        iam(
            api,
            "PutRolePolicy",
            &[
                ("RoleName", name),
                ("PolicyName", "inline"),
                ("PolicyDocument", &policy.to_string()),
            ],
        )
        .await;
    }
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

async fn cluster(api: &Api, name: &str) -> String {
    api.connected_cluster(&unique(name)).await
}

async fn run(api: &Api, cluster: &str, family: &str, status: &str) -> Value {
    let (tasks, failures) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": family}))
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    api.wait_tasks(cluster, &tasks, status, RUNNING)
        .await
        .remove(0)
}

async fn stop(api: &Api, cluster: &str, task: &Value) {
    let arn = task["taskArn"].as_str().unwrap().to_string();
    api.ok("StopTask", json!({"cluster": cluster, "task": arn}))
        .await;
    api.wait_tasks(cluster, &[arn], "STOPPED", RUNNING).await;
}

/// The host port the task's container published for 8080.
fn host_port(task: &Value) -> u64 {
    task["containers"][0]["networkBindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["containerPort"] == 8080)
        .and_then(|b| b["hostPort"].as_u64())
        .unwrap_or_else(|| panic!("no binding for 8080: {task}"))
}

/// Waits until the test HTTP server in the task answers (RUNNING is as soon as the
/// container started, not when its server listens).
async fn wait_http(port: u64) {
    eventually("the task's HTTP server to answer", RUNNING, || async {
        match reqwest::get(format!("http://127.0.0.1:{port}/health")).await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(Value::String(format!("{other:?}"))),
        }
    })
    .await;
}

/// GET from the test HTTP server in the task: (status, body).
async fn get(port: u64, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("GET");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn random_word(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{nanos:x}{}", std::process::id())
}

/// A Secrets Manager value picked by JSON key and an SSM SecureString reach the container's
/// environment, and appear in no Describe* answer and no log line. An execution role
/// without the permission stops the task with ECS's reason before any container starts.
#[tokio::test]
async fn secrets_reach_the_environment_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), "127.0.0.1:0");
    let api = dev.api();
    let cluster = cluster(&api, "secrets").await;

    let password = random_word("pw-");
    let token = random_word("tok-");
    let secret_name = unique("db");
    let secret = json_call(
        &api,
        "secretsmanager",
        "secretsmanager.CreateSecret",
        json!({"Name": secret_name,
               "SecretString": json!({"username": "app", "password": password}).to_string()}),
    )
    .await;
    let secret_arn = secret["ARN"].as_str().expect("secret ARN").to_string();
    let parameter = format!("/{}/token", unique("app"));
    json_call(
        &api,
        "ssm",
        "AmazonSSM.PutParameter",
        json!({"Name": parameter, "Value": token, "Type": "SecureString"}),
    )
    .await;
    let parameter_arn = format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{parameter}");

    let reader = task_role(
        &api,
        &unique("exec-reader"),
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret_arn},
            {"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": parameter_arn}]})),
    )
    .await;
    let container = json!({"name": "web", "image": HTTP, "memory": 32,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "environment": [{"name": "PLAIN", "value": "visible"}],
        "secrets": [
            {"name": "DB_PASSWORD", "valueFrom": format!("{secret_arn}:password::")},
            {"name": "API_TOKEN", "valueFrom": parameter}]});
    let family = unique("with-secrets");
    api.ok(
        "RegisterTaskDefinition",
        json!({"family": family, "executionRoleArn": reader,
               "containerDefinitions": [container.clone()]}),
    )
    .await;

    let task = run(&api, &cluster, &family, "RUNNING").await;
    let port = host_port(&task);
    wait_http(port).await;
    assert_eq!(get(port, "/env/DB_PASSWORD").await, (200, password.clone()));
    assert_eq!(get(port, "/env/API_TOKEN").await, (200, token.clone()));
    assert_eq!(get(port, "/env/PLAIN").await, (200, "visible".to_string()));

    // Nothing the API answers carries a value.
    let arn = task["taskArn"].as_str().unwrap().to_string();
    let answers = [
        api.ok("DescribeTasks", json!({"cluster": cluster, "tasks": [arn]}))
            .await,
        api.ok("DescribeTaskDefinition", json!({"taskDefinition": family}))
            .await,
        api.ok("ListTasks", json!({"cluster": cluster})).await,
    ];
    for answer in &answers {
        let text = answer.to_string();
        assert!(
            !text.contains(&password) && !text.contains(&token),
            "a secret value in {text}"
        );
    }
    // The definition still says where the values come from.
    assert_eq!(
        answers[1]["taskDefinition"]["containerDefinitions"][0]["secrets"][1]["valueFrom"],
        parameter.as_str()
    );
    // No label of the container carries one either.
    let id = task["containers"][0]["runtimeId"].as_str().unwrap();
    let labels = inspect_container(id).unwrap()["Config"]["Labels"].to_string();
    assert!(!labels.contains(&password) && !labels.contains(&token));
    stop(&api, &cluster, &task).await;

    // An execution role that may read neither: the task stops before any container starts.
    let no_access = task_role(&api, &unique("exec-none"), None).await;
    let denied_family = unique("denied-secrets");
    api.ok(
        "RegisterTaskDefinition",
        json!({"family": denied_family, "executionRoleArn": no_access,
               "containerDefinitions": [container]}),
    )
    .await;
    let stopped = run(&api, &cluster, &denied_family, "STOPPED").await;
    let reason = stopped["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason
            .starts_with("ResourceInitializationError: unable to pull secrets or registry auth: "),
        "{stopped}"
    );
    // ECS keeps the first 255 characters of a reason.
    assert!(
        reason.contains(&format!("failed to fetch secret {secret_arn}")),
        "{reason}"
    );
    assert_eq!(stopped["stopCode"], "TaskFailedToStart", "{stopped}");
    assert!(stopped["containers"][0]["runtimeId"].is_null(), "{stopped}");
    assert!(containers_of_task(stopped["taskArn"].as_str().unwrap()).is_empty());

    // Secrets without an execution role are refused at registration, as ECS does.
    let message = api
        .err(
            "RegisterTaskDefinition",
            json!({"family": unique("no-exec"), "containerDefinitions": [
                {"name": "web", "image": HTTP, "memory": 32,
                 "secrets": [{"name": "A", "valueFrom": parameter}]}]}),
            "ClientException",
        )
        .await;
    assert!(message.contains("executionRoleArn"), "{message}");

    // And no log line of the server or the agent (at debug level) carries a value.
    let log = dev.log_text();
    assert!(log.contains("task assigned"), "the log was not captured");
    let leaks: Vec<String> = log
        .lines()
        .filter(|l| l.contains(&password) || l.contains(&token))
        .map(|l| {
            l.replace(&password, "<PASSWORD>")
                .replace(&token, "<TOKEN>")
        })
        .collect();
    assert!(leaks.is_empty(), "secret values in the log: {leaks:#?}");
}

/// The address containers on the default bridge reach the host at.
fn bridge_gateway() -> String {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{json .IPAM.Config}}",
        ])
        .output()
        .expect("docker network inspect");
    let configs: Value = serde_json::from_slice(&out.stdout).expect("IPAM config");
    let configs = configs.as_array().cloned().unwrap_or_default();
    if let Some(g) = configs.iter().find_map(|c| c["Gateway"].as_str()) {
        if g.parse::<std::net::Ipv4Addr>().is_ok() {
            return g.to_string();
        }
    }
    // The default bridge often lists only its subnet: the gateway is its first address.
    let subnet = configs
        .iter()
        .find_map(|c| c["Subnet"].as_str())
        .expect("a bridge subnet");
    let ip: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(ip) + 1).to_string()
}

/// A container gets its task role's credentials from the credentials endpoint and signs
/// ECS ListClusters with them: allowed with a role that allows it, AccessDenied with one
/// that does not. The server listens on the bridge gateway so the container can reach it.
#[tokio::test]
async fn task_role_credentials_sign_requests_from_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path(), &format!("{}:0", bridge_gateway()));
    let api = dev.api();
    let cluster = cluster(&api, "roles").await;
    let lister = task_role(
        &api,
        &unique("lister"),
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"}]})),
    )
    .await;
    let other = task_role(
        &api,
        &unique("other"),
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*"}]})),
    )
    .await;
    let family = unique("with-role");
    api.ok(
        "RegisterTaskDefinition",
        json!({"family": family, "taskRoleArn": lister, "containerDefinitions": [
            {"name": "web", "image": HTTP, "memory": 32,
             "portMappings": [{"containerPort": 8080, "hostPort": 0}],
             "environment": [{"name": "BERTH_ENDPOINT", "value": dev.url}]}]}),
    )
    .await;

    let task = run(&api, &cluster, &family, "RUNNING").await;
    let port = host_port(&task);
    wait_http(port).await;
    let uri = get(port, "/env/AWS_CONTAINER_CREDENTIALS_FULL_URI").await.1;
    assert!(uri.contains("/v2/credentials/"), "{uri}");
    // ECS's link-local address: the one host besides loopback where the AWS SDKs accept a
    // plain-HTTP full URI (botocore's ContainerMetadataFetcher, the Java and Go SDKs).
    assert!(uri.starts_with("http://169.254.170.2:"), "{uri}");
    let token = get(port, "/env/AWS_CONTAINER_AUTHORIZATION_TOKEN").await.1;
    assert!(token.len() >= 32, "{token}");

    let (status, body) = get(port, "/aws/ecs/ListClusters").await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("ListClusters answer");
    assert!(
        strings(&listed["clusterArns"])
            .iter()
            .any(|a| a.ends_with(&format!("cluster/{cluster}"))),
        "{listed}"
    );
    // Without the token, the endpoint gives nothing.
    let resp = reqwest::get(&uri).await.expect("GET credentials");
    assert_eq!(resp.status().as_u16(), 400);
    // The task's credentials appear in no Describe* answer.
    let described = api
        .ok(
            "DescribeTasks",
            json!({"cluster": cluster, "tasks": [task["taskArn"]]}),
        )
        .await;
    assert!(!described.to_string().contains(&token));
    stop(&api, &cluster, &task).await;

    // The same definition run with another role (RunTask overrides): denied.
    let (tasks, failures) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": family,
                         "overrides": {"taskRoleArn": other}}))
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    let task = api
        .wait_tasks(&cluster, &tasks, "RUNNING", RUNNING)
        .await
        .remove(0);
    let port = host_port(&task);
    wait_http(port).await;
    let (status, body) = get(port, "/aws/ecs/ListClusters").await;
    assert_eq!(status, 400, "{body}");
    let denied: Value = serde_json::from_str(&body).expect("error answer");
    assert_eq!(denied["__type"], "AccessDeniedException", "{denied}");
    assert!(
        denied["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(
                "assumed-role/{}",
                other.rsplit('/').next().unwrap()
            )),
        "{denied}"
    );
    stop(&api, &cluster, &task).await;

    // A role that does not trust ecs-tasks.amazonaws.com: the task does not start.
    let untrusted = unique("untrusted");
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "sts:AssumeRole"}]});
    iam(
        &api,
        "CreateRole",
        &[
            ("RoleName", &untrusted),
            ("AssumeRolePolicyDocument", &trust.to_string()),
        ],
    )
    .await;
    let (tasks, failures) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": family,
            "overrides": {"taskRoleArn": format!("arn:aws:iam::{ACCOUNT}:role/{untrusted}")}}))
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    let stopped = api
        .wait_tasks(&cluster, &tasks, "STOPPED", RUNNING)
        .await
        .remove(0);
    let reason = stopped["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ECS was unable to assume the role"),
        "{stopped}"
    );
}
