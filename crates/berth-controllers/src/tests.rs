//! Tests of the controller driver, leader election and manager against the real embedded
//! store. The test reconciler is a "counter mirror": for every `src/<name>` holding a
//! number it keeps `dst/<name>` = 2 × that number, and deletes `dst/<name>` without a source.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_store::{
    Event, KeyValue, LeaseId, RangePage, ReadExt, ReadView, RedbOptions, RedbStore, Revision,
    Store, StoreError, Txn, WatchStream,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::*;

// ---------------------------------------------------------------------------------------
// Harness

const WAIT: Duration = Duration::from_secs(10);

fn open_store(options: RedbOptions) -> (Arc<RedbStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb"), options).unwrap();
    (store, dir)
}

/// Polls `check` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for a leadership receiver to reach `want`.
async fn wait_leader(rx: &mut watch::Receiver<bool>, want: bool, within: Duration) {
    tokio::time::timeout(within, rx.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for leader == {want}"))
        .expect("election still running");
}

async fn put_num(store: &dyn Store, key: &str, n: i64) {
    store.commit(Txn::new().put_json(key, &n)).await.unwrap();
}

async fn get_num(store: &dyn Store, key: &str) -> Option<i64> {
    store.get_json::<i64>(key).await.unwrap().map(|(n, _)| n)
}

/// Whether every `dst/` is twice its `src/` and nothing else exists under `dst/`.
async fn mirrored(store: &dyn Store) -> bool {
    let src = store.scan_json::<i64>("src/").await.unwrap();
    let dst = store.scan_json::<i64>("dst/").await.unwrap();
    let want: HashMap<String, i64> = src
        .into_iter()
        .map(|(k, n, _)| (k.replacen("src/", "dst/", 1), n * 2))
        .collect();
    let have: HashMap<String, i64> = dst.into_iter().map(|(k, n, _)| (k, n)).collect();
    want == have
}

/// Runs a controller until the returned token is cancelled.
fn start(controller: Controller) -> (CancellationToken, JoinHandle<()>) {
    let token = CancellationToken::new();
    let handle = tokio::spawn(controller.run(token.clone()));
    (token, handle)
}

async fn stop(token: CancellationToken, handle: JoinHandle<()>) {
    token.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("controller stops promptly")
        .unwrap();
}

/// What the mirror saw, shared with the test.
#[derive(Default)]
struct Probe {
    /// Every reconcile start, in order.
    starts: Mutex<Vec<(String, Instant)>>,
    running: Mutex<HashSet<String>>,
    /// Times a key started while already running (must stay 0).
    overlaps: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Failures to inject, per key, before doing the work.
    fail: Mutex<HashMap<String, VecDeque<Fail>>>,
    /// (key, attempt) of every error_policy call.
    attempts: Mutex<Vec<(String, u32)>>,
}

impl Probe {
    fn count(&self, name: &str) -> usize {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == name)
            .count()
    }
    fn total(&self) -> usize {
        self.starts.lock().unwrap().len()
    }
    fn fail_next(&self, name: &str, failures: &[Fail]) {
        self.fail
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .extend(failures);
    }
}

#[derive(Debug, Clone, Copy)]
enum Fail {
    Conflict,
    Error,
    Panic,
}

/// Leaves the probe consistent even if the reconcile is cancelled midway.
struct Running<'a>(&'a Probe, String);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.lock().unwrap().remove(&self.1);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Mirror {
    store: Arc<dyn Store>,
    probe: Arc<Probe>,
    /// How long each reconcile takes (to make overlaps possible).
    delay: Duration,
    requeue: Option<Duration>,
    /// Record attempts and retry after 10 ms instead of the default backoff.
    fast_retry: bool,
    /// Blocks the watch consumer this long per event (to make the watch lag).
    slow_map: Duration,
}

impl Mirror {
    fn new(store: Arc<dyn Store>) -> (Self, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let mirror = Self {
            store,
            probe: probe.clone(),
            delay: Duration::ZERO,
            requeue: None,
            fast_retry: false,
            slow_map: Duration::ZERO,
        };
        (mirror, probe)
    }
}

fn name_of(key: &str) -> Option<ObjectKey> {
    key.strip_prefix("src/")
        .or_else(|| key.strip_prefix("dst/"))
        .map(ObjectKey::from)
}

#[async_trait::async_trait]
impl Reconciler for Mirror {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn watches(&self) -> Vec<String> {
        vec!["src/".into()]
    }

    fn map_event(&self, event: &Event) -> Vec<ObjectKey> {
        if !self.slow_map.is_zero() {
            std::thread::sleep(self.slow_map);
        }
        name_of(event.key()).into_iter().collect()
    }

    async fn list(&self) -> Result<Vec<ObjectKey>, ReconcileError> {
        let mut keys = HashSet::new();
        for prefix in ["src/", "dst/"] {
            for kv in self
                .store
                .range(berth_store::KeyRange::prefix(prefix))
                .await?
                .kvs
            {
                keys.extend(name_of(&kv.key));
            }
        }
        Ok(keys.into_iter().collect())
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let name = key.as_str().to_string();
        let probe = &*self.probe;
        probe
            .starts
            .lock()
            .unwrap()
            .push((name.clone(), Instant::now()));
        if !probe.running.lock().unwrap().insert(name.clone()) {
            probe.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _running = Running(probe, name.clone());

        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let injected = probe
            .fail
            .lock()
            .unwrap()
            .get_mut(&name)
            .and_then(|q| q.pop_front());
        match injected {
            Some(Fail::Conflict) => return Err(StoreError::Conflict { key: name }.into()),
            Some(Fail::Error) => return Err(ReconcileError::msg("injected failure")),
            Some(Fail::Panic) => panic!("injected panic"),
            None => {}
        }

        let (src, dst) = (format!("src/{name}"), format!("dst/{name}"));
        let snapshot = self.store.snapshot().await?;
        let want = snapshot.get_json::<i64>(&src).await?.map(|(n, _)| n * 2);
        let have = snapshot.get_json::<i64>(&dst).await?;
        let txn = match (want, have) {
            (Some(w), Some((h, _))) if w == h => None,
            (Some(w), have) => Some(
                Txn::new()
                    .require_unchanged(&dst, have.map(|(_, r)| r))
                    .put_json(&dst, &w),
            ),
            (None, Some((_, r))) => Some(Txn::new().require_revision(&dst, r).delete(&dst)),
            (None, None) => None,
        };
        if let Some(txn) = txn {
            self.store.commit(txn).await?;
        }
        Ok(match self.requeue {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }

    fn error_policy(&self, key: &ObjectKey, error: &ReconcileError, attempt: u32) -> Action {
        if !self.fast_retry {
            return Action::requeue(default_backoff(error, attempt));
        }
        self.probe
            .attempts
            .lock()
            .unwrap()
            .push((key.to_string(), attempt));
        Action::requeue(Duration::from_millis(10))
    }
}

/// A store wrapper with fault knobs: swallow watch events, break live watches with
/// `Compacted`, or cut the store off entirely (every call fails).
struct Faulty {
    inner: Arc<dyn Store>,
    knobs: Arc<Knobs>,
}

#[derive(Default)]
struct Knobs {
    swallow_events: AtomicBool,
    partitioned: AtomicBool,
    breaks: watch::Sender<u64>,
}

impl Faulty {
    fn wrap(inner: Arc<dyn Store>) -> (Arc<dyn Store>, Arc<Knobs>) {
        let knobs = Arc::new(Knobs::default());
        let store = Arc::new(Self {
            inner,
            knobs: knobs.clone(),
        });
        (store, knobs)
    }
    fn check(&self) -> Result<(), StoreError> {
        match self.knobs.partitioned.load(Ordering::SeqCst) {
            true => Err(StoreError::Backend("partitioned".into())),
            false => Ok(()),
        }
    }
}

impl Knobs {
    /// Ends every live watch with `Compacted`.
    fn break_watches(&self) {
        self.breaks.send_modify(|n| *n += 1);
    }
}

#[async_trait::async_trait]
impl ReadView for Faulty {
    async fn read_revision(&self) -> berth_store::Result<Revision> {
        self.check()?;
        self.inner.read_revision().await
    }
    async fn get(&self, key: &str) -> berth_store::Result<Option<KeyValue>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn range(&self, range: berth_store::KeyRange) -> berth_store::Result<RangePage> {
        self.check()?;
        self.inner.range(range).await
    }
}

#[async_trait::async_trait]
impl Store for Faulty {
    async fn snapshot(&self) -> berth_store::Result<Box<dyn ReadView>> {
        self.check()?;
        self.inner.snapshot().await
    }
    async fn commit(&self, txn: Txn) -> berth_store::Result<Revision> {
        self.check()?;
        self.inner.commit(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> berth_store::Result<WatchStream> {
        self.check()?;
        let mut inner = self.inner.watch(prefix, from).await?;
        let (tx, rx) = mpsc::channel(16);
        let knobs = self.knobs.clone();
        let mut breaks = knobs.breaks.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = breaks.changed() => {
                        let _ = tx.send(Err(StoreError::Compacted { requested: from, oldest: from + 1 })).await;
                        return;
                    }
                    item = inner.next() => match item {
                        Some(Ok(_)) if knobs.swallow_events.load(Ordering::SeqCst) => {}
                        Some(item) => if tx.send(item).await.is_err() { return },
                        None => return,
                    }
                }
            }
        });
        Ok(WatchStream::new(rx))
    }
    async fn grant_lease(&self, ttl: Duration) -> berth_store::Result<LeaseId> {
        self.check()?;
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> berth_store::Result<Duration> {
        self.check()?;
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> berth_store::Result<()> {
        self.check()?;
        self.inner.revoke_lease(lease).await
    }
}

fn config() -> ControllerConfig {
    ControllerConfig {
        concurrency: 4,
        resync: Duration::from_secs(3600),
    }
}

// ---------------------------------------------------------------------------------------
// Controller

#[tokio::test]
async fn initial_fill_reconciles_every_existing_object() {
    let (store, _dir) = open_store(RedbOptions::default());
    for i in 0..20 {
        put_num(&*store, &format!("src/o{i}"), i).await;
    }
    // An orphan: its source is gone, so the fill must delete it.
    put_num(&*store, "dst/orphan", 5).await;
    let (mirror, probe) = Mirror::new(store.clone());
    let controller = Controller::new(mirror, store.clone(), config());
    let stats = controller.stats();
    let (token, handle) = start(controller);

    eventually("all mirrored", WAIT, || mirrored(&*store)).await;
    for i in 0..20 {
        assert_eq!(get_num(&*store, &format!("dst/o{i}")).await, Some(i * 2));
        assert!(probe.count(&format!("o{i}")) >= 1);
    }
    assert_eq!(get_num(&*store, "dst/orphan").await, None);
    eventually("stats count every reconcile", WAIT, || async {
        stats.snapshot().reconciles == probe.total() as u64
    })
    .await;
    let s = stats.snapshot();
    assert_eq!(s.lists, 1);
    assert_eq!(s.errors, 0);
    assert!(s.reconciles >= 21);
    stop(token, handle).await;
}

#[tokio::test]
async fn events_reconcile_changed_objects() {
    let (store, _dir) = open_store(RedbOptions::default());
    put_num(&*store, "src/a", 1).await;
    put_num(&*store, "src/b", 2).await;
    let (mirror, probe) = Mirror::new(store.clone());
    let (token, handle) = start(Controller::new(mirror, store.clone(), config()));
    eventually("initial fill", WAIT, || mirrored(&*store)).await;
    let before = probe.count("b");

    put_num(&*store, "src/a", 10).await;
    put_num(&*store, "src/c", 3).await;
    store.commit(Txn::new().delete("src/b")).await.unwrap();
    eventually("changes mirrored", WAIT, || async {
        get_num(&*store, "dst/a").await == Some(20)
            && get_num(&*store, "dst/c").await == Some(6)
            && get_num(&*store, "dst/b").await.is_none()
    })
    .await;
    assert!(probe.count("b") > before, "the delete was reconciled");
    assert!(mirrored(&*store).await);
    stop(token, handle).await;
}

#[tokio::test]
async fn a_key_is_never_reconciled_concurrently_and_bursts_collapse() {
    let (store, _dir) = open_store(RedbOptions::default());
    let (mut mirror, probe) = Mirror::new(store.clone());
    mirror.delay = Duration::from_millis(30);
    let (token, handle) = start(Controller::new(
        mirror,
        store.clone(),
        ControllerConfig {
            concurrency: 8,
            ..config()
        },
    ));
    // 100 rapid writes to one key, interleaved with a few other keys.
    for i in 1..=100 {
        put_num(&*store, "src/hot", i).await;
        if i % 20 == 0 {
            put_num(&*store, &format!("src/cold{i}"), i).await;
        }
    }
    eventually("burst mirrored", WAIT, || async {
        get_num(&*store, "dst/hot").await == Some(200) && mirrored(&*store).await
    })
    .await;
    assert_eq!(
        probe.overlaps.load(Ordering::SeqCst),
        0,
        "a key ran twice at once"
    );
    let hot = probe.count("hot");
    assert!(
        (1..50).contains(&hot),
        "100 events collapsed into {hot} reconciles"
    );
    stop(token, handle).await;
}

#[tokio::test]
async fn concurrency_across_keys_is_bounded() {
    let (store, _dir) = open_store(RedbOptions::default());
    for i in 0..12 {
        put_num(&*store, &format!("src/k{i}"), i).await;
    }
    let (mut mirror, probe) = Mirror::new(store.clone());
    mirror.delay = Duration::from_millis(20);
    let (token, handle) = start(Controller::new(
        mirror,
        store.clone(),
        ControllerConfig {
            concurrency: 3,
            ..config()
        },
    ));
    eventually("all mirrored", WAIT, || mirrored(&*store)).await;
    let max = probe.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} reconciles ran at once");
    assert!(max >= 2, "keys did run in parallel (max {max})");
    stop(token, handle).await;
}

#[tokio::test]
async fn requeue_runs_again_after_the_delay() {
    let (store, _dir) = open_store(RedbOptions::default());
    put_num(&*store, "src/t", 1).await;
    let (mut mirror, probe) = Mirror::new(store.clone());
    let delay = Duration::from_millis(150);
    mirror.requeue = Some(delay);
    let (token, handle) = start(Controller::new(mirror, store.clone(), config()));
    eventually("three runs", WAIT, || async { probe.count("t") >= 3 }).await;
    stop(token, handle).await;
    let starts: Vec<Instant> = probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t)
        .collect();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= delay, "requeued after {gap:?}, asked for {delay:?}");
    }
}

#[tokio::test]
async fn an_event_overrides_a_later_requeue() {
    let (store, _dir) = open_store(RedbOptions::default());
    put_num(&*store, "src/t", 1).await;
    let (mut mirror, probe) = Mirror::new(store.clone());
    mirror.requeue = Some(Duration::from_secs(3600));
    let (token, handle) = start(Controller::new(mirror, store.clone(), config()));
    eventually("first run", WAIT, || async { probe.count("t") == 1 }).await;
    put_num(&*store, "src/t", 2).await;
    eventually("event ran it again", WAIT, || async {
        get_num(&*store, "dst/t").await == Some(4)
    })
    .await;
    stop(token, handle).await;
}

#[tokio::test]
async fn errors_and_panics_are_retried_until_success_and_attempts_reset() {
    let (store, _dir) = open_store(RedbOptions::default());
    put_num(&*store, "src/f", 1).await;
    let (mut mirror, probe) = Mirror::new(store.clone());
    mirror.fast_retry = true;
    probe.fail_next("f", &[Fail::Conflict, Fail::Error, Fail::Panic]);
    let controller = Controller::new(mirror, store.clone(), config());
    let stats = controller.stats();
    let (token, handle) = start(controller);

    eventually("success after retries", WAIT, || async {
        get_num(&*store, "dst/f").await == Some(2)
    })
    .await;
    let attempts = |p: &Probe| p.attempts.lock().unwrap().clone();
    let f = |n| ("f".to_string(), n);
    assert_eq!(attempts(&probe), vec![f(1), f(2), f(3)]);
    let s = stats.snapshot();
    assert_eq!((s.errors, s.conflicts), (3, 1));
    assert_eq!(probe.overlaps.load(Ordering::SeqCst), 0);

    // The success reset the count: the next failure is attempt 1 again.
    probe.fail_next("f", &[Fail::Error]);
    put_num(&*store, "src/f", 5).await;
    eventually("success after one retry", WAIT, || async {
        get_num(&*store, "dst/f").await == Some(10)
    })
    .await;
    assert_eq!(attempts(&probe), vec![f(1), f(2), f(3), f(1)]);
    stop(token, handle).await;
}

#[tokio::test]
async fn default_error_policy_retries_with_backoff() {
    let (store, _dir) = open_store(RedbOptions::default());
    put_num(&*store, "src/f", 1).await;
    let (mirror, probe) = Mirror::new(store.clone());
    probe.fail_next("f", &[Fail::Error, Fail::Error]);
    let (token, handle) = start(Controller::new(mirror, store.clone(), config()));
    eventually("success", WAIT, || async {
        get_num(&*store, "dst/f").await == Some(2)
    })
    .await;
    stop(token, handle).await;
    let starts: Vec<Instant> = probe
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(starts.len(), 3);
    // Attempt 1 waits 50..100 ms, attempt 2 100..200 ms.
    assert!(starts[1] - starts[0] >= Duration::from_millis(50));
    assert!(starts[2] - starts[1] >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_broken_watch_relists_and_loses_nothing() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let (store, knobs) = Faulty::wrap(redb.clone());
    put_num(&*store, "src/a", 1).await;
    let (mirror, _probe) = Mirror::new(store.clone());
    let controller = Controller::new(mirror, store.clone(), config());
    let stats = controller.stats();
    let (token, handle) = start(controller);
    eventually("initial fill", WAIT, || mirrored(&*store)).await;

    // These changes never reach the watch, which then fails as compacted.
    knobs.swallow_events.store(true, Ordering::SeqCst);
    put_num(&*store, "src/a", 2).await;
    put_num(&*store, "src/b", 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await; // let the watch swallow them
    assert_eq!(
        get_num(&*store, "dst/b").await,
        None,
        "nothing delivered them"
    );
    knobs.swallow_events.store(false, Ordering::SeqCst);
    knobs.break_watches();

    eventually("re-list repaired everything", WAIT, || async {
        get_num(&*store, "dst/a").await == Some(4) && get_num(&*store, "dst/b").await == Some(6)
    })
    .await;
    assert_eq!(stats.snapshot().lists, 2);
    // And the new watch works.
    put_num(&*store, "src/c", 4).await;
    eventually("new watch delivers", WAIT, || async {
        get_num(&*store, "dst/c").await == Some(8)
    })
    .await;
    stop(token, handle).await;
}

// Multi-threaded: the slow consumer blocks its thread, the writer runs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watch_relists_and_converges() {
    // A watcher may have one unread batch; a consumer that takes 20 ms per event cannot keep
    // up with a burst of commits, so the store drops it with WatchLagged.
    let (store, _dir) = open_store(RedbOptions {
        watch_history: 4,
        watch_channel_capacity: 1,
    });
    let (mut mirror, _probe) = Mirror::new(store.clone());
    mirror.slow_map = Duration::from_millis(20);
    let controller = Controller::new(mirror, store.clone(), config());
    let stats = controller.stats();
    let (token, handle) = start(controller);
    eventually("watching", WAIT, || async { stats.snapshot().lists >= 1 }).await;
    for i in 0..40 {
        put_num(&*store, &format!("src/k{}", i % 8), i).await;
    }
    eventually("converged", WAIT, || mirrored(&*store)).await;
    assert!(
        stats.snapshot().lists >= 2,
        "the watch lagged and was re-listed ({:?})",
        stats.snapshot()
    );
    stop(token, handle).await;
}

#[tokio::test]
async fn periodic_resync_repairs_what_no_event_reported() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let (store, knobs) = Faulty::wrap(redb.clone());
    knobs.swallow_events.store(true, Ordering::SeqCst); // the watch never delivers anything
    put_num(&*store, "src/a", 1).await;
    let (mirror, _probe) = Mirror::new(store.clone());
    let controller = Controller::new(
        mirror,
        store.clone(),
        ControllerConfig {
            resync: Duration::from_millis(200),
            ..config()
        },
    );
    let stats = controller.stats();
    let (token, handle) = start(controller);
    eventually("initial fill", WAIT, || mirrored(&*store)).await;

    // Behind the controller's back: a new source, a changed one, a tampered mirror.
    put_num(&*store, "src/a", 7).await;
    put_num(&*store, "src/b", 2).await;
    put_num(&*redb, "dst/b", 999).await;
    eventually("resync repaired", WAIT, || async {
        get_num(&*store, "dst/a").await == Some(14) && mirrored(&*store).await
    })
    .await;
    assert!(stats.snapshot().lists >= 2);
    stop(token, handle).await;
}

#[tokio::test]
async fn shutdown_cancels_a_reconcile_in_flight() {
    let (store, _dir) = open_store(RedbOptions::default());
    put_num(&*store, "src/slow", 1).await;
    let (mut mirror, probe) = Mirror::new(store.clone());
    mirror.delay = Duration::from_secs(3600);
    let (token, handle) = start(Controller::new(mirror, store.clone(), config()));
    eventually("reconcile started", WAIT, || async {
        probe.count("slow") == 1
    })
    .await;
    stop(token, handle).await;
    assert_eq!(
        probe.in_flight.load(Ordering::SeqCst),
        0,
        "the reconcile was dropped"
    );
    assert_eq!(get_num(&*store, "dst/slow").await, None);
}

// ---------------------------------------------------------------------------------------
// Leader election

const KEY: &str = "leader/controllers";

fn elector(
    store: &Arc<dyn Store>,
    id: &str,
    ttl: Duration,
) -> (LeaderElection, watch::Receiver<bool>) {
    let e = LeaderElection::new(store.clone(), KEY, id, ttl);
    let rx = e.subscribe();
    (e, rx)
}

/// Records whether two candidates were ever leader at the same time.
fn watch_for_overlap(a: watch::Receiver<bool>, b: watch::Receiver<bool>) -> Arc<AtomicBool> {
    let overlap = Arc::new(AtomicBool::new(false));
    let flag = overlap.clone();
    let (mut a, mut b) = (a, b);
    tokio::spawn(async move {
        loop {
            if *a.borrow_and_update() && *b.borrow_and_update() {
                flag.store(true, Ordering::SeqCst);
            }
            tokio::select! {
                r = a.changed() => if r.is_err() { return },
                r = b.changed() => if r.is_err() { return },
            }
        }
    });
    overlap
}

async fn holder(store: &dyn Store) -> Option<String> {
    store
        .get_json::<String>(KEY)
        .await
        .unwrap()
        .map(|(id, _)| id)
}

#[tokio::test]
async fn one_leader_and_a_prompt_handover_on_shutdown() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let store: Arc<dyn Store> = redb;
    // A long TTL: a handover within it proves the lease was revoked, not left to expire.
    let ttl = Duration::from_secs(30);
    let (a, mut a_rx) = elector(&store, "a", ttl);
    let stop_a = CancellationToken::new();
    let run_a = tokio::spawn(a.run(stop_a.clone()));
    wait_leader(&mut a_rx, true, WAIT).await;

    let (b, mut b_rx) = elector(&store, "b", ttl);
    let overlap = watch_for_overlap(a_rx.clone(), b_rx.clone());
    let stop_b = CancellationToken::new();
    let run_b = tokio::spawn(b.run(stop_b.clone()));
    // b is campaigning and must stay a follower.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(*a_rx.borrow() && !*b_rx.borrow());
    assert_eq!(holder(&*store).await.as_deref(), Some("a"));

    let handover = Instant::now();
    stop_a.cancel();
    run_a.await.unwrap();
    assert!(!*a_rx.borrow());
    wait_leader(&mut b_rx, true, Duration::from_secs(5)).await;
    assert!(
        handover.elapsed() < ttl / 4,
        "took {:?}",
        handover.elapsed()
    );
    assert_eq!(holder(&*store).await.as_deref(), Some("b"));

    stop_b.cancel();
    run_b.await.unwrap();
    assert!(!*b_rx.borrow());
    assert_eq!(holder(&*store).await, None, "shutdown revoked the lease");
    assert!(!overlap.load(Ordering::SeqCst), "two leaders at once");
}

#[tokio::test]
async fn dropping_the_leader_hands_over_promptly() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let store: Arc<dyn Store> = redb;
    let ttl = Duration::from_secs(30);
    let (a, mut a_rx) = elector(&store, "a", ttl);
    let run_a = tokio::spawn(a.run(CancellationToken::new()));
    wait_leader(&mut a_rx, true, WAIT).await;
    let (b, mut b_rx) = elector(&store, "b", ttl);
    let stop_b = CancellationToken::new();
    let run_b = tokio::spawn(b.run(stop_b.clone()));

    let dropped = Instant::now();
    run_a.abort();
    assert!(run_a.await.unwrap_err().is_cancelled());
    assert!(!*a_rx.borrow(), "a dropped election is not a leader");
    wait_leader(&mut b_rx, true, Duration::from_secs(5)).await;
    assert!(dropped.elapsed() < ttl / 4, "took {:?}", dropped.elapsed());
    stop_b.cancel();
    run_b.await.unwrap();
}

#[tokio::test]
async fn a_silent_leader_steps_down_and_its_lease_expires() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let ttl = Duration::from_millis(600);
    // a reaches the store through a link we can cut; b directly.
    let (a_store, a_link) = Faulty::wrap(redb.clone());
    let store: Arc<dyn Store> = redb;
    let (a, mut a_rx) = elector(&a_store, "a", ttl);
    let stop_a = CancellationToken::new();
    let run_a = tokio::spawn(a.run(stop_a.clone()));
    wait_leader(&mut a_rx, true, WAIT).await;
    let (b, mut b_rx) = elector(&store, "b", ttl);
    let overlap = watch_for_overlap(a_rx.clone(), b_rx.clone());
    let stop_b = CancellationToken::new();
    let run_b = tokio::spawn(b.run(stop_b.clone()));
    tokio::time::sleep(ttl).await; // several keep-alives: a stays leader
    assert!(*a_rx.borrow() && !*b_rx.borrow());

    // a can no longer keep its lease alive.
    let cut = Instant::now();
    a_link.partitioned.store(true, Ordering::SeqCst);
    wait_leader(&mut a_rx, false, ttl * 2).await;
    assert!(
        cut.elapsed() <= ttl + Duration::from_millis(100),
        "a stepped down in time"
    );
    wait_leader(&mut b_rx, true, ttl * 4).await;
    assert_eq!(holder(&*store).await.as_deref(), Some("b"));

    // a comes back and finds b in charge.
    a_link.partitioned.store(false, Ordering::SeqCst);
    tokio::time::sleep(ttl).await;
    assert!(!*a_rx.borrow() && *b_rx.borrow());
    assert!(!overlap.load(Ordering::SeqCst), "two leaders at once");
    stop_a.cancel();
    stop_b.cancel();
    run_a.await.unwrap();
    run_b.await.unwrap();
}

#[tokio::test]
async fn a_leader_whose_key_is_deleted_steps_down_and_campaigns_again() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let store: Arc<dyn Store> = redb;
    let (a, mut a_rx) = elector(&store, "a", Duration::from_secs(30));
    let stop_a = CancellationToken::new();
    let run_a = tokio::spawn(a.run(stop_a.clone()));
    wait_leader(&mut a_rx, true, WAIT).await;
    let mut seen = a_rx.clone();
    seen.mark_unchanged();

    store.commit(Txn::new().delete(KEY)).await.unwrap();
    // It noticed (true -> false), then won the vacant key again.
    tokio::time::timeout(WAIT, seen.changed())
        .await
        .unwrap()
        .unwrap();
    wait_leader(&mut a_rx, true, WAIT).await;
    eventually("a holds the key again", WAIT, || async {
        holder(&*store).await.as_deref() == Some("a")
    })
    .await;
    stop_a.cancel();
    run_a.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Manager

#[tokio::test]
async fn the_manager_runs_controllers_only_on_the_leader() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let store: Arc<dyn Store> = redb;
    put_num(&*store, "src/x", 1).await;
    let ttl = Duration::from_secs(30);

    let server = |id: &str| {
        let (mirror, probe) = Mirror::new(store.clone());
        let controller = Controller::new(mirror, store.clone(), config());
        let manager = ControllerManager::new(LeaderElection::new(store.clone(), KEY, id, ttl))
            .with(controller);
        let leading = manager.leadership();
        let token = CancellationToken::new();
        let handle = tokio::spawn(manager.run(token.clone()));
        (probe, leading, token, handle)
    };
    let (a_probe, mut a_leads, a_stop, a_run) = server("a");
    wait_leader(&mut a_leads, true, WAIT).await;
    let (b_probe, b_leads, b_stop, b_run) = server("b");

    eventually("a's controller works", WAIT, || mirrored(&*store)).await;
    put_num(&*store, "src/y", 2).await;
    eventually("a's controller follows events", WAIT, || mirrored(&*store)).await;
    assert!(a_probe.count("x") >= 1 && a_probe.count("y") >= 1);
    assert_eq!(b_probe.total(), 0, "a follower reconciled");
    assert!(!*b_leads.borrow());

    // a shuts down: b takes over, lists and reconciles, and a's controller is gone.
    a_stop.cancel();
    a_run.await.unwrap();
    let a_count = a_probe.total();
    let mut b_leads = b_leads;
    wait_leader(&mut b_leads, true, Duration::from_secs(5)).await;
    put_num(&*store, "src/z", 3).await;
    eventually("b's controller works", WAIT, || async {
        get_num(&*store, "dst/z").await == Some(6)
    })
    .await;
    assert!(b_probe.count("x") >= 1, "b started with a full list");
    assert_eq!(a_probe.total(), a_count, "a's controller stopped");

    b_stop.cancel();
    b_run.await.unwrap();
    assert_eq!(holder(&*store).await, None);
}

#[tokio::test]
async fn the_manager_stops_controllers_when_leadership_is_lost() {
    let (redb, _dir) = open_store(RedbOptions::default());
    let store: Arc<dyn Store> = redb;
    put_num(&*store, "src/x", 1).await;
    let ttl = Duration::from_millis(600);
    // a reaches the store through a link we can cut.
    let (a_store, a_link) = Faulty::wrap(store.clone());
    let server = |store: &Arc<dyn Store>, id: &str, delay: Duration| {
        let (mut mirror, probe) = Mirror::new(store.clone());
        mirror.delay = delay;
        let controller = Controller::new(mirror, store.clone(), config());
        let manager = ControllerManager::new(LeaderElection::new(store.clone(), KEY, id, ttl))
            .with(controller);
        let leading = manager.leadership();
        let token = CancellationToken::new();
        let handle = tokio::spawn(manager.run(token.clone()));
        (probe, leading, token, handle)
    };
    // a's reconciles are slow, so one is in flight when a is cut off.
    let (a_probe, mut a_leads, a_stop, a_run) = server(&a_store, "a", Duration::from_secs(3600));
    wait_leader(&mut a_leads, true, WAIT).await;
    eventually("a is reconciling", WAIT, || async {
        a_probe.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let (b_probe, mut b_leads, b_stop, b_run) = server(&store, "b", Duration::ZERO);

    a_link.partitioned.store(true, Ordering::SeqCst);
    wait_leader(&mut a_leads, false, ttl * 2).await;
    eventually("a's reconcile was cancelled", WAIT, || async {
        a_probe.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    wait_leader(&mut b_leads, true, ttl * 4).await;
    eventually("b mirrors", WAIT, || mirrored(&*store)).await;

    // a's link heals; a stays a follower and its controller stays stopped.
    a_link.partitioned.store(false, Ordering::SeqCst);
    let a_seen = a_probe.total();
    put_num(&*store, "src/w", 4).await;
    eventually("b follows events", WAIT, || async {
        get_num(&*store, "dst/w").await == Some(8)
    })
    .await;
    assert!(b_probe.count("w") >= 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a_probe.total(), a_seen, "a's controller still ran");
    assert!(!*a_leads.borrow());

    a_stop.cancel();
    b_stop.cancel();
    a_run.await.unwrap();
    b_run.await.unwrap();
}
