//! Authentication against a real `berth server` with auth on: unsigned, unknown key, wrong
//! secret, clock skew, presigned URLs, errors in each protocol's own shape; the admin key
//! made once; `--insecure-any-credentials` and its refusal on a non-loopback address.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use berth_iam::sigv4::{presign_url, sign_request, ClientCredentials, SigningTarget};
use common::*;
use serde_json::{json, Value};

const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113.ListClusters";

/// POSTs `body` to the server, signed (when `creds`) for `service` at `time`.
async fn post(
    url: &str,
    creds: Option<&ClientCredentials>,
    service: &str,
    headers: &[(&str, &str)],
    body: &str,
    time: SystemTime,
) -> (u16, String, String) {
    let host = url.trim_start_matches("http://");
    let mut req = reqwest::Client::new()
        .post(format!("{url}/"))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(c) = creds {
        let mut signed = vec![("host", host)];
        signed.extend_from_slice(headers);
        let added = sign_request(
            "POST",
            &format!("{url}/"),
            &signed,
            body.as_bytes(),
            c,
            &SigningTarget {
                region: "us-east-1",
                service,
                time,
            },
        )
        .unwrap();
        for (k, v) in added {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, resp.text().await.unwrap())
}

async fn ecs(url: &str, creds: Option<&ClientCredentials>, time: SystemTime) -> (u16, Value) {
    let (status, _, body) = post(
        url,
        creds,
        "ecs",
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", ECS_TARGET),
        ],
        "{}",
        time,
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn iam(url: &str, creds: Option<&ClientCredentials>, body: &str) -> (u16, String) {
    let (status, ct, body) = post(
        url,
        creds,
        "iam",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body,
        SystemTime::now(),
    )
    .await;
    assert_eq!(ct, "text/xml", "{body}");
    (status, body)
}

fn xml_code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or_default()
}

#[tokio::test]
async fn requests_must_be_signed_by_a_known_key() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let admin = berth
        .admin_credentials()
        .expect("the server wrote its admin key");
    let now = SystemTime::now();

    // Signed with the admin key: served.
    let (status, v) = ecs(&berth.url, Some(&admin), now).await;
    assert_eq!(status, 200, "{v}");
    // The harness client signs too.
    berth.api().ok("ListClusters", json!({})).await;

    // Unsigned: MissingAuthenticationToken, in each protocol.
    let (status, v) = ecs(&berth.url, None, now).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException")),
        "{v}"
    );
    let (status, body) = iam(&berth.url, None, "Action=ListUsers&Version=2010-05-08").await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "MissingAuthenticationToken"),
        "{body}"
    );
    assert!(
        body.starts_with("<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">"),
        "{body}"
    );

    // Unknown key id.
    let stranger = ClientCredentials::new("AKIAUNKNOWN0000000000", "x");
    let (status, v) = ecs(&berth.url, Some(&stranger), now).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("UnrecognizedClientException")),
        "{v}"
    );
    assert_eq!(
        v["message"],
        "The security token included in the request is invalid."
    );
    let (status, body) = iam(
        &berth.url,
        Some(&stranger),
        "Action=ListUsers&Version=2010-05-08",
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "InvalidClientTokenId"),
        "{body}"
    );

    // Known key, wrong secret.
    let wrong = ClientCredentials::new(&admin.access_key_id, "not-the-secret");
    let (status, v) = ecs(&berth.url, Some(&wrong), now).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("InvalidSignatureException")),
        "{v}"
    );
    let (status, body) = iam(
        &berth.url,
        Some(&wrong),
        "Action=ListUsers&Version=2010-05-08",
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );

    // Clock skew beyond 15 minutes, either way.
    for skew in [-20i64, 20] {
        let t = if skew < 0 {
            now - Duration::from_secs(20 * 60)
        } else {
            now + Duration::from_secs(20 * 60)
        };
        let (status, v) = ecs(&berth.url, Some(&admin), t).await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (400, Some("InvalidSignatureException")),
            "{v}"
        );
        assert!(
            v["message"].as_str().unwrap().starts_with("Signature "),
            "{v}"
        );
    }
    // Within the window: fine.
    let (status, _) = ecs(&berth.url, Some(&admin), now - Duration::from_secs(10 * 60)).await;
    assert_eq!(status, 200);

    // A signature scoped to another service.
    let (status, _, body) = post(
        &berth.url,
        Some(&admin),
        "sts",
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", ECS_TARGET),
        ],
        "{}",
        now,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("InvalidSignatureException"), "{body}");

    // A garbled Authorization header.
    let resp = reqwest::Client::new()
        .post(format!("{}/", berth.url))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", ECS_TARGET)
        .header("authorization", "AWS4-HMAC-SHA256 Credential=abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["__type"], "IncompleteSignatureException", "{v}");

    // The health check stays open.
    let health = reqwest::get(format!("{}/healthz", berth.url))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn presigned_query_requests() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let admin = berth.admin_credentials().unwrap();
    let url = presign_url(
        "GET",
        &format!("{}/?Action=GetCallerIdentity&Version=2011-06-15", berth.url),
        &admin,
        &SigningTarget {
            region: "us-east-1",
            service: "sts",
            time: SystemTime::now(),
        },
        Duration::from_secs(60),
    )
    .unwrap();
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("<Arn>arn:aws:iam::000000000000:root</Arn>"),
        "{body}"
    );
    // Tampered: another action under the same signature.
    let tampered = url.replace("GetCallerIdentity", "AssumeRole");
    let body = reqwest::get(&tampered).await.unwrap().text().await.unwrap();
    assert_eq!(xml_code(&body), "SignatureDoesNotMatch", "{body}");
    // Expired.
    let old = presign_url(
        "GET",
        &format!("{}/?Action=GetCallerIdentity&Version=2011-06-15", berth.url),
        &admin,
        &SigningTarget {
            region: "us-east-1",
            service: "sts",
            time: SystemTime::now() - Duration::from_secs(600),
        },
        Duration::from_secs(60),
    )
    .unwrap();
    let body = reqwest::get(&old).await.unwrap().text().await.unwrap();
    assert_eq!(xml_code(&body), "SignatureDoesNotMatch", "{body}");
    assert!(body.contains("Signature expired"), "{body}");
}

/// Starts `berth <args>` and returns its stdout lines up to the listening line.
fn start_and_read(args: &[&str]) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("berth: listening on ");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

#[test]
fn the_admin_key_is_made_and_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["server", "--listen", "127.0.0.1:0", "--data-dir", d];
    let (mut first, lines) = start_and_read(&args);
    let _ = first.kill();
    let _ = first.wait();
    let shown: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("AWS_SECRET_ACCESS_KEY="))
        .collect();
    assert_eq!(shown.len(), 1, "{lines:?}");
    let file = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
    let secret = shown[0].split('=').nth(1).unwrap();
    assert!(file.contains(secret));
    use std::os::unix::fs::PermissionsExt;
    for f in ["credentials", "master.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let (mut second, lines) = start_and_read(&args);
    let _ = second.kill();
    let _ = second.wait();
    assert!(
        !lines.iter().any(|l| l.contains("AWS_SECRET_ACCESS_KEY")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn insecure_any_credentials_is_loopback_only() {
    // Refused on a non-loopback address.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "server",
            "--listen",
            "0.0.0.0:0",
            "--insecure-any-credentials",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-any-credentials"), "{err}");

    // On loopback: any well-formed signature is the root; unsigned is still refused.
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &["--insecure-any-credentials"]);
    let anyone = ClientCredentials::new("x", "x");
    let (status, v) = ecs(&berth.url, Some(&anyone), SystemTime::now()).await;
    assert_eq!(status, 200, "{v}");
    let (status, body) = iam(
        &berth.url,
        Some(&anyone),
        "Action=CreateUser&Version=2010-05-08&UserName=u1",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, v) = ecs(&berth.url, None, SystemTime::now()).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException"))
    );
}
