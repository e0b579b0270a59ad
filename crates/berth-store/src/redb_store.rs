//! The embedded backend: one redb file; every commit is one durable (fsync'd) write
//! transaction.
//!
//! Tables:
//! - `kv`: key → create_revision, mod_revision, lease (u64 big-endian each; lease 0 = none),
//!   then the value.
//! - `meta`: `revision` (of the last commit), `next_lease`, `format`.
//! - `leases`: lease id → TTL in milliseconds.
//! - `lease_keys`: lease id → the keys attached to it.
//!
//! In memory only: lease deadlines (keep-alives never write; after a reopen every lease gets a
//! fresh TTL, as etcd's do after a leader change) and the watch history (the last
//! [`RedbOptions::watch_history`] commits; after a reopen it starts empty).
//!
//! Revisions: every commit with at least one op gets a new revision, even when its ops change
//! nothing (deleting an absent key); such a commit emits no events. A commit with no ops only
//! checks its conditions and returns the current revision. A lease that ends deletes its keys
//! in one commit; a lease with no keys left ends without a new revision.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use redb::{
    Database, MultimapTable, MultimapTableDefinition, ReadOnlyTable, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{
    Condition, Event, KeyRange, KeyValue, LeaseId, Op, RangePage, ReadView, Result, Revision,
    Store, StoreError, Txn, WatchBatch, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: MultimapTableDefinition<u64, &str> = MultimapTableDefinition::new("lease_keys");

const REVISION: &str = "revision";
const NEXT_LEASE: &str = "next_lease";
const FORMAT: &str = "format";
/// Bumped when the layout changes, so that a file of another layout is refused, not misread.
const FORMAT_VERSION: u64 = 2;

/// How long the reaper waits before retrying a lease it could not end.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Tuning for [`RedbStore`].
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// How many recent commits are kept in memory for watches that start in the past; a watch
    /// from an older revision gets [`StoreError::Compacted`].
    pub watch_history: usize,
    /// How many batches a watcher may have unread before it is dropped with
    /// [`StoreError::WatchLagged`] (commits never wait for watchers).
    pub watch_channel_capacity: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            watch_history: 10_000,
            watch_channel_capacity: 1024,
        }
    }
}

/// The embedded [`Store`]: one redb file, every commit durable before it returns.
///
/// The file stays open until the store, every snapshot taken from it and any work in flight
/// are gone: a lease that is being ended when the store is dropped holds it for that commit.
pub struct RedbStore {
    inner: Arc<Inner>,
    /// Ends leases whose deadline passed; spawned by the first async call (so that opening
    /// and dropping need no runtime), aborted on drop.
    reaper: OnceLock<JoinHandle<()>>,
}

struct Inner {
    db: Database,
    options: RedbOptions,
    /// Held from the start of a write transaction until its events are published, so that
    /// watchers receive commits in revision order.
    writer: Mutex<()>,
    hub: Mutex<Hub>,
    leases: Mutex<HashMap<LeaseId, LiveLease>>,
    wake_reaper: Arc<Notify>,
}

struct LiveLease {
    ttl: Duration,
    deadline: Instant,
}

/// The changes one commit made (all keys), as published to watchers and kept in the history.
struct Commit {
    revision: Revision,
    events: Vec<Event>,
}

macro_rules! backend_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}
backend_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Ignores poisoning: every critical section leaves its data consistent before it can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking redb work off the reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Backend(format!("store task failed: {e}"))),
    }
}

fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    // A huge TTL means "practically never"; don't overflow the clock.
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`. Blocking: from async code, call it in
    /// `spawn_blocking`.
    pub fn open(path: &Path, options: RedbOptions) -> Result<Arc<Self>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path)?;
        let wtx = db.begin_write()?;
        let (revision, leases) = {
            let mut meta = wtx.open_table(META)?;
            match stored(&meta, FORMAT)? {
                Some(FORMAT_VERSION) => {}
                None if stored(&meta, REVISION)?.is_none() => {
                    meta.insert(FORMAT, FORMAT_VERSION)?;
                }
                found => {
                    return Err(StoreError::Backend(format!(
                        "{} has store format {}, this berth reads format {FORMAT_VERSION}",
                        path.display(),
                        found.map_or("1".to_string(), |f| f.to_string()),
                    )))
                }
            }
            // Create every table now so that reads never meet a missing one.
            wtx.open_table(KV)?;
            wtx.open_multimap_table(LEASE_KEYS)?;
            let leases = wtx
                .open_table(LEASES)?
                .iter()?
                .map(|entry| entry.map(|(id, ttl_ms)| (id.value(), ttl_ms.value())))
                .collect::<Result<Vec<_>, _>>()?;
            (stored(&meta, REVISION)?.unwrap_or(0), leases)
        };
        wtx.commit()?;

        // Deadlines were not persisted: every lease starts a full TTL now.
        let now = Instant::now();
        let leases = leases
            .into_iter()
            .map(|(id, ttl_ms)| {
                let ttl = Duration::from_millis(ttl_ms);
                let deadline = deadline_after(now, ttl);
                (id, LiveLease { ttl, deadline })
            })
            .collect();
        let inner = Inner {
            db,
            options,
            writer: Mutex::new(()),
            hub: Mutex::new(Hub {
                revision,
                history: VecDeque::new(),
                watchers: Vec::new(),
            }),
            leases: Mutex::new(leases),
            wake_reaper: Arc::new(Notify::new()),
        };
        Ok(Arc::new(Self {
            inner: Arc::new(inner),
            reaper: OnceLock::new(),
        }))
    }

    fn ensure_reaper(&self) {
        self.reaper.get_or_init(|| {
            tokio::spawn(reap_leases(
                Arc::downgrade(&self.inner),
                self.inner.wake_reaper.clone(),
            ))
        });
    }

    /// Runs `work` on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.ensure_reaper();
        let inner = self.inner.clone();
        blocking(move || work(&inner)).await
    }

    #[cfg(test)]
    fn watcher_count(&self) -> usize {
        lock(&self.inner.hub).watchers.len()
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get() {
            reaper.abort();
        }
    }
}

impl Inner {
    /// Runs one write transaction: commits it when `work` succeeds (then publishes its
    /// changes, if any), aborts it otherwise.
    fn write<T>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<(T, Option<Commit>)>,
    ) -> Result<T> {
        let _writer = lock(&self.writer);
        let wtx = self.db.begin_write()?;
        match work(&wtx) {
            Ok((out, commit)) => {
                wtx.commit()?;
                if let Some(commit) = commit {
                    lock(&self.hub).publish(commit, self.options.watch_history);
                }
                Ok(out)
            }
            Err(e) => {
                // Nothing was written; an error from the abort itself changes nothing.
                let _ = wtx.abort();
                Err(e)
            }
        }
    }

    fn commit(&self, txn: &Txn) -> Result<Revision> {
        self.write(|wtx| {
            let mut meta = wtx.open_table(META)?;
            let revision = stored(&meta, REVISION)?.unwrap_or(0) + 1;
            let mut changes = Changes::open(wtx, revision)?;
            // redb has one writer at a time: conditions checked here still hold at commit.
            for condition in &txn.conditions {
                check(&changes.kv, condition)?;
            }
            self.check_leases(&txn.ops)?;
            for op in &txn.ops {
                match op {
                    Op::Put { key, value, lease } => changes.put(key, value, lease.unwrap_or(0))?,
                    Op::Delete(key) => changes.delete(key)?,
                    Op::DeletePrefix(prefix) => changes.delete_prefix(prefix)?,
                }
            }
            meta.insert(REVISION, revision)?;
            let commit = changes.into_commit();
            Ok((revision, Some(commit)))
        })
    }

    /// A transaction without ops: checks its conditions against the latest revision.
    fn check_only(&self, txn: &Txn) -> Result<Revision> {
        let rtx = self.db.begin_read()?;
        let kv = rtx.open_table(KV)?;
        for condition in &txn.conditions {
            check(&kv, condition)?;
        }
        Ok(stored(&rtx.open_table(META)?, REVISION)?.unwrap_or(0))
    }

    fn check_leases(&self, ops: &[Op]) -> Result<()> {
        let leases = lock(&self.leases);
        let now = Instant::now();
        for op in ops {
            if let Op::Put {
                lease: Some(id), ..
            } = op
            {
                if leases.get(id).is_none_or(|l| l.deadline <= now) {
                    return Err(StoreError::LeaseNotFound(*id));
                }
            }
        }
        Ok(())
    }

    fn grant(&self, ttl_ms: u64) -> Result<LeaseId> {
        self.write(|wtx| {
            let mut meta = wtx.open_table(META)?;
            // Persisted so that ids are never reused, even across reopen.
            let id = stored(&meta, NEXT_LEASE)?.unwrap_or(1);
            meta.insert(NEXT_LEASE, id + 1)?;
            wtx.open_table(LEASES)?.insert(id, ttl_ms)?;
            Ok((id, None))
        })
    }

    /// Forgets the lease on disk and deletes its keys, in one commit.
    fn end_lease(&self, id: LeaseId) -> Result<()> {
        self.write(|wtx| {
            wtx.open_table(LEASES)?.remove(id)?;
            let keys = wtx
                .open_multimap_table(LEASE_KEYS)?
                .remove_all(id)?
                .map(|key| key.map(|key| key.value().to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Ok(((), None));
            }
            let mut meta = wtx.open_table(META)?;
            let revision = stored(&meta, REVISION)?.unwrap_or(0) + 1;
            let mut changes = Changes::open(wtx, revision)?;
            for key in &keys {
                changes.delete(key)?;
            }
            meta.insert(REVISION, revision)?;
            Ok(((), Some(changes.into_commit())))
        })
    }
}

fn stored(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<Option<u64>> {
    Ok(meta.get(name)?.map(|v| v.value()))
}

fn check(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    condition: &Condition,
) -> Result<()> {
    let key = condition.key();
    let current = read_header(kv, key)?.map(|h| h.mod_revision);
    let holds = match condition {
        Condition::ModRevision(_, 0) => current.is_none(),
        Condition::ModRevision(_, revision) => current == Some(*revision),
        Condition::Exists(_) => current.is_some(),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            key: key.to_string(),
        })
    }
}

/// The fixed-size front of a stored record.
#[derive(Debug, Clone, Copy)]
struct Header {
    create_revision: Revision,
    mod_revision: Revision,
    /// 0: none.
    lease: LeaseId,
}

const HEADER_LEN: usize = 24;

impl Header {
    fn encode(self, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + value.len());
        for n in [self.create_revision, self.mod_revision, self.lease] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn decode<'a>(key: &str, raw: &'a [u8]) -> Result<(Self, &'a [u8])> {
        let Some((header, value)) = raw.split_first_chunk::<HEADER_LEN>() else {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                reason: format!("record of {} bytes is shorter than its header", raw.len()),
            });
        };
        let field = |i: usize| {
            let bytes: [u8; 8] = header[i * 8..i * 8 + 8].try_into().expect("8 bytes");
            u64::from_be_bytes(bytes)
        };
        let header = Self {
            create_revision: field(0),
            mod_revision: field(1),
            lease: field(2),
        };
        Ok((header, value))
    }

    fn key_value(self, key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: (self.lease != 0).then_some(self.lease),
        }
    }
}

fn read_header(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Header>> {
    match kv.get(key)? {
        Some(raw) => Ok(Some(Header::decode(key, raw.value())?.0)),
        None => Ok(None),
    }
}

fn read_key(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<KeyValue>> {
    match kv.get(key)? {
        Some(raw) => {
            let (header, value) = Header::decode(key, raw.value())?;
            Ok(Some(header.key_value(key, value)))
        }
        None => Ok(None),
    }
}

fn read_range(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    range: &KeyRange,
    revision: Revision,
) -> Result<RangePage> {
    let start = range.start.as_str().max(range.prefix.as_str());
    let mut page = RangePage {
        revision,
        ..RangePage::default()
    };
    for entry in kv.range(start..)? {
        let (key, raw) = entry?;
        let key = key.value();
        // Keys come in order from at least `start` and `prefix`: the first one out of range
        // ends it.
        if !range.contains(key) {
            break;
        }
        if range.limit.is_some_and(|limit| page.kvs.len() >= limit) {
            page.more = true;
            break;
        }
        let (header, value) = Header::decode(key, raw.value())?;
        page.kvs.push(header.key_value(key, value));
    }
    Ok(page)
}

/// The tables one commit writes, and the events it has produced so far.
struct Changes<'txn> {
    kv: Table<'txn, &'static str, &'static [u8]>,
    lease_keys: MultimapTable<'txn, u64, &'static str>,
    revision: Revision,
    events: Vec<Event>,
}

impl<'txn> Changes<'txn> {
    fn open(wtx: &'txn WriteTransaction, revision: Revision) -> Result<Self> {
        Ok(Self {
            kv: wtx.open_table(KV)?,
            lease_keys: wtx.open_multimap_table(LEASE_KEYS)?,
            revision,
            events: Vec::new(),
        })
    }

    fn put(&mut self, key: &str, value: &[u8], lease: LeaseId) -> Result<()> {
        let old = read_header(&self.kv, key)?;
        // A key re-put without its lease (or with another) no longer ends with it.
        if let Some(old) = old.filter(|old| old.lease != 0 && old.lease != lease) {
            self.lease_keys.remove(old.lease, key)?;
        }
        if lease != 0 {
            self.lease_keys.insert(lease, key)?;
        }
        let header = Header {
            create_revision: old.map_or(self.revision, |old| old.create_revision),
            mod_revision: self.revision,
            lease,
        };
        self.kv.insert(key, header.encode(value).as_slice())?;
        self.events.push(Event::Put(header.key_value(key, value)));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<()> {
        let lease = match self.kv.remove(key)? {
            Some(raw) => Header::decode(key, raw.value())?.0.lease,
            None => return Ok(()),
        };
        if lease != 0 {
            self.lease_keys.remove(lease, key)?;
        }
        self.events.push(Event::Delete {
            key: key.to_string(),
            revision: self.revision,
        });
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &str) -> Result<()> {
        let mut keys = Vec::new();
        for entry in self.kv.range(prefix..)? {
            let key = entry?.0;
            if !key.value().starts_with(prefix) {
                break;
            }
            keys.push(key.value().to_string());
        }
        for key in keys {
            self.delete(&key)?;
        }
        Ok(())
    }

    fn into_commit(self) -> Commit {
        Commit {
            revision: self.revision,
            events: self.events,
        }
    }
}

/// Fans commits out to watchers and keeps the recent ones for watches that start in the past.
struct Hub {
    /// The last published revision.
    revision: Revision,
    /// The last commits, oldest first, contiguous up to `revision`.
    history: VecDeque<Commit>,
    watchers: Vec<Watcher>,
}

struct Watcher {
    prefix: String,
    from: Revision,
    tx: mpsc::Sender<Result<WatchBatch>>,
}

/// The part of `commit` a watch on `prefix` from `from` sees, if any.
fn select(prefix: &str, from: Revision, commit: &Commit) -> Option<WatchBatch> {
    if commit.revision < from {
        return None;
    }
    let events: Vec<Event> = commit
        .events
        .iter()
        .filter(|e| e.key().starts_with(prefix))
        .cloned()
        .collect();
    (!events.is_empty()).then_some(WatchBatch {
        revision: commit.revision,
        events,
    })
}

impl Hub {
    fn oldest_retained(&self) -> Revision {
        self.revision + 1 - self.history.len() as Revision
    }

    fn publish(&mut self, commit: Commit, keep: usize) {
        self.revision = commit.revision;
        self.watchers.retain(|w| w.deliver(&commit));
        if keep > 0 {
            if self.history.len() >= keep {
                self.history.pop_front();
            }
            self.history.push_back(commit);
        }
    }

    /// Registers a watcher, its replay already queued. Runs under the lock `publish` runs
    /// under, so no commit falls between the replay and the live stream.
    fn subscribe(&mut self, prefix: &str, from: Revision, capacity: usize) -> Result<WatchStream> {
        let oldest = self.oldest_retained();
        if from.max(1) < oldest {
            return Err(StoreError::Compacted {
                requested: from,
                oldest,
            });
        }
        let backlog: Vec<WatchBatch> = self
            .history
            .iter()
            .filter_map(|commit| select(prefix, from, commit))
            .collect();
        // Room for the replay, `capacity` live batches, and a final WatchLagged.
        let (tx, rx) = mpsc::channel(capacity.max(1) + 1 + backlog.len());
        for batch in backlog {
            tx.try_send(Ok(batch))
                .expect("the channel is sized for the backlog");
        }
        self.watchers.retain(|w| !w.tx.is_closed());
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            from,
            tx,
        });
        Ok(WatchStream::new(rx))
    }
}

impl Watcher {
    /// Sends the watcher its part of `commit`; false when the watcher is gone or dropped.
    fn deliver(&self, commit: &Commit) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        let Some(batch) = select(&self.prefix, self.from, commit) else {
            return true;
        };
        // The last slot is kept for this error, so a dropped watcher learns why.
        if self.tx.capacity() <= 1 {
            let _ = self.tx.try_send(Err(StoreError::WatchLagged {
                prefix: self.prefix.clone(),
            }));
            return false;
        }
        self.tx.try_send(Ok(batch)).is_ok()
    }
}

/// The reaper: ends each lease when its deadline passes. Holds the store only while working,
/// so dropping the store ends it too.
async fn reap_leases(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = match inner.upgrade() {
            Some(inner) => end_expired_leases(inner).await,
            None => return,
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Ends the leases past their deadline; returns when the next one is due.
async fn end_expired_leases(inner: Arc<Inner>) -> Option<Instant> {
    let now = Instant::now();
    let mut expired = Vec::new();
    lock(&inner.leases).retain(|&id, lease| {
        let live = lease.deadline > now;
        if !live {
            expired.push((id, lease.ttl));
        }
        live
    });
    let mut retry = None;
    for (id, ttl) in expired {
        let worker = inner.clone();
        if let Err(error) = blocking(move || worker.end_lease(id)).await {
            tracing::warn!(lease = id, %error, "could not end an expired lease; will retry");
            // Kept with a past deadline: it counts as ended, and the next round retries.
            let lease = LiveLease { ttl, deadline: now };
            lock(&inner.leases).insert(id, lease);
            retry = Some(Instant::now() + LEASE_RETRY);
        }
    }
    let next = lock(&inner.leases)
        .values()
        .map(|lease| lease.deadline)
        .filter(|&deadline| deadline > now)
        .min();
    next.into_iter().chain(retry).min()
}

#[async_trait::async_trait]
impl ReadView for RedbStore {
    async fn read_revision(&self) -> Result<Revision> {
        self.ensure_reaper();
        Ok(lock(&self.inner.hub).revision)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.run(move |inner| {
            let rtx = inner.db.begin_read()?;
            read_key(&rtx.open_table(KV)?, &key)
        })
        .await
    }

    async fn range(&self, range: KeyRange) -> Result<RangePage> {
        self.run(move |inner| {
            let rtx = inner.db.begin_read()?;
            let revision = stored(&rtx.open_table(META)?, REVISION)?.unwrap_or(0);
            read_range(&rtx.open_table(KV)?, &range, revision)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn snapshot(&self) -> Result<Box<dyn ReadView>> {
        self.run(|inner| {
            let rtx = inner.db.begin_read()?;
            let revision = stored(&rtx.open_table(META)?, REVISION)?.unwrap_or(0);
            // The table keeps the read transaction (a consistent snapshot) alive.
            let kv = Arc::new(rtx.open_table(KV)?);
            Ok(Box::new(RedbSnapshot { kv, revision }) as Box<dyn ReadView>)
        })
        .await
    }

    async fn commit(&self, txn: Txn) -> Result<Revision> {
        if txn.ops.is_empty() {
            self.run(move |inner| inner.check_only(&txn)).await
        } else {
            self.run(move |inner| inner.commit(&txn)).await
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.ensure_reaper();
        let capacity = self.inner.options.watch_channel_capacity;
        lock(&self.inner.hub).subscribe(prefix, from, capacity)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // Persisted in whole milliseconds; the in-memory TTL is the persisted one.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let ttl = Duration::from_millis(ttl_ms);
        let id = self.run(move |inner| inner.grant(ttl_ms)).await?;
        let deadline = deadline_after(Instant::now(), ttl);
        lock(&self.inner.leases).insert(id, LiveLease { ttl, deadline });
        // The reaper may be sleeping until a later deadline.
        self.inner.wake_reaper.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.ensure_reaper();
        let now = Instant::now();
        match lock(&self.inner.leases).get_mut(&lease) {
            Some(live) if live.deadline > now => {
                live.deadline = deadline_after(now, live.ttl);
                Ok(live.ttl)
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let live = lock(&self.inner.leases)
            .remove(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        let expired = live.deadline <= Instant::now();
        if let Err(e) = self.run(move |inner| inner.end_lease(lease)).await {
            lock(&self.inner.leases).insert(lease, live);
            return Err(e);
        }
        // An expired lease the reaper had not ended yet is ended all the same, but it was
        // already gone for keep-alives and puts.
        if expired {
            return Err(StoreError::LeaseNotFound(lease));
        }
        Ok(())
    }
}

/// A [`ReadView`] pinned at one revision by an open redb read transaction.
struct RedbSnapshot {
    kv: Arc<ReadOnlyTable<&'static str, &'static [u8]>>,
    revision: Revision,
}

#[async_trait::async_trait]
impl ReadView for RedbSnapshot {
    async fn read_revision(&self) -> Result<Revision> {
        Ok(self.revision)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (kv, key) = (self.kv.clone(), key.to_string());
        blocking(move || read_key(&*kv, &key)).await
    }

    async fn range(&self, range: KeyRange) -> Result<RangePage> {
        let (kv, revision) = (self.kv.clone(), self.revision);
        blocking(move || read_range(&*kv, &range, revision)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, PATIENCE};
    use tempfile::TempDir;
    use tokio::time::timeout;

    const FILE: &str = "state.redb";

    fn open_in(dir: &TempDir, options: RedbOptions) -> Arc<RedbStore> {
        RedbStore::open(&dir.path().join(FILE), options).expect("open")
    }

    /// Reopens the store in `dir` once the last one has let go of the file; a lease the last one
    /// was ending when it was dropped holds the file for a moment.
    async fn reopen(dir: &TempDir) -> Arc<RedbStore> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match RedbStore::open(&dir.path().join(FILE), RedbOptions::default()) {
                Ok(store) => return store,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    async fn fresh_store() -> (Arc<dyn Store>, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, RedbOptions::default());
        (store, dir)
    }

    mod conformance_suite {
        use std::time::Duration;

        crate::conformance_tests!(super::fresh_store, min_ttl = Duration::from_millis(300));
    }

    async fn next(stream: &mut WatchStream) -> Option<Result<WatchBatch>> {
        timeout(PATIENCE, stream.next())
            .await
            .expect("watch stalled")
    }

    fn put(key: &str, value: &str) -> Txn {
        Txn::new().put_raw(key, value.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn values_and_revisions_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, RedbOptions::default());
        let r1 = store.commit(put("x", "1")).await.unwrap();
        let r2 = store
            .commit(put("x", "2").merge(put("y", "1")))
            .await
            .unwrap();
        let r3 = store.commit(Txn::new().delete("y")).await.unwrap();
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        drop(store);

        let store = open_in(&dir, RedbOptions::default());
        assert_eq!(store.read_revision().await.unwrap(), r3);
        let x = store.get("x").await.unwrap().unwrap();
        assert_eq!(
            (x.value.as_slice(), x.create_revision, x.mod_revision),
            (&b"2"[..], r1, r2)
        );
        assert_eq!(store.get("y").await.unwrap(), None);
        assert_eq!(store.commit(put("z", "1")).await.unwrap(), r3 + 1);
        let next_lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        assert!(next_lease > lease, "lease ids are not reused");
    }

    #[tokio::test]
    async fn watch_history_starts_empty_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, RedbOptions::default());
        let first = store.commit(put("w/1", "x")).await.unwrap();
        let last = store.commit(put("w/2", "x")).await.unwrap();
        drop(store);

        let store = open_in(&dir, RedbOptions::default());
        for from in [0, first, last] {
            match store.watch("w/", from).await {
                Err(StoreError::Compacted { requested, oldest }) => {
                    assert_eq!((requested, oldest), (from, last + 1));
                }
                other => panic!("expected Compacted, got {:?}", other.err()),
            }
        }
        let mut stream = store.watch("w/", last + 1).await.unwrap();
        let revision = store.commit(put("w/3", "x")).await.unwrap();
        assert_eq!(next(&mut stream).await.unwrap().unwrap().revision, revision);
    }

    #[tokio::test]
    async fn leases_survive_reopen_with_a_fresh_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(1);
        let store = open_in(&dir, RedbOptions::default());
        let lease = store.grant_lease(ttl).await.unwrap();
        store
            .commit(
                Txn::new()
                    .put_with_lease("l/leased", &1, lease)
                    .put_json("l/plain", &2),
            )
            .await
            .unwrap();
        drop(store);

        let store = open_in(&dir, RedbOptions::default());
        let reopened = Instant::now();
        assert_eq!(
            store.get("l/leased").await.unwrap().unwrap().lease,
            Some(lease)
        );
        assert_eq!(store.keep_alive(lease).await.unwrap(), ttl);
        let from = store.read_revision().await.unwrap() + 1;
        let mut stream = store.watch("l/", from).await.unwrap();
        let batch = timeout(ttl + PATIENCE, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(reopened.elapsed() >= ttl, "a full TTL after the reopen");
        assert_eq!(
            batch.events,
            [Event::Delete {
                key: "l/leased".into(),
                revision: batch.revision
            }]
        );
        assert!(store.get("l/plain").await.unwrap().is_some());
        assert_eq!(
            store.keep_alive(lease).await,
            Err(StoreError::LeaseNotFound(lease))
        );

        // An ended lease stays ended after another reopen.
        drop(store);
        let store = reopen(&dir).await;
        assert_eq!(
            store.keep_alive(lease).await,
            Err(StoreError::LeaseNotFound(lease))
        );
    }

    #[tokio::test]
    async fn compacted_with_a_small_history() {
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions {
            watch_history: 5,
            ..RedbOptions::default()
        };
        conformance::watch_from_compacted_revision(&*open_in(&dir, options), 5).await;
    }

    #[tokio::test]
    async fn without_history_a_watch_can_only_start_now() {
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions {
            watch_history: 0,
            ..RedbOptions::default()
        };
        let store = open_in(&dir, options);
        let revision = store.commit(put("a", "1")).await.unwrap();
        assert!(matches!(
            store.watch("", revision).await.err(),
            Some(StoreError::Compacted { .. })
        ));
        let mut stream = store.watch("", revision + 1).await.unwrap();
        let next_revision = store.commit(put("a", "2")).await.unwrap();
        assert_eq!(
            next(&mut stream).await.unwrap().unwrap().revision,
            next_revision
        );
    }

    #[tokio::test]
    async fn a_full_watcher_is_dropped_and_commits_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions {
            watch_channel_capacity: 4,
            ..RedbOptions::default()
        };
        let store = open_in(&dir, options);
        let mut slow = store.watch("k/", 1).await.unwrap();
        let mut fast = store.watch("k/", 1).await.unwrap();
        for i in 0..20 {
            let revision = store.commit(put(&format!("k/{i}"), "x")).await.unwrap();
            // The fast watcher keeps up, so it stays.
            assert_eq!(next(&mut fast).await.unwrap().unwrap().revision, revision);
        }
        assert_eq!(store.watcher_count(), 1, "the slow watcher was dropped");
        for revision in 1..=4 {
            assert_eq!(next(&mut slow).await.unwrap().unwrap().revision, revision);
        }
        assert_eq!(
            next(&mut slow).await.unwrap(),
            Err(StoreError::WatchLagged {
                prefix: "k/".into()
            })
        );
        assert!(next(&mut slow).await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_watch_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, RedbOptions::default());
        let quiet = store.watch("never/", 1).await.unwrap();
        let busy = store.watch("", 1).await.unwrap();
        assert_eq!(store.watcher_count(), 2);
        drop((quiet, busy));
        store.commit(put("a", "1")).await.unwrap();
        assert_eq!(store.watcher_count(), 0);
    }

    #[tokio::test]
    async fn dropping_the_store_closes_the_file_and_ends_watches() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, RedbOptions::default());
        // Starts the lease reaper.
        store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let mut stream = store.watch("", 1).await.unwrap();
        drop(store);
        assert!(next(&mut stream).await.is_none());
        // Nothing (reaper included) still holds the database open.
        drop(open_in(&dir, RedbOptions::default()));
    }

    #[test]
    fn needs_no_runtime_to_open_or_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(open_in(&dir, RedbOptions::default()));

        // Used in a runtime that is gone before the store is.
        let store = open_in(&dir, RedbOptions::default());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            store.grant_lease(Duration::from_secs(60)).await.unwrap();
        });
        drop(runtime);
        drop(store);
    }

    #[test]
    fn refuses_a_file_of_the_old_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        {
            let db = Database::create(&path).unwrap();
            let wtx = db.begin_write().unwrap();
            wtx.open_table(META).unwrap().insert(REVISION, 7).unwrap();
            wtx.commit().unwrap();
        }
        match RedbStore::open(&path, RedbOptions::default()) {
            Err(StoreError::Backend(reason)) => assert!(reason.contains("format"), "{reason}"),
            other => panic!("expected a format error, got {:?}", other.err()),
        }
    }

    #[test]
    fn corrupt_record_is_reported() {
        let err = Header::decode("k", b"short").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { key, .. } if key == "k"));
    }
}
