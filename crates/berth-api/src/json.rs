//! The AWS JSON 1.1 protocol: `POST /` with `X-Amz-Target: <prefix>.<Operation>` and a JSON
//! body; answers are JSON, errors `{"__type": code, "message": text}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_core::{Error, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A JSON 1.1 answer: the output document or an error.
pub struct JsonResponse(pub Result<serde_json::Value, Error>);

impl IntoResponse for JsonResponse {
    fn into_response(self) -> Response {
        let (status, body) = match self.0 {
            Ok(body) => (StatusCode::OK, body),
            Err(e) => {
                if e.kind == ErrorKind::Server {
                    tracing::error!(message = %e.message, "server error");
                } else {
                    tracing::debug!(code = e.kind.code(), message = %e.message, "request failed");
                }
                (
                    StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                    serde_json::json!({"__type": e.kind.code(), "message": e.message}),
                )
            }
        };
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
        if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            headers.insert("x-amzn-requestid", id);
        }
        response
    }
}

/// Decodes an operation's input. An empty body is an empty object, as the AWS SDKs send
/// for operations without members.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::Serialization,
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(Error::new(
            ErrorKind::Serialization,
            "The request body must be a JSON object.",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        Error::new(
            ErrorKind::Serialization,
            format!("The request body does not match the operation's input shape: {e}"),
        )
    })
}

/// Encodes an operation's output.
pub fn output<T: Serialize>(result: Result<T, Error>) -> Result<serde_json::Value, Error> {
    result.and_then(|v| serde_json::to_value(v).map_err(|e| Error::server(e.to_string())))
}
