use serde::Serialize;

/// The `__type` of an ECS error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    ClientException,
    InvalidParameterException,
    ClusterNotFoundException,
    ClusterContainsContainerInstancesException,
    ClusterContainsTasksException,
    ClusterContainsServicesException,
    ServiceNotFoundException,
    ResourceNotFoundException,
    UnsupportedFeatureException,
    ServerException,
    /// Not an ECS shape: the X-Amz-Target names an action this service does not have.
    UnknownOperationException,
    /// Not an ECS shape: the request body is not JSON of the expected shape.
    SerializationException,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientException => "ClientException",
            Self::InvalidParameterException => "InvalidParameterException",
            Self::ClusterNotFoundException => "ClusterNotFoundException",
            Self::ClusterContainsContainerInstancesException => {
                "ClusterContainsContainerInstancesException"
            }
            Self::ClusterContainsTasksException => "ClusterContainsTasksException",
            Self::ClusterContainsServicesException => "ClusterContainsServicesException",
            Self::ServiceNotFoundException => "ServiceNotFoundException",
            Self::ResourceNotFoundException => "ResourceNotFoundException",
            Self::UnsupportedFeatureException => "UnsupportedFeatureException",
            Self::ServerException => "ServerException",
            Self::UnknownOperationException => "UnknownOperationException",
            Self::SerializationException => "SerializationException",
        }
    }

    /// HTTP status AWS uses for this error.
    pub fn http_status(self) -> u16 {
        match self {
            Self::ServerException => 500,
            _ => 400,
        }
    }
}

/// An error as the ECS API reports it: `{"__type": code, "message": message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn client(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ClientException, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterException, message)
    }
    pub fn cluster_not_found() -> Self {
        Self::new(ErrorCode::ClusterNotFoundException, "Cluster not found.")
    }
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerException, message)
    }
    /// Fails with InvalidParameterException when a required member is absent or empty.
    pub fn require<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, ApiError> {
        match value.as_deref() {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(Self::invalid(format!(
                "{member} is required and may not be empty."
            ))),
        }
    }
}
