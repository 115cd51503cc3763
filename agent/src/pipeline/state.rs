//! The pipeline's writes to the state directory: the kernel log cursor and
//! the spool. A failing write makes the agent not ready (said once, with a
//! metric) and loses nothing: a kill the spool did not take is kept here
//! and offered again, and the cursor stays before it, so a restart reads
//! it again from the kernel log (the collector stores it once, by id).
//! A kept kill is offered to the collector all the while, and once the
//! collector stored it, it needs the spool no more.

use std::collections::VecDeque;
use std::fmt::Display;
use std::path::PathBuf;

use oomlens_proto::v1::OomEvent;
use tracing::error;

use super::metrics::{PipelineMetrics, StateWrites};
use crate::kmsg::Cursor;
use crate::ship::{NotSpooled, Reserved, SharedSpool, Spooled};
use crate::telemetry::{Happening as _, Readiness};

/// Kills kept in memory while the spool takes no writes; older ones are
/// then dropped from memory (the cursor still stays before them).
pub(super) const UNSPOOLED_MAX: usize = 256;

/// The kernel log position, and what the state directory took.
#[derive(Debug)]
pub(super) struct StateDir {
    cursor_path: Option<PathBuf>,
    /// The last record read.
    pub(super) last_seq: Option<u64>,
    /// The last position saved.
    saved_seq: Option<u64>,
    cursor_failing: bool,
    spool_failing: bool,
    /// What was last said (and set as readiness).
    said_writable: bool,
    /// Kills the spool did not take, oldest first.
    unspooled: VecDeque<Unspooled>,
    /// The oldest kill not spooled in this run (kept or dropped): the
    /// cursor is never saved past it.
    hold_before: Option<u64>,
    /// A kept kill was dropped from memory in this run.
    dropped_any: bool,
}

#[derive(Debug)]
struct Unspooled {
    /// The kill, its spool key, offered to the collector.
    reserved: Reserved,
}

impl StateDir {
    pub(super) fn new(cursor_path: Option<PathBuf>, from: Option<u64>) -> Self {
        Self {
            cursor_path,
            last_seq: from,
            saved_seq: None,
            cursor_failing: false,
            spool_failing: false,
            said_writable: true,
            unspooled: VecDeque::new(),
            hold_before: None,
            dropped_any: false,
        }
    }

    /// Saves the cursor at the last record read, or before the oldest of
    /// `open` (reports in progress, kills waiting) and of kills not spooled.
    pub(super) fn save_cursor(
        &mut self,
        boot_id: &str,
        open: impl Iterator<Item = u64>,
        metrics: &PipelineMetrics,
        readiness: &Readiness,
    ) {
        let (Some(path), Some(last)) = (&self.cursor_path, self.last_seq) else {
            return;
        };
        let safe = open
            .chain(self.hold_before)
            .map(|seq| seq.saturating_sub(1))
            .fold(last, u64::min);
        if self.saved_seq == Some(safe) {
            return;
        }
        let cursor = Cursor {
            boot_id: boot_id.to_owned(),
            seq: safe,
        };
        let saved = cursor.save(path);
        // A failed save is tried again at the next one (once a second at
        // least).
        self.saved_seq = saved.is_ok().then_some(safe);
        self.cursor_failing = saved.is_err();
        self.said("saving the kernel log cursor", saved.err(), metrics, readiness);
    }

    /// Spools `event` (after the kills kept before it, in order), or keeps
    /// it when the spool takes no writes.
    pub(super) async fn spool(
        &mut self,
        spool: &SharedSpool,
        event: &OomEvent,
        seq: Option<u64>,
        metrics: &PipelineMetrics,
        readiness: &Readiness,
    ) {
        self.offer_kept(spool, metrics, readiness).await;
        // Retried only on a disk believed to work: while it fails (the
        // probe or a kept kill's write just said so), the kill is kept at
        // once, so a storm is not slowed by the retries' pauses.
        let reserved = if self.unspooled.is_empty() && !self.spool_failing {
            match spool.append_retrying(event).await {
                Ok(spooled) => return self.spooled(spooled, metrics, readiness),
                Err(NotSpooled { reserved, error }) => {
                    self.spool_failing = true;
                    self.said("spooling a kill", Some(error), metrics, readiness);
                    reserved
                }
            }
        } else {
            // Kept (behind the others), and offered to the collector now.
            spool.reserve(event.clone())
        };
        self.keep(reserved, seq, metrics);
    }

    /// Offers the kept kills to the spool again, oldest first, until one
    /// write fails; lets go of those the collector stored meanwhile (they
    /// need no write), and offers the rest to the collector again.
    pub(super) async fn offer_kept(
        &mut self,
        spool: &SharedSpool,
        metrics: &PipelineMetrics,
        readiness: &Readiness,
    ) {
        if self.unspooled.is_empty() {
            if self.spool_failing {
                // Nothing to write, and the collector took what was kept:
                // whether the disk takes writes again is asked directly.
                let probed = spool.probe().await;
                self.spool_failing = probed.is_err();
                self.said("spooling a kill", probed.err(), metrics, readiness);
            }
            return self.release_hold();
        }
        let mut failed = None;
        let mut wrote = false;
        let mut still_kept = VecDeque::new();
        for kept in std::mem::take(&mut self.unspooled) {
            let done = match &failed {
                None => match spool.write_reserved(&kept.reserved).await {
                    Ok(spooled) => {
                        wrote |= matches!(spooled, Spooled::Written);
                        true
                    }
                    Err(error) => {
                        failed = Some(error);
                        false
                    }
                },
                // No write tried after a failed one.
                Some(_) => spool.stored_early(&kept.reserved),
            };
            if !done {
                spool.offer_again(&kept.reserved);
                still_kept.push_back(kept);
            }
        }
        self.unspooled = still_kept;
        metrics.set_unspooled(self.unspooled.len());
        if let Some(error) = failed {
            self.spool_failing = true;
            self.said("spooling a kill", Some(error), metrics, readiness);
        } else if wrote {
            self.spool_failing = false;
            self.said("spooling a kill", None::<&str>, metrics, readiness);
        }
        self.release_hold();
    }

    /// After a kill left for the spool: a write says the disk takes
    /// writes; a kill the collector stored first says nothing of it,
    /// unless a write of it had failed.
    fn spooled(&mut self, spooled: Spooled, metrics: &PipelineMetrics, readiness: &Readiness) {
        match spooled {
            Spooled::Written => {
                self.spool_failing = false;
                self.said("spooling a kill", None::<&str>, metrics, readiness);
            }
            Spooled::Delivered { failed: Some(error) } => {
                self.spool_failing = true;
                self.said("spooling a kill", Some(error), metrics, readiness);
            }
            Spooled::Delivered { failed: None } => {}
        }
    }

    fn release_hold(&mut self) {
        // Every kept kill is spooled or stored by the collector: the
        // cursor may pass them, unless one was dropped from memory (then
        // only a restart has it again).
        if self.unspooled.is_empty() && !self.dropped_any {
            self.hold_before = None;
        }
    }

    fn keep(&mut self, reserved: Reserved, seq: Option<u64>, metrics: &PipelineMetrics) {
        if let Some(seq) = seq {
            self.hold_before = Some(self.hold_before.map_or(seq, |held| held.min(seq)));
        }
        if self.unspooled.len() >= UNSPOOLED_MAX
            && let Some(dropped) = self.unspooled.pop_front()
        {
            self.dropped_any = true;
            metrics.unspooled_dropped();
            error!(
                id = %dropped.reserved.event().id,
                kept = UNSPOOLED_MAX,
                "too many kills waiting for the spool: dropped from memory (a restart reads it again from the kernel log if the log still holds it)"
            );
        }
        self.unspooled.push_back(Unspooled { reserved });
        metrics.set_unspooled(self.unspooled.len());
    }

    /// Kills not spooled yet (at shutdown: a restart reads them again).
    pub(super) fn unspooled_ids(&self) -> Vec<&str> {
        self.unspooled
            .iter()
            .map(|kept| kept.reserved.event().id.as_str())
            .collect()
    }

    /// Says a change of writability once, and sets readiness.
    fn said(
        &mut self,
        what: &str,
        error: Option<impl Display>,
        metrics: &PipelineMetrics,
        readiness: &Readiness,
    ) {
        let writable = !self.cursor_failing && !self.spool_failing;
        if writable == self.said_writable {
            return;
        }
        self.said_writable = writable;
        StateWrites {
            writable,
            what,
            error: error.map(|e| e.to_string()),
        }
        .emit(metrics);
        readiness.set_state_writable(writable);
    }
}
