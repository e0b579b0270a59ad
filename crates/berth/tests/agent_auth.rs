//! The agent channel's admission and scoping against a real `berth server`: join tokens
//! (missing, forged, expired, revoked, another cluster's), the admin API and CLI that make
//! them, instances that may speak only for themselves (no overwrite by re-registration, no
//! reports or polls about another instance's tasks), and TLS with a self-signed CA.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// POSTs an agent-channel message; (status, body).
async fn agent_post(api: &Api, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/agent/v1/{path}", api.url))
        .json(&body)
        .send()
        .await
        .expect("agent message");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

fn registration(cluster: &str, token: Option<&str>, memory: u64) -> Value {
    json!({
        "cluster": cluster,
        "joinToken": token,
        "agentId": "i-0123456789abcdef0",
        "resources": {"cpu": 1024, "memory": memory, "tcp_ports": [], "udp_ports": []},
        "attributes": [],
        "versionInfo": {"agent_version": "test", "agent_hash": null, "docker_version": null},
        "followAllClusters": false,
    })
}

fn assert_refused(status: u16, body: &Value, words: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "AccessDeniedException", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{words:?} not in {body}");
}

/// Registers a new instance with `token`; (ARN, credential).
async fn register(api: &Api, cluster: &str, token: &str) -> (String, String) {
    let (status, v) = agent_post(api, "register", registration(cluster, Some(token), 2048)).await;
    assert_eq!(status, 200, "register: {v}");
    (
        v["containerInstanceArn"].as_str().unwrap().to_string(),
        v["credential"].as_str().unwrap().to_string(),
    )
}

async fn instance_count(api: &Api, cluster: &str) -> usize {
    let v = api
        .ok("ListContainerInstances", json!({"cluster": cluster}))
        .await;
    strings(&v["containerInstanceArns"]).len()
}

/// `berth join-token <args>` against `berth`'s server with its admin credentials file.
fn cli(berth: &Berth, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("join-token")
        .args(args)
        .arg("--endpoint")
        .arg(&berth.url)
        .arg("--credentials-file")
        .arg(berth.data_dir.join("credentials"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("berth join-token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn new_instances_need_a_live_join_token() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    let cluster = unique("tokens");
    api.create_cluster(&cluster).await;
    api.create_cluster("elsewhere").await;

    // No token, a malformed one, a forged secret: refused, nothing registered.
    let (s, v) = agent_post(&api, "register", registration(&cluster, None, 2048)).await;
    assert_refused(s, &v, "needs a cluster join token");
    let (s, v) = agent_post(
        &api,
        "register",
        registration(&cluster, Some("letmein"), 2048),
    )
    .await;
    assert_refused(s, &v, "malformed");
    let (ok, token, _) = cli(&berth, &["create", "--cluster", &cluster]);
    assert!(ok);
    let token = token.trim().to_string();
    let forged = format!("{}.{}", token.split_once('.').unwrap().0, "0".repeat(64));
    let (s, v) = agent_post(
        &api,
        "register",
        registration(&cluster, Some(&forged), 2048),
    )
    .await;
    assert_refused(s, &v, "not valid");
    // Another cluster's token.
    let (s, v) = agent_post(
        &api,
        "register",
        registration("elsewhere", Some(&token), 2048),
    )
    .await;
    assert_refused(s, &v, "not valid for cluster elsewhere");
    assert_eq!(instance_count(&api, &cluster).await, 0);

    // A live token admits, more than once.
    register(&api, &cluster, &token).await;
    register(&api, &cluster, &token).await;
    assert_eq!(instance_count(&api, &cluster).await, 2);

    // Revoked (with the CLI): refused; the instances that joined stay.
    let id = token.trim_start_matches("bjt_").split('.').next().unwrap();
    let (ok, out, err) = cli(&berth, &["revoke", id]);
    assert!(ok, "{err}");
    assert!(out.contains(id));
    let (s, v) = agent_post(&api, "register", registration(&cluster, Some(&token), 2048)).await;
    assert_refused(s, &v, "revoked");
    assert_eq!(instance_count(&api, &cluster).await, 2);

    // Expired: a one-second token, once the server lists it as EXPIRED.
    let (status, v) = api
        .admin(
            "CreateJoinToken",
            json!({"cluster": cluster, "expiresInSeconds": 1, "description": "short"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let short = v["token"].as_str().unwrap().to_string();
    let short_id = v["joinToken"]["tokenId"].as_str().unwrap().to_string();
    eventually("the token to expire", Duration::from_secs(10), || async {
        let (_, v) = api
            .admin("ListJoinTokens", json!({"cluster": cluster}))
            .await;
        let listed = v["joinTokens"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["tokenId"] == short_id.as_str())
            .cloned()
            .unwrap_or_default();
        if listed["status"] == "EXPIRED" {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await;
    let (s, v) = agent_post(&api, "register", registration(&cluster, Some(&short), 2048)).await;
    assert_refused(s, &v, "expired");

    // The list shows ids and states, never a secret.
    let (ok, out, err) = cli(&berth, &["list", "--cluster", &cluster]);
    assert!(ok, "{err}");
    assert!(
        out.contains(id) && out.contains("REVOKED") && out.contains("EXPIRED"),
        "{out}"
    );
    assert!(!out.contains(token.split_once('.').unwrap().1), "{out}");
}

#[tokio::test]
async fn the_admin_api_is_signed_and_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let cluster = unique("admin");
    berth.api().create_cluster(&cluster).await;
    let unsigned = Api::new(&berth.url).signed_with(None);
    let (s, v) = unsigned
        .admin("CreateJoinToken", json!({"cluster": cluster}))
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["__type"], "MissingAuthenticationTokenException", "{v}");
    let stranger = Api::new(&berth.url).signed_with(Some(
        berth_iam::sigv4::ClientCredentials::new("AKIAIOSFODNN7EXAMPLE", "x".repeat(40)),
    ));
    let (s, v) = stranger
        .admin("CreateJoinToken", json!({"cluster": cluster}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["__type"], "UnrecognizedClientException", "{v}");
    let (s, v) = berth
        .api()
        .admin("CreateJoinToken", json!({"cluster": "no-such-cluster"}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["__type"], "ClusterNotFoundException", "{v}");
    let (s, v) = berth
        .api()
        .admin("RevokeJoinToken", json!({"tokenId": "0123456789abcdef"}))
        .await;
    assert_eq!(
        (s, v["__type"].as_str()),
        (400, Some("ResourceNotFoundException")),
        "{v}"
    );
}

#[tokio::test]
async fn an_agent_without_a_join_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(&dir.path().join("server"), &[]);
    let api = berth.api();
    let cluster = unique("rogue");
    api.create_cluster(&cluster).await;
    let mut rogue = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "agent",
            "--server",
            &berth.url,
            "--cluster",
            &cluster,
            "--data-dir",
        ])
        .arg(dir.path().join("rogue"))
        .env_remove("BERTH_JOIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth agent");
    let mut stderr = String::new();
    for line in BufReader::new(rogue.stderr.take().unwrap()).lines() {
        stderr.push_str(&line.unwrap());
        stderr.push('\n');
    }
    // A refusal is final: the agent exits with the reason.
    let status = rogue.wait().unwrap();
    assert!(!status.success());
    assert!(stderr.contains("needs a cluster join token"), "{stderr}");
    assert_eq!(instance_count(&api, &cluster).await, 0);
}

#[tokio::test]
async fn instances_speak_only_for_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    let cluster = unique("scoped");
    api.create_cluster(&cluster).await;
    let token = api.join_token(&cluster).await;

    // Re-registering someone's instance without its credential is refused, and its
    // resources stay as they were (the defect was MEMORY rewritten to 1e9).
    let (victim, victim_credential) = register(&api, &cluster, &token).await;
    let mut again = registration(&cluster, Some(&token), 1_000_000_000);
    again["containerInstanceArn"] = json!(victim);
    let (s, v) = agent_post(&api, "register", again.clone()).await;
    assert_refused(s, &v, "only its agent");
    again["credential"] = json!("0".repeat(64));
    let (s, v) = agent_post(&api, "register", again.clone()).await;
    assert_refused(s, &v, "not valid for this container instance");
    let memory = |i: &Value| {
        i["registeredResources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "MEMORY")
            .map(|r| r["integerValue"].clone())
    };
    assert_eq!(
        memory(&api.describe_instance(&cluster, &victim).await),
        Some(json!(2048))
    );
    // Its own credential still works.
    again["credential"] = json!(victim_credential);
    again["resources"]["memory"] = json!(2048);
    let (s, v) = agent_post(&api, "register", again).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["containerInstanceArn"], victim.as_str());

    // A task on one simulated instance; a rogue (legitimately joined) instance next to it.
    let owner = api
        .register_instance(
            &cluster,
            1024,
            1024,
            "us-east-1a",
            json!([{"name": "role", "value": "owner"}]),
        )
        .await;
    let (rogue, rogue_credential) = register(&api, &cluster, &token).await;
    api.register_busybox("scoped", SLEEP_FOREVER).await;
    let (tasks, failures) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "scoped",
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:role == owner"}]}))
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    let task = &tasks[0];
    let described = api.describe_tasks(&cluster, tasks.as_slice()).await;
    assert_eq!(described[0]["containerInstanceArn"], owner.as_str());
    let (s, v) = api.agent_report(task, "RUNNING", json!([])).await;
    assert_eq!(s, 200, "{v}");

    // The rogue reports the task STOPPED with its own credential: refused.
    let forged = |instance: &str, credential: &str| {
        json!({
            "instance": {"cluster": cluster, "containerInstanceArn": instance, "credential": credential},
            "taskArn": task,
            "report": {"status": "STOPPED", "reason": "forged", "stop_code": null, "containers": [],
                       "pull_started_at": null, "pull_stopped_at": null, "execution_stopped_at": null},
        })
    };
    let (s, v) = agent_post(&api, "report", forged(&rogue, &rogue_credential)).await;
    assert_refused(s, &v, "is not assigned to container instance");
    // Or in the owner's name with its own credential: refused too.
    let (s, v) = agent_post(&api, "report", forged(&owner, &rogue_credential)).await;
    assert_refused(s, &v, "not valid for this container instance");
    // Polling as the owner with the rogue's credential reveals nothing.
    let (s, v) = agent_post(
        &api,
        "poll",
        json!({"instances": [{"cluster": cluster, "containerInstanceArn": owner,
                              "credential": rogue_credential}],
               "followAllClusters": false, "knownDigest": null, "waitSeconds": 0}),
    )
    .await;
    assert_refused(s, &v, "not valid for this container instance");
    // The rogue's own poll does not list the task.
    let (s, v) = agent_post(
        &api,
        "poll",
        json!({"instances": [{"cluster": cluster, "containerInstanceArn": rogue,
                              "credential": rogue_credential}],
               "followAllClusters": false, "knownDigest": null, "waitSeconds": 0}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tasks"], json!([]), "{v}");

    let after = api.describe_tasks(&cluster, tasks.as_slice()).await;
    assert_eq!(after[0]["lastStatus"], "RUNNING", "{}", after[0]);
    assert_eq!(after[0]["desiredStatus"], "RUNNING", "{}", after[0]);
    api.ok("StopTask", json!({"cluster": cluster, "task": task}))
        .await;
}

#[tokio::test]
async fn tls_with_a_self_signed_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let listen = free_local_addr();
    let mut berth = Berth::server_on(&server_dir, &listen, &["--tls-self-signed"]);
    assert!(berth.url.starts_with("https://"), "{}", berth.url);
    let ca = server_dir.join("tls/ca.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(server_dir.join("tls").join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.pem"), 0o644);
        assert_eq!(mode("server.key"), 0o600);
        assert_eq!(mode("ca.key"), 0o600);
    }
    let api = berth.api();
    let cluster = unique("tls");
    api.create_cluster(&cluster).await;

    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/healthz",
            berth.url.replace("https://", "http://")
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));

    // An agent that does not trust the CA says so and registers nothing.
    let token = join_token(&berth.url, &cluster);
    let mut untrusting = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "agent",
            "--server",
            &berth.url,
            "--cluster",
            &cluster,
            "--join-token",
            &token,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("untrusting"))
        .env_remove("BERTH_CA_CERT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth agent");
    let lines = BufReader::new(untrusting.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    for line in lines {
        let line = line.unwrap();
        if line.contains("pass its CA with --ca-cert") {
            seen = line;
            break;
        }
        assert!(Instant::now() < deadline, "no TLS trust error logged");
    }
    let _ = untrusting.kill();
    let _ = untrusting.wait();
    assert!(seen.contains("registration failed"), "{seen}");
    assert_eq!(instance_count(&api, &cluster).await, 0);

    // With --ca-cert (the harness passes the server's CA) it registers and runs a task.
    let agent = AgentProcess::start(&berth.url, &cluster, &dir.path().join("agent"), &[]);
    api.wait_instances(&cluster, 1).await;
    api.register_busybox("tls", SLEEP_FOREVER).await;
    let (tasks, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": "tls"}))
        .await;
    api.wait_tasks(&cluster, &tasks, "RUNNING", Duration::from_secs(60))
        .await;
    api.ok("StopTask", json!({"cluster": cluster, "task": tasks[0]}))
        .await;
    api.wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await;
    drop(agent);

    // A restart reuses the CA and certificate.
    let before = std::fs::read(&ca).unwrap();
    berth.kill9();
    let berth = Berth::server_on(&server_dir, &listen, &["--tls-self-signed"]);
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    berth.api().ok("ListClusters", json!({})).await;
}

/// A signed IAM query-protocol call as the admin; the XML answer.
async fn iam(api: &Api, params: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Version", "2010-05-08");
    for (k, v) in params {
        form.append_pair(k, v);
    }
    let body = form.finish();
    let ct = "application/x-www-form-urlencoded; charset=utf-8";
    let req = reqwest::Client::new()
        .post(format!("{}/", api.url))
        .header("content-type", ct)
        .body(body.clone());
    let resp = api
        .sign(req, &[("content-type", ct)], body.as_bytes(), "iam")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{params:?}: {text}");
    text
}

fn xml_field<'a>(xml: &'a str, tag: &str) -> &'a str {
    let start = xml.find(&format!("<{tag}>")).expect(tag) + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>")).expect(tag);
    &xml[start..end]
}

#[tokio::test]
async fn join_token_actions_follow_iam_policies() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let admin = berth.api();
    let (mine, theirs) = (unique("mine"), unique("theirs"));
    admin.create_cluster(&mine).await;
    admin.create_cluster(&theirs).await;
    iam(&admin, &[("Action", "CreateUser"), ("UserName", "ops")]).await;
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["berth:CreateJoinToken", "berth:RevokeJoinToken"],
        "Resource": format!("arn:aws:ecs:us-east-1:000000000000:cluster/{mine}")}]});
    iam(
        &admin,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "ops"),
            ("PolicyName", "join-mine"),
            ("PolicyDocument", &policy.to_string()),
        ],
    )
    .await;
    let key = iam(
        &admin,
        &[("Action", "CreateAccessKey"), ("UserName", "ops")],
    )
    .await;
    let ops = Api::new(&berth.url).signed_with(Some(berth_iam::sigv4::ClientCredentials::new(
        xml_field(&key, "AccessKeyId"),
        xml_field(&key, "SecretAccessKey"),
    )));

    let (s, v) = ops.admin("CreateJoinToken", json!({"cluster": mine})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["joinToken"]["createdBy"],
        "arn:aws:iam::000000000000:user/ops"
    );
    let id = v["joinToken"]["tokenId"].as_str().unwrap().to_string();
    for (operation, body) in [
        ("CreateJoinToken", json!({"cluster": theirs})),
        ("ListJoinTokens", json!({})),
    ] {
        let (s, v) = ops.admin(operation, body).await;
        assert_eq!(
            (s, v["__type"].as_str()),
            (400, Some("AccessDeniedException")),
            "{v}"
        );
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(&format!("berth:{operation}")), "{message}");
    }
    let (s, v) = ops.admin("RevokeJoinToken", json!({"tokenId": id})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["joinToken"]["status"], "REVOKED");
}

/// As with ECS, an agent joining "default" makes that cluster on first use, but only when
/// its join token admits it.
#[tokio::test]
async fn the_default_cluster_is_made_for_an_admitted_agent_only() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    let (s, v) = agent_post(
        &api,
        "register",
        registration("default", Some("bjt_x.y"), 2048),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api
        .call("DescribeClusters", json!({"clusters": ["default"]}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["failures"][0]["reason"], "MISSING", "{v}");

    let (ok, token, _) = cli(&berth, &["create", "--cluster", "default"]);
    assert!(ok);
    let (arn, _) = register(&api, "default", token.trim()).await;
    assert!(arn.contains(":container-instance/default/"), "{arn}");
    let v = api
        .ok("DescribeClusters", json!({"clusters": ["default"]}))
        .await;
    assert_eq!(v["clusters"][0]["status"], "ACTIVE", "{v}");
    assert_eq!(
        v["clusters"][0]["registeredContainerInstancesCount"], 1,
        "{v}"
    );
}
