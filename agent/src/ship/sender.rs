//! The gRPC sender: one `Ingest` stream to the collector, kept open and
//! reopened with backoff; spooled events go out oldest first with a
//! bounded window in flight, and each acknowledgement removes its event
//! from the spool. A new event is sent as its spool write starts
//! (`super::early`), without waiting for the write. Warnings and status
//! reports ride along best-effort (they are not spooled: a stale warning
//! is worthless); what cannot be sent is counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use oomlens_common::client::{ClientConfig, error_chain, status_line};
use oomlens_proto::history;
use oomlens_proto::v1::{
    AckStatus, AgentHello, ContainerStatusReport, IngestRequest, MemoryWarning, ingest_request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::metrics::{SendFailure, SenderMetrics};
use super::{EarlyEvent, Settlement, SharedSpool};
use oomlens_common::ingest::IngestResult;

/// What the sender needs besides the spool.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    pub client: ClientConfig,
    pub hello: AgentHello,
    /// Events sent but not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// After shutdown, how long to keep sending what is spooled (what is
    /// left stays in the spool for the next start).
    pub drain: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl ShipperConfig {
    pub fn new(client: ClientConfig, hello: AgentHello) -> Self {
        Self {
            client,
            hello,
            max_in_flight: 256,
            drain: Duration::from_secs(5),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Best-effort items sent beside events.
#[derive(Debug)]
pub enum SideItem {
    Warning(Box<MemoryWarning>),
    Status(ContainerStatusReport),
}

impl SideItem {
    fn into_request(self) -> IngestRequest {
        IngestRequest {
            item: Some(match self {
                Self::Warning(w) => ingest_request::Item::Warning(*w),
                Self::Status(s) => ingest_request::Item::Status(s),
            }),
        }
    }
}

enum SessionEnd {
    /// The stream broke: reconnect after a pause.
    Reconnect,
    /// Shutdown and drained (or the drain time ran out).
    Done,
}

/// Sends until `shutdown`, then drains for `config.drain`.
pub async fn run(
    spool: SharedSpool,
    config: ShipperConfig,
    side: mpsc::Receiver<SideItem>,
    metrics: SenderMetrics,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut side = Inbox::new(side);
    let mut early = Inbox::new(spool.early_events(config.max_in_flight));
    let mut stopping: Option<tokio::time::Instant> = None;
    let mut backoff = config.min_backoff;
    let mut last_error = String::new();
    loop {
        if stopping.is_some() && spool.stats().events == 0 {
            return;
        }
        let outcome = match config.client.ingest_client().await {
            Ok(client) => {
                session(
                    client,
                    &spool,
                    &config,
                    &mut side,
                    &mut early,
                    &metrics,
                    &mut shutdown,
                    &mut stopping,
                    &mut backoff,
                    &mut last_error,
                )
                .await
            }
            Err(error) => {
                metrics.send_failed(SendFailure::Connect);
                let text = error_chain(&error);
                if text != last_error {
                    warn!(error = %text, spooled = spool.stats().events, "collector unreachable; events wait in the spool");
                    last_error = text;
                }
                SessionEnd::Reconnect
            }
        };
        metrics.connected.set(0);
        if matches!(outcome, SessionEnd::Done) {
            return;
        }
        // Wait before reconnecting; side items meanwhile are dropped, and
        // early events left to the spool.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                Some(_) = side.next(), if side.open => { metrics.side_dropped.inc(); }
                _ = early.next(), if early.open => {}
                () = &mut shutdown, if stopping.is_none() => {
                    stopping = Some(tokio::time::Instant::now() + config.drain);
                }
                () = sleep_until_opt(stopping) => return,
            }
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// A channel the sender selects on, until it closes (a closed channel is
/// always ready: selecting on it would spin). Side items close when the
/// agent stops; early events when another sender takes the spool's.
struct Inbox<T> {
    items: mpsc::Receiver<T>,
    open: bool,
}

impl<T> Inbox<T> {
    fn new(items: mpsc::Receiver<T>) -> Self {
        Self { items, open: true }
    }

    async fn next(&mut self) -> Option<T> {
        let next = self.items.recv().await;
        self.open = next.is_some();
        next
    }
}

/// Events sent and not yet acknowledged.
#[derive(Default)]
struct Window {
    /// id -> spool keys in the order sent, with when each went out (a
    /// kill spooled twice across a restart, or a kill and its later
    /// revision, share an id). Each item gets one ack, in order: an ack
    /// settles the oldest key of its id only, so a revision still in
    /// flight is not dropped with its kill's ack.
    by_id: HashMap<String, VecDeque<(u64, std::time::Instant)>>,
    keys: HashSet<u64>,
}

impl Window {
    fn open(&mut self, key: u64, id: &str) {
        self.keys.insert(key);
        let sent = (key, std::time::Instant::now());
        self.by_id.entry(id.to_owned()).or_default().push_back(sent);
    }

    /// The key an ack for `id` settles, and how long it was in flight.
    fn close(&mut self, id: &str) -> Option<(u64, Duration)> {
        let sent = self.by_id.get_mut(id)?;
        let oldest = sent.pop_front();
        if sent.is_empty() {
            self.by_id.remove(id);
        }
        let (key, at) = oldest?;
        self.keys.remove(&key);
        Some((key, at.elapsed()))
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    mut client: oomlens_common::client::IngestClient,
    spool: &SharedSpool,
    config: &ShipperConfig,
    side: &mut Inbox<SideItem>,
    early: &mut Inbox<EarlyEvent>,
    metrics: &SenderMetrics,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    stopping: &mut Option<tokio::time::Instant>,
    backoff: &mut Duration,
    last_error: &mut String,
) -> SessionEnd {
    let (outbound, requests) = mpsc::channel::<IngestRequest>(config.max_in_flight + 64);
    let hello = IngestRequest {
        item: Some(ingest_request::Item::Hello(config.hello.clone())),
    };
    if outbound.send(hello).await.is_err() {
        return SessionEnd::Reconnect;
    }
    // A collector that reads packed histories says so; older ones would
    // drop them as an unknown field.
    let (packs, mut acks) = match client.ingest(ReceiverStream::new(requests)).await {
        Ok(response) => {
            let packs = history::says_packed(response.metadata());
            (packs, response.into_inner())
        }
        Err(status) => {
            metrics.send_failed(SendFailure::Refused);
            let text = status_line(&status);
            if text != *last_error {
                warn!(error = %text, "the collector refused the ingest stream");
                *last_error = text;
            }
            return SessionEnd::Reconnect;
        }
    };
    if !last_error.is_empty() || metrics.connected.get() == 0 {
        info!(collector = %config.client.endpoint, spooled = spool.stats().events, "connected to the collector");
    }
    last_error.clear();
    metrics.connected.set(1);
    let mut window = Window::default();
    let send = |key: u64, mut event: oomlens_proto::v1::OomEvent, window: &mut Window| {
        if packs {
            history::pack_event(&mut event);
        }
        window.open(key, &event.id);
        let request = IngestRequest {
            item: Some(ingest_request::Item::Event(event)),
        };
        let outbound = outbound.clone();
        async move { outbound.send(request).await.is_ok() }
    };
    loop {
        // Top up the window, oldest first; nothing to read when every
        // spooled event is already in flight.
        let unsent = usize::try_from(spool.stats().events).unwrap_or(usize::MAX) > window.len();
        if unsent && window.len() < config.max_in_flight {
            let room = config.max_in_flight - window.len();
            let exclude = window.keys.clone();
            let batch = spool.with(move |spool| spool.unsent(&exclude, room)).await;
            for (key, event) in batch {
                if !send(key, event, &mut window).await {
                    // The transport dropped the request stream: it broke.
                    metrics.send_failed(SendFailure::Stream);
                    return SessionEnd::Reconnect;
                }
            }
        }
        if stopping.is_some() && window.is_empty() && spool.stats().events == 0 {
            return SessionEnd::Done;
        }
        tokio::select! {
            // First, so that an event offered early is never read from
            // the spool and sent a second time after its ack.
            biased;
            Some((key, event)) = early.next(), if early.open => {
                // Already read from the spool, or no room: the spool
                // path has it.
                if !window.keys.contains(&key) && window.len() < config.max_in_flight {
                    if !send(key, std::sync::Arc::unwrap_or_clone(event), &mut window).await {
                        metrics.send_failed(SendFailure::Stream);
                        return SessionEnd::Reconnect;
                    }
                    metrics.sent_early.inc();
                }
            }
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    let status = AckStatus::try_from(ack.status).unwrap_or(AckStatus::Unspecified);
                    if let Some((key, in_flight)) = window.close(&ack.id) {
                        metrics.delivery_seconds.0.observe(in_flight.as_secs_f64());
                        match status {
                            AckStatus::Stored | AckStatus::Duplicate => spool.settle(key, Settlement::Stored).await,
                            AckStatus::Rejected => {
                                warn!(id = %ack.id, why = %ack.message, "the collector rejected an event; kept in spool/rejected");
                                spool.settle(key, Settlement::Rejected).await;
                            }
                            AckStatus::Unspecified => {
                                debug!(id = %ack.id, "ack without a status; resending later");
                            }
                        }
                    }
                    metrics.shipped(IngestResult::from(status));
                    *backoff = config.min_backoff;
                }
                Ok(None) => {
                    metrics.send_failed(SendFailure::Stream);
                    warn!(in_flight = window.len(), "the collector closed the ingest stream; reconnecting");
                    return SessionEnd::Reconnect;
                }
                Err(status) => {
                    metrics.send_failed(SendFailure::Stream);
                    let text = status_line(&status);
                    warn!(error = %text, in_flight = window.len(), "ingest stream broken; unacknowledged events will be resent");
                    *last_error = text;
                    return SessionEnd::Reconnect;
                }
            },
            () = spool.appended() => {}
            Some(item) = side.next(), if side.open && stopping.is_none() => {
                if outbound.try_send(item.into_request()).is_err() {
                    metrics.side_dropped.inc();
                }
            }
            () = shutdown.as_mut(), if stopping.is_none() => {
                *stopping = Some(tokio::time::Instant::now() + config.drain);
            }
            () = sleep_until_opt(*stopping) => {
                let left = spool.stats().events;
                if left > 0 {
                    warn!(left, "shutting down with events still spooled; they are sent on the next start");
                }
                return SessionEnd::Done;
            }
        }
    }
}
