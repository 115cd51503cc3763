//! A subscriber's outbox: responses waiting for its client, bounded in
//! bytes. The delivery task waits for room; a client that takes nothing
//! for too long is dropped (its waiting responses freed at once) with a
//! status that says how to resume. The task learns when the client leaves.
//!
//! Every outbox also draws on one budget shared by all subscribers, so
//! many clients that read nothing cannot together pin more than it. A
//! client that keeps up (nothing waiting in its own outbox) is never
//! dropped for the budget others hold: it waits until they are dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::Stream;
use oomlens_proto::preencoded::Preencoded;
use oomlens_proto::v1::{SubscribeResponse, subscribe_response};
use prost::Message as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::hub::SharedEvent;
use crate::metrics::CollectorMetrics;

/// Why a response was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The client closed its stream (or the connection went).
    Gone,
    /// The client took nothing for the whole patience: dropped.
    Slow,
}

/// What waits for a client. An event stays shared with the ring (and with
/// other subscribers) until its client takes it.
#[derive(Debug)]
pub(super) enum Outgoing {
    Event(Arc<SharedEvent>),
    Response(Box<SubscribeResponse>),
}

impl Outgoing {
    /// What it takes in memory while it waits.
    fn bytes(&self) -> usize {
        match self {
            Self::Event(shared) => shared.resident_bytes,
            Self::Response(response) => response.encoded_len(),
        }
    }

    /// The response as a message (for the HTTP stream, which prints it).
    pub(super) fn into_response(self) -> SubscribeResponse {
        match self {
            Self::Event(shared) => SubscribeResponse {
                item: Some(subscribe_response::Item::Event(shared.to_event())),
                cursor: shared.seq().to_string(),
            },
            Self::Response(response) => *response,
        }
    }

    /// The response as its encoded bytes (for gRPC), histories `packed`
    /// or not: an event's are encoded once and shared by every
    /// subscriber sent it.
    pub(super) fn into_encoded(self, packed: bool, metrics: &CollectorMetrics) -> Preencoded {
        match self {
            Self::Event(shared) => {
                let (bytes, encoded) = shared.encoded_response(packed);
                metrics.subscriber_event(encoded);
                Preencoded(bytes)
            }
            Self::Response(mut response) => {
                if packed
                    && let Some(subscribe_response::Item::Warning(warning)) = response.item.as_mut()
                    && let Some(history) = warning.history.as_mut()
                {
                    oomlens_proto::history::pack(history);
                }
                Preencoded::of(&*response)
            }
        }
    }
}

#[derive(Debug)]
struct Waiting {
    item: Outgoing,
    size: usize,
    /// Its share of the budget all subscribers draw on.
    shared: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Waiting>,
    bytes: usize,
    /// The share of the response last taken, kept until the client asks
    /// for the next: until then it sits encoded in the connection's
    /// buffers, waiting for the client to read it.
    in_transit: Option<OwnedSemaphorePermit>,
    /// Sent after the waiting items, then the stream ends.
    end: Option<Status>,
    finished: bool,
    client_gone: bool,
}

#[derive(Debug)]
pub(super) struct Outbox {
    state: Mutex<State>,
    max_bytes: usize,
    shared: Arc<Semaphore>,
    shared_total: usize,
    patience: Duration,
    readable: Notify,
    writable: Notify,
    gone: Notify,
}

impl Outbox {
    /// An outbox holding up to `max_bytes` of responses (one larger
    /// response alone is let through) and drawing on `shared` (whose
    /// capacity is `shared_total` bytes), whose client must take one
    /// within `patience` while some wait.
    pub(super) fn new(
        max_bytes: usize,
        shared: Arc<Semaphore>,
        shared_total: usize,
        patience: Duration,
    ) -> (
        Arc<Self>,
        impl Stream<Item = Result<Outgoing, Status>> + Send + 'static,
    ) {
        let outbox = Arc::new(Self {
            state: Mutex::new(State::default()),
            max_bytes,
            shared,
            shared_total,
            patience,
            readable: Notify::new(),
            writable: Notify::new(),
            gone: Notify::new(),
        });
        let reader = Reader(Arc::clone(&outbox));
        let stream = futures_util::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        });
        (outbox, stream)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `response`, waiting for room; a client that makes none
    /// within the patience is dropped with `slow` as its last status.
    pub(super) async fn push(
        &self,
        item: impl Into<Outgoing>,
        slow: impl FnOnce() -> Status,
    ) -> Result<(), Refused> {
        let item = item.into();
        let size = item.bytes();
        let deadline = tokio::time::Instant::now() + self.patience;
        // Room in this client's own outbox first (only this task adds to
        // it, so the room cannot be taken meanwhile).
        loop {
            {
                let state = self.lock();
                if state.client_gone {
                    return Err(Refused::Gone);
                }
                if state.items.is_empty() || state.bytes + size <= self.max_bytes {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, self.writable.notified())
                .await
                .is_err()
            {
                self.fail(slow());
                return Err(Refused::Slow);
            }
        }
        let shared = match self.shared_permit(size, deadline).await {
            Ok(permit) => permit,
            Err(Refused::Slow) => {
                self.fail(slow());
                return Err(Refused::Slow);
            }
            Err(Refused::Gone) => return Err(Refused::Gone),
        };
        let mut state = self.lock();
        if state.client_gone {
            return Err(Refused::Gone);
        }
        state.bytes += size;
        state.items.push_back(Waiting { item, size, shared });
        drop(state);
        self.readable.notify_one();
        Ok(())
    }

    /// This response's share of the budget all subscribers draw on. Past
    /// the patience, a client with responses waiting is the slow one;
    /// one with none is keeping up and waits for the slow ones to go.
    async fn shared_permit(
        &self,
        size: usize,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Refused> {
        // A response larger than the whole budget takes all of it.
        let wanted = u32::try_from(size.clamp(1, self.shared_total.max(1))).unwrap_or(u32::MAX);
        let mut deadline = Some(deadline);
        loop {
            let acquire = Arc::clone(&self.shared).acquire_many_owned(wanted);
            let acquired = tokio::select! {
                permit = acquire => permit.ok(),
                () = self.client_gone() => return Err(Refused::Gone),
                () = sleep_until(deadline) => {
                    let state = self.lock();
                    // Asking for more with nothing waiting: keeping up.
                    if state.items.is_empty() && state.in_transit.is_none() {
                        drop(state);
                        deadline = None;
                        continue;
                    }
                    return Err(Refused::Slow);
                }
            };
            // The semaphore is never closed; treat it as a departed client.
            return acquired.ok_or(Refused::Gone);
        }
    }
    /// Frees what waits and ends the stream with `status`.
    pub(super) fn fail(&self, status: Status) {
        let mut state = self.lock();
        state.items.clear();
        state.bytes = 0;
        state.in_transit = None;
        state.end = Some(status);
        state.finished = true;
        drop(state);
        self.readable.notify_one();
    }

    /// Ends the stream after what waits (with `status` last, if any).
    pub(super) fn finish(&self, status: Option<Status>) {
        let mut state = self.lock();
        state.end = status;
        state.finished = true;
        drop(state);
        self.readable.notify_one();
    }

    /// Completes when the client has left.
    pub(super) async fn client_gone(&self) {
        loop {
            if self.lock().client_gone {
                return;
            }
            self.gone.notified().await;
        }
    }

    /// Bytes waiting now.
    #[cfg(test)]
    fn waiting_bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl From<SubscribeResponse> for Outgoing {
    fn from(response: SubscribeResponse) -> Self {
        Self::Response(Box::new(response))
    }
}

impl From<Arc<SharedEvent>> for Outgoing {
    fn from(shared: Arc<SharedEvent>) -> Self {
        Self::Event(shared)
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The client's side: dropped by tonic when the client leaves.
struct Reader(Arc<Outbox>);

impl Reader {
    async fn next(&mut self) -> Option<Result<Outgoing, Status>> {
        loop {
            {
                let mut state = self.0.lock();
                // Asking for the next: the last one left the buffers.
                state.in_transit = None;
                if let Some(waiting) = state.items.pop_front() {
                    state.bytes -= waiting.size;
                    state.in_transit = Some(waiting.shared);
                    drop(state);
                    self.0.writable.notify_one();
                    return Some(Ok(waiting.item));
                }
                if let Some(status) = state.end.take() {
                    return Some(Err(status));
                }
                if state.finished {
                    return None;
                }
            }
            self.0.readable.notified().await;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.client_gone = true;
        state.items.clear();
        state.bytes = 0;
        state.in_transit = None;
        drop(state);
        self.0.writable.notify_one();
        self.0.gone.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use oomlens_proto::v1::subscribe_response::Item;
    use oomlens_proto::v1::{Lagged, SubscribeResponse};

    use super::*;

    fn response(cursor: usize, bytes: usize) -> SubscribeResponse {
        SubscribeResponse {
            item: Some(Item::Lagged(Lagged { missed: 1 })),
            cursor: format!("{cursor}{}", " ".repeat(bytes)),
        }
    }

    fn budget(bytes: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(bytes))
    }

    fn slow() -> Status {
        Status::resource_exhausted("too slow")
    }

    #[tokio::test(start_paused = true)]
    async fn responses_wait_within_the_byte_budget_and_a_client_that_reads_nothing_is_dropped() {
        let (outbox, stream) = Outbox::new(10_000, budget(1 << 30), 1 << 30, Duration::from_secs(30));
        let mut stream = Box::pin(stream);
        for n in 0..9 {
            outbox.push(response(n, 1000), slow).await.unwrap();
        }
        assert!(outbox.waiting_bytes() <= 10_000);
        // Full: the next push waits out the patience, then drops the client.
        let refused = outbox.push(response(9, 1000), slow).await;
        assert_eq!(refused, Err(Refused::Slow));
        assert_eq!(outbox.waiting_bytes(), 0, "what waited is freed");
        let last = stream.next().await.unwrap().unwrap_err();
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_client_makes_room() {
        let (outbox, stream) = Outbox::new(2_500, budget(1 << 30), 1 << 30, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            stream
                .take(20)
                .map(|r| r.unwrap().into_response().cursor.trim().parse::<usize>().unwrap())
                .collect::<Vec<_>>()
                .await
        });
        for n in 0..20 {
            outbox.push(response(n, 1000), slow).await.unwrap();
        }
        assert_eq!(reader.await.unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn one_response_over_the_budget_alone_goes_through() {
        let (outbox, stream) = Outbox::new(100, budget(1 << 30), 1 << 30, Duration::from_secs(30));
        let mut stream = Box::pin(stream);
        outbox.push(response(1, 1000), slow).await.unwrap();
        outbox.finish(None);
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn the_task_learns_when_the_client_leaves() {
        let (outbox, stream) = Outbox::new(10_000, budget(1 << 30), 1 << 30, Duration::from_secs(30));
        let waiting = {
            let outbox = Arc::clone(&outbox);
            tokio::spawn(async move { outbox.client_gone().await })
        };
        outbox.push(response(1, 10), slow).await.unwrap();
        drop(stream);
        waiting.await.unwrap();
        assert_eq!(outbox.push(response(2, 10), slow).await, Err(Refused::Gone));
        assert_eq!(outbox.waiting_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn clients_that_read_nothing_cannot_pin_more_than_the_shared_budget() {
        let shared = budget(5_000);
        let (idle, idle_stream) = Outbox::new(10_000, Arc::clone(&shared), 5_000, Duration::from_secs(30));
        let (keeping_up, stream) = Outbox::new(10_000, Arc::clone(&shared), 5_000, Duration::from_secs(30));
        let mut idle_stream = Box::pin(idle_stream);
        // The idle client's outbox takes the whole shared budget.
        for n in 0..4 {
            idle.push(response(n, 1000), slow).await.unwrap();
        }
        assert!(shared.available_permits() < 1_000);
        let reader = tokio::spawn(async move {
            stream
                .take(3)
                .map(|r| r.unwrap().into_response().cursor.trim().parse::<usize>().unwrap())
                .collect::<Vec<_>>()
                .await
        });
        let started = tokio::time::Instant::now();
        let pusher = {
            let keeping_up = Arc::clone(&keeping_up);
            tokio::spawn(async move {
                for n in 0..3 {
                    keeping_up.push(response(n, 1000), slow).await?;
                }
                Ok::<_, Refused>(())
            })
        };
        // The idle one, with responses waiting, is dropped at its patience
        // and frees its share; the one keeping up is not dropped for it.
        assert_eq!(idle.push(response(9, 1000), slow).await, Err(Refused::Slow));
        assert_eq!(pusher.await.unwrap(), Ok(()));
        assert_eq!(reader.await.unwrap(), vec![0, 1, 2]);
        assert!(started.elapsed() >= Duration::from_secs(30));
        let last = idle_stream.next().await.unwrap().unwrap_err();
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
        assert_eq!(shared.available_permits(), 5_000, "every share returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_with_responses_waiting_is_dropped_when_the_shared_budget_stays_full() {
        let shared = budget(3_000);
        let (hog, _hog_stream) = Outbox::new(10_000, Arc::clone(&shared), 3_000, Duration::from_secs(600));
        for n in 0..3 {
            hog.push(response(n, 900), slow).await.unwrap();
        }
        let (other, stream) = Outbox::new(10_000, Arc::clone(&shared), 3_000, Duration::from_secs(30));
        let mut stream = Box::pin(stream);
        // Its first response fits in what is left; the second waits for
        // the shared budget while the first is still untaken.
        other.push(response(0, 10), slow).await.unwrap();
        assert_eq!(other.push(response(1, 900), slow).await, Err(Refused::Slow));
        let last = stream.next().await.unwrap().unwrap_err();
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn a_response_taken_counts_until_the_client_asks_for_the_next() {
        let shared = budget(10_000);
        let (outbox, stream) = Outbox::new(10_000, Arc::clone(&shared), 10_000, Duration::from_secs(30));
        let mut stream = Box::pin(stream);
        outbox.push(response(1, 1000), slow).await.unwrap();
        stream.next().await.unwrap().unwrap();
        // Taken, but still in the connection's buffers.
        assert!(shared.available_permits() < 9_000);
        outbox.push(response(2, 10), slow).await.unwrap();
        stream.next().await.unwrap().unwrap();
        assert!(shared.available_permits() > 9_900, "the first share is back");
        drop(stream);
        assert_eq!(shared.available_permits(), 10_000);
    }
}
