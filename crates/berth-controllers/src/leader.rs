//! Leader election on a store lease: one server at a time runs the controllers.
//!
//! The leader is whoever holds `key`, a key attached to its lease. Campaigning is one
//! transaction, "create `key` if absent"; the key disappears when the lease ends (revoked
//! on shutdown, or expired when the leader stops renewing it), and whoever is watching it
//! campaigns again.
//!
//! A leader steps down on its own clock, no later than the store could expire its lease:
//! the lease's deadline is counted from *before* each successful keep-alive was sent, so a
//! leader cut off from the store stops before anyone else can win.

use std::sync::Arc;
use std::time::Duration;

use berth_store::{Event, LeaseId, ReadView, Revision, Store, StoreError, Txn};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reconciler::backoff;

/// Campaigns for `key` and keeps it while it can; see the module docs.
pub struct LeaderElection {
    store: Arc<dyn Store>,
    key: String,
    identity: String,
    ttl: Duration,
    leader: watch::Sender<bool>,
}

/// Why a term ended.
enum TermEnd {
    Shutdown,
    Lost(String),
}

impl LeaderElection {
    /// `identity` must be unique among the candidates (it is what `key` holds);
    /// `ttl` is how long a silent leader keeps the role, hence also the worst-case
    /// takeover time after a crash.
    pub fn new(
        store: Arc<dyn Store>,
        key: impl Into<String>,
        identity: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        assert!(!ttl.is_zero(), "a lease needs a TTL");
        Self {
            store,
            key: key.into(),
            identity: identity.into(),
            ttl,
            leader: watch::channel(false).0,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this candidate is the leader now, and every change of that.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Campaigns until `shutdown`; then, if leader, revokes the lease so another candidate
    /// takes over at once rather than after the TTL.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            if failures > 0 {
                let delay = backoff(Duration::from_millis(100), self.ttl, failures);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let step = tokio::select! {
                _ = shutdown.cancelled() => break,
                step = self.campaign() => step,
            };
            match step {
                Ok(Campaign::Won {
                    lease,
                    revision,
                    expires,
                }) => {
                    failures = 0;
                    if let TermEnd::Shutdown = self.lead(lease, revision, expires, &shutdown).await
                    {
                        break;
                    }
                }
                Ok(Campaign::Held { revision }) => {
                    let vacant = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        vacant = self.wait_for_vacancy(revision) => vacant,
                    };
                    failures = if vacant { 0 } else { failures + 1 };
                }
                Ok(Campaign::Lost) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(key = %self.key, error = %e, "leader campaign failed");
                }
            }
        }
        self.leader.send_replace(false);
    }

    /// One attempt: wins if the key is absent.
    async fn campaign(&self) -> Result<Campaign, StoreError> {
        let snapshot = self.store.snapshot().await?;
        let revision = snapshot.read_revision().await?;
        if snapshot.get(&self.key).await?.is_some() {
            return Ok(Campaign::Held { revision });
        }
        let sent = Instant::now();
        let lease = self.store.grant_lease(self.ttl).await?;
        let txn =
            Txn::new()
                .require_absent(&self.key)
                .put_with_lease(&self.key, &self.identity, lease);
        match self.store.commit(txn).await {
            Ok(revision) => Ok(Campaign::Won {
                lease,
                revision,
                expires: sent + self.ttl,
            }),
            Err(e) => {
                self.revoke(lease).await;
                match e {
                    StoreError::Conflict { .. } => Ok(Campaign::Lost),
                    e => Err(e),
                }
            }
        }
    }

    /// Waits until the key is deleted after `revision` (true), or the watch breaks (false:
    /// the caller looks again).
    async fn wait_for_vacancy(&self, revision: Revision) -> bool {
        let Ok(mut watch) = self.store.watch(&self.key, revision + 1).await else {
            return false;
        };
        while let Some(Ok(batch)) = watch.next().await {
            if batch.events.iter().any(|e| self.is_delete(e)) {
                return true;
            }
        }
        false
    }

    fn is_delete(&self, event: &Event) -> bool {
        matches!(event, Event::Delete { key, .. } if *key == self.key)
    }

    /// Holds the role until shutdown, lease loss or the key's loss.
    async fn lead(
        &self,
        lease: LeaseId,
        revision: Revision,
        expires: Instant,
        shutdown: &CancellationToken,
    ) -> TermEnd {
        tracing::info!(key = %self.key, identity = %self.identity, lease, "became leader");
        // If this future is dropped (the task aborted), still hand over at once.
        let mut guard = RevokeOnDrop(Some((self.store.clone(), lease)));
        self.leader.send_replace(true);
        let end = tokio::select! {
            _ = shutdown.cancelled() => TermEnd::Shutdown,
            why = self.keep_alive(lease, expires) => TermEnd::Lost(why),
            why = self.guard_key(lease, revision) => TermEnd::Lost(why),
        };
        // Stop the work before the role can pass to someone else.
        self.leader.send_replace(false);
        match &end {
            TermEnd::Shutdown => tracing::info!(key = %self.key, "stepping down: shutdown"),
            TermEnd::Lost(why) => tracing::warn!(key = %self.key, "lost leadership: {why}"),
        }
        self.revoke(lease).await;
        guard.0 = None;
        end
    }

    /// Renews the lease every ttl/3 (sooner after a failure); returns when it cannot be
    /// sure to still hold it.
    async fn keep_alive(&self, lease: LeaseId, mut expires: Instant) -> String {
        let mut next = Instant::now() + self.ttl / 3;
        loop {
            tokio::time::sleep_until(next.min(expires)).await;
            let sent = Instant::now();
            if sent >= expires {
                return "lease not renewed within its TTL".into();
            }
            match tokio::time::timeout_at(expires, self.store.keep_alive(lease)).await {
                Ok(Ok(_)) => {
                    expires = sent + self.ttl;
                    next = sent + self.ttl / 3;
                }
                Ok(Err(StoreError::LeaseNotFound(_))) => return "lease ended".into(),
                Ok(Err(e)) => {
                    tracing::warn!(key = %self.key, error = %e, "lease keep-alive failed");
                    next = Instant::now() + self.ttl / 10;
                }
                Err(_) => return "lease keep-alive timed out".into(),
            }
        }
    }

    /// Returns if the key stops being ours (deleted, or overwritten by anyone).
    async fn guard_key(&self, lease: LeaseId, mut from: Revision) -> String {
        let ours = |e: &Event| matches!(e, Event::Put(kv) if kv.lease == Some(lease));
        let mut failures = 0;
        loop {
            if let Ok(mut watch) = self.store.watch(&self.key, from + 1).await {
                while let Some(Ok(batch)) = watch.next().await {
                    failures = 0;
                    if let Some(e) = batch
                        .events
                        .iter()
                        .find(|e| e.key() == self.key && !ours(e))
                    {
                        return format!("leader key changed: {e:?}");
                    }
                }
            }
            // The watch broke (compacted, lagged, closed): look again from a fresh revision.
            // The store being unreachable is keep_alive's business, so just retry.
            loop {
                failures += 1;
                tokio::time::sleep(backoff(Duration::from_millis(50), self.ttl / 3, failures))
                    .await;
                match self.read_key().await {
                    Ok((revision, Some(lease_now))) if lease_now == Some(lease) => {
                        from = revision;
                        break;
                    }
                    Ok(_) => return "leader key gone".into(),
                    Err(_) => continue,
                }
            }
        }
    }

    /// The current revision, and the lease of the key if it exists.
    async fn read_key(&self) -> Result<(Revision, Option<Option<LeaseId>>), StoreError> {
        let snapshot = self.store.snapshot().await?;
        let revision = snapshot.read_revision().await?;
        Ok((revision, snapshot.get(&self.key).await?.map(|kv| kv.lease)))
    }

    /// Best effort: if it fails the lease expires on its own.
    async fn revoke(&self, lease: LeaseId) {
        match tokio::time::timeout(self.ttl, self.store.revoke_lease(lease)).await {
            Ok(Ok(())) | Ok(Err(StoreError::LeaseNotFound(_))) => {}
            Ok(Err(e)) => tracing::debug!(lease, error = %e, "lease revoke failed"),
            Err(_) => tracing::debug!(lease, "lease revoke timed out"),
        }
    }
}

/// Only reports losing leadership when the election itself is dropped mid-run: `run`
/// is the only place that sends `true`, and it sends `false` before it returns.
impl Drop for LeaderElection {
    fn drop(&mut self) {
        self.leader.send_replace(false);
    }
}

/// Revokes a lease from a spawned task (Drop cannot await), if a runtime is still there.
struct RevokeOnDrop(Option<(Arc<dyn Store>, LeaseId)>);

impl Drop for RevokeOnDrop {
    fn drop(&mut self) {
        if let (Some((store, lease)), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move { store.revoke_lease(lease).await });
        }
    }
}

enum Campaign {
    Won {
        lease: LeaseId,
        revision: Revision,
        expires: Instant,
    },
    /// Someone holds the key at `revision`.
    Held { revision: Revision },
    /// Someone else created the key first.
    Lost,
}
