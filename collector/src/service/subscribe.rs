//! Subscriptions: each subscriber gets its own delivery task, which sends
//! what was stored after its cursor, then live events (and warnings, if
//! asked), and catches up from the store when it falls behind.

use std::sync::Arc;

use oomlens_proto::v1::{
    EventFilter, Lagged, MemoryWarning, SubscribeRequest, SubscribeResponse, subscribe_response,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::filter::matches;
use crate::hub::Published;
use crate::metrics::CollectorMetrics;
use crate::store::{Store, StoredEvent};

use super::{Collector, store_status};

/// Events a subscriber may have in flight before it counts as slow.
const SUBSCRIBER_BUFFER: usize = 256;
/// Backfill page size when a subscriber resumes or lagged.
const BACKFILL_PAGE: u32 = 500;

/// Starts a subscriber's delivery task; its responses.
pub(super) async fn start(
    collector: &Collector,
    request: SubscribeRequest,
) -> Result<ReceiverStream<Result<SubscribeResponse, Status>>, Status> {
    let cursor = match request.cursor.trim() {
        "" => None,
        text => Some(text.parse::<i64>().map_err(|_| {
            Status::invalid_argument(format!(
                "invalid cursor {text:?}: use one a previous response gave"
            ))
        })?),
    };
    // Subscribe to live events before reading the store: nothing
    // stored in between is missed (duplicates are skipped by seq).
    let live = collector.hub.subscribe();
    let start = match cursor {
        Some(seq) => seq,
        None => collector.store.last_seq().await.map_err(store_status)?,
    };
    let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
    let subscription = Subscription {
        store: collector.store.clone(),
        filter: request.filter,
        include_warnings: request.include_warnings,
        last: start,
        sender,
        metrics: Arc::clone(&collector.metrics),
    };
    let closed = collector.closed();
    tokio::spawn(async move {
        tokio::select! {
            () = subscription.run(live) => {}
            () = closed => {}
        }
    });
    Ok(ReceiverStream::new(receiver))
}

fn warning_matches(filter: Option<&EventFilter>, warning: &MemoryWarning) -> bool {
    let Some(f) = filter else { return true };
    let pod = warning.pod.as_ref();
    let within = |list: &[String], value: Option<&String>| {
        list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l == v))
    };
    within(&f.nodes, Some(&warning.node))
        && within(&f.namespaces, pod.and_then(|p| p.namespace.as_ref()))
        && within(&f.pods, pod.and_then(|p| p.name.as_ref()))
        && within(
            &f.containers,
            warning.container.as_ref().and_then(|c| c.name.as_ref()),
        )
}

/// One subscriber's delivery task.
struct Subscription {
    store: Store,
    filter: Option<EventFilter>,
    include_warnings: bool,
    /// The highest seq considered (sent or filtered out).
    last: i64,
    sender: mpsc::Sender<Result<SubscribeResponse, Status>>,
    metrics: Arc<CollectorMetrics>,
}

impl Subscription {
    async fn send_event(&mut self, stored: &StoredEvent) -> bool {
        if stored.seq <= self.last {
            return true;
        }
        self.last = stored.seq;
        if !matches(self.filter.as_ref(), &stored.event) {
            return true;
        }
        self.sender
            .send(Ok(SubscribeResponse {
                item: Some(subscribe_response::Item::Event(stored.event.clone())),
                cursor: stored.seq.to_string(),
            }))
            .await
            .is_ok()
    }

    /// Sends every stored event after `last`; false when the client left.
    async fn backfill(&mut self) -> bool {
        loop {
            let page = match self
                .store
                .after_seq(self.last, self.filter.as_ref(), BACKFILL_PAGE)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    let _ = self
                        .sender
                        .send(Err(Status::unavailable(error.to_string())))
                        .await;
                    return false;
                }
            };
            let full = page.len() == BACKFILL_PAGE as usize;
            for stored in &page {
                if !self.send_event(stored).await {
                    return false;
                }
            }
            if !full {
                return true;
            }
        }
    }

    async fn run(mut self, mut live: broadcast::Receiver<Published>) {
        self.metrics.subscribers(1);
        if self.backfill().await {
            loop {
                let alive = match live.recv().await {
                    Ok(Published::Event(stored)) => self.send_event(&stored).await,
                    Ok(Published::Warning(warning)) => {
                        if self.include_warnings && warning_matches(self.filter.as_ref(), &warning) {
                            self.sender
                                .send(Ok(SubscribeResponse {
                                    item: Some(subscribe_response::Item::Warning((*warning).clone())),
                                    cursor: self.last.to_string(),
                                }))
                                .await
                                .is_ok()
                        } else {
                            true
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.metrics.subscriber_lagged();
                        // Tell the client, then catch up on events from the store.
                        self.sender
                            .send(Ok(SubscribeResponse {
                                item: Some(subscribe_response::Item::Lagged(Lagged { missed })),
                                cursor: self.last.to_string(),
                            }))
                            .await
                            .is_ok()
                            && self.backfill().await
                    }
                    Err(broadcast::error::RecvError::Closed) => false,
                };
                if !alive {
                    break;
                }
            }
        }
        self.metrics.subscribers(-1);
    }
}
