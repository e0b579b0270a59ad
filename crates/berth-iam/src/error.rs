//! The errors of the services this crate implements. Each carries the AWS error code of the
//! service that raised it (IAM's `NoSuchEntity`, Secrets Manager's
//! `ResourceNotFoundException`, SSM's `ParameterNotFound`, ...) and the HTTP status the
//! service's model gives it; the API layer renders it in that service's protocol.

use std::fmt;

use berth_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct IamError {
    /// The AWS error code, as the service's model spells it.
    pub code: &'static str,
    pub message: String,
    /// The HTTP status.
    pub status: u16,
}

impl fmt::Display for IamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl IamError {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
        }
    }

    /// Whether the server, not the request, is at fault.
    pub fn is_server_fault(&self) -> bool {
        self.status >= 500
    }

    // --- IAM (query protocol codes) ---
    pub fn no_such_entity(message: impl Into<String>) -> Self {
        Self::new("NoSuchEntity", 404, message)
    }
    pub fn entity_already_exists(message: impl Into<String>) -> Self {
        Self::new("EntityAlreadyExists", 409, message)
    }
    pub fn delete_conflict(message: impl Into<String>) -> Self {
        Self::new("DeleteConflict", 409, message)
    }
    pub fn malformed_policy(message: impl Into<String>) -> Self {
        Self::new("MalformedPolicyDocument", 400, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("InvalidInput", 400, message)
    }
    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new("LimitExceeded", 409, message)
    }
    /// The query protocol's error for a request that fails its model's constraints.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationError", 400, message)
    }
    /// A query-protocol `AccessDenied` (IAM, STS).
    pub fn access_denied_query(message: impl Into<String>) -> Self {
        Self::new("AccessDenied", 403, message)
    }
    /// A JSON-protocol `AccessDeniedException` (ECS, Secrets Manager, SSM).
    pub fn access_denied_json(message: impl Into<String>) -> Self {
        Self::new("AccessDeniedException", 400, message)
    }
    /// A failure of the server itself (the store, the key file).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("InternalFailure", 500, message)
    }

    // --- Secrets Manager ---
    pub fn sm_not_found() -> Self {
        Self::new(
            "ResourceNotFoundException",
            400,
            "Secrets Manager can't find the specified secret.",
        )
    }
    pub fn sm_version_not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", 400, message)
    }
    pub fn sm_exists(message: impl Into<String>) -> Self {
        Self::new("ResourceExistsException", 400, message)
    }
    pub fn sm_invalid_request(message: impl Into<String>) -> Self {
        Self::new("InvalidRequestException", 400, message)
    }
    pub fn sm_invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", 400, message)
    }

    // --- SSM ---
    pub fn ssm_not_found(name: &str) -> Self {
        Self::new(
            "ParameterNotFound",
            400,
            format!("Parameter {name} not found."),
        )
    }
    pub fn ssm_version_not_found(message: impl Into<String>) -> Self {
        Self::new("ParameterVersionNotFound", 400, message)
    }
    pub fn ssm_exists() -> Self {
        Self::new(
            "ParameterAlreadyExists",
            400,
            "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
        )
    }
    pub fn ssm_validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", 400, message)
    }
    pub fn ssm_hierarchy(message: impl Into<String>) -> Self {
        Self::new("HierarchyLevelLimitExceededException", 400, message)
    }
    pub fn ssm_invalid_key_id(message: impl Into<String>) -> Self {
        Self::new("InvalidKeyId", 400, message)
    }
}

impl From<StoreError> for IamError {
    fn from(e: StoreError) -> Self {
        IamError::internal(e.to_string())
    }
}

pub type Result<T, E = IamError> = std::result::Result<T, E>;
