//! berth's HTTP front: the ECS JSON 1.1 wire protocol (`POST /` routed by `X-Amz-Target`)
//! and the agent protocol (`/agent/v1/...`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_control::ControlPlane;
use berth_model::{ApiError, ErrorCode, PollRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// The HTTP application: ECS API plus agent endpoints.
pub fn router(control: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/", post(ecs_endpoint))
        .route("/healthz", get(|| async { "ok" }))
        .route("/agent/v1/poll", post(agent_poll))
        .with_state(control)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

struct AwsResponse(Result<serde_json::Value, ApiError>);

impl IntoResponse for AwsResponse {
    fn into_response(self) -> Response {
        let (status, body) = match self.0 {
            Ok(body) => (StatusCode::OK, body),
            Err(e) => {
                if e.code == ErrorCode::ServerException {
                    tracing::error!(message = %e.message, "server error");
                }
                (
                    StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                    serde_json::json!({"__type": e.code.as_str(), "message": e.message}),
                )
            }
        };
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(AMZ_JSON));
        if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            headers.insert("x-amzn-requestid", id);
        }
        response
    }
}

fn parse<T: DeserializeOwned>(body: &serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::new(
            ErrorCode::SerializationException,
            format!("The request body does not match the action's input shape: {e}"),
        )
    })
}

fn respond<T: Serialize>(result: Result<T, ApiError>) -> Result<serde_json::Value, ApiError> {
    result.and_then(|v| serde_json::to_value(v).map_err(|e| ApiError::server(e.to_string())))
}

/// Runs one ECS action. Synchronous: store commits fsync, so callers run it off the reactor.
pub fn dispatch(
    control: &ControlPlane,
    action: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let c = control;
    match action {
        "CreateCluster" => respond(c.create_cluster(parse(body)?)),
        "DescribeClusters" => respond(c.describe_clusters(parse(body)?)),
        "ListClusters" => respond(c.list_clusters(parse(body)?)),
        "DeleteCluster" => respond(c.delete_cluster(parse(body)?)),
        "RegisterTaskDefinition" => respond(c.register_task_definition(parse(body)?)),
        "DescribeTaskDefinition" => respond(c.describe_task_definition(parse(body)?)),
        "ListTaskDefinitions" => respond(c.list_task_definitions(parse(body)?)),
        "ListTaskDefinitionFamilies" => respond(c.list_task_definition_families(parse(body)?)),
        "DeregisterTaskDefinition" => respond(c.deregister_task_definition(parse(body)?)),
        "RegisterContainerInstance" => respond(c.register_container_instance(parse(body)?)),
        "DeregisterContainerInstance" => respond(c.deregister_container_instance(parse(body)?)),
        "ListContainerInstances" => respond(c.list_container_instances(parse(body)?)),
        "DescribeContainerInstances" => respond(c.describe_container_instances(parse(body)?)),
        "RunTask" => respond(c.run_task(parse(body)?)),
        "StartTask" => respond(c.start_task(parse(body)?)),
        "StopTask" => respond(c.stop_task(parse(body)?)),
        "DescribeTasks" => respond(c.describe_tasks(parse(body)?)),
        "ListTasks" => respond(c.list_tasks(parse(body)?)),
        "SubmitTaskStateChange" => respond(c.submit_task_state_change(parse(body)?)),
        "TagResource" => respond(c.tag_resource(parse(body)?)),
        "UntagResource" => respond(c.untag_resource(parse(body)?)),
        "ListTagsForResource" => respond(c.list_tags_for_resource(parse(body)?)),
        other => Err(ApiError::new(
            ErrorCode::UnknownOperationException,
            format!("Unknown or unsupported operation: {other}"),
        )),
    }
}

async fn ecs_endpoint(
    State(control): State<Arc<ControlPlane>>,
    headers: HeaderMap,
    body: Bytes,
) -> AwsResponse {
    AwsResponse(handle_ecs(control, headers, body).await)
}

async fn handle_ecs(
    control: Arc<ControlPlane>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<serde_json::Value, ApiError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownOperationException,
                "Missing X-Amz-Target header.",
            )
        })?;
    let action = target
        .strip_prefix(ECS_TARGET_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownOperationException,
                format!(
                    "Unknown target {target}: this endpoint serves {ECS_TARGET_PREFIX}.<Action>."
                ),
            )
        })?
        .to_string();
    let body: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::SerializationException,
                format!("The request body is not valid JSON: {e}"),
            )
        })?
    };
    if !body.is_object() {
        return Err(ApiError::new(
            ErrorCode::SerializationException,
            "The request body must be a JSON object.",
        ));
    }
    tracing::debug!(%action, "ecs request");
    tokio::task::spawn_blocking(move || dispatch(&control, &action, &body))
        .await
        .unwrap_or_else(|e| Err(ApiError::server(format!("request handler failed: {e}"))))
}

async fn agent_poll(State(control): State<Arc<ControlPlane>>, body: Bytes) -> AwsResponse {
    let result = async {
        let req: PollRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::SerializationException,
                format!("invalid poll request: {e}"),
            )
        })?;
        respond(Arc::clone(&control).poll_assignments(req).await)
    }
    .await;
    AwsResponse(result)
}

/// Serves the router until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<ControlPlane>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(control))
        .with_graceful_shutdown(shutdown)
        .await
}
