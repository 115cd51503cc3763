//! Shipping events to the collector: the durable [`spool`] and the gRPC
//! [`sender`] that empties it as the collector acknowledges each event.
//!
//! Delivery is at least once: an event leaves the spool only after the
//! collector said it is stored (or already was). The collector's ingest is
//! idempotent by event id, so resends after a lost ack or a restart are
//! stored once. Each event is sent as its spool write starts, not after
//! it ([`early`]): the two fsyncs run side by side.

pub mod early;
pub mod metrics;
pub mod sender;
pub mod spool;
pub mod status;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use oomlens_proto::v1::OomEvent;
use tokio::sync::{Notify, mpsc};
use tracing::warn;

pub use early::{EarlyEvent, Settlement};
pub use metrics::{SendFailure, SenderMetrics, SpoolMetrics};
pub use sender::{ShipperConfig, SideItem, run as run_shipper};
pub use spool::{Spool, SpoolError, SpoolStats};

use crate::telemetry::Happening as _;
use early::KeyBook;

/// Attempts to spool one event before it is given up.
const SPOOL_ATTEMPTS: u32 = 3;
const SPOOL_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The spool shared by the pipeline (appends) and the sender (removes).
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    appended: Arc<Notify>,
    /// Keys and early answers ([`early`]); never held across I/O.
    keys: Arc<Mutex<KeyBook>>,
    /// Where events go as their write starts, once a sender runs.
    early: Arc<Mutex<Option<mpsc::Sender<EarlyEvent>>>>,
    metrics: SpoolMetrics,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedSpool {
    pub fn open(dir: &Path, max_bytes: u64, metrics: SpoolMetrics) -> Result<Self, SpoolError> {
        let spool = Spool::open(dir, max_bytes, metrics.clone())?;
        Ok(Self {
            keys: Arc::new(Mutex::new(KeyBook::new(spool.next_key()))),
            inner: Arc::new(Mutex::new(spool)),
            appended: Arc::new(Notify::new()),
            early: Arc::new(Mutex::new(None)),
            metrics,
        })
    }

    /// Runs `f` on the spool on a blocking thread (file I/O and fsync).
    pub async fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Spool) -> T + Send + 'static) -> T {
        let inner = Arc::clone(&self.inner);
        let run = move || f(&mut locked(&inner));
        match tokio::task::spawn_blocking(run).await {
            Ok(value) => value,
            // The closure panicked: surface it where it happened.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// From now on, each appended event is also offered to the returned
    /// receiver as its write starts (a full or dropped receiver misses
    /// it: the sender then takes it from the spool). Replaces an earlier
    /// receiver.
    pub fn early_events(&self, capacity: usize) -> mpsc::Receiver<EarlyEvent> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        *locked(&self.early) = Some(sender);
        receiver
    }

    /// Durably stores `event` and wakes the sender; returns its key.
    pub async fn append(&self, event: OomEvent) -> Result<u64, SpoolError> {
        let (key, event) = self.start(event);
        let written = self.write(key, &event).await;
        self.end(key, written.is_err());
        written.map(|()| key)
    }

    /// Appends, retrying a failing disk a few times; a failure is logged
    /// and counted, and returned. The pipeline's cursor moves past the kill
    /// once this returns.
    pub async fn append_retrying(&self, event: &OomEvent) -> Result<(), SpoolError> {
        let (key, event) = self.start(event.clone());
        let mut attempt = 1;
        let written = loop {
            match self.write(key, &event).await {
                Err(error) if attempt < SPOOL_ATTEMPTS => {
                    warn!(%error, id = %event.id, attempt, "cannot spool an event; retrying");
                    tokio::time::sleep(SPOOL_RETRY_PAUSE).await;
                    attempt += 1;
                }
                written => break written,
            }
        };
        self.end(key, written.is_err());
        if let Err(error) = &written {
            metrics::SpoolWriteFailed { id: &event.id, error }.emit(&self.metrics);
        }
        written
    }

    /// Gives `event` its key and offers it to the sender. Fitted to what
    /// the collector takes first, as the spool would, so that both copies
    /// are the same.
    fn start(&self, mut event: OomEvent) -> (u64, Arc<OomEvent>) {
        spool::fit_event(&mut event, oomlens_common::limits::MAX_EVENT_BYTES);
        let event = Arc::new(event);
        let key = locked(&self.keys).reserve();
        if let Some(sender) = locked(&self.early).as_ref() {
            // Full or closed: the sender reads it from the spool instead.
            let _ = sender.try_send((key, Arc::clone(&event)));
        }
        (key, event)
    }

    /// One attempt to write `key`, unless the collector stored it first;
    /// an answer that came during the write is applied to the new file.
    async fn write(&self, key: u64, event: &Arc<OomEvent>) -> Result<(), SpoolError> {
        let keys = Arc::clone(&self.keys);
        let event = Arc::clone(event);
        let metrics = self.metrics.clone();
        self.with(move |spool| {
            if locked(&keys).stored_before_write(key) {
                metrics.writes_skipped.inc();
                return Ok(());
            }
            spool.append_as(key, &event)?;
            match locked(&keys).finish(key) {
                Some(Settlement::Stored) => {
                    if let Err(error) = spool.remove(key) {
                        warn!(%error, "acknowledged event not removed from the spool; it will be resent");
                    }
                }
                Some(Settlement::Rejected) => spool.reject(key),
                None => {}
            }
            Ok(())
        })
        .await
    }

    /// After the last attempt: a failed key is given up (an answer for
    /// it now finds nothing to remove); a written one wakes the sender.
    fn end(&self, key: u64, failed: bool) {
        if failed {
            locked(&self.keys).finish(key);
        } else {
            self.appended.notify_one();
        }
    }

    /// The collector answered for `key`: the spool lets it go (stored) or
    /// sets it aside (rejected), now or, if its write is still running,
    /// once written.
    pub async fn settle(&self, key: u64, settlement: Settlement) {
        if locked(&self.keys).answer(key, settlement) {
            return;
        }
        match settlement {
            Settlement::Stored => {
                if let Err(error) = self.with(move |spool| spool.remove(key)).await {
                    warn!(%error, "acknowledged event not removed from the spool; it will be resent");
                }
            }
            Settlement::Rejected => self.with(move |spool| spool.reject(key)).await,
        }
    }

    /// What the spool holds; never waits for a write.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats::of(&self.metrics)
    }

    pub(crate) async fn appended(&self) {
        self.appended.notified().await;
    }
}

#[cfg(test)]
mod tests;
