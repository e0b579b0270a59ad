//! What berth's benchmarks share: starting `berth dev` / `berth server` and a client that
//! signs its requests (SigV4) with the admin key the server writes, as real clients do.
#![allow(dead_code)] // each bench uses part of it

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_iam::sigv4::{ClientCredentials, SigningTarget};
use serde_json::{json, Value};

/// A `berth` process started for a benchmark; killed when dropped.
pub struct Berth {
    child: Child,
    pub url: String,
    pub data: tempfile::TempDir,
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Berth {
    /// Starts `berth <args> --listen 127.0.0.1:0 --data-dir <temp>` (`bin`: the binary)
    /// and waits until it listens.
    pub fn start(bin: &str, args: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("BERTH_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting berth");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("berth exited").expect("stdout");
            if let Some(url) = line.strip_prefix("berth: listening on ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, url, data }
    }

    /// `berth dev` of this build.
    pub fn dev(args: &[&str]) -> Self {
        let mut all = vec!["dev"];
        all.extend_from_slice(args);
        Self::start(env!("CARGO_BIN_EXE_berth"), &all)
    }

    /// A client signing with the admin key of this server (`berth server` writes it to
    /// `<data>/credentials`, `berth dev` to `<data>/server/credentials`); unsigned for a
    /// binary that writes none (an older baseline).
    pub fn client(&self, http: reqwest::Client) -> Client {
        let dir = self.data.path();
        let credentials = [dir.join("credentials"), dir.join("server/credentials")]
            .iter()
            .find_map(|f| berth_iam::read_credentials_file(Path::new(f)));
        Client {
            http,
            url: self.url.clone(),
            credentials,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub credentials: Option<ClientCredentials>,
}

impl Client {
    /// A signed POST of `body` to `/` for `service`, with `headers`.
    pub fn post(
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
                &SigningTarget {
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

    /// An ECS call; the answer, or the error body as text.
    pub async fn try_call(&self, action: &str, body: &Value) -> Result<Value, String> {
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

    /// An ECS call that must succeed.
    pub async fn call(&self, action: &str, body: Value) -> Value {
        match self.try_call(action, &body).await {
            Ok(v) => v,
            Err(e) => panic!("{action}: {e}"),
        }
    }

    /// A join token for the cluster (None from a server without join tokens).
    pub async fn join_token(&self, cluster: &str) -> Option<String> {
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

    /// Creates `cluster` and waits until an instance (the dev agent) has joined it.
    pub async fn cluster_with_instance(&self, cluster: &str) {
        self.call("CreateCluster", json!({"clusterName": cluster}))
            .await;
        loop {
            let v = self
                .call("ListContainerInstances", json!({"cluster": cluster}))
                .await;
            if v["containerInstanceArns"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
