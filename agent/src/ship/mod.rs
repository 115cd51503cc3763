//! Shipping events to the collector: the durable [`spool`] and the gRPC
//! [`sender`] that empties it as the collector acknowledges each event.
//!
//! Delivery is at least once: an event leaves the spool only after the
//! collector said it is stored (or already was). The collector's ingest is
//! idempotent by event id, so resends after a lost ack or a restart are
//! stored once.

pub mod metrics;
pub mod sender;
pub mod spool;
pub mod status;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oomlens_proto::v1::OomEvent;
use tokio::sync::Notify;
use tracing::warn;

pub use metrics::{SendFailure, SenderMetrics, SpoolMetrics};
pub use sender::{ShipperConfig, SideItem, run as run_shipper};
pub use spool::{Spool, SpoolError, SpoolStats};

use crate::telemetry::Happening as _;

/// Attempts to spool one event before it is given up.
const SPOOL_ATTEMPTS: u32 = 3;
const SPOOL_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The spool shared by the pipeline (appends) and the sender (removes).
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    appended: Arc<Notify>,
}

impl SharedSpool {
    pub fn open(dir: &Path, max_bytes: u64, metrics: SpoolMetrics) -> Result<Self, SpoolError> {
        Ok(Self {
            inner: Arc::new(Mutex::new(Spool::open(dir, max_bytes, metrics)?)),
            appended: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` on the spool on a blocking thread (file I/O and fsync).
    pub async fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Spool) -> T + Send + 'static) -> T {
        let inner = Arc::clone(&self.inner);
        let run = move || {
            let mut spool = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut spool)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(value) => value,
            // The closure panicked: surface it where it happened.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// Durably stores `event` and wakes the sender.
    pub async fn append(&self, event: OomEvent) -> Result<u64, SpoolError> {
        let key = self.with(move |spool| spool.append(&event)).await?;
        self.appended.notify_one();
        Ok(key)
    }

    /// Appends, retrying a failing disk a few times; a failure is logged
    /// and counted, and returned. The pipeline's cursor moves past the kill
    /// once this returns.
    pub async fn append_retrying(&self, event: &OomEvent) -> Result<(), SpoolError> {
        let mut last_error = None;
        for attempt in 1..=SPOOL_ATTEMPTS {
            match self.append(event.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) if attempt < SPOOL_ATTEMPTS => {
                    warn!(%error, id = %event.id, attempt, "cannot spool an event; retrying");
                    tokio::time::sleep(SPOOL_RETRY_PAUSE).await;
                }
                Err(error) => {
                    let metrics = self.lock().metrics().clone();
                    metrics::SpoolWriteFailed {
                        id: &event.id,
                        error: &error,
                    }
                    .emit(&metrics);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| unreachable!("at least one attempt")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn stats(&self) -> SpoolStats {
        self.lock().stats()
    }

    pub(crate) async fn appended(&self) {
        self.appended.notified().await;
    }
}
