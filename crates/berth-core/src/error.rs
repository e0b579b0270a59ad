//! The errors berth's operations fail with. Each kind is one AWS error code; the API layer
//! renders it in the protocol of the service that was called.

use std::fmt;

/// An AWS error class. The name of each variant is its `__type` without a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Client,
    InvalidParameter,
    ClusterNotFound,
    ClusterContainsContainerInstances,
    ClusterContainsTasks,
    ClusterContainsServices,
    ServiceNotFound,
    ServiceNotActive,
    ServiceDeploymentNotFound,
    ResourceNotFound,
    ResourceInUse,
    TargetNotFound,
    AttributeLimitExceeded,
    UnsupportedFeature,
    PlatformUnknown,
    AccessDenied,
    Conflict,
    LimitExceeded,
    NoUpdateAvailable,
    MissingVersion,
    Server,
    /// The request names an operation the service does not have.
    UnknownOperation,
    /// The request body is not well-formed for the operation.
    Serialization,
    /// Too many requests: the caller should back off and retry.
    Throttling,
}

impl ErrorKind {
    /// The AWS error code (`__type` in JSON protocols, `<Code>` in query protocols).
    pub fn code(self) -> &'static str {
        match self {
            Self::Client => "ClientException",
            Self::InvalidParameter => "InvalidParameterException",
            Self::ClusterNotFound => "ClusterNotFoundException",
            Self::ClusterContainsContainerInstances => "ClusterContainsContainerInstancesException",
            Self::ClusterContainsTasks => "ClusterContainsTasksException",
            Self::ClusterContainsServices => "ClusterContainsServicesException",
            Self::ServiceNotFound => "ServiceNotFoundException",
            Self::ServiceNotActive => "ServiceNotActiveException",
            Self::ServiceDeploymentNotFound => "ServiceDeploymentNotFoundException",
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::ResourceInUse => "ResourceInUseException",
            Self::TargetNotFound => "TargetNotFoundException",
            Self::AttributeLimitExceeded => "AttributeLimitExceededException",
            Self::UnsupportedFeature => "UnsupportedFeatureException",
            Self::PlatformUnknown => "PlatformUnknownException",
            Self::AccessDenied => "AccessDeniedException",
            Self::Conflict => "ConflictException",
            Self::LimitExceeded => "LimitExceededException",
            Self::NoUpdateAvailable => "NoUpdateAvailableException",
            Self::MissingVersion => "MissingVersionException",
            Self::Server => "ServerException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::Serialization => "SerializationException",
            Self::Throttling => "ThrottlingException",
        }
    }

    /// The HTTP status AWS answers this error with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Server => 500,
            Self::AccessDenied => 400,
            Self::Throttling => 400,
            _ => 400,
        }
    }
}

/// An error for the caller: what kind, and ECS's words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn client(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Client, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedFeature, message)
    }
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Server, message)
    }
    pub fn cluster_not_found() -> Self {
        Self::new(ErrorKind::ClusterNotFound, "Cluster not found.")
    }
    pub fn service_not_found() -> Self {
        Self::new(ErrorKind::ServiceNotFound, "Service not found.")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
