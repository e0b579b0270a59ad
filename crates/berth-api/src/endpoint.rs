//! The AWS endpoint (`POST /`, and `GET /` for presigned query requests): which protocol
//! and service a request is for, who signed it (SigV4, every request to a served service,
//! every protocol), and the service module that answers. Authentication failures are
//! answered in the protocol of the service called: JSON `__type` for JSON 1.1 services,
//! an XML `<ErrorResponse>` for query services. A request for a service berth does not
//! serve (or naming none) gets its "not supported" error whatever its signature: it
//! reaches nothing.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use berth_core::{Error, ErrorKind};
use berth_iam::sigv4::{self, RequestView};

use crate::aws_error::AwsError;
use crate::json::JsonResponse;
use crate::query::params::QueryParams;
use crate::query::QueryService;
use crate::{berth_admin, ecs, ecs_authz, iam, query, secretsmanager, ssm, sts, AppState};

/// The SigV4 signing name of a JSON 1.1 service, by its `X-Amz-Target` prefix.
pub fn json_signing_name(prefix: &str) -> Option<&'static str> {
    if prefix == ecs::TARGET_PREFIX {
        Some("ecs")
    } else if prefix == berth_wire::secretsmanager::TARGET_PREFIX {
        Some(berth_wire::secretsmanager::SIGNING_NAME)
    } else if prefix == berth_wire::ssm::TARGET_PREFIX {
        Some(berth_wire::ssm::SIGNING_NAME)
    } else if prefix == berth_admin::TARGET_PREFIX {
        Some(berth_admin::SIGNING_NAME)
    } else {
        None
    }
}

/// The service a request's signature is scoped to, if it can be read.
fn signing_service(view: &RequestView<'_>) -> Option<String> {
    sigv4::parse(view).ok().flatten().map(|s| s.scope.service)
}

pub(crate) async fn handle(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let view = RequestView {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers,
        body: &body,
    };
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let json = target.is_some()
        || headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-amz-json"));
    if json {
        let split = target.and_then(|t| t.rsplit_once('.'));
        let (Some((prefix, operation)), Some(service)) = (
            split,
            split.and_then(|(prefix, _)| json_signing_name(prefix)),
        ) else {
            return unserved_json(target, split);
        };
        let caller = match state.iam.authenticate(&view, Some(service)) {
            Ok(c) => c,
            Err(e) => {
                let (code, status) = e.json_code();
                return AwsError::new(code, status, e.message).json();
            }
        };
        if prefix == ecs::TARGET_PREFIX {
            tracing::debug!(%operation, "ecs request");
            if let Err(e) = ecs_authz::authorize(state, &caller, operation, &body).await {
                return e.json();
            }
            let endpoint = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| format!("{}://{h}/", if state.tls { "https" } else { "http" }))
                .unwrap_or_default();
            return JsonResponse(ecs::dispatch(&state.control, &endpoint, operation, &body).await)
                .into_response();
        }
        let result = if prefix == berth_admin::TARGET_PREFIX {
            berth_admin::dispatch(state, &caller, operation, &body).await
        } else if prefix == berth_wire::secretsmanager::TARGET_PREFIX {
            secretsmanager::dispatch(state, &caller, operation, &body).await
        } else {
            ssm::dispatch(state, &caller, operation, &body).await
        };
        return match result {
            Ok(v) => JsonResponse(Ok(v)).into_response(),
            Err(e) => e.json(),
        };
    }

    // The query protocol: form body (POST) or URL query string (presigned GET).
    let params = QueryParams::parse(uri.query(), &body);
    let signed_for = signing_service(&view);
    let Some(service) = QueryService::identify(signed_for.as_deref(), &params) else {
        return query::not_served(signed_for.as_deref(), &params);
    };
    let caller = match state.iam.authenticate(&view, Some(service.signing_name())) {
        Ok(c) => c,
        Err(e) => {
            let (code, status) = e.query_code();
            return AwsError::new(code, status, e.message).xml(Some(service.xmlns()));
        }
    };
    match service {
        QueryService::Iam => iam::handle(state, &caller, &params).await,
        QueryService::Sts => sts::handle(state, &caller, &params).await,
    }
}

/// The answer to a JSON 1.1 request for no service, or one berth does not serve.
fn unserved_json(target: Option<&str>, split: Option<(&str, &str)>) -> Response {
    let message = match (target, split) {
        (None, _) => "Missing X-Amz-Target header.".to_string(),
        (Some(t), None) => format!("Malformed X-Amz-Target {t}: expected <service>.<Operation>."),
        (Some(_), Some((prefix, _))) => format!("The service {prefix} is not supported by berth."),
    };
    JsonResponse(Err(Error::new(ErrorKind::UnknownOperation, message))).into_response()
}
