//! `berth join-token create|list|revoke`: the admin side of cluster join tokens, as SigV4
//! requests to the server's `BerthAdmin_v1` JSON target (authorized as `berth:*` actions).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use berth_iam::sigv4::{ClientCredentials, SigningTarget};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Subcommand, Clone)]
pub enum JoinTokenCommand {
    /// Make a token that lets agents register new container instances in a cluster. The
    /// token is printed once (on stdout); only its hash is kept.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// The cluster the token admits instances to.
        #[arg(long)]
        cluster: String,
        /// How long the token is valid, e.g. 24h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = berth_agent::parse_duration)]
        expires_in: Duration,
        /// A note shown by `list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the tokens (never their secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only the tokens of this cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Revoke a token: no new instance joins with it (those that did keep running).
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        /// The token's id (the part after `bjt_` and before the dot).
        token_id: String,
    },
}

/// How the CLI reaches and signs for the server.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "BERTH_ENDPOINT")]
    endpoint: String,
    /// AWS shared-credentials file with the admin key (default: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, else berth-data/credentials or .berth-dev/server/credentials).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's TLS certificate.
    #[arg(long, env = "BERTH_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[arg(long, default_value = "us-east-1", env = "AWS_DEFAULT_REGION")]
    region: String,
}

impl ClientArgs {
    fn credentials(&self) -> anyhow::Result<ClientCredentials> {
        if let Some(file) = &self.credentials_file {
            return berth_iam::read_credentials_file(file)
                .with_context(|| format!("no [default] access key in {}", file.display()));
        }
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            let mut c = ClientCredentials::new(id, secret);
            c.session_token = std::env::var("AWS_SESSION_TOKEN").ok();
            return Ok(c);
        }
        ["berth-data/credentials", ".berth-dev/server/credentials"]
            .iter()
            .find_map(|f| berth_iam::read_credentials_file(Path::new(f)))
            .context(
                "no credentials: pass --credentials-file <data-dir>/credentials or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
    }

    fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing {}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder.build()?)
    }

    /// One signed `BerthAdmin_v1.<operation>` call; the answer's JSON, or its error.
    async fn call(&self, operation: &str, body: Value) -> anyhow::Result<Value> {
        let creds = self.credentials()?;
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .with_context(|| format!("{} is not an http(s) URL", self.endpoint))?;
        let target = format!("{}.{operation}", berth_api::berth_admin::TARGET_PREFIX);
        let body = body.to_string();
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signed = berth_iam::sigv4::sign_request(
            "POST",
            &url,
            &headers,
            body.as_bytes(),
            &creds,
            &SigningTarget {
                region: &self.region,
                service: berth_api::berth_admin::SIGNING_NAME,
                time: SystemTime::now(),
            },
        )
        .map_err(|e| anyhow::anyhow!("signing the request: {e}"))?;
        let mut req = self
            .http()?
            .post(&url)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &target)
            .body(body);
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let response = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            anyhow::bail!(
                "{}: {}",
                value["__type"].as_str().unwrap_or(status.as_str()),
                value["message"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }
}

/// A send error with its causes (a TLS failure is only in the chain).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn when(secs: &Value) -> String {
    secs.as_f64()
        .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn run(command: JoinTokenCommand) -> anyhow::Result<()> {
    match command {
        JoinTokenCommand::Create {
            client,
            cluster,
            expires_in,
            description,
        } => {
            let v = client
                .call(
                    "CreateJoinToken",
                    json!({"cluster": cluster, "expiresInSeconds": expires_in.as_secs(),
                           "description": description}),
                )
                .await?;
            let t = &v["joinToken"];
            eprintln!(
                "join token {} for cluster {} (expires {}); it is shown only now:",
                t["tokenId"].as_str().unwrap_or_default(),
                t["cluster"].as_str().unwrap_or_default(),
                when(&t["expiresAt"])
            );
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        JoinTokenCommand::List { client, cluster } => {
            let v = client
                .call("ListJoinTokens", json!({"cluster": cluster}))
                .await?;
            println!(
                "{:<16}  {:<20}  {:<8}  {:<20}  DESCRIPTION",
                "ID", "CLUSTER", "STATUS", "EXPIRES"
            );
            for t in v["joinTokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<16}  {:<20}  {:<8}  {:<20}  {}",
                    t["tokenId"].as_str().unwrap_or_default(),
                    t["cluster"].as_str().unwrap_or_default(),
                    t["status"].as_str().unwrap_or_default(),
                    when(&t["expiresAt"]),
                    t["description"].as_str().unwrap_or_default()
                );
            }
        }
        JoinTokenCommand::Revoke { client, token_id } => {
            let v = client
                .call("RevokeJoinToken", json!({"tokenId": token_id}))
                .await?;
            println!(
                "revoked join token {}",
                v["joinToken"]["tokenId"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}
