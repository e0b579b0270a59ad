//! What a controller implements: the [`Reconciler`] trait and its vocabulary.

use std::borrow::Borrow;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use berth_store::{Event, StoreError};
use rand::Rng;

/// Names one object a controller reconciles. The controller decides what a key means
/// (a store key, a service ARN, "cluster/service"...); the framework only dedupes on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(pub String);

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ObjectKey {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for ObjectKey {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl Borrow<str> for ObjectKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What to do with an object after a reconcile (or after an error, see
/// [`Reconciler::error_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Nothing more to do until a change event or the periodic resync.
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }
    /// Reconcile again after `after` (earlier if an event arrives first): for work that
    /// depends on time (timeouts, liveness) rather than on a change.
    pub fn requeue(after: Duration) -> Self {
        Self {
            requeue_after: Some(after),
        }
    }
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Why a reconcile failed. [`ReconcileError::is_conflict`] marks optimistic-concurrency
/// conflicts: they are normal when two writers race, so they are retried quickly and logged
/// at debug, not warn. A `StoreError::Conflict` converted with `?` is one.
pub struct ReconcileError {
    conflict: bool,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl ReconcileError {
    /// A failure described by a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            conflict: false,
            source: message.to_string().into(),
        }
    }
    /// An optimistic-concurrency conflict (someone else wrote first; re-read and retry).
    pub fn conflict(message: impl fmt::Display) -> Self {
        Self {
            conflict: true,
            source: message.to_string().into(),
        }
    }
    pub fn is_conflict(&self) -> bool {
        self.conflict
    }
    /// The underlying error, for downcasting.
    pub fn source_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

/// Any error converts with `?`; a [`StoreError::Conflict`] becomes a conflict.
impl<E: StdError + Send + Sync + 'static> From<E> for ReconcileError {
    fn from(error: E) -> Self {
        let source: Box<dyn StdError + Send + Sync> = Box::new(error);
        let conflict = matches!(
            source.downcast_ref::<StoreError>(),
            Some(StoreError::Conflict { .. })
        );
        Self { conflict, source }
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileError")
            .field("conflict", &self.conflict)
            .field("error", &self.to_string())
            .finish()
    }
}

/// A background job: brings the objects it owns towards their desired state.
///
/// Level-triggered: `reconcile` looks at the whole current state of one object, never at
/// the event that woke it, so a missed or coalesced event loses nothing. It must be
/// idempotent (it may run twice for one change, and may be cancelled midway when
/// leadership is lost) and should commit with version checks.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// For logs and spans.
    fn name(&self) -> &'static str;
    /// Store key prefixes whose changes may affect some object.
    fn watches(&self) -> Vec<String>;
    /// The objects a change affects (often one, derived from the key).
    fn map_event(&self, event: &Event) -> Vec<ObjectKey>;
    /// Every object: for the initial fill, after a broken watch, and for the periodic resync.
    async fn list(&self) -> Result<Vec<ObjectKey>, ReconcileError>;
    /// Brings one object towards its desired state.
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError>;
    /// What to do after `reconcile` failed for the `attempt`th time in a row (1-based).
    fn error_policy(&self, key: &ObjectKey, error: &ReconcileError, attempt: u32) -> Action {
        let _ = key;
        Action::requeue(default_backoff(error, attempt))
    }
}

/// Exponential backoff with "equal jitter": 100 ms · 2^(attempt-1), capped at 30 s, then a
/// random point in its upper half so that failing objects do not retry in lockstep.
/// Conflicts start at 10 ms: the retry re-reads and usually succeeds at once.
pub fn default_backoff(error: &ReconcileError, attempt: u32) -> Duration {
    let base = if error.is_conflict() {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(100)
    };
    let delay = backoff(base, Duration::from_secs(30), attempt);
    let half = delay / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

/// `base · 2^(attempt-1)`, at most `max`.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    base.saturating_mul(1 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_conflicts_convert_to_conflicts() {
        let e: ReconcileError = StoreError::Conflict { key: "k".into() }.into();
        assert!(e.is_conflict());
        let e: ReconcileError = StoreError::Backend("disk".into()).into();
        assert!(!e.is_conflict());
        assert!(e.to_string().contains("disk"));
        assert!(e.source_error().downcast_ref::<StoreError>().is_some());
        assert!(ReconcileError::conflict("x").is_conflict());
        assert!(!ReconcileError::msg("x").is_conflict());
    }

    #[test]
    fn default_backoff_grows_with_jitter_and_is_capped() {
        let e = ReconcileError::msg("boom");
        for attempt in 1..=40 {
            let full = backoff(Duration::from_millis(100), Duration::from_secs(30), attempt);
            let d = default_backoff(&e, attempt);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        assert_eq!(
            backoff(Duration::from_millis(100), Duration::from_secs(30), 1),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff(Duration::from_millis(100), Duration::from_secs(30), 4),
            Duration::from_millis(800)
        );
        assert_eq!(
            backoff(Duration::from_millis(100), Duration::from_secs(30), 40),
            Duration::from_secs(30)
        );
        assert!(default_backoff(&ReconcileError::conflict("c"), 1) <= Duration::from_millis(10));
    }
}
