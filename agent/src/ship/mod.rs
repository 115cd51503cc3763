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

/// An event given its spool key and offered to the sender, whose write
/// has not succeeded yet: a kill the pipeline keeps while the disk fails
/// is still delivered, and needs no write once the collector stored it.
/// Dropping it gives the key up (an answer for it then settles nothing).
#[derive(Debug)]
pub struct Reserved {
    key: u64,
    event: Arc<OomEvent>,
    keys: Arc<Mutex<KeyBook>>,
}

impl Reserved {
    pub fn event(&self) -> &OomEvent {
        &self.event
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // A written key is finished already; this finds nothing then.
        locked(&self.keys).finish(self.key);
    }
}

/// What became of an event given to the spool.
#[derive(Debug)]
pub enum Spooled {
    /// It is on disk.
    Written,
    /// The collector stored it before it was written, so it was not;
    /// `failed`: the error of a write attempt that failed before (the
    /// disk is failing all the same).
    Delivered { failed: Option<SpoolError> },
}

/// An event the spool did not take after its attempts.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct NotSpooled {
    /// Still offered to the collector; retry its write with
    /// [`SharedSpool::write_reserved`].
    pub reserved: Reserved,
    pub error: SpoolError,
}

/// The collector's answer for a written event: let go, or set aside.
fn apply(spool: &mut Spool, key: u64, settlement: Settlement) {
    match settlement {
        Settlement::Stored => {
            if let Err(error) = spool.remove(key) {
                warn!(%error, "acknowledged event not removed from the spool; it will be resent");
            }
        }
        Settlement::Rejected => spool.reject(key),
    }
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
        let reserved = self.reserve(event);
        self.write_reserved(&reserved).await.map(|_| reserved.key)
    }

    /// Appends, retrying a failing disk a few times; a failure is logged
    /// and counted, and returned with the event's reservation (still
    /// offered to the collector: see [`Reserved`]). The pipeline's cursor
    /// moves past the kill once this returns `Ok`.
    pub async fn append_retrying(&self, event: &OomEvent) -> Result<Spooled, NotSpooled> {
        let reserved = self.reserve(event.clone());
        let mut attempt = 1;
        let mut failed = None;
        loop {
            match self.write_reserved(&reserved).await {
                Ok(Spooled::Delivered { .. }) => return Ok(Spooled::Delivered { failed }),
                Ok(Spooled::Written) => return Ok(Spooled::Written),
                Err(error) if attempt < SPOOL_ATTEMPTS => {
                    warn!(%error, id = %event.id, attempt, "cannot spool an event; retrying");
                    failed = Some(error);
                    tokio::time::sleep(SPOOL_RETRY_PAUSE).await;
                    attempt += 1;
                }
                Err(error) => {
                    metrics::SpoolWriteFailed {
                        id: &event.id,
                        error: &error,
                    }
                    .emit(&self.metrics);
                    return Err(NotSpooled { reserved, error });
                }
            }
        }
    }

    /// Gives `event` its key and offers it to the sender, before any
    /// write. Fitted to what the collector takes first, as the spool
    /// would, so that both copies are the same.
    pub fn reserve(&self, mut event: OomEvent) -> Reserved {
        spool::fit_event(&mut event, oomlens_common::limits::MAX_EVENT_BYTES);
        let reserved = Reserved {
            key: locked(&self.keys).reserve(),
            event: Arc::new(event),
            keys: Arc::clone(&self.keys),
        };
        self.offer(&reserved);
        reserved
    }

    /// Offers a reserved event to the sender again (one whose writes keep
    /// failing: the collector can store it all the same), unless the
    /// collector answered for it already.
    pub fn offer_again(&self, reserved: &Reserved) {
        if locked(&self.keys).answered(reserved.key).is_none() {
            self.offer(reserved);
        }
    }

    fn offer(&self, reserved: &Reserved) {
        if let Some(sender) = locked(&self.early).as_ref() {
            // Full or closed: the sender reads it from the spool instead.
            let _ = sender.try_send((reserved.key, Arc::clone(&reserved.event)));
        }
    }

    /// Whether the collector stored a reserved event: then it needs no
    /// spool write.
    pub fn stored_early(&self, reserved: &Reserved) -> bool {
        locked(&self.keys).answered(reserved.key) == Some(Settlement::Stored)
    }

    /// One attempt to write a reserved event, unless the collector stored
    /// it first; an answer that came during the write is applied to the
    /// new file. A written event wakes the sender.
    pub async fn write_reserved(&self, reserved: &Reserved) -> Result<Spooled, SpoolError> {
        let key = reserved.key;
        let keys = Arc::clone(&self.keys);
        let event = Arc::clone(&reserved.event);
        let metrics = self.metrics.clone();
        let written = self
            .with(move |spool| {
                if locked(&keys).stored_before_write(key) {
                    metrics.writes_skipped.inc();
                    return Ok(Spooled::Delivered { failed: None });
                }
                spool.append_as(key, &event)?;
                if let Some(settlement) = locked(&keys).finish(key) {
                    apply(spool, key, settlement);
                }
                Ok(Spooled::Written)
            })
            .await?;
        if matches!(written, Spooled::Written) {
            self.appended.notify_one();
        }
        Ok(written)
    }

    /// Whether the spool takes writes now: a small file written, synced
    /// and removed (for readiness while no kill waits to be written).
    pub async fn probe(&self) -> Result<(), SpoolError> {
        self.with(Spool::probe).await
    }

    /// The collector answered for `key`: the spool lets it go (stored) or
    /// sets it aside (rejected), now or, if its write is still running,
    /// once written.
    pub async fn settle(&self, key: u64, settlement: Settlement) {
        if locked(&self.keys).answer(key, settlement) {
            return;
        }
        self.with(move |spool| apply(spool, key, settlement)).await;
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
