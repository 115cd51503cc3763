//! Keeps the kernel log clock's offset from `CLOCK_MONOTONIC` current.
//!
//! The two clocks drift apart with uptime (about a third of a millisecond
//! an hour on one test VM), while OOM notices are matched to kills within
//! 10 ms: an offset measured only at start goes stale after a day or so of
//! agent uptime. Each probe writes one debug-level line to `/dev/kmsg` and
//! waits for it to come back, so it runs off the async threads and the
//! pipeline only picks up its result.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::{ClockProbeError, log_clock_offset_us};

/// How often the live agent measures again: the drift stays well under a
/// millisecond, for one kernel log line an hour.
pub const REMEASURE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub(super) struct LogClockWatch {
    kmsg: PathBuf,
    every: Duration,
    next: Instant,
    probing: Option<JoinHandle<Result<i64, ClockProbeError>>>,
}

impl LogClockWatch {
    pub(super) fn new(kmsg: PathBuf, every: Duration) -> Self {
        Self {
            kmsg,
            every,
            next: Instant::now() + every,
            probing: None,
        }
    }

    /// Called on each tick: starts a probe when one is due, and returns the
    /// outcome of one that finished.
    pub(super) async fn poll(&mut self) -> Option<Result<i64, ClockProbeError>> {
        if let Some(probing) = self.probing.take_if(|p| p.is_finished()) {
            return match probing.await {
                Ok(outcome) => Some(outcome),
                // The probe panicked: nothing measured, try again later.
                Err(error) => {
                    tracing::warn!(%error, "the kernel log clock probe failed");
                    None
                }
            };
        }
        let now = Instant::now();
        if self.probing.is_none() && now >= self.next {
            self.next = now + self.every;
            let kmsg = self.kmsg.clone();
            self.probing = Some(tokio::task::spawn_blocking(move || log_clock_offset_us(&kmsg)));
        }
        None
    }
}
