//! The AWS query protocol (form-encoded `Action=...&Version=...`, XML answers), used by
//! IAM and STS (served: `crate::iam`, `crate::sts`) and Elastic Load Balancing (not yet).
//! A request for a query service berth does not serve gets an XML `<ErrorResponse>` in
//! that protocol, so clients report the error instead of failing to parse a JSON answer.
//!
//! - [`params`]: the request's parameters, flattened lists (`Tags.member.1.Key`) included.
//! - [`xml`]: response documents (`<ActionResponse><ActionResult>...`) and escaping.

pub mod params;
pub mod xml;

use axum::response::Response;

use crate::aws_error::AwsError;
use params::QueryParams;

/// The query services berth serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryService {
    Iam,
    Sts,
}

impl QueryService {
    /// The SigV4 signing name.
    pub fn signing_name(self) -> &'static str {
        match self {
            Self::Iam => "iam",
            Self::Sts => "sts",
        }
    }
    /// The XML namespace of its documents.
    pub fn xmlns(self) -> &'static str {
        match self {
            Self::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
            Self::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
        }
    }
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Iam => "2010-05-08",
            Self::Sts => "2011-06-15",
        }
    }
    /// The service a query request is for: by the service its signature is scoped to, or
    /// else by its `Version`.
    pub fn identify(signing_service: Option<&str>, params: &QueryParams) -> Option<Self> {
        match signing_service {
            Some("iam") => Some(Self::Iam),
            Some("sts") => Some(Self::Sts),
            Some(_) => None,
            None => match params.get("Version") {
                Some("2010-05-08") => Some(Self::Iam),
                Some("2011-06-15") => Some(Self::Sts),
                _ => None,
            },
        }
    }
}

/// The answer to a query request for a service berth does not serve.
pub fn not_served(signing_service: Option<&str>, params: &QueryParams) -> Response {
    let service = signing_service.unwrap_or("this service");
    let action = params.get("Action").unwrap_or_default();
    let message = if action.is_empty() {
        "The request names no operation (no X-Amz-Target header and no Action).".to_string()
    } else {
        format!("The {service} operation {action} is not supported by berth.")
    };
    AwsError::new("InvalidAction", 400, message).xml(None)
}
