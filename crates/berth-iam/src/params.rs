//! SSM Parameter Store: `String`, `StringList` and `SecureString` parameters with versions,
//! hierarchies (`/a/b/c`) and path queries. Every value is sealed at rest (AES-GCM, bound to
//! `ssm/<name>/<version>`), `String`s too, so the store file holds no parameter value in
//! the clear. A `SecureString` read without decryption shows its sealed form, as SSM shows
//! the KMS ciphertext.
//!
//! ```text
//! ssm/<name>    ParameterRecord (versions inline, newest last)
//! ```

use std::sync::Arc;

use berth_core::{Clock, Timestamp};
use berth_store::{KeyRange, ReadExt, Store, StoreError, Txn};
use serde::{Deserialize, Serialize};

use crate::crypto::{Sealed, Sealer};
use crate::error::{IamError, Result};
use crate::model::Tag;

pub const PREFIX: &str = "ssm/";
/// SSM keeps 100 versions of a parameter.
pub const MAX_VERSIONS: usize = 100;
pub const MAX_VALUE_BYTES: usize = 4096;
pub const MAX_DEPTH: usize = 15;
pub const DEFAULT_KEY_ID: &str = "alias/aws/ssm";

pub fn parameter_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn version_context(name: &str, version: i64) -> String {
    format!("{PREFIX}{name}/{version}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParameterType {
    String,
    StringList,
    SecureString,
}

impl ParameterType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "String" => Some(Self::String),
            "StringList" => Some(Self::StringList),
            "SecureString" => Some(Self::SecureString),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::StringList => "StringList",
            Self::SecureString => "SecureString",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterVersion {
    pub version: i64,
    pub kind: ParameterType,
    pub value: Sealed,
    pub modified: Timestamp,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterRecord {
    pub name: String,
    pub arn: String,
    #[serde(default)]
    pub allowed_pattern: Option<String>,
    pub tier: String,
    pub data_type: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Oldest first; the last is the current version.
    pub versions: Vec<ParameterVersion>,
}

impl ParameterRecord {
    pub fn current(&self) -> &ParameterVersion {
        self.versions.last().expect("a parameter has a version")
    }
}

/// `PutParameter`'s input.
#[derive(Debug, Clone, Default)]
pub struct PutParameter {
    pub name: String,
    pub value: String,
    pub kind: Option<ParameterType>,
    pub overwrite: bool,
    pub description: Option<String>,
    pub key_id: Option<String>,
    pub tags: Vec<Tag>,
    pub allowed_pattern: Option<String>,
    pub tier: Option<String>,
    pub data_type: Option<String>,
}

/// A parameter version as read: its value opened, or shown sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterValue {
    pub name: String,
    pub arn: String,
    pub kind: ParameterType,
    pub version: i64,
    pub value: String,
    pub modified: Timestamp,
    pub data_type: String,
    /// `name:selector` when the request named a version or label.
    pub selector: Option<String>,
}

pub struct ParameterStore {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    region: String,
    account: String,
}

/// Checks a parameter name (`/a/b`, `a.b`, ...).
pub fn validate_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
    if name.is_empty() || name.len() > 2048 || !valid_chars {
        return Err(IamError::ssm_validation(format!(
            "Parameter name must be 1 to 2048 characters of a-zA-Z0-9_.-/ (got '{name}')."
        )));
    }
    let bare = name.trim_start_matches('/').to_ascii_lowercase();
    if bare.starts_with("aws") || bare.starts_with("ssm") {
        return Err(IamError::ssm_validation(
            "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive).",
        ));
    }
    if name.contains('/') && !name.starts_with('/') {
        return Err(IamError::ssm_validation(
            "Parameter name must be a fully qualified name.",
        ));
    }
    if name.contains("//") || (name.len() > 1 && name.ends_with('/')) {
        return Err(IamError::ssm_validation(format!(
            "Parameter name {name} is not a valid hierarchy."
        )));
    }
    let depth = name.split('/').filter(|s| !s.is_empty()).count();
    if depth > MAX_DEPTH {
        return Err(IamError::ssm_hierarchy(format!(
            "A hierarchy can have a maximum of {MAX_DEPTH} levels."
        )));
    }
    Ok(())
}

impl ParameterStore {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        region: impl Into<String>,
        account: impl Into<String>,
    ) -> Self {
        Self {
            store,
            sealer,
            clock,
            region: region.into(),
            account: account.into(),
        }
    }

    /// `arn:aws:ssm:<region>:<account>:parameter/<name without its leading slash>`.
    pub fn arn(&self, name: &str) -> String {
        let sep = if name.starts_with('/') { "" } else { "/" };
        format!(
            "arn:aws:ssm:{}:{}:parameter{sep}{name}",
            self.region, self.account
        )
    }

    /// The name an ARN or name refers to.
    pub fn name_of<'a>(&self, id: &'a str) -> &'a str {
        if let Some(rest) = id.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if let [_, "ssm", _, _, tail] = parts.as_slice() {
                if let Some(n) = tail.strip_prefix("parameter") {
                    // `parameter/a/b` names `/a/b`; `parameter/x` names `x`.
                    let trimmed = n.strip_prefix('/').unwrap_or(n);
                    return if trimmed.contains('/') { n } else { trimmed };
                }
            }
        }
        id
    }

    pub async fn put(&self, req: PutParameter) -> Result<(i64, String)> {
        validate_name(&req.name)?;
        if req.value.is_empty() || req.value.len() > MAX_VALUE_BYTES {
            return Err(IamError::ssm_validation(format!(
                "Parameter value must be 1 to {MAX_VALUE_BYTES} bytes."
            )));
        }
        if req.overwrite && !req.tags.is_empty() {
            return Err(IamError::ssm_validation(
                "Invalid request: tags and overwrite can't be used together. To create a parameter \
                 with tags, please remove overwrite flag. To update tags for an existing parameter, \
                 please use AddTagsToResource or RemoveTagsFromResource.",
            ));
        }
        if let Some(tier) = &req.tier {
            if !matches!(
                tier.as_str(),
                "Standard" | "Advanced" | "Intelligent-Tiering"
            ) {
                return Err(IamError::ssm_validation(format!("Invalid tier {tier}.")));
            }
        }
        if let Some(dt) = &req.data_type {
            if !matches!(
                dt.as_str(),
                "text" | "aws:ec2:image" | "aws:ssm:integration"
            ) {
                return Err(IamError::ssm_validation(format!(
                    "The following data type is not supported: {dt}"
                )));
            }
        }
        if req.key_id.is_some() && req.kind != Some(ParameterType::SecureString) {
            return Err(IamError::ssm_validation(
                "KeyId is required for SecureString type parameter only.",
            ));
        }
        let key = parameter_key(&req.name);
        for _ in 0..32 {
            let existing = self.store.get_json::<ParameterRecord>(&key).await?;
            let now = self.clock.now();
            let (mut record, revision) = match existing {
                Some((record, revision)) => {
                    if !req.overwrite {
                        return Err(IamError::ssm_exists());
                    }
                    (record, revision)
                }
                None => {
                    if req.kind.is_none() {
                        return Err(IamError::ssm_validation(
                            "A parameter type is required when you create a parameter.",
                        ));
                    }
                    (
                        ParameterRecord {
                            name: req.name.clone(),
                            arn: self.arn(&req.name),
                            allowed_pattern: None,
                            tier: "Standard".into(),
                            data_type: "text".into(),
                            tags: req.tags.clone(),
                            versions: Vec::new(),
                        },
                        0,
                    )
                }
            };
            let previous = record.versions.last().cloned();
            let kind = req
                .kind
                .or(previous.as_ref().map(|p| p.kind))
                .unwrap_or(ParameterType::String);
            if let Some(p) = &req.allowed_pattern {
                record.allowed_pattern = Some(p.clone());
            }
            if let Some(t) = &req.tier {
                record.tier = t.clone();
            }
            if let Some(d) = &req.data_type {
                record.data_type = d.clone();
            }
            let version = previous.as_ref().map(|p| p.version).unwrap_or(0) + 1;
            let key_id = match kind {
                ParameterType::SecureString => Some(
                    req.key_id
                        .clone()
                        .or_else(|| previous.as_ref().and_then(|p| p.key_id.clone()))
                        .unwrap_or_else(|| DEFAULT_KEY_ID.to_string()),
                ),
                _ => None,
            };
            record.versions.push(ParameterVersion {
                version,
                kind,
                value: self
                    .sealer
                    .seal(&version_context(&req.name, version), req.value.as_bytes()),
                modified: now,
                description: req
                    .description
                    .clone()
                    .or_else(|| previous.as_ref().and_then(|p| p.description.clone())),
                key_id,
                labels: Vec::new(),
            });
            if record.versions.len() > MAX_VERSIONS {
                let excess = record.versions.len() - MAX_VERSIONS;
                record.versions.drain(..excess);
            }
            match self
                .store
                .commit(
                    Txn::new()
                        .require_revision(&key, revision)
                        .put_json(&key, &record),
                )
                .await
            {
                Ok(_) => return Ok((version, record.tier.clone())),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    fn value_of(
        &self,
        record: &ParameterRecord,
        version: &ParameterVersion,
        decrypt: bool,
        selector: Option<String>,
    ) -> Result<ParameterValue> {
        let value = if version.kind == ParameterType::SecureString && !decrypt {
            serde_json::to_value(&version.value)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        } else {
            self.sealer.open_string(
                &version_context(&record.name, version.version),
                &version.value,
            )?
        };
        Ok(ParameterValue {
            name: record.name.clone(),
            arn: record.arn.clone(),
            kind: version.kind,
            version: version.version,
            value,
            modified: version.modified,
            data_type: record.data_type.clone(),
            selector,
        })
    }

    pub async fn record(&self, name: &str) -> Result<Option<ParameterRecord>> {
        Ok(self
            .store
            .get_json::<ParameterRecord>(&parameter_key(name))
            .await?
            .map(|(r, _)| r))
    }

    /// One parameter by name or ARN, with an optional `:version` or `:label` selector.
    pub async fn get(&self, id: &str, decrypt: bool) -> Result<ParameterValue> {
        let (base, selector) = match id.rsplit_once(':') {
            Some((b, s)) if !id.starts_with("arn:") || b.matches(':').count() >= 5 => (b, Some(s)),
            _ => (id, None),
        };
        let name = self.name_of(base);
        let record = self
            .record(name)
            .await?
            .ok_or_else(|| IamError::ssm_not_found(name))?;
        let version = match selector {
            None => record.current().clone(),
            Some(sel) => {
                let found = match sel.parse::<i64>() {
                    Ok(n) => record.versions.iter().find(|v| v.version == n),
                    Err(_) => record
                        .versions
                        .iter()
                        .find(|v| v.labels.iter().any(|l| l == sel)),
                };
                found.cloned().ok_or_else(|| {
                    IamError::ssm_version_not_found(format!(
                        "Systems Manager could not find version {sel} of {name}. Verify the version and try again."
                    ))
                })?
            }
        };
        self.value_of(
            &record,
            &version,
            decrypt,
            selector.map(|s| format!(":{s}")),
        )
    }

    /// Parameters under `path` (`/a/b`): its direct children, or every descendant.
    /// Paging by name: `after` is the last name of the previous page.
    pub async fn by_path(
        &self,
        path: &str,
        recursive: bool,
        decrypt: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ParameterValue>, Option<String>)> {
        if !path.starts_with('/') || path.len() > 2048 {
            return Err(IamError::ssm_validation(
                "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\".",
            ));
        }
        let prefix = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        let mut range = KeyRange::prefix(parameter_key(&prefix));
        if let Some(a) = after {
            range = range.after(&parameter_key(a));
        }
        let page = self.store.range(range).await?;
        let mut out = Vec::new();
        let mut next = None;
        for kv in page.kvs {
            let record: ParameterRecord = kv.decode()?;
            let rest = &record.name[prefix.len().min(record.name.len())..];
            if !recursive && rest.contains('/') {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|p: &ParameterValue| p.name.clone());
                break;
            }
            let current = record.current().clone();
            out.push(self.value_of(&record, &current, decrypt, None)?);
        }
        Ok((out, next))
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let name = self.name_of(id);
        let key = parameter_key(name);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(IamError::ssm_not_found(name));
        };
        match self
            .store
            .commit(
                Txn::new()
                    .require_revision(&key, kv.mod_revision)
                    .delete(&key),
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ManualClock;
    use berth_store::{RedbOptions, RedbStore};

    fn fixture() -> (ParameterStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            RedbStore::open(&dir.path().join("p.redb"), RedbOptions::default()).unwrap();
        (
            ParameterStore::new(
                store,
                Arc::new(Sealer::random()),
                Arc::new(ManualClock::at(Timestamp::from_millis(1_700_000_000_000))),
                "us-east-1",
                "000000000000",
            ),
            dir,
        )
    }

    fn put(name: &str, value: &str, kind: ParameterType, overwrite: bool) -> PutParameter {
        PutParameter {
            name: name.into(),
            value: value.into(),
            kind: Some(kind),
            overwrite,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn versions_selectors_and_secure_strings() {
        let (p, _d) = fixture();
        assert_eq!(
            p.put(put(
                "/app/db/pass",
                "s3cret",
                ParameterType::SecureString,
                false
            ))
            .await
            .unwrap()
            .0,
            1
        );
        assert_eq!(
            p.put(put("/app/db/pass", "x", ParameterType::SecureString, false))
                .await
                .unwrap_err()
                .code,
            "ParameterAlreadyExists"
        );
        assert_eq!(
            p.put(put(
                "/app/db/pass",
                "s3cret2",
                ParameterType::SecureString,
                true
            ))
            .await
            .unwrap()
            .0,
            2
        );
        let v = p.get("/app/db/pass", true).await.unwrap();
        assert_eq!((v.value.as_str(), v.version), ("s3cret2", 2));
        let sealed = p.get("/app/db/pass", false).await.unwrap();
        assert!(sealed.value.starts_with("v1.") && !sealed.value.contains("s3cret"));
        assert_eq!(p.get("/app/db/pass:1", true).await.unwrap().value, "s3cret");
        let by_arn = p
            .get(
                "arn:aws:ssm:us-east-1:000000000000:parameter/app/db/pass",
                true,
            )
            .await
            .unwrap();
        assert_eq!(by_arn.value, "s3cret2");
        assert_eq!(
            by_arn.arn,
            "arn:aws:ssm:us-east-1:000000000000:parameter/app/db/pass"
        );
        assert_eq!(
            p.get("/app/db/pass:9", true).await.unwrap_err().code,
            "ParameterVersionNotFound"
        );
        assert_eq!(
            p.get("/nope", true).await.unwrap_err().code,
            "ParameterNotFound"
        );
    }

    #[tokio::test]
    async fn paths_and_names() {
        let (p, _d) = fixture();
        for n in ["/app/a", "/app/b", "/app/sub/c", "/other/d", "plain"] {
            p.put(put(n, "v", ParameterType::String, false))
                .await
                .unwrap();
        }
        let names = |v: Vec<ParameterValue>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
        let (direct, _) = p.by_path("/app", false, false, None, 10).await.unwrap();
        assert_eq!(names(direct), vec!["/app/a", "/app/b"]);
        let (all, _) = p.by_path("/app/", true, false, None, 10).await.unwrap();
        assert_eq!(names(all), vec!["/app/a", "/app/b", "/app/sub/c"]);
        let (page, next) = p.by_path("/app", true, false, None, 2).await.unwrap();
        assert_eq!(page.len(), 2);
        let (rest, none) = p
            .by_path("/app", true, false, next.as_deref(), 2)
            .await
            .unwrap();
        assert_eq!((names(rest), none), (vec!["/app/sub/c".to_string()], None));
        assert_eq!(
            p.arn("plain"),
            "arn:aws:ssm:us-east-1:000000000000:parameter/plain"
        );
        assert_eq!(
            p.name_of("arn:aws:ssm:us-east-1:000000000000:parameter/plain"),
            "plain"
        );
        for bad in ["aws/x", "/ssm/x", "a/b", "", "/a//b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        p.delete("/app/a").await.unwrap();
        assert_eq!(
            p.delete("/app/a").await.unwrap_err().code,
            "ParameterNotFound"
        );
    }
}
