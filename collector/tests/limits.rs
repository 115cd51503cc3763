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
use tokio_stream::wrappers::ReceiverStream;

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

async fn ingest(config: &ClientConfig, events: Vec<oomlens_proto::v1::OomEvent>) {
    let mut client = config.ingest_client().await.unwrap();
    let count = events.len();
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for event in events {
            let item = Some(ingest_request::Item::Event(event));
            if sender.send(IngestRequest { item }).await.is_err() {
                return;
            }
        }
    });
    let mut acks = client
        .ingest(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..count {
        acks.message().await.unwrap().expect("an ack per event");
    }
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
