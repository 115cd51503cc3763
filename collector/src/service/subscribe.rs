//! Subscriptions: each subscriber gets its own delivery task, which sends
//! what was stored after its cursor, then live events (and warnings, if
//! asked), and catches up from the store when it falls behind.
//!
//! Memory per subscriber is bounded: it holds its place in the shared
//! ring (see [`crate::hub`]), one backfill page at a time, and at most
//! [`SUBSCRIBER_BYTES`] of responses its client has not taken, and all
//! subscribers together at most [`SUBSCRIBERS_BYTES`]; a client that takes
//! nothing for [`SLOW_AFTER`] is dropped with `RESOURCE_EXHAUSTED`, and
//! resumes from the cursor it last received.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use oomlens_proto::v1::{
    EventFilter, Lagged, MemoryWarning, SubscribeRequest, SubscribeResponse, subscribe_response,
};
use tonic::Status;

use super::outbox::{Outbox, Outgoing, Refused};
use super::{Collector, store_status};
use crate::filter::matches;
use crate::hub::{HubReceiver, Published, RecvError, SharedEvent};
use crate::metrics::CollectorMetrics;
use crate::store::{Histories, Store};

/// Responses a subscriber's client may leave waiting, in bytes (one
/// larger event alone still goes).
pub const SUBSCRIBER_BYTES: usize = 8 << 20;
/// Responses waiting for all subscribers' clients together, in bytes.
pub const SUBSCRIBERS_BYTES: usize = 128 << 20;
/// How long a client may take nothing while responses wait for it.
pub const SLOW_AFTER: Duration = Duration::from_secs(30);
/// Open subscriptions per collector; more are refused.
pub const MAX_SUBSCRIBERS: i64 = 1024;
/// Backfill page size when a subscriber resumes or lagged.
const BACKFILL_PAGE: u32 = 500;
/// Subscribers reading a backfill page at once: a page is held until its
/// client has it queued, so this bounds the pages in memory.
pub(super) const BACKFILLS: usize = 4;

/// Starts a subscriber's delivery task; its responses.
pub(super) async fn start(
    collector: &Collector,
    request: SubscribeRequest,
) -> Result<impl Stream<Item = Result<Outgoing, Status>> + Send + 'static, Status> {
    let limits = collector.limits;
    if collector.metrics.subscriber_count() >= limits.max_subscribers {
        return Err(Status::resource_exhausted(format!(
            "this collector serves {} subscriptions already; try again later",
            limits.max_subscribers
        )));
    }
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
    let (outbox, responses) = Outbox::new(
        limits.subscriber_bytes,
        Arc::clone(&collector.subscribers_budget),
        limits.subscribers_bytes,
        limits.slow_after,
    );
    let subscription = Subscription {
        store: collector.store.clone(),
        filter: request.filter,
        include_warnings: request.include_warnings,
        last: start,
        sent: start,
        slow_after: limits.slow_after,
        outbox: Arc::clone(&outbox),
        backfills: Arc::clone(&collector.backfills),
        metrics: Arc::clone(&collector.metrics),
    };
    let closed = collector.closed();
    let metrics = Arc::clone(&collector.metrics);
    metrics.subscribers(1);
    tokio::spawn(async move {
        tokio::select! {
            () = subscription.run(live) => {}
            // The client left: counted out at once, even while nothing
            // was being sent to it.
            () = outbox.client_gone() => {}
            () = closed => outbox.finish(None),
        }
        metrics.subscribers(-1);
    });
    Ok(responses)
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
    /// The cursor of the last response queued.
    sent: i64,
    slow_after: Duration,
    outbox: Arc<Outbox>,
    backfills: Arc<tokio::sync::Semaphore>,
    metrics: Arc<CollectorMetrics>,
}

impl Subscription {
    /// Queues a response; false when the client left or was dropped.
    async fn send(&mut self, response: impl Into<Outgoing>) -> bool {
        let resume = self.sent;
        let patience = self.slow_after.as_secs_f64();
        let queued = self
            .outbox
            .push(response, || {
                Status::resource_exhausted(format!(
                    "this subscriber took no response for {patience} s: dropped; subscribe again with the cursor of the last response received (at most {resume})"
                ))
            })
            .await;
        match queued {
            Ok(()) => true,
            Err(Refused::Slow) => {
                self.metrics.subscriber_dropped();
                tracing::warn!(
                    resume,
                    "a subscriber read nothing for {} s: dropped",
                    SLOW_AFTER.as_secs()
                );
                false
            }
            Err(Refused::Gone) => false,
        }
    }

    async fn send_event(&mut self, shared: Arc<SharedEvent>) -> bool {
        let seq = shared.seq();
        if seq <= self.last {
            return true;
        }
        self.last = seq;
        if !matches(self.filter.as_ref(), shared.as_kept()) {
            return true;
        }
        let sent = self.send(shared).await;
        self.sent = seq;
        sent
    }

    /// Sends every stored event after `last`, a bounded page at a time;
    /// false when the client left.
    async fn backfill(&mut self) -> bool {
        loop {
            // Never closed; a closed one would only mean no bound.
            let _turn = Arc::clone(&self.backfills).acquire_owned().await.ok();
            let page = match self
                .store
                .after_seq(
                    self.last,
                    self.filter.as_ref(),
                    BACKFILL_PAGE,
                    Histories::AsStored,
                )
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    self.outbox.finish(Some(store_status(error)));
                    return false;
                }
            };
            for stored in page.events {
                if !self.send_event(Arc::new(SharedEvent::new(stored))).await {
                    return false;
                }
            }
            match page.more_after {
                // Rows that did not decode are passed too.
                Some(seq) => self.last = self.last.max(seq),
                None => return true,
            }
        }
    }

    async fn run(mut self, mut live: HubReceiver) {
        if !self.backfill().await {
            return;
        }
        loop {
            let alive = match live.recv().await {
                Ok(Published::Event(shared)) => self.send_event(shared).await,
                Ok(Published::Warning(warning)) => {
                    if self.include_warnings && warning_matches(self.filter.as_ref(), &warning) {
                        let cursor = self.last.to_string();
                        self.send(SubscribeResponse {
                            item: Some(subscribe_response::Item::Warning((*warning).clone())),
                            cursor,
                        })
                        .await
                    } else {
                        true
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    self.metrics.subscriber_lagged();
                    // Tell the client, then catch up on events from the store.
                    let cursor = self.last.to_string();
                    self.send(SubscribeResponse {
                        item: Some(subscribe_response::Item::Lagged(Lagged { missed })),
                        cursor,
                    })
                    .await
                        && self.backfill().await
                }
            };
            if !alive {
                break;
            }
        }
    }
}
