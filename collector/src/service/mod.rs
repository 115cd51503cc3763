//! The gRPC services: `IngestService` (agents) and `EventService` (the CLI
//! and subscribing tools), over one shared [`Collector`].
//!
//! This module holds the shared state; `ingest` receives events, `writer`
//! stores them (and knows whether the store can write), `queries` answers
//! the CLI, `subscribe` streams events and warnings to subscribers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use oomlens_proto::v1::ContainerMemoryStatus;
use tokio::sync::mpsc;
use tonic::Status;

use crate::analysis::Rules;
use crate::hub::{Hub, HubLimits};
use crate::metrics::CollectorMetrics;
use crate::store::{Store, StoreError};

mod fleet;
mod ingest;
mod outbox;
mod queries;
mod routes;
mod statuses;
mod subscribe;
mod writer;

pub(crate) use fleet::warning_from;
pub use ingest::Ingest;
pub use queries::Events;
pub use routes::EventRoutes;
pub use statuses::{MAX_STATUSES, STATUS_TTL};
pub use subscribe::{MAX_SUBSCRIBERS, SLOW_AFTER, SUBSCRIBER_BYTES, SUBSCRIBERS_BYTES};

pub use writer::WRITE_QUEUE_BYTES;
use writer::{WRITE_QUEUE, WriteRequest, write_batches};

/// The bounds on what the collector holds for its clients (documented in
/// docs/reliability.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The recent past kept for live subscribers.
    pub hub: HubLimits,
    /// Responses one subscriber's client may leave waiting.
    pub subscriber_bytes: usize,
    /// Responses all subscribers' clients together may leave waiting.
    pub subscribers_bytes: usize,
    /// How long a subscriber's client may take nothing while responses wait.
    pub slow_after: Duration,
    pub max_subscribers: i64,
    /// Containers on the status board.
    pub max_statuses: usize,
    /// Bytes of events waiting for the store, across all agents.
    pub write_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hub: HubLimits::default(),
            subscriber_bytes: SUBSCRIBER_BYTES,
            subscribers_bytes: SUBSCRIBERS_BYTES,
            slow_after: SLOW_AFTER,
            max_subscribers: MAX_SUBSCRIBERS,
            max_statuses: MAX_STATUSES,
            write_queue_bytes: WRITE_QUEUE_BYTES,
        }
    }
}

/// The state the services share. Cheap to clone.
#[derive(Clone)]
pub struct Collector {
    store: Store,
    hub: Hub,
    writes: mpsc::Sender<WriteRequest>,
    write_budget: Arc<tokio::sync::Semaphore>,
    subscribers_budget: Arc<tokio::sync::Semaphore>,
    backfills: Arc<tokio::sync::Semaphore>,
    statuses: Arc<statuses::StatusBoard>,
    /// On PostgreSQL: statuses and warnings shared with the other replicas.
    fleet: Option<Arc<fleet::Fleet>>,
    metrics: Arc<CollectorMetrics>,
    rules: Rules,
    limits: Limits,
    /// Set when the server shuts down: open streams end so it can.
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Starts the batch writer (and, on PostgreSQL, the listener that
    /// brings other replicas' events to this replica's subscribers).
    pub async fn start(store: Store, metrics: Arc<CollectorMetrics>) -> Result<Self, StoreError> {
        Self::start_with(store, metrics, Limits::default()).await
    }

    /// [`Collector::start`] with other bounds.
    pub async fn start_with(
        store: Store,
        metrics: Arc<CollectorMetrics>,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let hub = Hub::new(limits.hub);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let shared = store.postgres_pool().is_some();
        tokio::spawn(write_batches(
            store.clone(),
            hub.clone(),
            !shared,
            queue,
            Arc::clone(&metrics),
        ));
        let fleet = shared.then(|| fleet::Fleet::start(store.clone()));
        if let Some(fleet) = &fleet {
            let last = store.last_seq().await?;
            tokio::spawn(crate::replicas::relay(
                store.clone(),
                hub.clone(),
                last,
                fleet.replica().to_owned(),
            ));
        }
        let backfilling = store.clone();
        tokio::spawn(async move {
            match backfilling.backfill_verdicts().await {
                Ok(0) => {}
                Ok(filled) => tracing::info!(filled, "verdicts of earlier events filled in for filtering"),
                Err(error) => {
                    tracing::warn!(%error, "cannot fill in the verdicts of earlier events; filtering by verdict misses them")
                }
            }
        });
        let statuses = Arc::new(statuses::StatusBoard::new(limits.max_statuses));
        tokio::spawn(prune_statuses(Arc::downgrade(&statuses), Arc::clone(&metrics)));
        Ok(Self {
            store,
            hub,
            writes,
            write_budget: Arc::new(tokio::sync::Semaphore::new(limits.write_queue_bytes)),
            subscribers_budget: Arc::new(tokio::sync::Semaphore::new(limits.subscribers_bytes)),
            backfills: Arc::new(tokio::sync::Semaphore::new(subscribe::BACKFILLS)),
            statuses,
            fleet,
            metrics,
            rules: Rules::default(),
            limits,
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ends every open ingest and subscription stream (server shutdown):
    /// agents resend what was not acknowledged, subscribers resume from
    /// their cursor elsewhere.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where newly stored events are announced.
    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn metrics(&self) -> &Arc<CollectorMetrics> {
        &self.metrics
    }

    fn record_status(&self, status: ContainerMemoryStatus) {
        if self.statuses.record(status, Instant::now()) == statuses::Recorded::Dropped {
            self.metrics.status_dropped();
        }
    }
}

/// Prunes the status board every few seconds, while the collector lives.
async fn prune_statuses(board: std::sync::Weak<statuses::StatusBoard>, metrics: Arc<CollectorMetrics>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(board) = board.upgrade() else {
            return;
        };
        metrics.statuses(board.prune(Instant::now()));
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::PageToken(_) => Status::invalid_argument(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    }
}
