//! Fan-out of new events and warnings to this replica's subscribers.
//!
//! One ring shared by all subscribers, bounded in items and in bytes: each
//! subscriber only keeps its position in it, so a subscriber that stops
//! reading pins nothing. One that falls out of the ring is told it lagged
//! and (for events) catches up from the store, so lagging costs latency,
//! not events. Warnings are not stored: those a lagging subscriber skipped
//! are gone, and it is told how many.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use oomlens_proto::history;
use oomlens_proto::v1::{MemoryWarning, OomEvent};
use prost::Message as _;
use prost::bytes::Bytes;
use tokio::sync::watch;
use tracing::warn;

use crate::store::StoredEvent;

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum Published {
    Event(Arc<SharedEvent>),
    Warning(Arc<MemoryWarning>),
}

impl Published {
    /// About what it costs to keep in the ring: an event counts both its
    /// encoded responses too (plain and packed histories), which its
    /// first gRPC subscribers of each kind add.
    fn bytes(&self) -> usize {
        match self {
            Self::Event(shared) => shared.resident_bytes + shared.plain_len() + shared.packed_len,
            Self::Warning(warning) => warning.encoded_len(),
        }
    }
}

/// A stored event as subscribers are sent it. Its gRPC response is the
/// same for every subscriber (the cursor is its seq), so the first to
/// send it encodes it and the others send the same bytes: a storm fanned
/// out to 50 subscribers is encoded once, not 50 times.
///
/// Its histories may be kept packed (as the agent sent them and the store
/// keeps them): a tenth of the memory in the ring and in the writer's
/// queue, and sent as they are to subscribers that read them packed. They
/// are unpacked for the others, once per encoding.
#[derive(Debug)]
pub struct SharedEvent {
    stored: StoredEvent,
    /// What the event takes in memory as kept, and the encoded sizes of
    /// its responses: sized once, not by every subscriber's outbox
    /// (walking a history of 600 samples each time).
    pub resident_bytes: usize,
    /// Sized when the ring first asks: an event read as stored for one
    /// subscriber's catch-up never enters the ring and is not unpacked
    /// for it.
    plain_len: OnceLock<usize>,
    packed_len: usize,
    response: OnceLock<Bytes>,
    /// The same with the histories packed, for subscribers that read them.
    packed_response: OnceLock<Bytes>,
}

impl SharedEvent {
    /// `stored` as given. The size of a packed history's plain response
    /// is known only by unpacking it: [`Self::with_plain_len`] when the
    /// caller knows it.
    pub fn new(stored: StoredEvent) -> Self {
        let plain_len = OnceLock::new();
        if !history::has_packed_history(&stored.event) {
            let _ = plain_len.set(stored.event.encoded_len());
        }
        Self::sized(stored, plain_len)
    }

    /// `stored`, whose encoded size with its histories unpacked is
    /// `plain_len`.
    pub fn with_plain_len(stored: StoredEvent, plain_len: usize) -> Self {
        Self::sized(stored, OnceLock::from(plain_len))
    }

    fn sized(stored: StoredEvent, plain_len: OnceLock<usize>) -> Self {
        let encoded_len = stored.event.encoded_len();
        let packed_len = match plain_len.get() {
            // Packed, a history is a third of its plain bytes or less.
            Some(plain) if history::has_plain_history(&stored.event) => plain / 3,
            _ => encoded_len,
        };
        Self {
            resident_bytes: oomlens_common::limits::resident_bytes_encoded(&stored.event, encoded_len),
            plain_len,
            packed_len,
            stored,
            response: OnceLock::new(),
            packed_response: OnceLock::new(),
        }
    }

    /// The encoded size of its plain response.
    fn plain_len(&self) -> usize {
        *self
            .plain_len
            .get_or_init(|| unpacked(&self.stored.event).encoded_len())
    }

    pub fn seq(&self) -> i64 {
        self.stored.seq
    }

    /// The event as kept: its histories may be packed. For what does not
    /// look at them (filters).
    pub fn as_kept(&self) -> &OomEvent {
        &self.stored.event
    }

    /// The whole event, its histories unpacked.
    pub fn to_event(&self) -> OomEvent {
        unpacked(&self.stored.event)
    }

    /// The encoded `SubscribeResponse` that carries this event, its
    /// histories `packed` or not, and whether this call encoded it.
    pub fn encoded_response(&self, packed: bool) -> (Bytes, bool) {
        let mut encoded = false;
        let seq = self.stored.seq;
        let event = &self.stored.event;
        let bytes = if packed {
            self.packed_response.get_or_init(|| {
                encoded = true;
                if history::has_plain_history(event) {
                    let mut event = event.clone();
                    history::pack_event(&mut event);
                    encode_event_response(seq, &event)
                } else {
                    encode_event_response(seq, event)
                }
            })
        } else {
            self.response.get_or_init(|| {
                encoded = true;
                if history::has_packed_history(event) {
                    encode_event_response(seq, &unpacked(event))
                } else {
                    encode_event_response(seq, event)
                }
            })
        };
        (bytes.clone(), encoded)
    }
}

/// `event` with its histories unpacked. They were unpacked once already
/// (the ingest checks them, the store decodes them), so this does not
/// fail; if it did, the event goes out without the history that does not
/// decode rather than not at all.
fn unpacked(event: &OomEvent) -> OomEvent {
    let mut event = event.clone();
    let OomEvent {
        id,
        history,
        oom_memcg_history,
        ..
    } = &mut event;
    for h in [history.as_mut(), oom_memcg_history.as_mut()]
        .into_iter()
        .flatten()
    {
        if let Err(error) = history::unpack(h) {
            warn!(%id, %error, "a kept packed memory history does not decode; sent without it");
            h.packed.clear();
        }
    }
    event
}

/// `SubscribeResponse { item: Some(Event(event)), cursor: seq }`, encoded
/// without copying the event into one (tags as in `query.proto`; a test
/// decodes the result as the generated type).
fn encode_event_response(seq: i64, event: &OomEvent) -> Bytes {
    const EVENT_TAG: u32 = 1;
    const CURSOR_TAG: u32 = 4;
    let cursor = seq.to_string();
    let len = prost::encoding::message::encoded_len(EVENT_TAG, event)
        + prost::encoding::string::encoded_len(CURSOR_TAG, &cursor);
    let mut buf = Vec::with_capacity(len);
    prost::encoding::message::encode(EVENT_TAG, event, &mut buf);
    prost::encoding::string::encode(CURSOR_TAG, &cursor, &mut buf);
    buf.into()
}

/// How much of the recent past the ring keeps.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    pub items: usize,
    pub bytes: usize,
}

impl Default for HubLimits {
    /// 1024 items or 64 MiB, whichever is reached first.
    fn default() -> Self {
        Self {
            items: 1024,
            bytes: 64 << 20,
        }
    }
}

#[derive(Debug)]
struct Ring {
    /// Items with their position (consecutive, oldest first) and size.
    items: VecDeque<(u64, Published, usize)>,
    bytes: usize,
    next: u64,
    limits: HubLimits,
}

impl Ring {
    fn oldest(&self) -> u64 {
        self.items.front().map_or(self.next, |(at, _, _)| *at)
    }
}

/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    ring: Arc<Mutex<Ring>>,
    /// The next position; changes wake waiting subscribers.
    published: Arc<watch::Sender<u64>>,
}

/// Why [`HubReceiver::recv`] returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// This many items were dropped from the ring before this subscriber
    /// read them; it continues from the oldest one kept.
    Lagged(u64),
}

/// One subscriber's position in the ring.
#[derive(Debug)]
pub struct HubReceiver {
    ring: Arc<Mutex<Ring>>,
    published: watch::Receiver<u64>,
    next: u64,
}

impl Hub {
    pub fn new(limits: HubLimits) -> Self {
        Self {
            ring: Arc::new(Mutex::new(Ring {
                items: VecDeque::new(),
                bytes: 0,
                next: 0,
                limits: HubLimits {
                    items: limits.items.max(1),
                    bytes: limits.bytes,
                },
            })),
            published: Arc::new(watch::Sender::new(0)),
        }
    }

    pub fn publish(&self, item: Published) {
        let bytes = item.bytes();
        let next = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let at = ring.next;
            ring.items.push_back((at, item, bytes));
            ring.bytes += bytes;
            ring.next += 1;
            // The newest item stays even when it alone is over the budget.
            while ring.items.len() > 1
                && (ring.items.len() > ring.limits.items || ring.bytes > ring.limits.bytes)
            {
                if let Some((_, _, dropped)) = ring.items.pop_front() {
                    ring.bytes -= dropped;
                }
            }
            ring.next
        };
        self.published.send_replace(next);
    }

    /// A receiver of what is published from now on.
    pub fn subscribe(&self) -> HubReceiver {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        HubReceiver {
            ring: Arc::clone(&self.ring),
            published: self.published.subscribe(),
            next: ring.next,
        }
    }

    /// Items and bytes held now.
    pub fn held(&self) -> (usize, usize) {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        (ring.items.len(), ring.bytes)
    }
}

impl HubReceiver {
    /// The next item, waiting for one; pending forever once the hub is gone.
    pub async fn recv(&mut self) -> Result<Published, RecvError> {
        loop {
            // Marks what is published so far as seen before looking, so a
            // publish after the look wakes the wait below.
            self.published.borrow_and_update();
            {
                let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
                let oldest = ring.oldest();
                if self.next < oldest {
                    let missed = oldest - self.next;
                    self.next = oldest;
                    return Err(RecvError::Lagged(missed));
                }
                let index = usize::try_from(self.next - oldest).unwrap_or(usize::MAX);
                if let Some((_, item, _)) = ring.items.get(index) {
                    self.next += 1;
                    return Ok(item.clone());
                }
            }
            if self.published.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, bytes: usize) -> Published {
        Published::Event(Arc::new(SharedEvent::new(StoredEvent {
            seq,
            event: OomEvent {
                id: "x".repeat(bytes),
                ..OomEvent::default()
            },
        })))
    }

    fn seq_of(item: &Published) -> i64 {
        match item {
            Published::Event(shared) => shared.seq(),
            Published::Warning(_) => -1,
        }
    }

    #[tokio::test]
    async fn a_subscriber_reads_in_order_what_was_published_after_it_subscribed() {
        let hub = Hub::new(HubLimits::default());
        hub.publish(event(1, 10));
        let mut receiver = hub.subscribe();
        hub.publish(event(2, 10));
        hub.publish(event(3, 10));
        assert_eq!(seq_of(&receiver.recv().await.unwrap()), 2);
        assert_eq!(seq_of(&receiver.recv().await.unwrap()), 3);
        let waiting = tokio::spawn(async move { seq_of(&receiver.recv().await.unwrap()) });
        tokio::task::yield_now().await;
        hub.publish(event(4, 10));
        assert_eq!(waiting.await.unwrap(), 4);
    }

    #[tokio::test]
    async fn the_ring_is_bounded_in_bytes_and_a_slow_subscriber_is_told_it_lagged() {
        let hub = Hub::new(HubLimits {
            items: 1000,
            bytes: 10_000,
        });
        let mut slow = hub.subscribe();
        for seq in 1..=100 {
            hub.publish(event(seq, 1000));
        }
        let (items, bytes) = hub.held();
        assert!(bytes <= 10_000, "{bytes} bytes held");
        let items = u8::try_from(items).expect("at most 10 items held");
        assert!(items < 11, "{items} items held");
        assert_eq!(
            slow.recv().await.unwrap_err(),
            RecvError::Lagged(100 - u64::from(items))
        );
        assert_eq!(seq_of(&slow.recv().await.unwrap()), 100 - i64::from(items) + 1);
    }

    #[tokio::test]
    async fn an_item_over_the_budget_alone_is_still_delivered() {
        let hub = Hub::new(HubLimits {
            items: 10,
            bytes: 100,
        });
        let mut receiver = hub.subscribe();
        hub.publish(event(1, 1000));
        assert_eq!(seq_of(&receiver.recv().await.unwrap()), 1);
        hub.publish(event(2, 1000));
        assert_eq!(hub.held().0, 1);
    }

    #[test]
    fn an_event_is_encoded_once_as_the_response_every_subscriber_is_sent() {
        use oomlens_proto::v1::{MemoryHistory, MemorySample, SubscribeResponse, subscribe_response};

        let event = OomEvent {
            id: "0123456789abcdef".into(),
            node: Some("node-1".into()),
            history: Some(MemoryHistory {
                samples: (0..600)
                    .map(|i| MemorySample {
                        usage_bytes: Some(1000 * i),
                        ..MemorySample::default()
                    })
                    .collect(),
                ..MemoryHistory::default()
            }),
            ..OomEvent::default()
        };
        let shared = SharedEvent::new(StoredEvent {
            seq: 4711,
            event: event.clone(),
        });
        let (first, encoded) = shared.encoded_response(false);
        assert!(encoded);
        let (second, encoded) = shared.encoded_response(false);
        assert!(!encoded);
        assert_eq!(first.as_ptr(), second.as_ptr(), "encoded once, then shared");
        let expected = SubscribeResponse {
            item: Some(subscribe_response::Item::Event(event)),
            cursor: "4711".into(),
        };
        assert_eq!(
            SubscribeResponse::decode(first.clone()).expect("decodes"),
            expected
        );

        // Packed: once too, fewer bytes, the same when unpacked.
        let (packed, encoded) = shared.encoded_response(true);
        assert!(encoded);
        assert!(!shared.encoded_response(true).1);
        assert!(packed.len() < first.len(), "{} bytes packed", packed.len());
        let mut unpacked = SubscribeResponse::decode(packed).expect("decodes");
        let Some(subscribe_response::Item::Event(event)) = unpacked.item.as_mut() else {
            panic!("an event");
        };
        assert!(event.history.as_ref().is_some_and(|h| h.samples.is_empty()));
        oomlens_proto::history::unpack_event(event).expect("unpacks");
        assert_eq!(unpacked, expected);
    }

    #[test]
    fn an_event_kept_packed_is_sent_packed_as_kept_and_unpacked_whole() {
        use oomlens_proto::v1::{MemoryHistory, MemorySample, SubscribeResponse, subscribe_response};

        let whole = OomEvent {
            id: "k".into(),
            history: Some(MemoryHistory {
                samples: (0..600)
                    .map(|i| MemorySample {
                        working_set_bytes: Some(1_000_000 + 4096 * i),
                        ..MemorySample::default()
                    })
                    .collect(),
                ..MemoryHistory::default()
            }),
            ..OomEvent::default()
        };
        let mut kept = whole.clone();
        history::pack_event(&mut kept);
        let agent_bytes = kept.history.as_ref().unwrap().packed.clone();
        // Read as stored, its plain response is sized when the ring asks.
        let read_back = Published::Event(Arc::new(SharedEvent::new(StoredEvent {
            seq: 7,
            event: kept.clone(),
        })));
        assert!(read_back.bytes() > whole.encoded_len());
        let shared = SharedEvent::with_plain_len(StoredEvent { seq: 7, event: kept }, whole.encoded_len());

        // Small in memory; the ring counts what its plain response will take.
        let resident_whole = oomlens_common::limits::resident_bytes(&whole);
        assert!(
            shared.resident_bytes * 10 < resident_whole,
            "{} kept, {resident_whole} whole",
            shared.resident_bytes
        );
        assert!(
            Published::Event(Arc::new(SharedEvent::new(StoredEvent {
                seq: 7,
                event: whole.clone()
            })))
            .bytes()
                > whole.encoded_len()
        );
        assert_eq!(shared.to_event(), whole);
        assert!(shared.as_kept().history.as_ref().unwrap().samples.is_empty());

        let response = |bytes: Bytes| match SubscribeResponse::decode(bytes).unwrap().item {
            Some(subscribe_response::Item::Event(event)) => event,
            other => panic!("{other:?}"),
        };
        // Packed: the bytes as kept, not packed again.
        let (packed, _) = shared.encoded_response(true);
        assert_eq!(response(packed).history.unwrap().packed, agent_bytes);
        // Plain: unpacked once, whole.
        let (plain, encoded) = shared.encoded_response(false);
        assert!(encoded);
        assert_eq!(plain.len(), encode_event_response(7, &whole).len());
        assert_eq!(response(plain), whole);
        // Kept as it was.
        assert!(shared.as_kept().history.as_ref().unwrap().samples.is_empty());
    }

    #[test]
    fn a_kept_history_that_does_not_decode_is_left_out_and_the_event_still_sent() {
        use oomlens_proto::v1::{MemoryHistory, SubscribeResponse, subscribe_response};

        let damaged = OomEvent {
            id: "k".into(),
            history: Some(MemoryHistory {
                cgroup: "/kubepods/pod1/c".into(),
                packed: vec![0xff; 3],
                ..MemoryHistory::default()
            }),
            ..OomEvent::default()
        };
        let shared = SharedEvent::new(StoredEvent {
            seq: 9,
            event: damaged,
        });
        let whole = shared.to_event();
        let history = whole.history.as_ref().expect("the history's other fields stay");
        assert_eq!(history.cgroup, "/kubepods/pod1/c");
        assert!(history.packed.is_empty() && history.samples.is_empty());
        let (plain, _) = shared.encoded_response(false);
        let sent = SubscribeResponse::decode(plain).expect("decodes");
        assert_eq!(sent.item, Some(subscribe_response::Item::Event(whole)));
        assert_eq!(sent.cursor, "9");
    }
}
