//! Names and ids as newtypes. Each is validated once, where it enters berth.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// ECS's rule for cluster, family, service and container names: up to 255 letters (upper
/// and lower case), numbers, hyphens and underscores.
pub fn is_ecs_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Declares a name newtype validated with [`is_ecs_name`].
macro_rules! ecs_name {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        string_id!($(#[$meta])* $name);

        impl $name {
            /// Validates an ECS name, failing with ECS's message for this kind of name.
            pub fn new(s: impl Into<String>) -> Result<Self, Error> {
                let s = s.into();
                if is_ecs_name(&s) {
                    Ok(Self(s))
                } else {
                    Err(Error::invalid(format!(
                        "{} '{}' is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
                        $what, s
                    )))
                }
            }
        }
    };
}

ecs_name!(
    /// A cluster's name (the last segment of its ARN).
    ClusterName,
    "Cluster name"
);
ecs_name!(
    /// A task definition family.
    Family,
    "Family"
);
ecs_name!(
    /// A service's name, unique within its cluster.
    ServiceName,
    "Service name"
);

/// Declares an id newtype made by berth (32 lowercase hex digits, a UUID without dashes)
/// but accepted from clients in any printable form up to 255 characters, since ids come
/// back inside ARNs.
macro_rules! generated_id {
    ($(#[$meta:meta])* $name:ident) => {
        string_id!($(#[$meta])* $name);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, Error> {
                let s = s.into();
                let ok = !s.is_empty()
                    && s.len() <= 255
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
                if ok {
                    Ok(Self(s))
                } else {
                    Err(Error::invalid(format!("Invalid identifier '{s}'.")))
                }
            }
        }
    };
}

generated_id!(
    /// A task's id, the last segment of its ARN.
    TaskId
);
generated_id!(
    /// A container instance's id, the last segment of its ARN.
    InstanceId
);
generated_id!(
    /// The id of a container within a task (the last segment of the container ARN).
    ContainerId
);
string_id!(
    /// A service deployment's id, `ecs-svc/<19 digits>` as in ECS; it is also the
    /// `startedBy` of the deployment's tasks.
    DeploymentId
);

impl DeploymentId {
    const PREFIX: &'static str = "ecs-svc/";

    /// The deployment id made from a number (berth draws it from its id generator).
    pub fn from_number(n: u64) -> Self {
        Self(format!(
            "{}{:019}",
            Self::PREFIX,
            n % 10_000_000_000_000_000_000
        ))
    }

    pub fn new(s: impl Into<String>) -> Result<Self, Error> {
        let s = s.into();
        match s.strip_prefix(Self::PREFIX) {
            Some(digits) if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) => {
                Ok(Self(s))
            }
            _ => Err(Error::invalid(format!("Invalid deployment id '{s}'."))),
        }
    }

    /// The digits after `ecs-svc/`, which name the service deployment in its ARN.
    pub fn number(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }
}

/// A task definition revision: `family:revision`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskDefinitionId {
    pub family: Family,
    pub revision: u32,
}

impl TaskDefinitionId {
    pub fn new(family: Family, revision: u32) -> Self {
        Self { family, revision }
    }
}

impl fmt::Display for TaskDefinitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.family, self.revision)
    }
}

/// How a request names a task definition: a family (its latest ACTIVE revision) or one
/// revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDefinitionRef {
    Latest(Family),
    Revision(TaskDefinitionId),
}

impl TaskDefinitionRef {
    pub fn family(&self) -> &Family {
        match self {
            Self::Latest(f) => f,
            Self::Revision(id) => &id.family,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ecs_rules() {
        assert!(ClusterName::new("demo-1_x").is_ok());
        assert!(ClusterName::new("").is_err());
        assert!(ClusterName::new("a b").is_err());
        assert!(ClusterName::new("x".repeat(256)).is_err());
        let err = Family::new("we b").unwrap_err();
        assert!(err.message.starts_with("Family 'we b' is invalid"));
        assert!(TaskId::new("0123abcd").is_ok());
        assert!(TaskId::new("a/b").is_err());
    }

    #[test]
    fn task_definition_id_displays_as_family_colon_revision() {
        let id = TaskDefinitionId::new(Family::new("web").unwrap(), 3);
        assert_eq!(id.to_string(), "web:3");
    }
}
