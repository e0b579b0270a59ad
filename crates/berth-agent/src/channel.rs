//! The agent's end of the agent channel (`berth-agent-proto`) over HTTP, plus the one ECS
//! call it makes (`CreateCluster`, for the default cluster on first use).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use berth_agent_proto::{self as proto, paths};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Longest any message but a poll may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than its wait a poll may take before the agent gives up on it.
const POLL_SLACK: Duration = Duration::from_secs(15);

/// Why a message did not get through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The control plane answered with an error it means: sending the same message again
    /// will not help.
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// No usable answer, or one that says to try again later (5xx, throttling).
    #[error("{0}")]
    Unavailable(String),
}

impl ChannelError {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// The AWS error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            Self::Unavailable(_) => None,
        }
    }
}

/// A client for one control plane. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Channel {
    http: reqwest::Client,
    base: String,
}

impl Channel {
    /// A client of the control plane at `base`; `ca_cert` (PEM) is trusted besides the
    /// system's roots, for a server with its own CA (`berth server --tls-self-signed`).
    pub fn new(base: &str, ca_cert: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing the CA certificate {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "{} holds no PEM certificate",
                path.display()
            );
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    pub async fn register(
        &self,
        req: &proto::RegisterRequest,
    ) -> Result<proto::RegisterResponse, ChannelError> {
        self.call(paths::REGISTER, req, CALL_TIMEOUT).await
    }

    pub async fn poll(
        &self,
        req: &proto::PollRequest,
    ) -> Result<proto::PollResponse, ChannelError> {
        let timeout = Duration::from_secs(req.wait_seconds) + POLL_SLACK;
        self.call(paths::POLL, req, timeout).await
    }

    pub async fn report(
        &self,
        req: &proto::ReportRequest,
    ) -> Result<proto::ReportResponse, ChannelError> {
        self.call(paths::REPORT, req, CALL_TIMEOUT).await
    }

    pub async fn ownership(
        &self,
        req: &proto::OwnershipRequest,
    ) -> Result<proto::OwnershipResponse, ChannelError> {
        self.call(paths::OWNERSHIP, req, CALL_TIMEOUT).await
    }

    /// The values of a task's secrets (kept in memory only, for the containers' environment).
    pub async fn task_secrets(
        &self,
        req: &proto::TaskRequest,
    ) -> Result<proto::TaskSecretsResponse, ChannelError> {
        self.call(paths::TASK_SECRETS, req, CALL_TIMEOUT).await
    }

    /// Credentials for a task's role.
    pub async fn task_credentials(
        &self,
        req: &proto::TaskRequest,
    ) -> Result<proto::TaskCredentialsResponse, ChannelError> {
        self.call(paths::TASK_CREDENTIALS, req, CALL_TIMEOUT).await
    }

    /// ECS `CreateCluster` over JSON 1.1 (the ECS agent creates "default" the same way).
    pub async fn create_cluster(&self, name: &str) -> Result<(), ChannelError> {
        let response = self
            .http
            .post(format!("{}/", self.base))
            .header(
                "x-amz-target",
                format!("{}.CreateCluster", berth_wire::ecs::TARGET_PREFIX),
            )
            .header("content-type", "application/x-amz-json-1.1")
            .timeout(CALL_TIMEOUT)
            .json(&serde_json::json!({ "clusterName": name }))
            .send()
            .await
            .map_err(|e| ChannelError::Unavailable(format!("CreateCluster: {e}")))?;
        decode::<serde_json::Value>(response).await.map(drop)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ChannelError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(timeout)
            .json(req)
            .send()
            .await
            .map_err(|e| ChannelError::Unavailable(format!("{path}: {}", describe(&e))))?;
        decode(response).await
    }
}

/// A send error with its causes: a TLS failure (e.g. an unknown CA) is in the chain only.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.contains("UnknownIssuer") || text.contains("certificate") {
        text.push_str(" (the server's TLS certificate is not trusted: pass its CA with --ca-cert)");
    }
    text
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, ChannelError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ChannelError::Unavailable(format!("reading the answer: {e}")))?;
    if status.is_success() {
        // A malformed answer is a control-plane fault; the caller retries as for a 5xx.
        return serde_json::from_slice(&body)
            .map_err(|e| ChannelError::Unavailable(format!("decoding the answer: {e}")));
    }
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    // `__type` may carry a namespace: "namespace#Code".
    let code = error["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let message = error["message"]
        .as_str()
        .or_else(|| error["Message"].as_str())
        .unwrap_or_default()
        .to_string();
    let transient = status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || code == "ThrottlingException";
    if transient {
        Err(ChannelError::Unavailable(format!("{code}: {message}")))
    } else {
        Err(ChannelError::Refused { code, message })
    }
}
