//! The agent's client for the control plane: ECS actions over JSON 1.1 plus the poll.

use std::time::Duration;

use anyhow::{anyhow, Context};
use berth_model::{PollRequest, PollResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
}

/// An error the server answered with (as opposed to not answering at all).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServerError {
    pub code: String,
    pub message: String,
}

impl ServerClient {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).context("decoding server response");
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(ServerError {
            code: body["__type"].as_str().unwrap_or("HTTP error").to_string(),
            message: body["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("status {status}")),
        }
        .into())
    }

    /// Calls an ECS action.
    pub async fn ecs<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        action: &str,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        let resp = self
            .http
            .post(format!("{}/", self.base))
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{action}"),
            )
            .header("content-type", "application/x-amz-json-1.1")
            .timeout(Duration::from_secs(30))
            .json(request)
            .send()
            .await
            .map_err(|e| anyhow!("{action}: {e}"))?;
        Self::decode(resp).await
    }

    pub async fn poll(&self, request: &PollRequest) -> anyhow::Result<PollResponse> {
        let wait = request.wait_seconds.unwrap_or(20);
        let resp = self
            .http
            .post(format!("{}/agent/v1/poll", self.base))
            .timeout(Duration::from_secs(wait + 15))
            .json(request)
            .send()
            .await?;
        Self::decode(resp).await
    }
}
