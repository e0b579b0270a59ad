//! The driver: feeds a [`Reconciler`] from the store's change stream and a work queue.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Store, StoreError, WatchBatch, WatchStream};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::queue::WorkQueue;
use crate::reconciler::backoff;
use crate::{Action, ObjectKey, ReconcileError, Reconciler};

/// How a [`Controller`] runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// At most this many objects are reconciled at once (each key at most once).
    pub concurrency: usize,
    /// Every object is listed and reconciled again this often, whether or not an event
    /// came: the level-triggered safety net for anything the change stream missed.
    pub resync: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            resync: Duration::from_secs(300),
        }
    }
}

/// Counters a running controller keeps; cheap to clone and read from anywhere.
#[derive(Debug, Clone, Default)]
pub struct ControllerStats(Arc<StatsInner>);

#[derive(Debug, Default)]
struct StatsInner {
    reconciles: AtomicU64,
    errors: AtomicU64,
    conflicts: AtomicU64,
    lists: AtomicU64,
    last_duration_us: AtomicU64,
}

/// A point-in-time copy of [`ControllerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Reconciles finished, successful or not.
    pub reconciles: u64,
    /// Reconciles that failed (conflicts included).
    pub errors: u64,
    /// Failures that were optimistic-concurrency conflicts.
    pub conflicts: u64,
    /// Full `list()`s: the initial fill, re-lists after a broken watch, resyncs.
    pub lists: u64,
    /// How long the most recent reconcile took.
    pub last_duration: Duration,
}

impl ControllerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.0;
        StatsSnapshot {
            reconciles: s.reconciles.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            lists: s.lists.load(Ordering::Relaxed),
            last_duration: Duration::from_micros(s.last_duration_us.load(Ordering::Relaxed)),
        }
    }

    fn record(&self, elapsed: Duration, error: Option<&ReconcileError>) {
        let s = &self.0;
        s.reconciles.fetch_add(1, Ordering::Relaxed);
        s.last_duration_us.store(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(e) = error {
            s.errors.fetch_add(1, Ordering::Relaxed);
            if e.is_conflict() {
                s.conflicts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs one [`Reconciler`]: fills the queue from `list()`, keeps it fed from watches of
/// `watches()`, and reconciles queued keys with bounded concurrency. Cheap to clone, so a
/// manager can start it again each time it becomes leader.
#[derive(Clone)]
pub struct Controller {
    reconciler: Arc<dyn Reconciler>,
    store: Arc<dyn Store>,
    config: ControllerConfig,
    stats: ControllerStats,
}

/// Keys to enqueue now, from the source task to the driver.
type Keys = Vec<ObjectKey>;

impl Controller {
    pub fn new(
        reconciler: impl Reconciler,
        store: Arc<dyn Store>,
        config: ControllerConfig,
    ) -> Self {
        Self::from_arc(Arc::new(reconciler), store, config)
    }

    /// For a reconciler the caller also keeps a handle on.
    pub fn from_arc(
        reconciler: Arc<dyn Reconciler>,
        store: Arc<dyn Store>,
        config: ControllerConfig,
    ) -> Self {
        assert!(config.concurrency > 0, "concurrency must be at least 1");
        Self {
            reconciler,
            store,
            config,
            stats: ControllerStats::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.reconciler.name()
    }

    pub fn stats(&self) -> ControllerStats {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled. Reconciles still in flight then are aborted at
    /// their next await point (reconcilers are idempotent, so that is harmless).
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.reconciler.name();
        tracing::info!(controller = name, "controller starting");
        let (tx, mut rx) = mpsc::channel::<Keys>(64);
        let source = tokio::spawn(
            source_loop(
                self.reconciler.clone(),
                self.store.clone(),
                self.config.resync,
                self.stats.clone(),
                tx,
            )
            .instrument(tracing::info_span!("controller_source", controller = name)),
        );
        let _source_guard = AbortOnDrop(source);
        let mut queue = WorkQueue::default();
        let mut running: JoinSet<Outcome> = JoinSet::new();
        // Which key each task reconciles, to requeue it should the task panic.
        let mut tasks: HashMap<tokio::task::Id, ObjectKey> = HashMap::new();
        loop {
            while running.len() < self.config.concurrency {
                let Some(key) = queue.pop(Instant::now()) else {
                    break;
                };
                let attempt = queue.failures(&key) + 1;
                let handle = running.spawn(self.clone().reconcile_one(key.clone(), attempt));
                tasks.insert(handle.id(), key);
            }
            let deadline = match running.len() < self.config.concurrency {
                true => queue.next_deadline(),
                false => None,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    let outcome = match joined {
                        Ok((id, outcome)) => {
                            tasks.remove(&id);
                            outcome
                        }
                        // Only a panic gets here: we never abort a single task.
                        Err(e) => self.panicked(tasks.remove(&e.id()).expect("a task per key"), &queue, e),
                    };
                    queue.finish(&outcome.key, outcome.succeeded);
                    if let Some(after) = outcome.action.requeue_after() {
                        queue.schedule(outcome.key, Instant::now() + after);
                    }
                }
                keys = rx.recv() => {
                    let Some(keys) = keys else {
                        tracing::error!(controller = name, "controller source ended");
                        break;
                    };
                    let now = Instant::now();
                    for key in keys {
                        queue.schedule(key, now);
                    }
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {}
            }
        }
        running.shutdown().await;
        tracing::info!(controller = name, "controller stopped");
    }

    /// Reconciles `key`; should it fail, this is its `attempt`th failure in a row.
    async fn reconcile_one(self, key: ObjectKey, attempt: u32) -> Outcome {
        let span =
            tracing::info_span!("reconcile", controller = self.reconciler.name(), key = %key);
        async move {
            let started = Instant::now();
            let result = self.reconciler.reconcile(&key).await;
            let elapsed = started.elapsed();
            self.stats.record(elapsed, result.as_ref().err());
            let (succeeded, action) = match result {
                Ok(action) => {
                    tracing::debug!(?elapsed, ?action, "reconciled");
                    (true, action)
                }
                Err(error) => {
                    let action = self.reconciler.error_policy(&key, &error, attempt);
                    let retry_in = action.requeue_after();
                    if error.is_conflict() {
                        tracing::debug!(?elapsed, attempt, ?retry_in, %error, "conflict");
                    } else {
                        tracing::warn!(?elapsed, attempt, ?retry_in, %error, "reconcile failed");
                    }
                    (false, action)
                }
            };
            Outcome {
                key,
                succeeded,
                action,
            }
        }
        .instrument(span)
        .await
    }

    /// A panicking reconcile is a failed one: logged, counted and retried with backoff.
    fn panicked(&self, key: ObjectKey, queue: &WorkQueue, e: tokio::task::JoinError) -> Outcome {
        let error = ReconcileError::msg(format!("reconcile panicked: {e}"));
        tracing::error!(controller = self.reconciler.name(), %key, %error);
        self.stats.record(Duration::ZERO, Some(&error));
        let action = self
            .reconciler
            .error_policy(&key, &error, queue.failures(&key) + 1);
        Outcome {
            key,
            succeeded: false,
            action,
        }
    }
}

/// How one reconcile ended.
struct Outcome {
    key: ObjectKey,
    succeeded: bool,
    /// What the reconciler (or its error policy) asked for next.
    action: Action,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A spawned task that does not outlive its owner.
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lists, then watches from the revision read before the list, forever: a watch that
/// breaks (compacted, lagged, ended) is followed by a fresh list and watch, so no change
/// is lost. Also lists every `resync`.
async fn source_loop(
    reconciler: Arc<dyn Reconciler>,
    store: Arc<dyn Store>,
    resync: Duration,
    stats: ControllerStats,
    tx: mpsc::Sender<Keys>,
) {
    let mut failures = 0u32;
    loop {
        if failures > 0 {
            let delay = backoff(
                Duration::from_millis(100),
                Duration::from_secs(10),
                failures,
            );
            tokio::time::sleep(delay).await;
        }
        match list_and_watch(&*reconciler, &*store, resync, &stats, &tx).await {
            Generation::Closed => return,
            Generation::Progressed(why) => {
                tracing::debug!("watch ended ({why}); re-listing");
                failures = 0;
            }
            Generation::Failed(why) => {
                failures += 1;
                tracing::warn!(failures, "list/watch failed ({why}); re-listing");
            }
        }
    }
}

enum Generation {
    /// The driver is gone.
    Closed,
    /// The watch delivered something, then ended: re-list at once.
    Progressed(String),
    /// Nothing got through: re-list after a backoff.
    Failed(String),
}

enum WatchItem {
    Batch(WatchBatch),
    Ended(String, Option<StoreError>),
}

async fn list_and_watch(
    reconciler: &dyn Reconciler,
    store: &dyn Store,
    resync: Duration,
    stats: &ControllerStats,
    tx: &mpsc::Sender<Keys>,
) -> Generation {
    let revision = match store.snapshot().await {
        Ok(snapshot) => match snapshot.read_revision().await {
            Ok(revision) => revision,
            Err(e) => return Generation::Failed(format!("read revision: {e}")),
        },
        Err(e) => return Generation::Failed(format!("snapshot: {e}")),
    };
    // Watches open before the list, from the revision read before it: whatever changes
    // while we list is delivered by the watch, whatever the list saw is reconciled.
    let mut watches = Vec::new();
    for prefix in reconciler.watches() {
        match store.watch(&prefix, revision + 1).await {
            Ok(stream) => watches.push(watch_items(prefix, stream)),
            Err(e) => return Generation::Failed(format!("watch {prefix}: {e}")),
        }
    }
    match reconciler.list().await {
        Ok(keys) => {
            stats.0.lists.fetch_add(1, Ordering::Relaxed);
            if tx.send(keys).await.is_err() {
                return Generation::Closed;
            }
        }
        Err(e) => return Generation::Failed(format!("list: {e}")),
    }
    // A reconciler may watch nothing and live on resyncs and requeues alone.
    let watching = !watches.is_empty();
    let mut events = stream::select_all(watches);
    let mut resync_timer = tokio::time::interval_at(Instant::now() + resync, resync);
    resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progressed = false;
    loop {
        let keys = tokio::select! {
            item = events.next(), if watching => match item {
                Some(WatchItem::Batch(batch)) => {
                    progressed = true;
                    batch.events.iter().flat_map(|e| reconciler.map_event(e)).collect()
                }
                Some(WatchItem::Ended(prefix, error)) => {
                    let why = match error {
                        Some(e) => format!("watch {prefix}: {e}"),
                        None => format!("watch {prefix} closed"),
                    };
                    return match progressed {
                        true => Generation::Progressed(why),
                        false => Generation::Failed(why),
                    };
                }
                None => return Generation::Failed("nothing to watch".into()),
            },
            _ = resync_timer.tick() => match reconciler.list().await {
                Ok(keys) => {
                    stats.0.lists.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(objects = keys.len(), "resync");
                    keys
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resync list failed");
                    continue;
                }
            },
        };
        if !keys.is_empty() && tx.send(keys).await.is_err() {
            return Generation::Closed;
        }
    }
}

/// A watch as a stream that ends with one `Ended` item, so a single broken watch is
/// noticed even when merged with others.
fn watch_items(
    prefix: String,
    stream: WatchStream,
) -> Pin<Box<dyn Stream<Item = WatchItem> + Send>> {
    Box::pin(stream::unfold(Some((prefix, stream)), |state| async move {
        let (prefix, mut stream) = state?;
        match stream.next().await {
            Some(Ok(batch)) => Some((WatchItem::Batch(batch), Some((prefix, stream)))),
            Some(Err(e)) => Some((WatchItem::Ended(prefix, Some(e)), None)),
            None => Some((WatchItem::Ended(prefix, None), None)),
        }
    }))
}
