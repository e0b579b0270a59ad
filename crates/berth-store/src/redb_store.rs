use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::watch;

use crate::{Condition, Op, Store, StoreError, Txn, Versioned};

/// key → (mod_revision as 8 big-endian bytes) ++ value
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// The embedded store: one redb file, every commit durable before it returns.
pub struct RedbStore {
    db: Database,
    revision_tx: watch::Sender<u64>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(mod_revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Result<Versioned, StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Corrupt {
            key: key.to_string(),
            reason: "record shorter than its revision header".into(),
        });
    }
    let (rev, value) = raw.split_at(8);
    Ok(Versioned {
        mod_revision: u64::from_be_bytes(rev.try_into().expect("8 bytes")),
        value: value.to_vec(),
    })
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = Database::create(path).map_err(backend)?;
        // Make sure both tables exist so that reads never see "table does not exist".
        let wtx = db.begin_write().map_err(backend)?;
        let revision = {
            wtx.open_table(KV).map_err(backend)?;
            let meta = wtx.open_table(META).map_err(backend)?;
            let rev = meta
                .get(REVISION_KEY)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            rev
        };
        wtx.commit().map_err(backend)?;
        let (revision_tx, _) = watch::channel(revision);
        Ok(Self { db, revision_tx })
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let rtx = self.db.begin_read().map_err(backend)?;
        let table = rtx.open_table(KV).map_err(backend)?;
        match table.get(key).map_err(backend)? {
            Some(raw) => Ok(Some(decode(key, raw.value())?)),
            None => Ok(None),
        }
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let rtx = self.db.begin_read().map_err(backend)?;
        let table = rtx.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_string(), decode(key, v.value())?));
        }
        Ok(out)
    }

    fn commit(&self, txn: Txn) -> Result<u64, StoreError> {
        // redb allows one writer at a time, so checking conditions inside the write
        // transaction makes check-and-apply atomic.
        let wtx = self.db.begin_write().map_err(backend)?;
        let new_revision = {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            for cond in &txn.conditions {
                let (key, ok) = match cond {
                    Condition::Absent(key) => {
                        (key, kv.get(key.as_str()).map_err(backend)?.is_none())
                    }
                    Condition::ModRevision(key, want) => {
                        let current = match kv.get(key.as_str()).map_err(backend)? {
                            Some(raw) => Some(decode(key, raw.value())?.mod_revision),
                            None => None,
                        };
                        (key, current == Some(*want))
                    }
                };
                if !ok {
                    return Err(StoreError::Conflict(key.clone()));
                }
            }
            let mut meta = wtx.open_table(META).map_err(backend)?;
            let current = meta
                .get(REVISION_KEY)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let new_revision = current + 1;
            for op in &txn.ops {
                match op {
                    Op::Put(key, value) => {
                        kv.insert(key.as_str(), encode(new_revision, value).as_slice())
                            .map_err(backend)?;
                    }
                    Op::Delete(key) => {
                        kv.remove(key.as_str()).map_err(backend)?;
                    }
                }
            }
            meta.insert(REVISION_KEY, new_revision).map_err(backend)?;
            new_revision
        };
        wtx.commit().map_err(backend)?;
        self.revision_tx.send_replace(new_revision);
        Ok(new_revision)
    }

    fn revision(&self) -> u64 {
        *self.revision_tx.borrow()
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreExt;

    fn open() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn put_get_scan_delete() {
        let (_dir, store) = open();
        let rev = store
            .commit(
                Txn::new()
                    .put_json("a/1", &1)
                    .put_json("a/2", &2)
                    .put_json("b/1", &3),
            )
            .unwrap();
        assert_eq!(rev, 1);
        let (v, mod_rev) = store.get_json::<i32>("a/2").unwrap().unwrap();
        assert_eq!((v, mod_rev), (2, 1));
        let scanned: Vec<_> = store
            .scan_json::<i32>("a/")
            .unwrap()
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
        assert_eq!(
            scanned,
            vec![("a/1".to_string(), 1), ("a/2".to_string(), 2)]
        );
        store.commit(Txn::new().delete("a/1")).unwrap();
        assert!(store.get("a/1").unwrap().is_none());
        assert_eq!(store.revision(), 2);
    }

    #[test]
    fn failed_condition_changes_nothing() {
        let (_dir, store) = open();
        store.commit(Txn::new().put_json("k", &"v1")).unwrap();
        let err = store
            .commit(
                Txn::new()
                    .require_absent("k")
                    .put_json("k", &"v2")
                    .put_json("other", &1),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(k) if k == "k"));
        let stale = store
            .commit(Txn::new().require_revision("k", 99).put_json("k", &"v3"))
            .unwrap_err();
        assert!(matches!(stale, StoreError::Conflict(_)));
        assert_eq!(store.get_json::<String>("k").unwrap().unwrap().0, "v1");
        assert!(store.get("other").unwrap().is_none());
        assert_eq!(store.revision(), 1);
        store
            .commit(Txn::new().require_revision("k", 1).put_json("k", &"v4"))
            .unwrap();
        assert_eq!(
            store.get_json::<String>("k").unwrap().unwrap(),
            ("v4".into(), 2)
        );
    }

    #[test]
    fn state_and_revision_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.commit(Txn::new().put_json("x", &42)).unwrap();
            store.commit(Txn::new().put_json("y", &43)).unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.revision(), 2);
        assert_eq!(store.get_json::<i32>("x").unwrap().unwrap(), (42, 1));
    }

    #[tokio::test]
    async fn watch_sees_commits() {
        let (_dir, store) = open();
        let mut rx = store.watch();
        store.commit(Txn::new().put_json("x", &1)).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 1);
    }
}
