//! A subscriber's outbox: responses waiting for its client, bounded in
//! bytes. The delivery task waits for room; a client that takes nothing
//! for too long is dropped (its waiting responses freed at once) with a
//! status that says how to resume. The task learns when the client leaves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::Stream;
use oomlens_proto::v1::SubscribeResponse;
use prost::Message as _;
use tokio::sync::Notify;
use tonic::Status;

/// Why a response was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The client closed its stream (or the connection went).
    Gone,
    /// The client took nothing for the whole patience: dropped.
    Slow,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<(SubscribeResponse, usize)>,
    bytes: usize,
    /// Sent after the waiting items, then the stream ends.
    end: Option<Status>,
    finished: bool,
    client_gone: bool,
}

#[derive(Debug)]
pub(super) struct Outbox {
    state: Mutex<State>,
    max_bytes: usize,
    patience: Duration,
    readable: Notify,
    writable: Notify,
    gone: Notify,
}

impl Outbox {
    /// An outbox holding up to `max_bytes` of responses (one larger
    /// response alone is let through), whose client must take one within
    /// `patience` while some wait.
    pub(super) fn new(
        max_bytes: usize,
        patience: Duration,
    ) -> (
        Arc<Self>,
        impl Stream<Item = Result<SubscribeResponse, Status>> + Send + 'static,
    ) {
        let outbox = Arc::new(Self {
            state: Mutex::new(State::default()),
            max_bytes,
            patience,
            readable: Notify::new(),
            writable: Notify::new(),
            gone: Notify::new(),
        });
        let reader = Reader(Arc::clone(&outbox));
        let stream = futures_util::stream::unfold(reader, |reader| async move {
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
        response: SubscribeResponse,
        slow: impl FnOnce() -> Status,
    ) -> Result<(), Refused> {
        let size = response.encoded_len();
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut response = Some(response);
        loop {
            {
                let mut state = self.lock();
                if state.client_gone {
                    return Err(Refused::Gone);
                }
                if state.items.is_empty() || state.bytes + size <= self.max_bytes {
                    if let Some(response) = response.take() {
                        state.items.push_back((response, size));
                    }
                    state.bytes += size;
                    drop(state);
                    self.readable.notify_one();
                    return Ok(());
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
    }

    /// Frees what waits and ends the stream with `status`.
    pub(super) fn fail(&self, status: Status) {
        let mut state = self.lock();
        state.items.clear();
        state.bytes = 0;
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

/// The client's side: dropped by tonic when the client leaves.
struct Reader(Arc<Outbox>);

impl Reader {
    async fn next(&self) -> Option<Result<SubscribeResponse, Status>> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some((response, size)) = state.items.pop_front() {
                    state.bytes -= size;
                    drop(state);
                    self.0.writable.notify_one();
                    return Some(Ok(response));
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

    fn slow() -> Status {
        Status::resource_exhausted("too slow")
    }

    #[tokio::test(start_paused = true)]
    async fn responses_wait_within_the_byte_budget_and_a_client_that_reads_nothing_is_dropped() {
        let (outbox, stream) = Outbox::new(10_000, Duration::from_secs(30));
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
        let (outbox, stream) = Outbox::new(2_500, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            stream
                .take(20)
                .map(|r| r.unwrap().cursor.trim().parse::<usize>().unwrap())
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
        let (outbox, stream) = Outbox::new(100, Duration::from_secs(30));
        let mut stream = Box::pin(stream);
        outbox.push(response(1, 1000), slow).await.unwrap();
        outbox.finish(None);
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn the_task_learns_when_the_client_leaves() {
        let (outbox, stream) = Outbox::new(10_000, Duration::from_secs(30));
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
}
