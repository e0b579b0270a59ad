//! Host-level access (privileged containers, host namespaces, bind mounts of `/` or the
//! Docker socket, added capabilities) is opt-in twice: the container instance's agent must
//! be started with the matching `--allow-*` flag (it then advertises the attribute the
//! scheduler requires), and the caller must hold `berth:RunPrivilegedTask`. Real `berth
//! server` and `berth agent` processes on the local Docker Engine.

mod common;

use std::time::Duration;

use berth_iam::sigv4::ClientCredentials;
use common::*;
use serde_json::{json, Value};

const PRIVILEGED_ATTRIBUTE: &str = "com.amazonaws.ecs.capability.privileged-container";

/// An IAM query request signed with the server's admin key; the XML answer.
async fn iam(api: &Api, params: &[(&str, &str)]) -> String {
    let body = params
        .iter()
        .chain(&[("Version", "2010-05-08")])
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let req = reqwest::Client::new()
        .post(format!("{}/", api.url))
        .header("content-type", content_type)
        .body(body.clone());
    let resp = api
        .sign(
            req,
            &[("content-type", content_type)],
            body.as_bytes(),
            "iam",
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{params:?}: {text}");
    text
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_value<'a>(xml: &'a str, tag: &str) -> &'a str {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|r| r.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
}

/// A user with `policy` inline and an access key; a client signing as that user.
async fn user(berth: &Berth, name: &str, policy: Value) -> Api {
    let admin = berth.api();
    iam(&admin, &[("Action", "CreateUser"), ("UserName", name)]).await;
    iam(
        &admin,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "p"),
            ("PolicyDocument", &policy.to_string()),
        ],
    )
    .await;
    let key = iam(&admin, &[("Action", "CreateAccessKey"), ("UserName", name)]).await;
    berth.api().signed_with(Some(ClientCredentials::new(
        xml_value(&key, "AccessKeyId"),
        xml_value(&key, "SecretAccessKey"),
    )))
}

async fn register(api: &Api, body: Value) -> String {
    let v = api.ok("RegisterTaskDefinition", body).await;
    v["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string()
}

fn busybox(name: &str, extra: Value) -> Value {
    let mut c = json!({
        "name": name, "image": BUSYBOX, "memory": 32, "essential": true,
        "command": ["sh", "-c", SLEEP_FOREVER], "stopTimeout": 2,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn attribute_names(instance: &Value) -> Vec<String> {
    instance["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect()
}

/// A privileged task cannot be placed on an instance that did not opt in (ECS's
/// `ATTRIBUTE` failure), runs on one that did, and the attribute cannot be faked.
#[tokio::test]
async fn privileged_tasks_go_only_to_opted_in_instances() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(&dir.path().join("server"), &[]);
    let api = berth.api();
    let plain = unique("plain");
    let opted = unique("opted");
    api.create_cluster(&plain).await;
    api.create_cluster(&opted).await;
    let _plain_agent = AgentProcess::start(&berth.url, &plain, &dir.path().join("a1"), &[]);
    // Kept after they stop so the test can inspect what Docker was asked for.
    let _opted_agent = AgentProcess::start_with(
        &berth.url,
        &opted,
        &dir.path().join("a2"),
        &[],
        &["--allow-privileged", "--task-cleanup-wait", "1h"],
    );
    let plain_instance = api.wait_instances(&plain, 1).await.remove(0);
    let opted_instance = api.wait_instances(&opted, 1).await.remove(0);

    // The opted-in agent advertises ECS's attribute; the other does not.
    let described = api.describe_instance(&opted, &opted_instance).await;
    assert!(
        attribute_names(&described).contains(&PRIVILEGED_ATTRIBUTE.to_string()),
        "{described}"
    );
    let described = api.describe_instance(&plain, &plain_instance).await;
    assert!(
        !attribute_names(&described).contains(&PRIVILEGED_ATTRIBUTE.to_string()),
        "{described}"
    );
    // Nobody can claim it for an instance with PutAttributes.
    let message = api
        .err(
            "PutAttributes",
            json!({"cluster": plain, "attributes": [{"name": PRIVILEGED_ATTRIBUTE,
                   "targetId": plain_instance}]}),
            "InvalidParameterException",
        )
        .await;
    assert!(message.contains("set by the container agent"), "{message}");

    let family = unique("priv");
    let arn = register(
        &api,
        json!({"family": family, "containerDefinitions": [
            busybox("main", json!({"privileged": true}))]}),
    )
    .await;
    // As ECS does, the definition lists the attribute it needs.
    let td = api
        .ok("DescribeTaskDefinition", json!({"taskDefinition": arn}))
        .await;
    assert!(
        td["taskDefinition"]["requiresAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == PRIVILEGED_ATTRIBUTE),
        "{td}"
    );

    // Nowhere to go in the plain cluster.
    let (tasks, failures) = api
        .run_task(json!({"cluster": plain, "taskDefinition": arn}))
        .await;
    assert!(tasks.is_empty(), "{tasks:?}");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["reason"], "ATTRIBUTE", "{failures:?}");
    assert_eq!(failures[0]["arn"], plain_instance.as_str());

    // The opted-in instance takes it, and Docker is asked for a privileged container.
    let (tasks, failures) = api
        .run_task(json!({"cluster": opted, "taskDefinition": arn}))
        .await;
    assert_eq!(tasks.len(), 1, "{failures:?}");
    let task = eventually(
        "the privileged task to start or fail",
        Duration::from_secs(60),
        || async {
            let t = api.describe_tasks(&opted, &tasks).await.remove(0);
            if t["lastStatus"] == "RUNNING" || t["lastStatus"] == "STOPPED" {
                Ok(t)
            } else {
                Err(t)
            }
        },
    )
    .await;
    let containers = containers_of_task(&tasks[0]);
    assert_eq!(containers.len(), 1, "{task}");
    let inspected = inspect_container(&containers[0]).unwrap();
    assert_eq!(inspected["HostConfig"]["Privileged"], true, "{inspected}");
    if task["lastStatus"] == "STOPPED" {
        // Some hosts (rootless or nested Docker) cannot run privileged containers at all:
        // then the container was created privileged and Docker refused to start it.
        let reason = task["stoppedReason"].as_str().unwrap_or_default();
        assert!(reason.contains("CannotStartContainerError"), "{task}");
        eprintln!("note: this host's Docker refuses privileged containers: {reason}");
    }
}

/// The agent refuses host-level access it was not allowed even when the control plane
/// could not see it: a host path that is a symbolic link to `/` on the agent's host.
#[tokio::test]
async fn the_agent_refuses_what_its_host_did_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(&dir.path().join("server"), &[]);
    let api = berth.api();
    let cluster = unique("refuse");
    api.create_cluster(&cluster).await;
    let _agent = AgentProcess::start(&berth.url, &cluster, &dir.path().join("a"), &[]);
    api.wait_instances(&cluster, 1).await;
    let link = dir.path().join("looks-harmless");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let arn = register(
        &api,
        json!({"family": unique("link"),
               "volumes": [{"name": "root", "host": {"sourcePath": link}}],
               "containerDefinitions": [busybox("main", json!({
                   "mountPoints": [{"sourceVolume": "root", "containerPath": "/host"}]}))]}),
    )
    .await;
    let (tasks, failures) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": arn}))
        .await;
    assert_eq!(tasks.len(), 1, "{failures:?}");
    let task = api
        .wait_tasks(&cluster, &tasks, "STOPPED", Duration::from_secs(60))
        .await
        .remove(0);
    let reason = task["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("does not allow the host-level access"),
        "{task}"
    );
    assert!(reason.contains("--allow-host-root-mounts"), "{task}");
    assert_eq!(task["stopCode"], "TaskFailedToStart", "{task}");
    assert!(containers_of_task(&tasks[0]).is_empty());
}

/// ecs:RunTask is not enough: launching a definition that asks for host-level access also
/// needs berth:RunPrivilegedTask on the cluster, at RunTask, StartTask, CreateService and
/// UpdateService, for whoever launches (not whoever registered it).
#[tokio::test]
async fn launching_needs_berth_run_privileged_task() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(&dir.path().join("server"), &[]);
    let admin = berth.api();
    let cluster = unique("authz");
    admin.create_cluster(&cluster).await;
    let _agent = AgentProcess::start_with(
        &berth.url,
        &cluster,
        &dir.path().join("a"),
        &[],
        &["--allow-host-namespaces", "--allow-privileged"],
    );
    let instance = admin.wait_instances(&cluster, 1).await.remove(0);
    // The admin (account root) registers; alice runs.
    let privileged = register(
        &admin,
        json!({"family": unique("hostpid"), "pidMode": "host",
               "containerDefinitions": [busybox("main", json!({}))]}),
    )
    .await;
    let plain = register(
        &admin,
        json!({"family": unique("plain"), "containerDefinitions": [busybox("main", json!({}))]}),
    )
    .await;
    let alice = user(
        &berth,
        &unique("alice"),
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}),
    )
    .await;
    let cluster_arn = format!("arn:aws:ecs:us-east-1:000000000000:cluster/{cluster}");

    // A plain definition: ecs:RunTask is all it takes.
    let (tasks, failures) = alice
        .run_task(json!({"cluster": cluster, "taskDefinition": plain}))
        .await;
    assert_eq!(tasks.len(), 1, "{failures:?}");
    alice
        .ok("StopTask", json!({"cluster": cluster, "task": tasks[0]}))
        .await;

    for (op, body) in [
        (
            "RunTask",
            json!({"cluster": cluster, "taskDefinition": privileged}),
        ),
        (
            "StartTask",
            json!({"cluster": cluster, "taskDefinition": privileged,
                   "containerInstances": [instance]}),
        ),
        (
            "CreateService",
            json!({"cluster": cluster, "serviceName": "svc", "taskDefinition": privileged,
                   "desiredCount": 1}),
        ),
    ] {
        let message = alice.err(op, body, "AccessDeniedException").await;
        assert!(
            message.contains(&format!(
                "is not authorized to perform: berth:RunPrivilegedTask on resource: {cluster_arn} \
                 because no identity-based policy allows the berth:RunPrivilegedTask action"
            )),
            "{op}: {message}"
        );
    }
    // UpdateService: to the privileged definition, or scaling a service that already runs it.
    alice
        .ok(
            "CreateService",
            json!({"cluster": cluster, "serviceName": "web", "taskDefinition": plain,
                   "desiredCount": 0}),
        )
        .await;
    alice
        .err(
            "UpdateService",
            json!({"cluster": cluster, "service": "web", "taskDefinition": privileged}),
            "AccessDeniedException",
        )
        .await;
    admin
        .ok(
            "UpdateService",
            json!({"cluster": cluster, "service": "web", "taskDefinition": privileged}),
        )
        .await;
    alice
        .err(
            "UpdateService",
            json!({"cluster": cluster, "service": "web", "desiredCount": 2}),
            "AccessDeniedException",
        )
        .await;

    // Allowed for host namespaces only (berth:HostAccess): the pidMode host task runs.
    let bob = user(
        &berth,
        &unique("bob"),
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "berth:RunPrivilegedTask", "Resource": cluster_arn,
             "Condition": {"ForAllValues:StringEquals":
                {"berth:HostAccess": ["host-namespaces"]}}}]}),
    )
    .await;
    let (tasks, failures) = bob
        .run_task(json!({"cluster": cluster, "taskDefinition": privileged}))
        .await;
    assert_eq!(tasks.len(), 1, "{failures:?}");
    let both = register(
        &admin,
        json!({"family": unique("both"), "pidMode": "host",
               "containerDefinitions": [busybox("main", json!({"privileged": true}))]}),
    )
    .await;
    bob.err(
        "RunTask",
        json!({"cluster": cluster, "taskDefinition": both}),
        "AccessDeniedException",
    )
    .await;
    // The account root has it through `*`.
    let (tasks, failures) = admin
        .run_task(json!({"cluster": cluster, "taskDefinition": both}))
        .await;
    assert_eq!(tasks.len(), 1, "{failures:?}");
}
