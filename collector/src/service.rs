//! The gRPC services: `IngestService` (agents) and `EventService` (the CLI
//! and subscribing tools), over one shared [`Collector`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use oomlens_proto::json::JsonEnum as _;
use oomlens_proto::time::timestamp_from_unix_us;
use oomlens_proto::v1::event_service_server::EventService;
use oomlens_proto::v1::ingest_service_server::IngestService;
use oomlens_proto::v1::{
    AckStatus, ContainerMemoryStatus, EventFilter, GetRequest, GroupBy, IngestAck, IngestRequest, Lagged,
    MemoryWarning, OomEvent, QueryRequest, QueryResponse, Scope, SubscribeRequest, SubscribeResponse,
    SummaryGroup, SummaryRequest, SummaryResponse, TopRequest, TopResponse, ingest_request,
    subscribe_response,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::analysis::{Rules, analyse};
use crate::filter::matches;
use crate::hub::{Hub, Published};
use crate::metrics::{CollectorMetrics, IngestResult};
use crate::store::{GroupColumn, Inserted, PageToken, Store, StoredEvent};

/// Events per store transaction, at most.
const MAX_BATCH: usize = 512;
/// Queued writes across all agents before ingest streams wait.
const WRITE_QUEUE: usize = 4096;
/// Events a subscriber may have in flight before it counts as slow.
const SUBSCRIBER_BUFFER: usize = 256;
/// Backfill page size when a subscriber resumes or lagged.
const BACKFILL_PAGE: u32 = 500;
/// Status reports older than this are not shown by `Top`.
const STATUS_TTL: Duration = Duration::from_secs(30);
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The latest status of each live container, by (node, cgroup), with
/// when it arrived.
type StatusBoard = HashMap<(String, String), (Instant, ContainerMemoryStatus)>;

struct WriteRequest {
    event: OomEvent,
    reply: oneshot::Sender<Result<Inserted, String>>,
}

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
    pub async fn start(
        store: Store,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<Self, crate::store::StoreError> {
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

async fn write_batches(
    store: Store,
    hub: Hub,
    publish: bool,
    mut queue: mpsc::Receiver<WriteRequest>,
    metrics: Arc<CollectorMetrics>,
) {
    while let Some(first) = queue.recv().await {
        let mut events = vec![first.event];
        let mut replies = vec![first.reply];
        while events.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => {
                    events.push(next.event);
                    replies.push(next.reply);
                }
                Err(_) => break,
            }
        }
        metrics.batch(events.len());
        match store.insert_batch(&events).await {
            Ok(results) => {
                let mut fresh = Vec::new();
                for ((event, reply), result) in events.into_iter().zip(replies).zip(results) {
                    metrics.ingested(match result {
                        Inserted::Stored(_) => IngestResult::Stored,
                        Inserted::Duplicate => IngestResult::Duplicate,
                    });
                    if let (true, Inserted::Stored(seq)) = (publish, result) {
                        fresh.push(StoredEvent { seq, event });
                    }
                    let _ = reply.send(Ok(result));
                }
                // Subscribers rely on increasing seq.
                fresh.sort_by_key(|stored| stored.seq);
                for stored in fresh {
                    hub.publish(Published::Event(Arc::new(stored)));
                }
            }
            Err(error) => {
                warn!(%error, events = events.len(), "events not stored; agents will resend them");
                metrics.store_error();
                for reply in replies {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `IngestService`: agents stream events; each is acknowledged once stored.
#[derive(Debug, Clone)]
pub struct Ingest {
    collector: Collector,
}

impl Ingest {
    pub fn new(collector: Collector) -> Self {
        Self { collector }
    }
}

/// An event on its way to an ack.
enum Pending {
    Write(oneshot::Receiver<Result<Inserted, String>>),
    Rejected(String),
}

/// Marks a rejection among the error texts on the ack path.
const REJECTED: &str = "rejected: ";

fn ack(id: String, status: AckStatus, message: impl Into<String>) -> IngestAck {
    IngestAck {
        id,
        status: status as i32,
        message: message.into(),
    }
}

#[tonic::async_trait]
impl IngestService for Ingest {
    type IngestStream = BoxStream<IngestAck>;

    async fn ingest(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "?".to_owned(), |a| a.to_string());
        let mut incoming = request.into_inner();
        let collector = self.collector.clone();
        let (acks, ack_stream) = mpsc::channel::<Result<IngestAck, Status>>(WRITE_QUEUE);
        // Acks go out in the order events came in, while later events are
        // already queued for the next batch.
        let (pending, mut pending_rx) = mpsc::channel::<(String, Pending)>(WRITE_QUEUE);
        tokio::spawn(async move {
            while let Some((id, waiting)) = pending_rx.recv().await {
                let answer = match waiting {
                    Pending::Write(answer) => answer.await,
                    Pending::Rejected(why) => Ok(Err(why)),
                };
                let reply = match answer {
                    Ok(Ok(Inserted::Stored(_))) => Ok(ack(id, AckStatus::Stored, "")),
                    Ok(Ok(Inserted::Duplicate)) => Ok(ack(id, AckStatus::Duplicate, "already stored")),
                    Ok(Err(why)) if why.starts_with(REJECTED) => {
                        Ok(ack(id, AckStatus::Rejected, why.trim_start_matches(REJECTED)))
                    }
                    // Not an ack: the agent keeps the event and resends it.
                    Ok(Err(error)) => Err(Status::unavailable(format!("event {id} not stored: {error}"))),
                    Err(_) => return,
                };
                let failed = reply.is_err();
                if acks.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let metrics = Arc::clone(collector.metrics());
            metrics.agent_connected(1);
            let mut node = String::new();
            let closed = collector.closed();
            tokio::pin!(closed);
            loop {
                let message = tokio::select! {
                    message = incoming.message() => message,
                    () = &mut closed => break,
                };
                let item = match message {
                    Ok(Some(request)) => request.item,
                    Ok(None) => break,
                    Err(status) => {
                        debug!(%peer, %node, %status, "ingest stream ended");
                        break;
                    }
                };
                match item {
                    Some(ingest_request::Item::Hello(hello)) => {
                        info!(%peer, node = %hello.node, version = %hello.agent_version, "agent connected");
                        node = hello.node;
                    }
                    Some(ingest_request::Item::Event(event)) => {
                        if let Err(why) = validate(&event) {
                            metrics.ingested(IngestResult::Rejected);
                            warn!(%peer, %node, id = %event.id, why, "event rejected");
                            // In line with the other acks: they go out in order.
                            let rejected = Pending::Rejected(format!("{REJECTED}{why}"));
                            if pending.send((event.id, rejected)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let (reply, answer) = oneshot::channel();
                        let id = event.id.clone();
                        let mut event = event;
                        if event.analysis.is_none() {
                            event.analysis = Some(analyse(&event, &collector.rules));
                        }
                        if collector
                            .writes
                            .send(WriteRequest { event, reply })
                            .await
                            .is_err()
                            || pending.send((id, Pending::Write(answer))).await.is_err()
                        {
                            break;
                        }
                    }
                    Some(ingest_request::Item::Warning(warning)) => {
                        metrics.warning();
                        collector.hub.publish(Published::Warning(Arc::new(warning)));
                    }
                    Some(ingest_request::Item::Status(report)) => {
                        for status in report.containers {
                            collector.record_status(status);
                        }
                    }
                    None => {}
                }
            }
            metrics.agent_connected(-1);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_stream))))
    }
}

/// What makes an event unstorable.
fn validate(event: &OomEvent) -> Result<(), &'static str> {
    if event.id.is_empty() {
        return Err("the event has no id");
    }
    if event.id.len() > 128 {
        return Err("the event id is longer than 128 characters");
    }
    if event.time.is_none() {
        return Err("the event has no time");
    }
    Ok(())
}

/// `EventService`: queries and subscriptions.
#[derive(Debug, Clone)]
pub struct Events {
    collector: Collector,
}

impl Events {
    pub fn new(collector: Collector) -> Self {
        Self { collector }
    }
}

fn store_status(error: crate::store::StoreError) -> Status {
    match error {
        crate::store::StoreError::PageToken(_) => Status::invalid_argument(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    }
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

#[tonic::async_trait]
impl EventService for Events {
    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let token = match request.page_token.as_str() {
            "" => None,
            text => Some(PageToken::decode(text).map_err(store_status)?),
        };
        let (events, next) = self
            .collector
            .store
            .query(request.filter.as_ref(), page_size, token)
            .await
            .map_err(store_status)?;
        self.collector.metrics.query_done(started.elapsed());
        Ok(Response::new(QueryResponse {
            events: events.into_iter().map(|e| e.event).collect(),
            next_page_token: next.map(PageToken::encode).unwrap_or_default(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<OomEvent>, Status> {
        let id = request.into_inner().id;
        if let Some(stored) = self.collector.store.get(&id).await.map_err(store_status)? {
            return Ok(Response::new(stored.event));
        }
        if id.len() < 4 {
            return Err(Status::invalid_argument(format!(
                "{id:?}: give at least 4 characters of the id"
            )));
        }
        let mut found = self
            .collector
            .store
            .by_id_prefix(&id, 2)
            .await
            .map_err(store_status)?;
        match found.len() {
            1 => Ok(Response::new(found.remove(0).event)),
            0 => Err(Status::not_found(format!("no event with id {id}"))),
            _ => Err(Status::invalid_argument(format!(
                "{id} matches several events: give more of the id"
            ))),
        }
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
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
        let live = self.collector.hub.subscribe();
        let start = match cursor {
            Some(seq) => seq,
            None => self.collector.store.last_seq().await.map_err(store_status)?,
        };
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let subscription = Subscription {
            store: self.collector.store.clone(),
            filter: request.filter,
            include_warnings: request.include_warnings,
            last: start,
            sender,
            metrics: Arc::clone(&self.collector.metrics),
        };
        let closed = self.collector.closed();
        tokio::spawn(async move {
            tokio::select! {
                () = subscription.run(live) => {}
                () = closed => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn summary(&self, request: Request<SummaryRequest>) -> Result<Response<SummaryResponse>, Status> {
        let request = request.into_inner();
        let by = match GroupBy::try_from(request.group_by).unwrap_or(GroupBy::Unspecified) {
            GroupBy::Unspecified | GroupBy::Scope => GroupColumn::Scope,
            GroupBy::Namespace => GroupColumn::Namespace,
            GroupBy::Node => GroupColumn::Node,
            GroupBy::Workload => GroupColumn::Workload,
        };
        let rows = self
            .collector
            .store
            .summary(request.filter.as_ref(), by)
            .await
            .map_err(store_status)?;
        // Counts from SQL are never negative.
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let total = rows.iter().map(|r| count(r.count)).sum();
        let groups = rows
            .into_iter()
            .map(|row| {
                let key = match (by, row.key) {
                    (GroupColumn::Scope, Some(number)) => number
                        .parse::<i32>()
                        .ok()
                        .and_then(|n| Scope::try_from(n).ok())
                        .and_then(Scope::word)
                        .unwrap_or_else(|| "unknown".to_owned()),
                    (_, Some(key)) if !key.is_empty() => key,
                    _ => String::new(),
                };
                SummaryGroup {
                    key,
                    count: count(row.count),
                    silent: count(row.silent),
                    first: Some(timestamp_from_unix_us(row.first_us)),
                    last: Some(timestamp_from_unix_us(row.last_us)),
                }
            })
            .collect();
        Ok(Response::new(SummaryResponse { groups, total }))
    }

    async fn top(&self, request: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let mut containers: Vec<ContainerMemoryStatus> = {
            let mut statuses = self
                .collector
                .statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            statuses.retain(|_, (seen, _)| seen.elapsed() < STATUS_TTL);
            statuses
                .values()
                .map(|(_, status)| status.clone())
                .filter(|s| s.limit_bytes.is_some_and(|l| l > 0))
                .filter(|s| request.nodes.is_empty() || request.nodes.contains(&s.node))
                .filter(|s| {
                    request.namespaces.is_empty()
                        || s.pod
                            .as_ref()
                            .and_then(|p| p.namespace.as_ref())
                            .is_some_and(|ns| request.namespaces.contains(ns))
                })
                .collect()
        };
        let ratio =
            |s: &ContainerMemoryStatus| s.working_set_bytes as f64 / s.limit_bytes.unwrap_or(1).max(1) as f64;
        containers.sort_by(|a, b| ratio(b).total_cmp(&ratio(a)));
        containers.truncate(limit);
        Ok(Response::new(TopResponse { containers }))
    }
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
