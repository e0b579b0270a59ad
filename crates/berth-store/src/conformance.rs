//! The behaviour every [`Store`] backend must have, as one suite of checks (after arrow-rs
//! `object_store`'s `integration.rs`).
//!
//! Each check is a `pub async fn` that takes a fresh, **empty** store that nothing else writes
//! to, and panics when the backend misbehaves. A backend runs them all, one `#[tokio::test]`
//! each, with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn fresh_store() -> (Arc<dyn Store>, TempDir) { /* a new empty store */ }
//!
//! mod conformance {
//!     berth_store::conformance_tests!(super::fresh_store, min_ttl = Duration::from_millis(300));
//! }
//! ```
//!
//! `min_ttl` is the shortest lease TTL the backend honours; the lease checks take a few times
//! that. A check that needs something only some backends can arrange (a tiny watch history) is
//! not in the macro; those backends call it from their own tests:
//! [`watch_from_compacted_revision`].
//!
//! The checks never sleep to wait for something: they wait on a watch stream or poll, with a
//! deadline. They assume revisions only grow, not that they grow by one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use crate::{
    Event, KeyRange, KeyValue, ReadExt, ReadView, Result, Store, StoreError, Txn, WatchBatch,
    WatchStream,
};

/// How long a check waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Generates one `#[tokio::test]` per conformance check for a backend.
///
/// `$make` is an async fn (or closure) returning `(Arc<dyn Store>, G)`: a new empty store, and a
/// guard that keeps whatever the store needs (a temp dir, a server) alive until the check ends.
/// `min_ttl` is the shortest lease TTL the backend honours. The calling crate needs tokio with
/// the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr, min_ttl = $min_ttl:expr $(,)?) => {
        $crate::conformance_tests!(@check $make, |s| put_get_delete(&*s));
        $crate::conformance_tests!(@check $make, |s| create_and_mod_revisions(&*s));
        $crate::conformance_tests!(@check $make, |s| range_prefix_isolation(&*s));
        $crate::conformance_tests!(@check $make, |s| range_bounds(&*s));
        $crate::conformance_tests!(@check $make, |s| paging_by_key_continuation(&*s));
        $crate::conformance_tests!(@check $make, |s| delete_prefix(&*s));
        $crate::conformance_tests!(@check $make, |s| failed_condition_applies_nothing(&*s));
        $crate::conformance_tests!(@check $make, |s| conditions(&*s));
        $crate::conformance_tests!(@check $make, |s| concurrent_read_modify_write(s.clone()));
        $crate::conformance_tests!(@check $make, |s| snapshot_isolation(&*s));
        $crate::conformance_tests!(@check $make, |s| watch_from_revision(&*s));
        $crate::conformance_tests!(@check $make, |s| watch_prefix_filtering(&*s));
        $crate::conformance_tests!(@check $make, |s| watch_batches_whole_commits(&*s));
        $crate::conformance_tests!(@check $make, |s| watch_resume_without_gaps(&*s));
        $crate::conformance_tests!(@check $make, |s| watch_delete_events(&*s));
        $crate::conformance_tests!(@check $make, |s| watch_while_committing(s.clone()));
        $crate::conformance_tests!(@check $make, |s| lease_revoke(&*s));
        $crate::conformance_tests!(@check $make, |s| put_with_unknown_lease(&*s));
        $crate::conformance_tests!(@check $make, |s| lease_keep_alive(&*s, $min_ttl));
        $crate::conformance_tests!(@check $make, |s| lease_expiry(&*s, $min_ttl));
        $crate::conformance_tests!(@check $make, |s| lease_detach_on_reput(&*s, $min_ttl));
    };
    (@check $make:expr, |$store:ident| $check:ident($($arg:expr),*)) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (store, _guard) = $make().await;
            let $store: ::std::sync::Arc<dyn $crate::Store> = store;
            $crate::conformance::$check($($arg),*).await;
            // The store goes before what it lives in.
            drop($store);
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn put(key: &str, value: &str) -> Txn {
    Txn::new().put_raw(key, value.as_bytes().to_vec())
}

async fn value<V: ReadView + ?Sized>(view: &V, key: &str) -> Option<String> {
    let kv = view.get(key).await.expect("get");
    kv.map(|kv| String::from_utf8(kv.value).expect("utf-8 value"))
}

async fn keys<V: ReadView + ?Sized>(view: &V, range: KeyRange) -> Vec<String> {
    let page = view.range(range).await.expect("range");
    page.kvs.into_iter().map(|kv| kv.key).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn expect_err<T>(result: impl std::future::Future<Output = Result<T>>) -> StoreError {
    match result.await {
        Ok(_) => panic!("expected an error, got success"),
        Err(e) => e,
    }
}

/// `"put k=v"` / `"delete k"`, for readable assertions.
fn describe(event: &Event) -> String {
    match event {
        Event::Put(kv) => format!("put {}={}", kv.key, String::from_utf8_lossy(&kv.value)),
        Event::Delete { key, .. } => format!("delete {key}"),
    }
}

fn described(batch: &WatchBatch) -> Vec<String> {
    batch.events.iter().map(describe).collect()
}

/// The next batch, within `within`; panics on an error, the end of the stream, or a timeout.
async fn next_batch_within(stream: &mut WatchStream, within: Duration) -> WatchBatch {
    let batch = match timeout(within, stream.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch batch within {within:?}"),
    };
    for event in &batch.events {
        let revision = match event {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        };
        assert_eq!(revision, batch.revision, "event revision in {batch:?}");
    }
    batch
}

async fn next_batch(stream: &mut WatchStream) -> WatchBatch {
    next_batch_within(stream, PATIENCE).await
}

/// A watch from the next revision on.
async fn watch_from_now(store: &dyn Store, prefix: &str) -> WatchStream {
    let from = store.read_revision().await.expect("read_revision") + 1;
    store.watch(prefix, from).await.expect("watch")
}

/// Commits a put under `prefix` and checks it is the next batch: nothing else was pending.
async fn assert_nothing_pending(store: &dyn Store, stream: &mut WatchStream, prefix: &str) {
    let key = format!("{prefix}~sentinel");
    let revision = store.commit(put(&key, "s")).await.expect("commit");
    let batch = next_batch(stream).await;
    assert_eq!(
        (batch.revision, described(&batch)),
        (revision, vec![format!("put {key}=s")]),
        "expected only the sentinel"
    );
}

// ---------------------------------------------------------------------------------------------
// Keys, values and revisions

/// Put, get, delete; the fields of a [`KeyValue`]; JSON helpers.
pub async fn put_get_delete(store: &dyn Store) {
    assert_eq!(store.get("k").await.unwrap(), None);
    let rev = store.commit(put("k", "v1")).await.unwrap();
    assert!(rev > 0);
    assert_eq!(
        store.get("k").await.unwrap(),
        Some(KeyValue {
            key: "k".into(),
            value: b"v1".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        })
    );
    assert_eq!(store.read_revision().await.unwrap(), rev);

    let json_rev = store
        .commit(Txn::new().put_json("json", &vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(
        store.get_json::<Vec<i32>>("json").await.unwrap(),
        Some((vec![1, 2, 3], json_rev))
    );
    assert!(matches!(
        store.get_json::<String>("json").await,
        Err(StoreError::Corrupt { key, .. }) if key == "json"
    ));

    store.commit(put("empty", "")).await.unwrap();
    assert_eq!(value(store, "empty").await.as_deref(), Some(""));

    let deleted = store.commit(Txn::new().delete("k")).await.unwrap();
    assert!(deleted > json_rev);
    assert_eq!(store.get("k").await.unwrap(), None);
    // Deleting what is not there is not an error.
    store.commit(Txn::new().delete("never")).await.unwrap();
    assert_eq!(store.get("never").await.unwrap(), None);
}

/// `create_revision` stays until the key is deleted; `mod_revision` follows every write;
/// revisions only grow.
pub async fn create_and_mod_revisions(store: &dyn Store) {
    let r1 = store.commit(put("k", "1")).await.unwrap();
    let r2 = store.commit(put("k", "2")).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));

    let r3 = store.commit(put("other", "x")).await.unwrap();
    assert!(r3 > r2);
    let kv = store.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2), "untouched");

    let r4 = store.commit(Txn::new().delete("k")).await.unwrap();
    let r5 = store.commit(put("k", "3")).await.unwrap();
    assert!(r5 > r4 && r4 > r3);
    let kv = store.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r5, r5), "recreated");

    // One commit, one revision for all its keys.
    let r6 = store
        .commit(put("a", "1").merge(put("b", "1")))
        .await
        .unwrap();
    assert!(r6 > r5);
    for key in ["a", "b"] {
        assert_eq!(store.get(key).await.unwrap().unwrap().mod_revision, r6);
    }
    assert_eq!(store.read_revision().await.unwrap(), r6);
}

/// A prefix sees exactly the keys that start with it: `a/` does not see `ab/` or `a`.
pub async fn range_prefix_isolation(store: &dyn Store) {
    let all = ["a", "a/1", "a/2", "a/2/x", "ab/1", "b/1"];
    let mut txn = Txn::new();
    for key in all {
        txn = txn.merge(put(key, key));
    }
    let rev = store.commit(txn).await.unwrap();

    let page = store.range(KeyRange::prefix("a/")).await.unwrap();
    let got: Vec<_> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(got, ["a/1", "a/2", "a/2/x"]);
    assert!(!page.more);
    assert_eq!(page.revision, rev);
    assert_eq!(page.kvs[0].value, b"a/1");

    assert_eq!(keys(store, KeyRange::prefix("ab/")).await, ["ab/1"]);
    assert_eq!(keys(store, KeyRange::prefix("a/2/")).await, ["a/2/x"]);
    assert_eq!(keys(store, KeyRange::prefix("")).await, strings(&all));
    assert!(keys(store, KeyRange::prefix("c/")).await.is_empty());
    assert_eq!(store.count_prefix("a").await.unwrap(), 5);
}

/// `after`, `from_key`, `until` and `limit`, and when `more` is set.
pub async fn range_bounds(store: &dyn Store) {
    let mut txn = put("r", "x").merge(put("r0", "x")).merge(put("s/1", "x"));
    for i in 0..10 {
        txn = txn.merge(put(&format!("r/{i}"), "x"));
    }
    let rev = store.commit(txn).await.unwrap();
    let r = |from: u32, to: u32| (from..to).map(|i| format!("r/{i}")).collect::<Vec<_>>();
    let base = || KeyRange::prefix("r/");

    let page = store.range(base()).await.unwrap();
    assert_eq!((page.kvs.len(), page.more, page.revision), (10, false, rev));

    let page = store.range(base().limit(3)).await.unwrap();
    assert_eq!((page.last_key(), page.more), (Some("r/2"), true));
    let page = store.range(base().limit(10)).await.unwrap();
    assert_eq!(
        (page.kvs.len(), page.more),
        (10, false),
        "exactly the limit"
    );
    let page = store.range(base().limit(11)).await.unwrap();
    assert_eq!((page.kvs.len(), page.more), (10, false));

    assert_eq!(keys(store, base().after("r/3")).await, r(4, 10));
    let page = store.range(base().after("r/3").limit(2)).await.unwrap();
    assert_eq!((page.last_key(), page.more), (Some("r/5"), true));
    assert!(keys(store, base().after("r/9")).await.is_empty());
    assert_eq!(
        keys(store, base().after("a")).await,
        r(0, 10),
        "before the prefix"
    );

    assert_eq!(keys(store, base().from_key("r/3")).await, r(3, 10));
    assert_eq!(
        keys(store, base().from_key("a")).await,
        r(0, 10),
        "before the prefix"
    );

    assert_eq!(keys(store, base().until("r/5")).await, r(0, 5));
    let page = store.range(base().until("r/5").limit(5)).await.unwrap();
    assert_eq!(
        (page.kvs.len(), page.more),
        (5, false),
        "the end bounds `more`"
    );
    assert_eq!(keys(store, base().after("r/2").until("r/5")).await, r(3, 5));
    assert_eq!(
        keys(store, base().until("z")).await,
        r(0, 10),
        "end past the prefix"
    );
    assert!(keys(store, base().until("r/")).await.is_empty());

    assert!(base().contains("r/5"));
    assert!(!base().contains("r0"));
    assert!(!base().until("r/5").contains("r/5"));
}

/// Key-continuation paging through 250 keys, 7 at a time: each key exactly once, in order.
pub async fn paging_by_key_continuation(store: &dyn Store) {
    let expected: Vec<String> = (0..250).map(|i| format!("page/{i:03}")).collect();
    // Several commits: some backends cap the ops of one transaction.
    for chunk in expected.chunks(50) {
        let mut txn = Txn::new();
        for key in chunk {
            txn = txn.merge(put(key, key));
        }
        store.commit(txn).await.unwrap();
    }
    // Neighbours just outside the prefix.
    store
        .commit(
            put("page", "x")
                .merge(put("page0", "x"))
                .merge(put("pagd", "x")),
        )
        .await
        .unwrap();

    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    let mut revisions = BTreeSet::new();
    loop {
        let mut range = KeyRange::prefix("page/").limit(7);
        if let Some(last) = seen.last() {
            range = range.after(last);
        }
        let page = store.range(range).await.unwrap();
        pages += 1;
        assert!(page.kvs.len() <= 7);
        revisions.insert(page.revision);
        seen.extend(page.kvs.into_iter().map(|kv| kv.key));
        if !page.more {
            break;
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 250_usize.div_ceil(7));
    assert_eq!(revisions.len(), 1, "no writes happened between pages");
}

/// `delete_prefix` deletes exactly the keys that start with the prefix.
pub async fn delete_prefix(store: &dyn Store) {
    let mut txn = Txn::new();
    for key in ["a", "a/1", "a/2", "a/2/x", "ab/1", "b/1"] {
        txn = txn.merge(put(key, "x"));
    }
    store.commit(txn).await.unwrap();
    store.commit(Txn::new().delete_prefix("a/")).await.unwrap();
    assert_eq!(
        keys(store, KeyRange::prefix("")).await,
        ["a", "ab/1", "b/1"]
    );
    // A prefix that matches nothing is not an error.
    store.commit(Txn::new().delete_prefix("zz/")).await.unwrap();
    assert_eq!(store.count_prefix("").await.unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// A transaction whose condition fails changes nothing, not even the revision.
pub async fn failed_condition_applies_nothing(store: &dyn Store) {
    store
        .commit(put("k", "v1").merge(put("keep", "1")))
        .await
        .unwrap();
    let before = store.read_revision().await.unwrap();
    let mut stream = watch_from_now(store, "").await;

    let txn = Txn::new()
        .require_exists("keep")
        .require_absent("k")
        .put_raw("k", b"v2".to_vec())
        .put_raw("new", b"x".to_vec())
        .delete("keep")
        .delete_prefix("");
    let err = expect_err(store.commit(txn)).await;
    assert_eq!(err, StoreError::Conflict { key: "k".into() });

    let stale = Txn::new()
        .require_revision("k", before + 1000)
        .put_raw("k", b"v3".to_vec());
    let err = expect_err(store.commit(stale)).await;
    assert_eq!(err, StoreError::Conflict { key: "k".into() });

    assert_eq!(value(store, "k").await.as_deref(), Some("v1"));
    assert_eq!(value(store, "keep").await.as_deref(), Some("1"));
    assert_eq!(value(store, "new").await, None);
    assert_eq!(store.read_revision().await.unwrap(), before);
    // Watchers saw nothing of them.
    assert_nothing_pending(store, &mut stream, "").await;
}

/// `require_absent`, `require_revision`, `require_exists`, `require_unchanged`, checked
/// against the state before the transaction's ops.
pub async fn conditions(store: &dyn Store) {
    let conflict = |key: &str| StoreError::Conflict { key: key.into() };

    let r1 = store
        .commit(put("x", "1").require_absent("x"))
        .await
        .unwrap();
    let err = expect_err(store.commit(put("x", "2").require_absent("x"))).await;
    assert_eq!(err, conflict("x"));

    let r2 = store
        .commit(put("x", "2").require_revision("x", r1))
        .await
        .unwrap();
    let err = expect_err(store.commit(put("x", "3").require_revision("x", r1))).await;
    assert_eq!(err, conflict("x"), "stale revision");
    let err = expect_err(store.commit(put("y", "1").require_revision("missing", r2))).await;
    assert_eq!(err, conflict("missing"), "absent key has no revision");

    store
        .commit(put("y", "1").require_exists("x"))
        .await
        .unwrap();
    let err = expect_err(store.commit(put("y", "2").require_exists("missing"))).await;
    assert_eq!(err, conflict("missing"));

    store
        .commit(put("z", "1").require_unchanged("missing", None))
        .await
        .unwrap();
    store
        .commit(put("z", "2").require_unchanged("x", Some(r2)))
        .await
        .unwrap();
    let err = expect_err(store.commit(put("z", "3").require_unchanged("x", None))).await;
    assert_eq!(err, conflict("x"));

    // Every condition must hold; the error names the one that did not.
    let txn = put("w", "1")
        .require_exists("x")
        .require_revision("y", 1_000_000)
        .require_absent("missing");
    assert_eq!(expect_err(store.commit(txn)).await, conflict("y"));

    // After a delete the key counts as absent again.
    store
        .commit(Txn::new().delete("x").require_revision("x", r2))
        .await
        .unwrap();
    store
        .commit(put("x", "again").require_absent("x"))
        .await
        .unwrap();
    assert_eq!(value(store, "x").await.as_deref(), Some("again"));
}

/// 20 tasks increment one counter by read-modify-write with a revision check, retrying on
/// conflict: no increment is lost and each lands at its own revision.
pub async fn concurrent_read_modify_write(store: Arc<dyn Store>) {
    const TASKS: u64 = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            for _attempt in 0..1000 {
                let read = store.get_json::<u64>("counter").await.unwrap();
                let (n, revision) = read.map_or((0, None), |(n, r)| (n, Some(r)));
                let txn = Txn::new()
                    .require_unchanged("counter", revision)
                    .put_json("counter", &(n + 1));
                match store.commit(txn).await {
                    Ok(revision) => return revision,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => panic!("commit: {e}"),
                }
            }
            panic!("no increment landed in 1000 attempts")
        });
    }
    let mut revisions = BTreeSet::new();
    while let Some(revision) = tasks.join_next().await {
        revisions.insert(revision.expect("task"));
    }
    assert_eq!(revisions.len() as u64, TASKS);
    let (n, revision) = store.get_json::<u64>("counter").await.unwrap().unwrap();
    assert_eq!(n, TASKS);
    assert_eq!(Some(&revision), revisions.last());
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// A snapshot keeps reading the revision it was taken at, whatever is committed later.
pub async fn snapshot_isolation(store: &dyn Store) {
    let r1 = store
        .commit(put("s/1", "1").merge(put("s/2", "2")))
        .await
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.read_revision().await.unwrap(), r1);

    let r2 = store
        .commit(put("s/1", "10").delete("s/2").merge(put("s/3", "3")))
        .await
        .unwrap();

    assert_eq!(value(&snapshot, "s/1").await.as_deref(), Some("1"));
    assert_eq!(snapshot.get("s/1").await.unwrap().unwrap().mod_revision, r1);
    assert_eq!(value(&snapshot, "s/2").await.as_deref(), Some("2"));
    assert_eq!(value(&snapshot, "s/3").await, None);
    let page = snapshot.range(KeyRange::prefix("s/")).await.unwrap();
    assert_eq!(page.revision, r1);
    let got: Vec<_> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(got, ["s/1", "s/2"]);
    assert_eq!(snapshot.read_revision().await.unwrap(), r1);

    assert_eq!(value(store, "s/1").await.as_deref(), Some("10"));
    let page = store.range(KeyRange::prefix("s/")).await.unwrap();
    assert_eq!(page.revision, r2);
    assert_eq!(keys(store, KeyRange::prefix("s/")).await, ["s/1", "s/3"]);
    assert_eq!(store.read_revision().await.unwrap(), r2);
}

// ---------------------------------------------------------------------------------------------
// Watches

/// A watch replays from its start revision (inclusive), in order, then goes on live; a watch
/// from `current + 1` sees only what comes next.
pub async fn watch_from_revision(store: &dyn Store) {
    let mut revisions = Vec::new();
    for i in 0..5 {
        let revision = store
            .commit(put(&format!("w/{i}"), &i.to_string()))
            .await
            .unwrap();
        revisions.push(revision);
    }
    let mut stream = store.watch("w/", revisions[2]).await.unwrap();
    for (i, &revision) in revisions.iter().enumerate().skip(2) {
        let batch = next_batch(&mut stream).await;
        assert_eq!(batch.revision, revision);
        assert_eq!(described(&batch), [format!("put w/{i}={i}")]);
    }
    let live = store.commit(put("w/5", "5")).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(
        (batch.revision, described(&batch)),
        (live, strings(&["put w/5=5"]))
    );
    let Event::Put(kv) = &batch.events[0] else {
        panic!("expected a put")
    };
    assert_eq!(kv, &store.get("w/5").await.unwrap().unwrap());

    let mut from_now = watch_from_now(store, "w/").await;
    let next = store.commit(put("w/6", "6")).await.unwrap();
    assert_eq!(next_batch(&mut from_now).await.revision, next);
    assert_eq!(next_batch(&mut stream).await.revision, next);
}

/// A watch sees only keys under its prefix: `a/` does not see `ab/1`, `a` or `b/1`.
pub async fn watch_prefix_filtering(store: &dyn Store) {
    let mut stream = watch_from_now(store, "a/").await;
    store.commit(put("ab/1", "x")).await.unwrap();
    store.commit(put("a", "x")).await.unwrap();
    store
        .commit(put("b/1", "x").merge(put("ab/2", "x")))
        .await
        .unwrap();
    let mixed = store
        .commit(
            put("ab/3", "x")
                .merge(put("a/1", "x"))
                .merge(put("b/2", "x")),
        )
        .await
        .unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(
        (batch.revision, described(&batch)),
        (mixed, strings(&["put a/1=x"]))
    );
    store
        .commit(Txn::new().delete("ab/1").delete("a"))
        .await
        .unwrap();
    assert_nothing_pending(store, &mut stream, "a/").await;
}

/// One commit is one batch at one revision, its events in the order of the ops.
pub async fn watch_batches_whole_commits(store: &dyn Store) {
    store.commit(put("x/0", "0")).await.unwrap();
    let mut stream = watch_from_now(store, "x/").await;
    let txn = put("x/2", "2")
        .merge(put("x/1", "1"))
        .delete("x/0")
        .merge(put("y/1", "1"));
    let revision = store.commit(txn).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.revision, revision);
    assert_eq!(described(&batch), ["put x/2=2", "put x/1=1", "delete x/0"]);
}

/// Consume part of a watch, drop it, commit more, watch again from the last revision seen + 1:
/// exactly the rest arrives, nothing twice.
pub async fn watch_resume_without_gaps(store: &dyn Store) {
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(store.commit(put(&format!("c/{i}"), "x")).await.unwrap());
    }
    let mut stream = store.watch("c/", revisions[0]).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_batch(&mut stream).await.revision);
    }
    drop(stream);
    for i in 10..15 {
        revisions.push(store.commit(put(&format!("c/{i}"), "x")).await.unwrap());
    }
    let last_seen = *seen.last().unwrap();
    let mut stream = store.watch("c/", last_seen + 1).await.unwrap();
    while seen.len() < revisions.len() {
        seen.push(next_batch(&mut stream).await.revision);
    }
    assert_eq!(seen, revisions);
    assert_nothing_pending(store, &mut stream, "c/").await;
}

/// Deletes, one by one or by prefix, arrive as Delete events; deleting nothing sends nothing.
pub async fn watch_delete_events(store: &dyn Store) {
    let mut txn = put("e/1", "x");
    for key in ["d/1", "d/2", "d/3"] {
        txn = txn.merge(put(key, "x"));
    }
    store.commit(txn).await.unwrap();
    let mut stream = watch_from_now(store, "d/").await;

    let one = store.commit(Txn::new().delete("d/1")).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.revision, one);
    assert_eq!(
        batch.events,
        [Event::Delete {
            key: "d/1".into(),
            revision: one
        }]
    );

    let all = store.commit(Txn::new().delete_prefix("d/")).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.revision, all);
    assert_eq!(described(&batch), ["delete d/2", "delete d/3"]);

    store.commit(Txn::new().delete("d/1")).await.unwrap();
    store.commit(Txn::new().delete_prefix("d/")).await.unwrap();
    assert_nothing_pending(store, &mut stream, "d/").await;
    assert_eq!(value(store, "e/1").await.as_deref(), Some("x"));
}

/// A watch started from the past while commits keep landing gets every revision exactly once:
/// nothing is lost or repeated between the replay and the live stream.
pub async fn watch_while_committing(store: Arc<dyn Store>) {
    const COMMITS: usize = 60;
    let first = store.read_revision().await.unwrap() + 1;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..COMMITS {
                let key = format!("race/{i:02}");
                revisions.push(store.commit(put(&key, "x")).await.unwrap());
                tokio::task::yield_now().await;
            }
            revisions
        })
    };
    // Start watching once the writer is well under way.
    let deadline = Instant::now() + PATIENCE;
    while store.read_revision().await.unwrap() < first + 10 {
        assert!(Instant::now() < deadline, "the writer does not progress");
        sleep(Duration::from_millis(1)).await;
    }
    let mut stream = store.watch("race/", first).await.unwrap();
    let revisions = writer.await.expect("writer");
    let mut seen = Vec::new();
    while seen.len() < COMMITS {
        let batch = next_batch(&mut stream).await;
        assert_eq!(batch.events.len(), 1);
        seen.push(batch.revision);
    }
    assert_eq!(seen, revisions);
    assert_nothing_pending(&*store, &mut stream, "race/").await;
}

/// A watch from a revision older than the retained history fails with
/// [`StoreError::Compacted`]; one from the oldest retained revision replays the rest.
///
/// `retained`: how many of the most recent commits the (empty) store is known to retain.
pub async fn watch_from_compacted_revision(store: &dyn Store, retained: usize) {
    let mut revisions = Vec::new();
    for i in 0..retained + 3 {
        revisions.push(store.commit(put(&format!("h/{i}"), "x")).await.unwrap());
    }
    match store.watch("h/", revisions[0]).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, revisions[0]);
            assert!(oldest > requested);
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let kept = &revisions[revisions.len() - retained..];
    let mut stream = store.watch("h/", kept[0]).await.unwrap();
    for &revision in kept {
        assert_eq!(next_batch(&mut stream).await.revision, revision);
    }
    assert_nothing_pending(store, &mut stream, "h/").await;
}

// ---------------------------------------------------------------------------------------------
// Leases

/// Revoking a lease deletes its keys (Delete events) and nothing else; the lease is gone.
pub async fn lease_revoke(store: &dyn Store) {
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let other = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease, other);
    store
        .commit(
            Txn::new()
                .put_with_lease("l/1", &1, lease)
                .put_json("l/2", &2)
                .put_with_lease("l/3", &3, other),
        )
        .await
        .unwrap();
    assert_eq!(store.get("l/1").await.unwrap().unwrap().lease, Some(lease));
    assert_eq!(store.get("l/2").await.unwrap().unwrap().lease, None);

    let mut stream = watch_from_now(store, "l/").await;
    store.revoke_lease(lease).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(described(&batch), ["delete l/1"]);
    assert_eq!(store.get("l/1").await.unwrap(), None);
    assert_eq!(store.count_prefix("l/").await.unwrap(), 2);

    let gone = StoreError::LeaseNotFound(lease);
    assert_eq!(expect_err(store.keep_alive(lease)).await, gone);
    assert_eq!(expect_err(store.revoke_lease(lease)).await, gone);
    let err = expect_err(store.commit(Txn::new().put_with_lease("l/4", &4, lease))).await;
    assert_eq!(err, gone);
    assert_eq!(store.get("l/4").await.unwrap(), None);

    store.revoke_lease(other).await.unwrap();
    assert_eq!(described(&next_batch(&mut stream).await), ["delete l/3"]);
    assert_eq!(keys(store, KeyRange::prefix("l/")).await, ["l/2"]);
}

/// A put with a lease that does not exist fails with `LeaseNotFound` and applies nothing.
pub async fn put_with_unknown_lease(store: &dyn Store) {
    store.commit(put("seed", "x")).await.unwrap();
    let before = store.read_revision().await.unwrap();
    let unknown = 0x00de_adbe_ef00;
    let txn = put("a", "x").put_with_lease("b", &1, unknown);
    assert_eq!(
        expect_err(store.commit(txn)).await,
        StoreError::LeaseNotFound(unknown)
    );
    assert_eq!(store.get("a").await.unwrap(), None);
    assert_eq!(store.get("b").await.unwrap(), None);
    assert_eq!(store.read_revision().await.unwrap(), before);
}

/// Keep-alives keep a lease's keys well past its TTL; once they stop, the keys go.
pub async fn lease_keep_alive(store: &dyn Store, min_ttl: Duration) {
    let lease = store.grant_lease(min_ttl).await.unwrap();
    store
        .commit(Txn::new().put_with_lease("ka/1", &1, lease))
        .await
        .unwrap();
    // Letting time pass is the point here: three TTLs, kept alive four times per TTL.
    let until = Instant::now() + min_ttl * 3;
    while Instant::now() < until {
        assert!(store.keep_alive(lease).await.unwrap() >= min_ttl);
        assert!(store.get("ka/1").await.unwrap().is_some(), "kept alive");
        sleep(min_ttl / 4).await;
    }
    let mut stream = watch_from_now(store, "ka/").await;
    let batch = next_batch_within(&mut stream, min_ttl + PATIENCE).await;
    assert_eq!(described(&batch), ["delete ka/1"]);
    assert_eq!(
        expect_err(store.keep_alive(lease)).await,
        StoreError::LeaseNotFound(lease)
    );
}

/// A lease left alone expires after its TTL: its keys are deleted in one commit (Delete
/// events), other keys stay, and the lease is gone for keep-alives, puts and revokes.
pub async fn lease_expiry(store: &dyn Store, min_ttl: Duration) {
    let start = Instant::now();
    let lease = store.grant_lease(min_ttl).await.unwrap();
    let mut stream = watch_from_now(store, "ex/").await;
    let txn = Txn::new()
        .put_with_lease("ex/1", &1, lease)
        .put_with_lease("ex/2", &2, lease)
        .put_json("ex/3", &3);
    let put_revision = store.commit(txn).await.unwrap();
    assert_eq!(next_batch(&mut stream).await.revision, put_revision);

    let batch = next_batch_within(&mut stream, min_ttl + PATIENCE).await;
    assert!(start.elapsed() >= min_ttl, "expired early");
    let mut deleted = described(&batch);
    deleted.sort();
    assert_eq!(deleted, ["delete ex/1", "delete ex/2"]);
    assert_eq!(keys(store, KeyRange::prefix("ex/")).await, ["ex/3"]);

    let gone = StoreError::LeaseNotFound(lease);
    assert_eq!(expect_err(store.keep_alive(lease)).await, gone);
    let err = expect_err(store.commit(Txn::new().put_with_lease("ex/4", &4, lease))).await;
    assert_eq!(err, gone);
    assert_eq!(store.get("ex/4").await.unwrap(), None);
    assert_eq!(expect_err(store.revoke_lease(lease)).await, gone);
}

/// A key re-put without its lease, or with another one, or deleted, is no longer the lease's.
pub async fn lease_detach_on_reput(store: &dyn Store, min_ttl: Duration) {
    let short = store.grant_lease(min_ttl).await.unwrap();
    let long = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let mut txn = Txn::new();
    for key in ["dt/a", "dt/b", "dt/c", "dt/marker"] {
        txn = txn.put_with_lease(key, &0, short);
    }
    store.commit(txn).await.unwrap();
    let txn = Txn::new()
        .put_json("dt/a", &1)
        .put_with_lease("dt/b", &2, long)
        .delete("dt/c");
    store.commit(txn).await.unwrap();

    let mut stream = watch_from_now(store, "dt/").await;
    let batch = next_batch_within(&mut stream, min_ttl + PATIENCE).await;
    assert_eq!(
        described(&batch),
        ["delete dt/marker"],
        "only the marker was left"
    );
    assert_eq!(store.get("dt/a").await.unwrap().unwrap().lease, None);
    assert_eq!(store.get("dt/b").await.unwrap().unwrap().lease, Some(long));

    store.revoke_lease(long).await.unwrap();
    assert_eq!(described(&next_batch(&mut stream).await), ["delete dt/b"]);
    assert_eq!(keys(store, KeyRange::prefix("dt/")).await, ["dt/a"]);
}
