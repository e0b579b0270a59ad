//! The AWS query protocol (form-encoded `Action=...&Version=...`, XML answers), used by
//! Elastic Load Balancing, IAM and STS. berth serves none of them yet; such requests get an
//! XML `<ErrorResponse>` in that protocol, so clients report the error instead of failing to
//! parse a JSON answer.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The service a request signs for (SigV4 credential scope), e.g. `elasticloadbalancing`.
fn signing_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_string)
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.replace('+', " "))
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn not_served(headers: &HeaderMap, body: &Bytes) -> Response {
    let service = signing_service(headers).unwrap_or_else(|| "this service".into());
    let action = form_value(body, "Action").unwrap_or_default();
    let message = if action.is_empty() {
        "The request names no operation (no X-Amz-Target header and no Action).".to_string()
    } else {
        format!("The {service} operation {action} is not supported by berth.")
    };
    let request_id = uuid::Uuid::new_v4();
    let xml = format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        xml_escape(&message)
    );
    let mut response = (StatusCode::BAD_REQUEST, xml).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    response
}
