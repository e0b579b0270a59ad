//! Stored identity records and the principals requests act as.
//!
//! ```text
//! iam/u/<name, lower case>    UserRecord          (IAM names are case-insensitive)
//! iam/r/<name, lower case>    RoleRecord
//! iam/p/<name, lower case>    ManagedPolicyRecord (customer managed policies)
//! iam/k/<access key id>       AccessKeyRecord     (long-term keys: users' and the root's)
//! iam/s/<access key id>       SessionRecord       (AssumeRole's temporary credentials)
//! iam/bootstrap               the admin key was made (first start)
//! ```

use std::collections::BTreeMap;

use berth_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;

pub const PREFIX: &str = "iam/";
pub const USERS: &str = "iam/u/";
pub const ROLES: &str = "iam/r/";
pub const POLICIES: &str = "iam/p/";
pub const KEYS: &str = "iam/k/";
pub const SESSIONS: &str = "iam/s/";
pub const BOOTSTRAP: &str = "iam/bootstrap";

pub fn user_key(name: &str) -> String {
    format!("{USERS}{}", name.to_lowercase())
}
pub fn role_key(name: &str) -> String {
    format!("{ROLES}{}", name.to_lowercase())
}
pub fn policy_key(name: &str) -> String {
    format!("{POLICIES}{}", name.to_lowercase())
}
pub fn access_key_key(id: &str) -> String {
    format!("{KEYS}{id}")
}
pub fn session_key(id: &str) -> String {
    format!("{SESSIONS}{id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub created: Timestamp,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Inline policies: name → document text.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// Attached managed policies, by ARN.
    #[serde(default)]
    pub attached: Vec<String>,
    /// The user's access key ids (kept here so that deleting the user conflicts with a
    /// concurrent CreateAccessKey).
    #[serde(default)]
    pub access_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub created: Timestamp,
    /// The trust policy (who may assume the role), as given.
    pub trust_policy: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Seconds (3600 to 43200).
    pub max_session_duration: u32,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedPolicyRecord {
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    #[serde(default)]
    pub description: Option<String>,
    pub document: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Whose long-term key it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "camelCase")]
pub enum KeyOwner {
    Root,
    User(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Inactive => "Inactive",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Active" => Some(Self::Active),
            "Inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyRecord {
    pub id: String,
    pub owner: KeyOwner,
    pub status: KeyStatus,
    pub created: Timestamp,
    /// The secret access key, sealed under this record's store key.
    pub secret: Sealed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub id: String,
    pub role_name: String,
    pub role_id: String,
    pub role_arn: String,
    pub session_name: String,
    pub secret: Sealed,
    /// SHA-256 of the session token (the token itself is not kept).
    pub token_hash: String,
    pub created: Timestamp,
    pub expires: Timestamp,
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account root (`arn:aws:iam::<account>:root`): every action is allowed.
    Root,
    User {
        name: String,
        id: String,
        arn: String,
    },
    /// A role session from `sts:AssumeRole`.
    AssumedRole {
        role_name: String,
        role_id: String,
        role_arn: String,
        session_name: String,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub account: String,
    /// The access key the request was signed with.
    pub access_key_id: String,
}

/// A caller's ARN, written as [`Caller::arn`] returns it.
#[derive(Debug, Clone, Copy)]
pub struct CallerArn<'a>(&'a Caller);

impl std::fmt::Display for CallerArn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let caller = self.0;
        match &caller.principal {
            Principal::Root => write!(f, "arn:aws:iam::{}:root", caller.account),
            Principal::User { arn, .. } => f.write_str(arn),
            Principal::AssumedRole {
                role_name,
                session_name,
                ..
            } => write!(
                f,
                "arn:aws:sts::{}:assumed-role/{role_name}/{session_name}",
                caller.account
            ),
        }
    }
}

impl Caller {
    pub fn root(account: impl Into<String>, access_key_id: impl Into<String>) -> Self {
        Self {
            principal: Principal::Root,
            account: account.into(),
            access_key_id: access_key_id.into(),
        }
    }

    /// The principal's ARN, as `GetCallerIdentity` and AccessDenied messages show it.
    pub fn arn(&self) -> String {
        match &self.principal {
            Principal::User { arn, .. } => arn.clone(),
            _ => self.arn_display().to_string(),
        }
    }

    /// [`arn`](Self::arn) without building the string (for log fields).
    pub fn arn_display(&self) -> CallerArn<'_> {
        CallerArn(self)
    }

    /// `GetCallerIdentity`'s `UserId`.
    pub fn user_id(&self) -> String {
        match &self.principal {
            Principal::Root => self.account.clone(),
            Principal::User { id, .. } => id.clone(),
            Principal::AssumedRole {
                role_id,
                session_name,
                ..
            } => format!("{role_id}:{session_name}"),
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(self.principal, Principal::Root)
    }

    /// `aws:PrincipalType`.
    pub fn principal_type(&self) -> &'static str {
        match self.principal {
            Principal::Root => "Account",
            Principal::User { .. } => "User",
            Principal::AssumedRole { .. } => "AssumedRole",
        }
    }
}

/// ARNs of IAM entities.
pub fn user_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user{path}{name}")
}
pub fn role_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role{path}{name}")
}
pub fn policy_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:policy{path}{name}")
}

/// The name at the end of an IAM ARN (`arn:aws:iam::1:role/path/name` → `name`) and the
/// account, if it is an IAM ARN of `kind` (`user`, `role`, `policy`).
pub fn parse_iam_arn<'a>(arn: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let path_and_name = resource.strip_prefix(kind)?;
    if !path_and_name.starts_with('/') {
        return None;
    }
    let name = path_and_name.rsplit('/').next()?;
    (!name.is_empty()).then_some((account, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_of_principals() {
        let root = Caller::root("123", "AKIA1");
        assert_eq!(root.arn(), "arn:aws:iam::123:root");
        assert_eq!(root.user_id(), "123");
        let session = Caller {
            principal: Principal::AssumedRole {
                role_name: "deploy".into(),
                role_id: "AROAX".into(),
                role_arn: "arn:aws:iam::123:role/deploy".into(),
                session_name: "ci".into(),
            },
            account: "123".into(),
            access_key_id: "ASIA1".into(),
        };
        assert_eq!(session.arn(), "arn:aws:sts::123:assumed-role/deploy/ci");
        assert_eq!(session.user_id(), "AROAX:ci");
        assert_eq!(
            parse_iam_arn("arn:aws:iam::123:role/svc/deploy", "role"),
            Some(("123", "deploy"))
        );
        assert_eq!(parse_iam_arn("arn:aws:iam::123:user/x", "role"), None);
        assert_eq!(
            parse_iam_arn("arn:aws:iam::aws:policy/AdministratorAccess", "policy"),
            Some(("aws", "AdministratorAccess"))
        );
    }
}
