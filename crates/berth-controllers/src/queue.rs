//! The work queue between events and reconciles, with kube-runtime's semantics:
//!
//! - a key is pending at most once (dedup); its earliest requested time wins, so an
//!   event (due now) overrides a later requeue;
//! - a key is never handed out while it is running; if it becomes due meanwhile it is
//!   *held* and handed out exactly once when the running reconcile finishes;
//! - consecutive failures are counted per key and reset by a success.
//!
//! It is plain state driven with explicit `now`s, so it is tested without any clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use tokio::time::Instant;

use crate::ObjectKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Due at this time (an entry in `timers` carries the same time).
    At(Instant),
    /// Due, but the key is running: handed out when it finishes.
    Held,
    /// Due and not running: in `ready`.
    Ready,
}

#[derive(Debug, Default)]
pub(crate) struct WorkQueue {
    pending: HashMap<ObjectKey, Pending>,
    /// Deadlines, earliest first; entries that no longer match `pending` are skipped.
    timers: BinaryHeap<Reverse<(Instant, u64, ObjectKey)>>,
    seq: u64,
    ready: VecDeque<ObjectKey>,
    running: HashSet<ObjectKey>,
    failures: HashMap<ObjectKey, u32>,
}

impl WorkQueue {
    /// Asks for `key` to be reconciled at `at` (or earlier if it already is due earlier).
    pub fn schedule(&mut self, key: ObjectKey, at: Instant) {
        match self.pending.get(&key) {
            Some(Pending::Held | Pending::Ready) => return,
            Some(Pending::At(due)) if *due <= at => return,
            _ => {}
        }
        self.seq += 1;
        self.timers.push(Reverse((at, self.seq, key.clone())));
        self.pending.insert(key, Pending::At(at));
    }

    /// The next key to reconcile now, marked running; `None` if nothing is due.
    pub fn pop(&mut self, now: Instant) -> Option<ObjectKey> {
        if let Some(key) = self.ready.pop_front() {
            self.pending.remove(&key);
            self.running.insert(key.clone());
            return Some(key);
        }
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, _, key)) = self.timers.pop().expect("peeked");
            if self.pending.get(&key) != Some(&Pending::At(at)) {
                continue; // superseded by an earlier schedule
            }
            if self.running.contains(&key) {
                self.pending.insert(key, Pending::Held);
                continue;
            }
            self.pending.remove(&key);
            self.running.insert(key.clone());
            return Some(key);
        }
        None
    }

    /// When the next timer fires (`None`: nothing scheduled). Held and ready keys do not
    /// need a timer: `finish` and `pop` take care of them.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, _, key))) = self.timers.peek() {
            if self.pending.get(key) == Some(&Pending::At(*at)) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    /// Whether some key can be handed out by `pop` right now.
    #[cfg(test)]
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Records that `key`'s reconcile ended; returns its consecutive failure count (0 after
    /// a success). A key held meanwhile becomes ready.
    pub fn finish(&mut self, key: &ObjectKey, succeeded: bool) -> u32 {
        self.running.remove(key);
        if self.pending.get(key) == Some(&Pending::Held) {
            self.pending.insert(key.clone(), Pending::Ready);
            self.ready.push_back(key.clone());
        }
        if succeeded {
            self.failures.remove(key);
            0
        } else {
            let n = self.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        }
    }

    /// How many times in a row `key`'s reconcile has failed.
    pub fn failures(&self, key: &ObjectKey) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// Keys waiting (scheduled, held or ready), not counting running ones.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn k(s: &str) -> ObjectKey {
        ObjectKey::from(s)
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn dedupes_and_hands_out_in_deadline_order() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule(k("b"), t0 + ms(2));
        q.schedule(k("a"), t0 + ms(1));
        q.schedule(k("a"), t0 + ms(1));
        q.schedule(k("b"), t0 + ms(5));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_deadline(), Some(t0 + ms(1)));
        assert_eq!(q.pop(t0), None);
        assert_eq!(q.pop(t0 + ms(10)), Some(k("a")));
        assert_eq!(q.pop(t0 + ms(10)), Some(k("b")));
        assert_eq!(q.pop(t0 + ms(10)), None);
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.running(), 2);
    }

    #[test]
    fn earliest_deadline_wins() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule(k("a"), t0 + ms(100)); // a requeue
        q.schedule(k("a"), t0); // an event overrides it
        assert_eq!(q.next_deadline(), Some(t0));
        assert_eq!(q.pop(t0), Some(k("a")));
        q.finish(&k("a"), true);
        // The superseded timer is gone with it: nothing fires at +100ms.
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.pop(t0 + ms(200)), None);

        // A later request does not delay an earlier one.
        q.schedule(k("a"), t0 + ms(10));
        q.schedule(k("a"), t0 + ms(50));
        assert_eq!(q.next_deadline(), Some(t0 + ms(10)));
    }

    #[test]
    fn running_key_is_held_and_rerun_exactly_once() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule(k("a"), t0);
        assert_eq!(q.pop(t0), Some(k("a")));
        // Three events arrive while it runs.
        for _ in 0..3 {
            q.schedule(k("a"), t0);
        }
        q.schedule(k("b"), t0);
        // "a" is not handed out again while running; "b" is.
        assert_eq!(q.pop(t0), Some(k("b")));
        assert_eq!(q.pop(t0), None);
        // More events while held are absorbed.
        q.schedule(k("a"), t0);
        assert_eq!(q.len(), 1);
        assert_eq!(q.finish(&k("a"), true), 0);
        assert!(q.has_ready());
        assert_eq!(q.pop(t0), Some(k("a")));
        assert_eq!(q.pop(t0), None);
        q.finish(&k("a"), true);
        assert_eq!(q.pop(t0 + ms(1000)), None);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn requeue_while_pending_event_keeps_the_event() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule(k("a"), t0);
        assert_eq!(q.pop(t0), Some(k("a")));
        q.schedule(k("a"), t0); // event during the run: held once due
        assert_eq!(q.pop(t0), None);
        q.finish(&k("a"), true);
        q.schedule(k("a"), t0 + ms(500)); // the run asked for a requeue: the event wins
        assert_eq!(q.pop(t0), Some(k("a")));
    }

    #[test]
    fn failures_count_up_and_reset_on_success() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        for expected in 1..=3 {
            q.schedule(k("a"), t0);
            assert_eq!(q.pop(t0), Some(k("a")));
            assert_eq!(q.finish(&k("a"), false), expected);
        }
        q.schedule(k("a"), t0);
        q.pop(t0);
        assert_eq!(q.finish(&k("a"), true), 0);
        q.schedule(k("a"), t0);
        q.pop(t0);
        assert_eq!(q.finish(&k("a"), false), 1);
    }
}
