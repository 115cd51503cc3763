//! Responses are bounded by bytes, not only by count: a page of ordinary
//! events never passes the gRPC message limit, it ends early and carries
//! the cursor of the next one, and paging gives every event once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::event;
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_collector::store::READ_BUDGET;
use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{IngestRequest, QueryRequest, ingest_request};
use prost::Message;

async fn start() -> (Embedded, ClientConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Embedded::start(&database, listener, ServerConfig::default())
        .await
        .unwrap();
    let client = ClientConfig {
        endpoint: server.endpoint(),
        ..ClientConfig::default()
    };
    (server, client, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_ordinary_events_ends_at_its_byte_budget_and_paging_gives_every_event_once() {
    let (server, config, _dir) = start().await;
    // ~35 KB each, as real events with a minute of history are: 500 of
    // them are more than the 16 MiB a gRPC message may carry.
    let events: Vec<_> = (0..500).map(|n| event(n, "shop", 1000)).collect();
    let size = events[0].encoded_len();
    assert!(size > 30_000, "{size} bytes per event");
    ingest(&config, events).await;

    let mut client = config.event_client().await.unwrap();
    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .query(QueryRequest {
                filter: None,
                page_size: 500,
                page_token: token,
            })
            .await
            .expect("a page never fails for its size")
            .into_inner();
        pages += 1;
        let bytes: usize = page.events.iter().map(Message::encoded_len).sum();
        assert!(bytes <= READ_BUDGET + 64 * 1024, "a page of {bytes} bytes");
        for event in page.events {
            assert!(seen.insert(event.id), "an event on two pages");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 500, "every event once");
    assert!(pages >= 4, "pages ended at their byte budget: {pages}");
    server.stop().await.unwrap();
}

/// An event with `samples` of history (about 29 bytes each).
fn with_history(n: u64, samples: usize) -> oomlens_proto::v1::OomEvent {
    event(n, "shop", samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_event_an_agent_may_send_is_stored_shown_queried_and_streamed() {
    use oomlens_common::limits::MAX_EVENT_BYTES;
    use oomlens_proto::v1::{GetRequest, SubscribeRequest, subscribe_response};

    let (server, config, _dir) = start().await;
    // The longest history that keeps the event within the cap.
    let (mut fits, mut over) = (0, MAX_EVENT_BYTES / 8);
    while over - fits > 1 {
        let middle = usize::midpoint(fits, over);
        if with_history(1, middle).encoded_len() <= MAX_EVENT_BYTES {
            fits = middle;
        } else {
            over = middle;
        }
    }
    let largest = with_history(1, fits);
    let size = largest.encoded_len();
    assert!(
        size <= MAX_EVENT_BYTES && size > MAX_EVENT_BYTES - 1024,
        "{size} bytes"
    );
    ingest(&config, vec![largest.clone(), event(2, "shop", 10)]).await;

    let mut client = config.event_client().await.unwrap();
    let shown = client
        .get(GetRequest {
            id: largest.id.clone(),
        })
        .await
        .expect("Get of the largest event")
        .into_inner();
    assert!(shown.analysis.is_some(), "stored with its analysis");
    assert!(shown.encoded_len() > size, "the analysis made it larger");

    let page = client
        .query(QueryRequest {
            filter: None,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("Query")
        .into_inner();
    let mut seen: Vec<String> = page.events.into_iter().map(|e| e.id).collect();
    let mut token = page.next_page_token;
    while !token.is_empty() {
        let page = client
            .query(QueryRequest {
                filter: None,
                page_size: 10,
                page_token: token,
            })
            .await
            .expect("Query")
            .into_inner();
        seen.extend(page.events.into_iter().map(|e| e.id));
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    let mut stream = client
        .subscribe(SubscribeRequest {
            cursor: "0".into(),
            ..SubscribeRequest::default()
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let mut streamed = Vec::new();
    while streamed.len() < 2 {
        let response = stream.message().await.expect("streamed").expect("open");
        if let Some(subscribe_response::Item::Event(e)) = response.item {
            streamed.push(e.id);
        }
    }
    assert_eq!(streamed[0], largest.id);

    // And the CLI shows it.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_oomlens"))
        .args(["--collector", &server.endpoint(), "show", &largest.id])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_over_the_cap_ends_its_stream_with_the_cap_in_its_reason() {
    use oomlens_common::limits::MAX_INGEST_MESSAGE;

    let (server, config, _dir) = start().await;
    let too_large = with_history(1, MAX_INGEST_MESSAGE / 25);
    assert!(too_large.encoded_len() > MAX_INGEST_MESSAGE);
    let mut client = config.ingest_client().await.unwrap();
    let request = IngestRequest {
        item: Some(ingest_request::Item::Event(too_large)),
    };
    let answer = async {
        let mut acks = client
            .ingest(tokio_stream::iter(vec![request]))
            .await?
            .into_inner();
        acks.message().await
    }
    .await;
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("at most 8 MiB"), "{status:?}");
    server.stop().await.unwrap();
}

/// Stores `events`, each acknowledged.
async fn ingest(config: &ClientConfig, events: Vec<oomlens_proto::v1::OomEvent>) {
    let count = events.len();
    let acks = common::ingest(config, events).await.unwrap();
    assert_eq!(acks.len(), count, "an ack per event");
}
