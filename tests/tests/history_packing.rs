//! Packed memory histories between the agent's sender and a collector:
//! packed only for a collector that announces it reads them, never for
//! one that does not (an older collector would drop the unknown field and
//! store kills without their curve), and always served whole.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oomlens_agent::app::AgentMetrics;
use oomlens_agent::ship::SharedSpool;
use oomlens_common::client::ClientConfig;
use oomlens_proto::history;
use oomlens_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use oomlens_proto::v1::{
    AckStatus, GetRequest, IngestAck, IngestRequest, OomEvent, SubscribeRequest, ingest_request,
    subscribe_response,
};
use oomlens_tests::agent::InProcessShipper;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// A collector that stores nothing: it keeps the events as they arrived
/// and acks each, announcing packed histories or not.
#[derive(Clone)]
struct Recorder {
    announces: bool,
    received: Arc<Mutex<Vec<OomEvent>>>,
}

#[tonic::async_trait]
impl IngestService for Recorder {
    type IngestStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<IngestAck, Status>> + Send>>;

    async fn ingest(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let mut incoming = request.into_inner();
        let (acks, stream) = tokio::sync::mpsc::channel(64);
        let received = Arc::clone(&self.received);
        tokio::spawn(async move {
            while let Ok(Some(request)) = incoming.message().await {
                if let Some(ingest_request::Item::Event(event)) = request.item {
                    let ack = IngestAck {
                        id: event.id.clone(),
                        status: AckStatus::Stored.into(),
                        message: String::new(),
                    };
                    received.lock().unwrap().push(event);
                    if acks.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut response = Response::new(Box::pin(ReceiverStream::new(stream)) as Self::IngestStream);
        if self.announces {
            history::say_packed(response.metadata_mut());
        }
        Ok(response)
    }
}

async fn recorder(announces: bool) -> (String, Arc<Mutex<Vec<OomEvent>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let recorder = Recorder {
        announces,
        received: Arc::default(),
    };
    let received = Arc::clone(&recorder.received);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServiceServer::new(recorder))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (endpoint, received)
}

/// The agent's spool and sender shipping `events` to `endpoint` until the
/// spool is empty.
async fn ship_all(endpoint: &str, events: &[OomEvent]) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(AgentMetrics::new());
    let spool = SharedSpool::open(dir.path(), 64 << 20, metrics.spool.clone()).unwrap();
    for event in events {
        spool.append(event.clone()).await.unwrap();
    }
    let shipper = InProcessShipper::start(&spool, endpoint, &metrics, "packing-node", |_| {});
    let deadline = Instant::now() + Duration::from_secs(30);
    while spool.stats().events > 0 {
        assert!(Instant::now() < deadline, "the spool never emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shipper.stop().await;
}

/// The real collector, embedded, storing in `database`.
async fn collector(database: &str) -> oomlens_collector::server::Embedded {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    oomlens_collector::server::Embedded::start(
        database,
        listener,
        oomlens_collector::server::ServerConfig::default(),
    )
    .await
    .unwrap()
}

/// Kills with 60 s of 10 Hz history, one of them with a pod's history too.
fn kills() -> Vec<OomEvent> {
    let mut kills: Vec<OomEvent> = (0..5)
        .map(|n| oomlens_tests::synthetic_kill("packing-node", n, 600))
        .collect();
    kills[0].oom_memcg_history = kills[1].history.clone();
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_are_packed_for_a_collector_that_announces_it_and_plain_otherwise() {
    let sent = kills();

    let (endpoint, received) = recorder(true).await;
    ship_all(&endpoint, &sent).await;
    let packed = received.lock().unwrap().clone();
    assert_eq!(packed.len(), sent.len());
    for (got, original) in packed.iter().zip(&sent) {
        let h = got.history.as_ref().unwrap();
        assert!(
            h.samples.is_empty() && !h.packed.is_empty(),
            "{} not packed",
            got.id
        );
        assert_eq!(
            got.oom_memcg_history.is_some(),
            original.oom_memcg_history.is_some()
        );
        let mut whole = got.clone();
        history::unpack_event(&mut whole).unwrap();
        assert_eq!(&whole, original);
    }

    // An older collector: no header, so every sample travels as before.
    let (endpoint, received) = recorder(false).await;
    ship_all(&endpoint, &sent).await;
    assert_eq!(*received.lock().unwrap(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_stores_packed_histories_and_serves_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let collector = collector(&database).await;
    let mut client = ClientConfig {
        endpoint: collector.endpoint(),
        ..ClientConfig::default()
    }
    .event_client()
    .await
    .unwrap();
    let mut live = client
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let sent = kills();
    ship_all(&collector.endpoint(), &sent).await;

    // Subscribers are sent every sample (the store keeps the packed bytes
    // the agent sent; the event it publishes has them unpacked).
    for original in &sent {
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), live.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        let Some(subscribe_response::Item::Event(event)) = response.item else {
            panic!("not an event: {response:?}");
        };
        assert_eq!(event.id, original.id);
        assert_eq!(event.history, original.history);
        assert_eq!(event.oom_memcg_history, original.oom_memcg_history);
    }
    for original in &sent {
        let served = client
            .get(GetRequest {
                id: original.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(served.history, original.history);
        assert_eq!(served.oom_memcg_history, original.oom_memcg_history);
    }
    collector.stop().await.unwrap();

    // On disk, packed: a quarter of the plain encoding or less.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{database}"))
        .await
        .unwrap();
    let (stored, plain): (i64, usize) = (
        sqlx::query_scalar("SELECT SUM(LENGTH(body)) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap(),
        sent.iter().map(prost::Message::encoded_len).sum(),
    );
    pool.close().await;
    assert!(
        usize::try_from(stored).unwrap() * 3 < plain,
        "{stored} bytes stored for {plain} bytes of plain events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_packed_history_is_rejected_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let collector = collector(&database).await;
    let mut good = oomlens_tests::synthetic_kill("packing-node", 1, 600);
    history::pack(good.history.as_mut().unwrap());
    let mut damaged = oomlens_tests::synthetic_kill("packing-node", 2, 600);
    let h = damaged.history.as_mut().unwrap();
    history::pack(h);
    h.packed.truncate(h.packed.len() / 2);

    let mut ingest = ClientConfig {
        endpoint: collector.endpoint(),
        ..ClientConfig::default()
    }
    .ingest_client()
    .await
    .unwrap();
    let requests = [damaged, good].map(|event| IngestRequest {
        item: Some(ingest_request::Item::Event(event)),
    });
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    for request in requests {
        sender.send(request).await.unwrap();
    }
    let mut acks = ingest
        .ingest(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let first = acks.message().await.unwrap().unwrap();
    assert_eq!(first.status(), AckStatus::Rejected);
    assert!(
        first.message.contains("packed memory history"),
        "{}",
        first.message
    );
    let second = acks.message().await.unwrap().unwrap();
    assert_eq!(second.status(), AckStatus::Stored);
    drop(sender);
    collector.stop().await.unwrap();
}
