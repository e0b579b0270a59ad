//! berth's state store: a versioned key-value store with conditional multi-key transactions,
//! in the model of etcd (a global revision that every commit bumps, a per-key `mod_revision`)
//! so that a distributed backend can stand behind the same trait later.
//!
//! The embedded backend is [`RedbStore`]: every commit is an fsync'd redb transaction, so state
//! survives `kill -9` of the process.

mod redb_store;

pub use redb_store::RedbStore;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A transaction's condition did not hold; the caller should re-read and retry.
    #[error("transaction conflict on key {0}")]
    Conflict(String),
    #[error("store I/O error: {0}")]
    Backend(String),
    #[error("stored value at {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A store failure reaching an API caller is the server's fault, not the request's.
impl From<StoreError> for berth_model::ApiError {
    fn from(e: StoreError) -> Self {
        berth_model::ApiError::server(e.to_string())
    }
}

/// A stored value and the revision of the commit that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

impl Versioned {
    pub fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<T, StoreError> {
        serde_json::from_slice(&self.value).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }
}

/// What a transaction requires of a key before it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key must not exist.
    Absent(String),
    /// The key must exist and have been last written at exactly this revision.
    ModRevision(String, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
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
    pub fn require_absent(mut self, key: impl Into<String>) -> Self {
        self.conditions.push(Condition::Absent(key.into()));
        self
    }
    pub fn require_revision(mut self, key: impl Into<String>, mod_revision: u64) -> Self {
        self.conditions
            .push(Condition::ModRevision(key.into(), mod_revision));
        self
    }
    /// Requires `key` to be as it was read: absent when `read` is None, unchanged otherwise.
    pub fn require_unchanged(self, key: impl Into<String>, read: Option<u64>) -> Self {
        match read {
            Some(rev) => self.require_revision(key, rev),
            None => self.require_absent(key),
        }
    }
    pub fn put_json<T: Serialize>(mut self, key: impl Into<String>, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("berth shapes always serialize");
        self.ops.push(Op::Put(key.into(), bytes));
        self
    }
    pub fn put_raw(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put(key.into(), value));
        self
    }
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The boundary between berth's control plane and its state.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// All keys starting with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// Applies the transaction atomically if all its conditions hold; returns the new revision.
    fn commit(&self, txn: Txn) -> Result<u64, StoreError>;
    /// The revision of the latest commit.
    fn revision(&self) -> u64;
    /// Notified with the new revision after every commit.
    fn watch(&self) -> watch::Receiver<u64>;
}

/// Typed reads over any [`Store`].
pub trait StoreExt: Store {
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, StoreError> {
        match self.get(key)? {
            Some(v) => Ok(Some((v.decode(key)?, v.mod_revision))),
            None => Ok(None),
        }
    }
    fn scan_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T, u64)>, StoreError> {
        self.scan_prefix(prefix)?
            .into_iter()
            .map(|(k, v)| {
                let decoded = v.decode(&k)?;
                Ok((k, decoded, v.mod_revision))
            })
            .collect()
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
