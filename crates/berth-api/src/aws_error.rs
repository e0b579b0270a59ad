//! AWS errors with any code, in either protocol: JSON 1.1 (`{"__type", "message"}`) or
//! query (`<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`).
//! Used for authentication failures (which happen before a service is chosen) and for the
//! services whose codes are not ECS's (IAM, STS, Secrets Manager, SSM).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_iam::IamError;

use crate::json::CONTENT_TYPE;
use crate::query::xml::escape;

/// An error to send: code, HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub status: u16,
    pub message: String,
}

impl AwsError {
    pub fn new(code: impl Into<String>, status: u16, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            status,
            message: message.into(),
        }
    }

    fn log(&self) {
        if self.status >= 500 {
            tracing::error!(code = %self.code, message = %self.message, "server error");
        } else {
            tracing::debug!(code = %self.code, message = %self.message, "request failed");
        }
    }

    /// The JSON 1.1 rendering.
    pub fn json(&self) -> Response {
        self.log();
        let body = serde_json::json!({"__type": self.code, "message": self.message});
        let mut response = (status(self.status), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
        insert_request_id(headers);
        response
    }

    /// The query-protocol (XML) rendering; `xmlns` is the service's namespace.
    pub fn xml(&self, xmlns: Option<&str>) -> Response {
        self.log();
        let request_id = uuid::Uuid::new_v4();
        let kind = if self.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        };
        let open = match xmlns {
            Some(ns) => format!("<ErrorResponse xmlns=\"{}\">", escape(ns)),
            None => "<ErrorResponse>".to_string(),
        };
        let xml = format!(
            "{open}<Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
            escape(&self.code),
            escape(&self.message)
        );
        let mut response = (status(self.status), xml).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("text/xml"));
        if let Ok(v) = HeaderValue::from_str(&request_id.to_string()) {
            headers.insert("x-amzn-requestid", v);
        }
        response
    }
}

impl From<IamError> for AwsError {
    fn from(e: IamError) -> Self {
        Self::new(e.code, e.status, e.message)
    }
}

impl From<berth_core::Error> for AwsError {
    fn from(e: berth_core::Error) -> Self {
        Self::new(e.kind.code(), e.kind.http_status(), e.message)
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

pub(crate) fn insert_request_id(headers: &mut axum::http::HeaderMap) {
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
}
