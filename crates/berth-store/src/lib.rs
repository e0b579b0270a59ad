//! berth's state store: an async, versioned key-value store in the model of etcd.
//!
//! - Every commit bumps one global **revision**; each key remembers the revision that created
//!   it and the one that last modified it.
//! - **Transactions** apply a batch of puts and deletes atomically when all their conditions
//!   hold (a key's `mod_revision`, or its absence).
//! - **Snapshots** read many keys at one revision, so a decision made from them can be
//!   committed with "nothing I read has changed" conditions.
//! - **Watches** deliver every change under a key prefix, in revision order, starting at a
//!   given revision; a watcher that falls behind the retained history gets
//!   [`StoreError::Compacted`] and re-lists.
//! - **Leases** (grant, keep-alive, revoke, expiry) delete the keys attached to them when
//!   they end: the basis for leader election and agent liveness.
//! - **Paging** is by key continuation (`start` of the next page = just after the last key).
//!
//! The crate knows nothing about ECS. Every backend passes [`conformance`]; the embedded one
//! is [`RedbStore`].

pub mod conformance;
mod redb_store;

pub use redb_store::{RedbOptions, RedbStore};

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

/// A store revision. Revision 0 means "never written"; the first commit is revision 1.
pub type Revision = u64;
/// Identifies a lease granted by [`Store::grant_lease`].
pub type LeaseId = u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A transaction's condition did not hold; the caller re-reads and retries.
    #[error("transaction conflict on key {key}")]
    Conflict { key: String },
    /// The requested revision is older than the history the store still holds.
    #[error("revision {requested} is compacted (oldest retained revision is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// The lease expired, was revoked, or never existed.
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("store I/O error: {0}")]
    Backend(String),
    #[error("stored value at {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
    /// The watcher fell too far behind the live stream and was dropped.
    #[error("watch on {prefix} was dropped: it fell behind")]
    WatchLagged { prefix: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored key and its value, with the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl KeyValue {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        decode(&self.key, &self.value)
    }
}

/// Decodes a JSON value stored at `key`.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// What a transaction requires of a key before it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key's `mod_revision` equals this; 0 means the key must not exist.
    ModRevision(String, Revision),
    /// The key must exist (any revision).
    Exists(String),
}

impl Condition {
    pub fn key(&self) -> &str {
        match self {
            Self::ModRevision(k, _) | Self::Exists(k) => k,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete(String),
    /// Deletes every key starting with the prefix.
    DeletePrefix(String),
}

/// A conditional, atomic batch of writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn require_absent(self, key: impl Into<String>) -> Self {
        self.require_revision(key, 0)
    }
    pub fn require_exists(mut self, key: impl Into<String>) -> Self {
        self.conditions.push(Condition::Exists(key.into()));
        self
    }
    /// The key must have been last written at exactly `mod_revision` (0: must be absent).
    pub fn require_revision(mut self, key: impl Into<String>, mod_revision: Revision) -> Self {
        self.conditions
            .push(Condition::ModRevision(key.into(), mod_revision));
        self
    }
    /// Requires `key` to be as it was read: absent when `read` is None, unchanged otherwise.
    pub fn require_unchanged(self, key: impl Into<String>, read: Option<Revision>) -> Self {
        self.require_revision(key, read.unwrap_or(0))
    }
    pub fn put_json<T: Serialize + ?Sized>(self, key: impl Into<String>, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("berth records always serialize");
        self.put_raw(key, bytes)
    }
    pub fn put_raw(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: None,
        });
        self
    }
    /// A put whose key is deleted when `lease` ends.
    pub fn put_with_lease<T: Serialize + ?Sized>(
        mut self,
        key: impl Into<String>,
        value: &T,
        lease: LeaseId,
    ) -> Self {
        let bytes = serde_json::to_vec(value).expect("berth records always serialize");
        self.ops.push(Op::Put {
            key: key.into(),
            value: bytes,
            lease: Some(lease),
        });
        self
    }
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(Op::DeletePrefix(prefix.into()));
        self
    }
    /// Appends another transaction's conditions and ops.
    pub fn merge(mut self, other: Txn) -> Self {
        self.conditions.extend(other.conditions);
        self.ops.extend(other.ops);
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The keys a range read covers: `[start, end)` in byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: String,
    /// Exclusive end; `None` means "every key that starts with `prefix`".
    pub end: Option<String>,
    /// Only keys starting with this are returned (and the scan stops at the first that does not).
    pub prefix: String,
    /// At most this many keys per page (`None`: all).
    pub limit: Option<usize>,
}

impl KeyRange {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            start: prefix.clone(),
            end: None,
            prefix,
            limit: None,
        }
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Continues after `key` (exclusive), for key-continuation paging.
    pub fn after(mut self, key: &str) -> Self {
        let mut start = key.to_string();
        start.push('\0');
        if start > self.start {
            self.start = start;
        }
        self
    }
    /// Starts at `key` (inclusive), if that is past the current start.
    pub fn from_key(mut self, key: &str) -> Self {
        if key > self.start.as_str() {
            self.start = key.to_string();
        }
        self
    }
    /// Stops before `key` (exclusive).
    pub fn until(mut self, key: impl Into<String>) -> Self {
        self.end = Some(key.into());
        self
    }
    /// Whether `key` falls in this range (ignoring the limit).
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && key >= self.start.as_str()
            && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// One page of a range read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangePage {
    pub kvs: Vec<KeyValue>,
    /// More keys in the range follow the last one returned.
    pub more: bool,
    /// The revision the page was read at.
    pub revision: Revision,
}

impl RangePage {
    pub fn last_key(&self) -> Option<&str> {
        self.kvs.last().map(|kv| kv.key.as_str())
    }
}

/// A change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    /// The key was deleted at `revision` (explicitly, by prefix, or by its lease ending).
    Delete {
        key: String,
        revision: Revision,
    },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete { key, .. } => key,
        }
    }
}

/// The changes one commit made under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// A live watch: batches in revision order, each revision at most once.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchBatch>>,
}

impl WatchStream {
    pub fn new(rx: mpsc::Receiver<Result<WatchBatch>>) -> Self {
        Self { rx }
    }
    /// The next batch; `None` once the store is gone. After an `Err` the stream ends.
    pub async fn next(&mut self) -> Option<Result<WatchBatch>> {
        self.rx.recv().await
    }
}

/// Consistent reads: every read of one view sees the store at one revision.
#[async_trait::async_trait]
pub trait ReadView: Send + Sync {
    /// The revision this view reads at (for a [`Store`]: the latest at the time of the call).
    async fn read_revision(&self) -> Result<Revision>;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    async fn range(&self, range: KeyRange) -> Result<RangePage>;
}

/// The boundary between berth's control plane and its state. `Arc<dyn Store>` everywhere.
#[async_trait::async_trait]
pub trait Store: ReadView + 'static {
    /// A read view pinned at the current revision.
    async fn snapshot(&self) -> Result<Box<dyn ReadView>>;
    /// Applies the transaction atomically if all its conditions hold; returns its revision.
    async fn commit(&self, txn: Txn) -> Result<Revision>;
    /// Changes under `prefix` with revision `>= from` (use `current + 1` for "from now on").
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Restarts the lease's TTL; returns the TTL. [`StoreError::LeaseNotFound`] once it ended.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration>;
    /// Ends the lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
}

/// Typed reads over any [`ReadView`] (stores and snapshots alike).
#[async_trait::async_trait]
pub trait ReadExt: ReadView {
    async fn get_json<T: DeserializeOwned + Send>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>> {
        match self.get(key).await? {
            Some(kv) => Ok(Some((kv.decode()?, kv.mod_revision))),
            None => Ok(None),
        }
    }
    /// Every key under `prefix`, decoded, in key order (all pages).
    async fn scan_json<T: DeserializeOwned + Send>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T, Revision)>> {
        let page = self.range(KeyRange::prefix(prefix)).await?;
        page.kvs
            .into_iter()
            .map(|kv| {
                let value = kv.decode()?;
                Ok((kv.key, value, kv.mod_revision))
            })
            .collect()
    }
    /// How many keys start with `prefix`.
    async fn count_prefix(&self, prefix: &str) -> Result<usize> {
        Ok(self.range(KeyRange::prefix(prefix)).await?.kvs.len())
    }
}

impl<S: ReadView + ?Sized> ReadExt for S {}

#[async_trait::async_trait]
impl ReadView for Box<dyn ReadView> {
    async fn read_revision(&self) -> Result<Revision> {
        (**self).read_revision().await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        (**self).get(key).await
    }
    async fn range(&self, range: KeyRange) -> Result<RangePage> {
        (**self).range(range).await
    }
}
