//! Sending an event while it is being spooled.
//!
//! The spool's fsync and the collector's durable commit are the two
//! slowest steps on a kill's way to a subscriber (about 2 ms each); one
//! after the other they add up. So each event gets its spool key before it
//! is written, and goes to the sender at once ([`EarlyEvent`]) while the
//! write runs on a blocking thread.
//!
//! Durability is unchanged. The pipeline's cursor still waits for the
//! write, or for the collector's acknowledgement, which comes only once it
//! stored the event durably; the collector stores each id once. The [`KeyBook`] settles the race between the
//! write and the acknowledgement: an acknowledgement that comes before the
//! write began skips the write (the collector has the event); one that
//! comes while it runs is applied to the file once it is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use oomlens_proto::v1::OomEvent;

/// An event handed to the sender before its spool write finished.
pub type EarlyEvent = (u64, Arc<OomEvent>);

/// What the collector answered for a spooled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Stored, now or before: the spool lets the event go.
    Stored,
    /// Refused for good: the spool keeps it aside, never resent.
    Rejected,
}

/// Spool keys given out, and answers that came before their writes
/// finished. Held only for a moment, never across I/O; when both locks
/// are taken, the spool's is taken first.
#[derive(Debug)]
pub struct KeyBook {
    next: u64,
    /// Keys whose write is not over (it may be retried).
    writing: HashSet<u64>,
    /// Answers for keys still in `writing`.
    early_answers: HashMap<u64, Settlement>,
}

impl KeyBook {
    /// A book whose first key is `next`.
    pub fn new(next: u64) -> Self {
        Self {
            next,
            writing: HashSet::new(),
            early_answers: HashMap::new(),
        }
    }

    /// A new key, its write about to start.
    pub fn reserve(&mut self) -> u64 {
        let key = self.next;
        self.next += 1;
        self.writing.insert(key);
        key
    }

    /// The collector answered for `key`. True when the key's write is not
    /// over: the answer waits for it ([`KeyBook::finish`]). False when it
    /// is (or the key was never given out): the caller applies the answer
    /// to the spool itself.
    pub fn answer(&mut self, key: u64, settlement: Settlement) -> bool {
        if !self.writing.contains(&key) {
            return false;
        }
        self.early_answers.insert(key, settlement);
        true
    }

    /// Before writing `key`: whether the collector already stored it (the
    /// write can be skipped; the key is then finished).
    pub fn stored_before_write(&mut self, key: u64) -> bool {
        if self.early_answers.get(&key) == Some(&Settlement::Stored) {
            self.finish(key);
            return true;
        }
        false
    }

    /// The write of `key` is over; the answer that came during it, if any.
    pub fn finish(&mut self, key: u64) -> Option<Settlement> {
        self.writing.remove(&key);
        self.early_answers.remove(&key)
    }

    /// What the collector answered for a key whose write is not over.
    pub fn answered(&self, key: u64) -> Option<Settlement> {
        self.early_answers.get(&key).copied()
    }

    /// Keys whose write is not over.
    pub fn writing(&self) -> usize {
        self.writing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_before_the_write_skips_it() {
        let mut book = KeyBook::new(7);
        let key = book.reserve();
        assert_eq!(key, 7);
        assert!(book.answer(key, Settlement::Stored));
        assert!(book.stored_before_write(key));
        assert_eq!(book.writing(), 0);
        // Once over, later answers go to the spool.
        assert!(!book.answer(key, Settlement::Stored));
    }

    #[test]
    fn a_rejection_before_the_write_still_writes_then_sets_it_aside() {
        let mut book = KeyBook::new(1);
        let key = book.reserve();
        assert!(book.answer(key, Settlement::Rejected));
        assert!(!book.stored_before_write(key));
        assert_eq!(book.finish(key), Some(Settlement::Rejected));
    }

    #[test]
    fn an_answer_during_the_write_is_handed_over_when_it_finishes() {
        let mut book = KeyBook::new(1);
        let first = book.reserve();
        let second = book.reserve();
        assert!(!book.stored_before_write(first));
        assert!(book.answer(first, Settlement::Stored));
        assert_eq!(book.finish(first), Some(Settlement::Stored));
        assert_eq!(book.finish(second), None);
        assert_eq!(book.writing(), 0);
    }

    #[test]
    fn answers_for_finished_or_unknown_keys_are_the_callers() {
        let mut book = KeyBook::new(1);
        let key = book.reserve();
        assert_eq!(book.finish(key), None);
        assert!(!book.answer(key, Settlement::Stored));
        assert!(!book.answer(99, Settlement::Rejected));
        assert_eq!(book.writing(), 0);
    }
}
