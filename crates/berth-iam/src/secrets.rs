//! Secrets Manager's secrets: versions with staging labels (`AWSCURRENT`, `AWSPREVIOUS`,
//! custom ones), scheduled deletion with a recovery window, and values sealed at rest
//! (AES-GCM, see `crypto`; each version bound to `sm/<name>/<version id>`).
//!
//! ```text
//! sm/<name>    SecretRecord (all versions inline; values sealed)
//! ```

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use berth_core::{Clock, Timestamp};
use berth_store::{KeyRange, ReadExt, Store, StoreError, Txn};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::crypto::{Sealed, Sealer};
use crate::error::{IamError, Result};
use crate::model::Tag;

pub const PREFIX: &str = "sm/";
pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";
/// Largest secret value (bytes), as in Secrets Manager.
pub const MAX_VALUE_BYTES: usize = 65_536;
/// Versions without a staging label that are kept (the oldest go first).
const KEEP_UNLABELLED_VERSIONS: usize = 10;

pub fn secret_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn version_context(name: &str, version: &str) -> String {
    format!("{PREFIX}{name}/{version}")
}

/// A secret's value: text or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretValue {
    String(String),
    Binary(Vec<u8>),
}

impl SecretValue {
    fn len(&self) -> usize {
        match self {
            Self::String(s) => s.len(),
            Self::Binary(b) => b.len(),
        }
    }
    fn encode(&self) -> Vec<u8> {
        let v = match self {
            Self::String(s) => serde_json::json!({ "s": s }),
            Self::Binary(b) => serde_json::json!({ "b": B64.encode(b) }),
        };
        serde_json::to_vec(&v).expect("json")
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|_| IamError::internal("a stored secret value is not readable"))?;
        if let Some(s) = v.get("s").and_then(|s| s.as_str()) {
            return Ok(Self::String(s.to_string()));
        }
        if let Some(b) = v.get("b").and_then(|s| s.as_str()) {
            return B64
                .decode(b)
                .map(Self::Binary)
                .map_err(|_| IamError::internal("a stored secret value is not readable"));
        }
        Err(IamError::internal("a stored secret value is not readable"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    pub id: String,
    pub stages: Vec<String>,
    pub created: Timestamp,
    pub value: Sealed,
    /// SHA-256 of the value (hex), to tell an idempotent retry from a conflicting one
    /// without opening the value.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRecord {
    pub name: String,
    pub arn: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    pub created: Timestamp,
    pub last_changed: Timestamp,
    #[serde(default)]
    pub last_accessed: Option<Timestamp>,
    /// When DeleteSecret was called (the secret is then "marked for deletion").
    #[serde(default)]
    pub deleted: Option<Timestamp>,
    /// When a scheduled deletion takes effect.
    #[serde(default)]
    pub deletion_date: Option<Timestamp>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub versions: Vec<SecretVersion>,
}

impl SecretRecord {
    pub fn version_with_stage(&self, stage: &str) -> Option<&SecretVersion> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
    }
    fn purged_at(&self, now: Timestamp) -> bool {
        self.deletion_date.is_some_and(|d| now >= d)
    }
}

/// A new version's value and labels.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub token: Option<String>,
    pub value: SecretValue,
    /// Default: `AWSCURRENT`.
    pub stages: Option<Vec<String>>,
}

/// `CreateSecret`'s input.
#[derive(Debug, Clone, Default)]
pub struct CreateSecret {
    pub name: String,
    pub description: Option<String>,
    pub kms_key_id: Option<String>,
    pub value: Option<SecretValue>,
    pub token: Option<String>,
    pub tags: Vec<Tag>,
}

/// Secrets Manager's store.
pub struct SecretStore {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    region: String,
    account: String,
}

fn digest(value: &SecretValue) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.encode()))
}

fn arn_suffix() -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| ALPHA[rng.gen_range(0..ALPHA.len())] as char)
        .collect()
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::sm_invalid_parameter(
            "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!",
        ))
    }
}

fn validate_token(token: &str) -> Result<()> {
    if (32..=64).contains(&token.len()) {
        Ok(())
    } else {
        Err(IamError::sm_invalid_parameter(
            "ClientRequestToken must be 32-64 characters long.",
        ))
    }
}

fn validate_value(value: &SecretValue) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(IamError::sm_invalid_parameter(format!(
            "The secret value must be at most {MAX_VALUE_BYTES} bytes."
        )));
    }
    Ok(())
}

impl SecretStore {
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

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:secretsmanager:{}:{}:secret:{name}-{}",
            self.region,
            self.account,
            arn_suffix()
        )
    }

    /// The ARN prefix of this account's secrets.
    pub fn arn_prefix(&self) -> String {
        format!(
            "arn:aws:secretsmanager:{}:{}:secret:",
            self.region, self.account
        )
    }

    /// Finds a secret by name, full ARN or partial ARN (without the 6-character suffix).
    /// Secrets past their deletion date are gone. Returns the record and its revision.
    pub async fn find(&self, id: &str) -> Result<Option<(SecretRecord, u64)>> {
        let now = self.clock.now();
        let found = if let Some(rest) = id.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(6, ':').collect();
            let [_, "secretsmanager", _, _, "secret", tail] = parts.as_slice() else {
                return Ok(None);
            };
            let mut found = None;
            // Full ARN: name-XXXXXX.
            if tail.len() > 7 && tail.as_bytes()[tail.len() - 7] == b'-' {
                let name = &tail[..tail.len() - 7];
                if let Some((r, rev)) = self
                    .store
                    .get_json::<SecretRecord>(&secret_key(name))
                    .await?
                {
                    if r.arn == id {
                        found = Some((r, rev));
                    }
                }
            }
            if found.is_none() {
                if let Some((r, rev)) = self
                    .store
                    .get_json::<SecretRecord>(&secret_key(tail))
                    .await?
                {
                    if r.arn.len() == id.len() + 7 && r.arn.starts_with(id) {
                        found = Some((r, rev));
                    }
                }
            }
            found
        } else {
            self.store.get_json::<SecretRecord>(&secret_key(id)).await?
        };
        Ok(found.filter(|(r, _)| !r.purged_at(now)))
    }

    async fn existing(&self, id: &str) -> Result<(SecretRecord, u64)> {
        self.find(id).await?.ok_or_else(IamError::sm_not_found)
    }

    fn not_deleted(record: &SecretRecord, what: &str) -> Result<()> {
        if record.deleted.is_some() {
            return Err(IamError::sm_invalid_request(format!(
                "You can't perform this operation on the secret because it was marked for deletion.{what}"
            )));
        }
        Ok(())
    }

    /// Seals a new version and moves the labels it takes onto it.
    fn add_version(&self, record: &mut SecretRecord, new: &NewVersion) -> Result<String> {
        validate_value(&new.value)?;
        let id = match &new.token {
            Some(t) => {
                validate_token(t)?;
                t.clone()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let digest = digest(&new.value);
        if let Some(existing) = record.versions.iter().find(|v| v.id == id) {
            if existing.digest == digest {
                return Ok(id); // an idempotent retry
            }
            return Err(IamError::sm_exists(
                "You can't modify an existing version, you can only create a new version.",
            ));
        }
        let stages = new
            .stages
            .clone()
            .unwrap_or_else(|| vec![CURRENT.to_string()]);
        let now = self.clock.now();
        if stages.iter().any(|s| s == CURRENT) {
            // The old current becomes the previous one.
            for v in record.versions.iter_mut() {
                v.stages.retain(|s| s != PREVIOUS);
            }
            if let Some(old) = record
                .versions
                .iter_mut()
                .find(|v| v.stages.iter().any(|s| s == CURRENT))
            {
                old.stages.retain(|s| s != CURRENT);
                old.stages.push(PREVIOUS.to_string());
            }
        }
        for v in record.versions.iter_mut() {
            v.stages.retain(|s| s == PREVIOUS || !stages.contains(s));
        }
        record.versions.push(SecretVersion {
            id: id.clone(),
            stages,
            created: now,
            value: self
                .sealer
                .seal(&version_context(&record.name, &id), &new.value.encode()),
            digest,
        });
        // Drop the oldest unlabelled versions.
        let unlabelled = record
            .versions
            .iter()
            .filter(|v| v.stages.is_empty())
            .count();
        if unlabelled > KEEP_UNLABELLED_VERSIONS {
            let mut drop = unlabelled - KEEP_UNLABELLED_VERSIONS;
            record.versions.retain(|v| {
                if drop > 0 && v.stages.is_empty() {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
        record.last_changed = now;
        Ok(id)
    }

    async fn commit_update(&self, record: &SecretRecord, revision: u64) -> Result<bool> {
        let key = secret_key(&record.name);
        match self
            .store
            .commit(
                Txn::new()
                    .require_revision(&key, revision)
                    .put_json(&key, record),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create(&self, req: CreateSecret) -> Result<(SecretRecord, Option<String>)> {
        validate_name(&req.name)?;
        if let Some(v) = &req.value {
            validate_value(v)?;
        }
        let key = secret_key(&req.name);
        for _ in 0..32 {
            let now = self.clock.now();
            let existing = self.store.get_json::<SecretRecord>(&key).await?;
            let read_revision = existing.as_ref().map(|(_, rev)| *rev).unwrap_or(0);
            if let Some((r, _)) = &existing {
                if !r.purged_at(now) {
                    if r.deleted.is_some() {
                        return Err(IamError::sm_invalid_request(
                            "You can't create this secret because a secret with this name is already scheduled for deletion.",
                        ));
                    }
                    // A retry of the same CreateSecret answers as the first did.
                    if let (Some(t), Some(v)) = (&req.token, &req.value) {
                        if r.versions
                            .iter()
                            .any(|x| &x.id == t && x.digest == digest(v))
                        {
                            return Ok((r.clone(), Some(t.clone())));
                        }
                    }
                    return Err(IamError::sm_exists(format!(
                        "The operation failed because the secret {} already exists.",
                        req.name
                    )));
                }
            }
            let mut record = SecretRecord {
                name: req.name.clone(),
                arn: self.arn(&req.name),
                description: req.description.clone(),
                kms_key_id: req.kms_key_id.clone(),
                created: now,
                last_changed: now,
                last_accessed: None,
                deleted: None,
                deletion_date: None,
                tags: req.tags.clone(),
                versions: Vec::new(),
            };
            let version = match &req.value {
                Some(value) => Some(self.add_version(
                    &mut record,
                    &NewVersion {
                        token: req.token.clone(),
                        value: value.clone(),
                        stages: None,
                    },
                )?),
                None => None,
            };
            match self
                .store
                .commit(
                    Txn::new()
                        .require_revision(&key, read_revision)
                        .put_json(&key, &record),
                )
                .await
            {
                Ok(_) => return Ok((record, version)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    /// The value of one version: by id, by label, or `AWSCURRENT`.
    pub async fn get_value(
        &self,
        id: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<(SecretRecord, SecretVersion, SecretValue)> {
        let (mut record, revision) = self.existing(id).await?;
        Self::not_deleted(&record, "")?;
        let version = match (version_id, stage) {
            (Some(v), Some(s)) => record
                .versions
                .iter()
                .find(|x| x.id == v && x.stages.iter().any(|y| y == s)),
            (Some(v), None) => record.versions.iter().find(|x| x.id == v),
            (None, Some(s)) => record.version_with_stage(s),
            (None, None) => record.version_with_stage(CURRENT),
        }
        .cloned()
        .ok_or_else(|| {
            IamError::sm_version_not_found(
                "Secrets Manager can't find the specified secret value for staging label: "
                    .to_string()
                    + stage.unwrap_or(if version_id.is_some() { "" } else { CURRENT }),
            )
        })?;
        let value = SecretValue::decode(
            &self
                .sealer
                .open(&version_context(&record.name, &version.id), &version.value)?,
        )?;
        // LastAccessedDate has day granularity: write at most once a day.
        let today = day(self.clock.now());
        if record.last_accessed.map(day) != Some(today) {
            record.last_accessed = Some(Timestamp::from_millis(today * 86_400_000));
            let _ = self.commit_update(&record, revision).await;
        }
        Ok((record, version, value))
    }

    pub async fn put_value(&self, id: &str, new: NewVersion) -> Result<(SecretRecord, String)> {
        for _ in 0..32 {
            let (mut record, revision) = self.existing(id).await?;
            Self::not_deleted(&record, "")?;
            let version = self.add_version(&mut record, &new)?;
            if self.commit_update(&record, revision).await? {
                return Ok((record, version));
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    /// `UpdateSecret`: description, key, and (optionally) a new current value.
    pub async fn update(
        &self,
        id: &str,
        description: Option<String>,
        kms_key_id: Option<String>,
        value: Option<NewVersion>,
    ) -> Result<(SecretRecord, Option<String>)> {
        for _ in 0..32 {
            let (mut record, revision) = self.existing(id).await?;
            Self::not_deleted(&record, "")?;
            if let Some(d) = &description {
                record.description = Some(d.clone());
            }
            if let Some(k) = &kms_key_id {
                record.kms_key_id = Some(k.clone());
            }
            let version = match &value {
                Some(v) => Some(self.add_version(&mut record, v)?),
                None => None,
            };
            record.last_changed = self.clock.now();
            if self.commit_update(&record, revision).await? {
                return Ok((record, version));
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    /// Schedules deletion after `recovery_days` (7–30, default 30), or deletes now.
    pub async fn delete(
        &self,
        id: &str,
        recovery_days: Option<i64>,
        force: bool,
    ) -> Result<(SecretRecord, Timestamp)> {
        if force && recovery_days.is_some() {
            return Err(IamError::sm_invalid_parameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
            ));
        }
        let days = recovery_days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            return Err(IamError::sm_invalid_parameter(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
            ));
        }
        for _ in 0..32 {
            let (mut record, revision) = self.existing(id).await?;
            let now = self.clock.now();
            let key = secret_key(&record.name);
            if force {
                match self
                    .store
                    .commit(Txn::new().require_revision(&key, revision).delete(&key))
                    .await
                {
                    Ok(_) => return Ok((record, now)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if record.deleted.is_some() {
                return Err(IamError::sm_invalid_request(
                    "You can't perform this operation on the secret because it was already scheduled for deletion.",
                ));
            }
            let when = now.plus(Duration::from_secs(days as u64 * 86_400));
            record.deleted = Some(now);
            record.deletion_date = Some(when);
            if self.commit_update(&record, revision).await? {
                return Ok((record, when));
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    /// Cancels a scheduled deletion.
    pub async fn restore(&self, id: &str) -> Result<SecretRecord> {
        for _ in 0..32 {
            let (mut record, revision) = self.existing(id).await?;
            record.deleted = None;
            record.deletion_date = None;
            if self.commit_update(&record, revision).await? {
                return Ok(record);
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    pub async fn describe(&self, id: &str) -> Result<SecretRecord> {
        Ok(self.existing(id).await?.0)
    }

    /// Secrets by name, after `after` (paging), at most `limit`; (page, more).
    pub async fn list(
        &self,
        include_deleted: bool,
        after: Option<&str>,
        limit: usize,
        filter: impl Fn(&SecretRecord) -> bool,
    ) -> Result<(Vec<SecretRecord>, Option<String>)> {
        let now = self.clock.now();
        let mut range = KeyRange::prefix(PREFIX);
        if let Some(a) = after {
            range = range.after(&secret_key(a));
        }
        let page = self.store.range(range).await?;
        let mut out = Vec::new();
        let mut next = None;
        for kv in page.kvs {
            let record: SecretRecord = kv.decode()?;
            if record.purged_at(now) || (!include_deleted && record.deleted.is_some()) {
                continue;
            }
            if !filter(&record) {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|r: &SecretRecord| r.name.clone());
                break;
            }
            out.push(record);
        }
        Ok((out, next))
    }
}

fn day(t: Timestamp) -> i64 {
    t.millis().div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ManualClock;
    use berth_store::{RedbOptions, RedbStore};

    async fn fixture() -> (SecretStore, ManualClock, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
        let s = SecretStore::new(
            store,
            Arc::new(Sealer::random()),
            Arc::new(clock.clone()),
            "us-east-1",
            "000000000000",
        );
        (s, clock, dir)
    }

    fn text(s: &str) -> SecretValue {
        SecretValue::String(s.into())
    }

    #[tokio::test]
    async fn versions_move_their_labels() {
        let (s, _, _d) = fixture().await;
        let (rec, v1) = s
            .create(CreateSecret {
                name: "db/pass".into(),
                value: Some(text("one")),
                ..Default::default()
            })
            .await
            .unwrap();
        let v1 = v1.unwrap();
        assert!(rec
            .arn
            .starts_with("arn:aws:secretsmanager:us-east-1:000000000000:secret:db/pass-"));
        let (_, v2) = s
            .put_value(
                "db/pass",
                NewVersion {
                    token: None,
                    value: text("two"),
                    stages: None,
                },
            )
            .await
            .unwrap();
        let (_, cur, val) = s.get_value("db/pass", None, None).await.unwrap();
        assert_eq!((cur.id.as_str(), val), (v2.as_str(), text("two")));
        let (_, prev, val) = s.get_value(&rec.arn, None, Some(PREVIOUS)).await.unwrap();
        assert_eq!((prev.id.as_str(), val), (v1.as_str(), text("one")));
        // Partial ARN works too; a wrong suffix does not.
        let partial = &rec.arn[..rec.arn.len() - 7];
        assert!(s.get_value(partial, None, None).await.is_ok());
        let wrong = format!("{partial}-zzzzzz");
        assert_eq!(
            s.get_value(&wrong, None, None).await.unwrap_err().code,
            "ResourceNotFoundException"
        );
        // A third version: v1 loses its label.
        s.update(
            "db/pass",
            Some("d".into()),
            None,
            Some(NewVersion {
                token: None,
                value: text("three"),
                stages: None,
            }),
        )
        .await
        .unwrap();
        let r = s.describe("db/pass").await.unwrap();
        let stages: Vec<_> = r.versions.iter().map(|v| v.stages.clone()).collect();
        assert_eq!(
            stages,
            vec![
                vec![],
                vec![PREVIOUS.to_string()],
                vec![CURRENT.to_string()]
            ]
        );
        assert_eq!(r.description.as_deref(), Some("d"));
    }

    #[tokio::test]
    async fn idempotent_tokens_and_conflicts() {
        let (s, _, _d) = fixture().await;
        let token = "0123456789abcdef0123456789abcdef";
        let create = || CreateSecret {
            name: "a".into(),
            value: Some(text("x")),
            token: Some(token.into()),
            ..Default::default()
        };
        s.create(create()).await.unwrap();
        // The same request again answers as before.
        s.create(create()).await.unwrap();
        let mut other = create();
        other.value = Some(text("y"));
        assert_eq!(
            s.create(other).await.unwrap_err().code,
            "ResourceExistsException"
        );
        let e = s
            .put_value(
                "a",
                NewVersion {
                    token: Some(token.into()),
                    value: text("z"),
                    stages: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "ResourceExistsException");
    }

    #[tokio::test]
    async fn deletion_is_scheduled_then_final() {
        let (s, clock, _d) = fixture().await;
        s.create(CreateSecret {
            name: "gone".into(),
            value: Some(text("v")),
            ..Default::default()
        })
        .await
        .unwrap();
        s.delete("gone", Some(7), false).await.unwrap();
        assert_eq!(
            s.get_value("gone", None, None).await.unwrap_err().code,
            "InvalidRequestException"
        );
        assert!(s
            .list(false, None, 100, |_| true)
            .await
            .unwrap()
            .0
            .is_empty());
        assert_eq!(s.list(true, None, 100, |_| true).await.unwrap().0.len(), 1);
        s.restore("gone").await.unwrap();
        assert!(s.get_value("gone", None, None).await.is_ok());
        s.delete("gone", None, false).await.unwrap();
        clock.advance(Duration::from_secs(31 * 86_400));
        assert_eq!(
            s.describe("gone").await.unwrap_err().code,
            "ResourceNotFoundException"
        );
        // The name is free again.
        s.create(CreateSecret {
            name: "gone".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        s.delete("gone", None, true).await.unwrap();
        assert!(s.describe("gone").await.is_err());
    }
}
