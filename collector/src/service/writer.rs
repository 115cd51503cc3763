//! The batch writer: the one task that writes events to the store. It
//! stores queued events up to [`MAX_BATCH`] per transaction and answers
//! each, and it knows whether the store can write: a failed write makes
//! the collector not ready (`/readyz`, `oomlens_collector_store_writable`)
//! until a probe write commits, tried every [`PROBE_EVERY`] meanwhile, so
//! that it recovers by itself even when no agent sends (a Service sends
//! none to a collector that is not ready).

use std::sync::Arc;
use std::time::Duration;

use oomlens_proto::v1::OomEvent;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info};

use crate::hub::{Hub, Published, SharedEvent};
use crate::metrics::{CollectorMetrics, IngestResult};
use crate::store::{Inserted, Store, StoreError, StoredEvent};

/// Events per store transaction, at most.
const MAX_BATCH: usize = 512;
/// Queued writes across all agents before ingest streams wait.
pub(super) const WRITE_QUEUE: usize = 4096;
/// While the store cannot write, how often a probe write tries.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A probe writes as many bytes as the batch that failed, within these
/// bounds: "would that batch commit now", not "can one byte be written".
const PROBE_MIN_BYTES: usize = 64 * 1024;
const PROBE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of events queued for the writer (and in its batch) across all
/// agents; ingest streams wait beyond it.
pub const WRITE_QUEUE_BYTES: usize = 64 << 20;

/// An event for the batch writer, and where its result goes.
pub(super) struct WriteRequest {
    /// As it is to be stored and kept for subscribers: histories packed
    /// (in the bytes its agent sent, where it sent them packed).
    pub(super) event: OomEvent,
    /// Its encoded size with the histories unpacked (for the hub).
    pub(super) plain_len: usize,
    pub(super) reply: oneshot::Sender<Result<Inserted, String>>,
    /// Its share of [`WRITE_QUEUE_BYTES`], given back once it is written
    /// (or not).
    pub(super) budget: tokio::sync::OwnedSemaphorePermit,
}

/// Stores queued events until the queue closes; publishes the stored ones
/// unless a replica relay does (PostgreSQL).
pub(super) async fn write_batches(
    store: Store,
    hub: Hub,
    publish: bool,
    mut queue: mpsc::Receiver<WriteRequest>,
    metrics: Arc<CollectorMetrics>,
) {
    let mut probe_bytes = PROBE_MIN_BYTES;
    // While not writable: when the next probe is due, whatever batches
    // come in between (agents retrying must not postpone it).
    let mut next_probe = Instant::now();
    loop {
        let first = if metrics.store_writable() {
            queue.recv().await
        } else {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(next_probe) => {
                    next_probe = Instant::now() + PROBE_EVERY;
                    match store.probe_write(probe_bytes).await {
                        Ok(()) => writable(&metrics),
                        Err(error) => not_writable(&metrics, &error, 0),
                    }
                    continue;
                }
                request = queue.recv() => request,
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut events = vec![first.event];
        let mut plain_lens = vec![first.plain_len];
        let mut replies = vec![first.reply];
        // Held until the batch is written: its events count in the budget.
        let mut _budget = vec![first.budget];
        while events.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => {
                    events.push(next.event);
                    plain_lens.push(next.plain_len);
                    replies.push(next.reply);
                    _budget.push(next.budget);
                }
                Err(_) => break,
            }
        }
        metrics.batch(events.len());
        match store.insert_batch(&events).await {
            // A batch that commits while the store is not writable does
            // not make it writable again: on a nearly full disk small
            // writes fit where larger ones do not, and readiness would
            // flap; the probe (as large as the batch that failed) decides.
            Ok(results) => {
                let mut fresh = Vec::new();
                for (((event, plain_len), reply), result) in
                    events.into_iter().zip(plain_lens).zip(replies).zip(results)
                {
                    metrics.ingested(match result {
                        Inserted::Stored(_) => IngestResult::Stored,
                        Inserted::Duplicate => IngestResult::Duplicate,
                    });
                    if let (true, Inserted::Stored(seq)) = (publish, result) {
                        fresh.push((StoredEvent { seq, event }, plain_len));
                    }
                    let _ = reply.send(Ok(result));
                }
                // Subscribers rely on increasing seq.
                fresh.sort_by_key(|(stored, _)| stored.seq);
                for (stored, plain_len) in fresh {
                    hub.publish(Published::Event(Arc::new(SharedEvent::with_plain_len(
                        stored, plain_len,
                    ))));
                }
            }
            Err(error) => {
                let bytes: usize = events.iter().map(OomEvent::encoded_len).sum();
                probe_bytes = bytes.clamp(PROBE_MIN_BYTES, PROBE_MAX_BYTES);
                if metrics.store_writable() {
                    next_probe = Instant::now() + PROBE_EVERY;
                }
                not_writable(&metrics, &error, events.len());
                metrics.store_error();
                // Not an ack: the agents keep these events and resend them.
                for reply in replies {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
        }
    }
}

/// A probe committed: ready again (one line when that changes).
fn writable(metrics: &CollectorMetrics) {
    if metrics.set_store_writable(true) {
        info!("the event store can write again: ready, storing and acknowledging events");
    }
}

/// A write failed (`events` 0: a probe): not ready, one line when that
/// starts; later failures are expected until a probe commits.
fn not_writable(metrics: &CollectorMetrics, error: &StoreError, events: usize) {
    if metrics.set_store_writable(false) {
        error!(
            %error,
            events,
            "the event store cannot write: not ready; events are not acknowledged and \
             stay spooled by their agents, probing every {} s until a write commits",
            PROBE_EVERY.as_secs()
        );
    } else {
        debug!(%error, events, "still cannot write: not stored, agents resend");
    }
}
