//! Time and id generation, injected so tests are deterministic.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A wall-clock instant with millisecond precision (what ECS's timestamps carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const EPOCH: Self = Self(0);

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    pub fn from_epoch_secs(secs: f64) -> Self {
        Self((secs * 1000.0).round() as i64)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    /// Seconds since the Unix epoch, as AWS's JSON protocols encode timestamps.
    pub fn epoch_secs(self) -> f64 {
        self.0 as f64 / 1000.0
    }
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
    /// RFC 3339, for XML protocols and logs.
    pub fn rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(chrono::Utc::now().timestamp_millis())
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(t.0)))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Makes the ids of new resources.
pub trait IdGen: Send + Sync + 'static {
    /// A new id: 32 lowercase hex digits unless the generator says otherwise.
    fn next_id(&self) -> String;
}

/// Random UUIDs (v4) without dashes, as ECS's task ids look.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdGen for RandomIds {
    fn next_id(&self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// Predictable ids for tests: `<prefix>0000…01`, `…02`, …, still 32 characters when the
/// prefix is hex.
#[derive(Debug, Default)]
pub struct SequentialIds {
    prefix: String,
    next: AtomicU64,
}

impl SequentialIds {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            next: AtomicU64::new(1),
        }
    }
}

impl IdGen for SequentialIds {
    fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let width = 32usize.saturating_sub(self.prefix.len()).max(1);
        format!("{}{:0width$x}", self.prefix, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_both_ways() {
        let t = Timestamp::from_epoch_secs(1_700_000_000.123);
        assert_eq!(t.millis(), 1_700_000_000_123);
        assert_eq!(t.epoch_secs(), 1_700_000_000.123);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            t.plus(Duration::from_secs(2)).since(t),
            Duration::from_secs(2)
        );
        assert_eq!(t.since(t.plus(Duration::from_secs(1))), Duration::ZERO);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(Timestamp::from_millis(1000));
        assert_eq!(clock.now().millis(), 1000);
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now().millis(), 1500);
    }

    #[test]
    fn sequential_ids_are_predictable() {
        let ids = SequentialIds::new("ab");
        assert_eq!(ids.next_id(), format!("ab{:030x}", 1));
        assert_eq!(ids.next_id().len(), 32);
    }
}
