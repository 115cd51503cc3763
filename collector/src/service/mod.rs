//! The gRPC services: `IngestService` (agents) and `EventService` (the CLI
//! and subscribing tools), over one shared [`Collector`].
//!
//! This module holds the shared state; `ingest` receives events, `writer`
//! stores them (and knows whether the store can write), `queries` answers
//! the CLI, `subscribe` streams events and warnings to subscribers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::Stream;
use oomlens_proto::v1::ContainerMemoryStatus;
use tokio::sync::mpsc;
use tonic::Status;

use crate::analysis::Rules;
use crate::hub::Hub;
use crate::metrics::CollectorMetrics;
use crate::store::{Store, StoreError};

mod ingest;
mod queries;
mod subscribe;
mod writer;

pub use ingest::Ingest;
pub use queries::Events;

use writer::{WRITE_QUEUE, WriteRequest, write_batches};

/// The latest status of each live container, by (node, cgroup), with
/// when it arrived.
type StatusBoard = HashMap<(String, String), (Instant, ContainerMemoryStatus)>;

/// The state the services share. Cheap to clone.
#[derive(Clone)]
pub struct Collector {
    store: Store,
    hub: Hub,
    writes: mpsc::Sender<WriteRequest>,
    statuses: Arc<Mutex<StatusBoard>>,
    metrics: Arc<CollectorMetrics>,
    rules: Rules,
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
        let hub = Hub::new(1024);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let shared = store.postgres_pool().is_some();
        tokio::spawn(write_batches(
            store.clone(),
            hub.clone(),
            !shared,
            queue,
            Arc::clone(&metrics),
        ));
        if shared {
            let last = store.last_seq().await?;
            tokio::spawn(crate::replicas::relay(store.clone(), hub.clone(), last));
        }
        Ok(Self {
            store,
            hub,
            writes,
            statuses: Arc::default(),
            metrics,
            rules: Rules::default(),
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

    pub fn metrics(&self) -> &Arc<CollectorMetrics> {
        &self.metrics
    }

    fn record_status(&self, status: ContainerMemoryStatus) {
        let key = (status.node.clone(), status.cgroup.clone());
        let mut statuses = self
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        statuses.insert(key, (Instant::now(), status));
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::PageToken(_) => Status::invalid_argument(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    }
}
