//! berth's HTTP front. One endpoint (`POST /`) serves every AWS service, routed by protocol:
//! JSON 1.1 requests by their `X-Amz-Target` prefix, query-protocol requests by the service
//! they sign for; each service is one module. The agent channel lives under `/agent/v1/`.
//!
//! Every request to the AWS endpoint is authenticated (SigV4, `endpoint`) and every
//! operation authorized with IAM policies (`berth-iam`); the agent channel authenticates
//! agents with their per-instance credentials and `/healthz` is open.

pub mod agent;
pub mod aws_error;
pub mod berth_admin;
pub mod ecs;
pub mod ecs_authz;
mod endpoint;
pub mod iam;
pub mod json;
pub mod query;
pub mod secretsmanager;
pub mod server;
pub mod ssm;
pub mod sts;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_control::ControlPlane;
use berth_core::{Error, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use server::{raise_open_file_limit, serve, serve_with_tls, ServerLimits};

use json::JsonResponse;

/// What every handler shares.
pub struct AppState {
    pub control: Arc<ControlPlane>,
    pub control_plane_id: String,
    pub limits: ServerLimits,
    /// Authentication, authorization, IAM and STS, and the secrets.
    pub iam: Arc<berth_iam::Iam>,
    /// Whether the endpoint is served over TLS (for the URLs it hands out).
    pub tls: bool,
}

/// The HTTP application.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(aws_endpoint).get(aws_endpoint))
        .route("/healthz", get(|| async { "ok" }))
        .route(berth_agent_proto::paths::REGISTER, post(agent_register))
        .route(berth_agent_proto::paths::POLL, post(agent_poll))
        .route(berth_agent_proto::paths::REPORT, post(agent_report))
        .route(berth_agent_proto::paths::OWNERSHIP, post(agent_ownership))
        .route(
            berth_agent_proto::paths::TASK_SECRETS,
            post(agent_task_secrets),
        )
        .route(
            berth_agent_proto::paths::TASK_CREDENTIALS,
            post(agent_task_credentials),
        )
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Reads a request body within the deadline and size cap.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, Response> {
    let limit = state.limits.max_body_bytes;
    match tokio::time::timeout(
        state.limits.body_read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
            .into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )
            .into_response()),
    }
}

async fn aws_endpoint(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&state, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    endpoint::handle(&state, &method, &uri, &headers, body).await
}

/// Runs one agent-channel message: JSON in, JSON out, AWS JSON errors.
async fn agent_call<Req, Resp, F, Fut>(state: Arc<AppState>, body: Body, f: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Arc<AppState>, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, Error>>,
{
    let body = match read_body(&state, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let result = match serde_json::from_slice::<Req>(&body) {
        Ok(req) => json::output(f(state, req).await),
        Err(e) => Err(Error::new(
            ErrorKind::Serialization,
            format!("invalid agent message: {e}"),
        )),
    };
    JsonResponse(result).into_response()
}

async fn agent_register(State(state): State<Arc<AppState>>, body: Body) -> Response {
    agent_call(state, body, |s, req| async move {
        agent::register(&s.control, &s.control_plane_id, req).await
    })
    .await
}

async fn agent_poll(State(state): State<Arc<AppState>>, body: Body) -> Response {
    agent_call(state, body, |s, req| async move {
        agent::poll(&s.control, req).await
    })
    .await
}

async fn agent_report(State(state): State<Arc<AppState>>, body: Body) -> Response {
    agent_call(state, body, |s, req| async move {
        agent::report(&s.control, req).await
    })
    .await
}

async fn agent_ownership(State(state): State<Arc<AppState>>, body: Body) -> Response {
    agent_call(state, body, |s, req| async move {
        agent::ownership(&s.control, req).await
    })
    .await
}

async fn agent_task_secrets(State(state): State<Arc<AppState>>, body: Body) -> Response {
    agent_call(state, body, |s, req| async move {
        agent::task_secrets(&s.control, &s.iam, req).await
    })
    .await
}

async fn agent_task_credentials(State(state): State<Arc<AppState>>, body: Body) -> Response {
    agent_call(state, body, |s, req| async move {
        agent::task_credentials(&s.control, &s.iam, req).await
    })
    .await
}

/// How long a client may wait for an agent poll at most (for clients' timeouts).
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(20);
