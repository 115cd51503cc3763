//! Subscribers cannot make the collector hold unbounded memory: one that
//! reads nothing is dropped with `RESOURCE_EXHAUSTED` and resumes from
//! the cursor it last received, losing nothing; clients that leave are
//! counted out at once; beyond the limit, subscriptions are refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::event;
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_collector::service::Limits;
use oomlens_common::client::ClientConfig;
use oomlens_proto::history;
use oomlens_proto::v1::{SubscribeRequest, SubscribeResponse, subscribe_response};

async fn start(limits: Limits) -> (Embedded, ClientConfig, tempfile::TempDir) {
    common::embedded(ServerConfig {
        limits,
        ..ServerConfig::default()
    })
    .await
}

async fn subscribe(
    config: &ClientConfig,
    cursor: &str,
) -> Result<tonic::Streaming<SubscribeResponse>, tonic::Status> {
    let mut client = config.event_client().await.unwrap();
    Ok(client
        .subscribe(SubscribeRequest {
            cursor: cursor.to_owned(),
            ..SubscribeRequest::default()
        })
        .await?
        .into_inner())
}

fn gauge(server: &Embedded, name: &str) -> f64 {
    let text = server.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_is_dropped_and_resumes_from_its_cursor_losing_nothing() {
    let (server, config, _dir) = start(Limits {
        subscriber_bytes: 256 << 10,
        slow_after: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let mut stalled = subscribe(&config, "").await.unwrap();
    // ~20 KiB events: far more than the transport's windows and the
    // outbox hold, while the subscriber reads nothing.
    let total = 1500u64;
    ingest(&config, 0..total, 600).await;
    until("the stalled subscriber dropped", || {
        gauge(&server, "oomlens_collector_subscribers_dropped_total") >= 1.0
    })
    .await;

    // It reads what reached it, then the status that says why it ended.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let ended = loop {
        match stalled.message().await {
            Ok(Some(response)) => {
                if let Some(subscribe_response::Item::Event(e)) = response.item {
                    seen.push(e.id);
                    cursor = response.cursor;
                }
            }
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::ResourceExhausted, "{ended:?}");
    assert!(
        ended.message().contains("cursor"),
        "says how to resume: {ended:?}"
    );
    assert!((seen.len() as u64) < total, "dropped before the end");

    // Resuming from its last cursor gives the rest, once each, in order.
    let mut resumed = subscribe(&config, &cursor).await.unwrap();
    while (seen.len() as u64) < total {
        let response = tokio::time::timeout(Duration::from_secs(20), resumed.message())
            .await
            .expect("the resumed stream delivers")
            .unwrap()
            .unwrap();
        if let Some(subscribe_response::Item::Event(e)) = response.item {
            seen.push(e.id);
        }
    }
    let expected: Vec<String> = (0..total).map(|n| event(n, "", 0).id).collect();
    assert_eq!(seen, expected);
    drop(resumed);
    until("no subscriber left", || {
        gauge(&server, "oomlens_collector_subscribers") == 0.0
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn clients_that_leave_idle_are_counted_out_and_the_limit_refuses_more() {
    let (server, config, _dir) = start(Limits {
        max_subscribers: 2,
        ..Limits::default()
    })
    .await;
    let first = subscribe(&config, "").await.unwrap();
    let second = subscribe(&config, "").await.unwrap();
    until("two subscribers", || {
        gauge(&server, "oomlens_collector_subscribers") == 2.0
    })
    .await;
    let refused = subscribe(&config, "").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");

    // Nothing is published: they leave while their tasks wait for events.
    drop(first);
    drop(second);
    until("both counted out", || {
        gauge(&server, "oomlens_collector_subscribers") == 0.0
    })
    .await;
    assert!(subscribe(&config, "").await.is_ok(), "room again");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_is_sent_each_live_event_whole_from_one_encoding() {
    let (server, config, _dir) = start(Limits::default()).await;
    let mut streams = vec![
        subscribe(&config, "").await.unwrap(),
        subscribe(&config, "").await.unwrap(),
        subscribe(&config, "").await.unwrap(),
    ];
    // A first event read by all: each is past its catch-up from the
    // store, and what follows reaches them live.
    ingest(&config, 0..1, 10).await;
    for stream in &mut streams {
        assert_eq!(next_events(stream, 1).await.len(), 1);
    }
    let sent = gauge(&server, "oomlens_collector_subscriber_events_total");
    let encoded = gauge(&server, "oomlens_collector_subscriber_event_encodings_total");

    ingest(&config, 1..21, 600).await;
    let mut received = Vec::new();
    for stream in &mut streams {
        received.push(next_events(stream, 20).await);
    }
    let mut client = config.event_client().await.unwrap();
    for (cursor, event) in &received[0] {
        let stored = client
            .get(oomlens_proto::v1::GetRequest { id: event.id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(event, &stored, "sent whole, as stored");
        assert_eq!(event.history.as_ref().unwrap().samples.len(), 600);
        assert!(cursor.parse::<i64>().is_ok(), "cursor {cursor:?}");
    }
    assert_eq!(received[1], received[0], "every subscriber is sent the same");
    assert_eq!(received[2], received[0], "every subscriber is sent the same");
    assert_eq!(
        gauge(&server, "oomlens_collector_subscriber_events_total") - sent,
        60.0
    );
    assert_eq!(
        gauge(&server, "oomlens_collector_subscriber_event_encodings_total") - encoded,
        20.0,
        "each live event encoded once for the three subscribers"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_packed_histories_is_sent_them_packed() {
    let (server, config, _dir) = start(Limits::default()).await;
    let mut client = config.event_client().await.unwrap();
    let mut request = tonic::Request::new(SubscribeRequest::default());
    history::say_packed(request.metadata_mut());
    let response = client.subscribe(request).await.unwrap();
    assert_eq!(
        response.metadata().get(history::HEADER).unwrap(),
        history::HEADER_PACKED,
        "the collector confirms it"
    );
    assert!(history::says_packed(response.metadata()));
    let mut packed = response.into_inner();
    let mut plain = subscribe(&config, "").await.unwrap();

    ingest(&config, 0..5, 600).await;
    let plain_events = next_events(&mut plain, 5).await;
    for (cursor, expected) in plain_events.clone() {
        let mut response = tokio::time::timeout(Duration::from_secs(10), packed.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(response.cursor, cursor);
        let Some(subscribe_response::Item::Event(event)) = response.item.as_ref() else {
            panic!("not an event: {response:?}");
        };
        let history = event.history.as_ref().unwrap();
        assert!(history.samples.is_empty() && !history.packed.is_empty(), "packed");
        history::unpack_response(&mut response).unwrap();
        let Some(subscribe_response::Item::Event(event)) = response.item else {
            unreachable!()
        };
        assert_eq!(event, expected, "the same event, unpacked");
    }

    // Caught up from the store (read with its histories as stored): the
    // same, plain for a plain subscriber, packed for a packed one.
    let mut plain_again = subscribe(&config, "0").await.unwrap();
    assert_eq!(next_events(&mut plain_again, 5).await, plain_events);
    let mut request = tonic::Request::new(SubscribeRequest {
        cursor: "0".into(),
        ..SubscribeRequest::default()
    });
    history::say_packed(request.metadata_mut());
    let mut packed_again = client.subscribe(request).await.unwrap().into_inner();
    for (cursor, expected) in plain_events {
        let mut response = packed_again.message().await.unwrap().unwrap();
        assert_eq!(response.cursor, cursor);
        let Some(subscribe_response::Item::Event(event)) = response.item.as_ref() else {
            panic!("not an event: {response:?}");
        };
        assert!(event.history.as_ref().unwrap().samples.is_empty(), "packed");
        history::unpack_response(&mut response).unwrap();
        assert_eq!(
            response.item,
            Some(subscribe_response::Item::Event(expected)),
            "the same event, unpacked"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_subscribe_request_that_does_not_decode_is_refused_and_the_next_is_served() {
    let (server, config, _dir) = start(Limits::default()).await;
    let mut grpc = tonic::client::Grpc::new(config.connect().await.unwrap());
    grpc.ready().await.unwrap();
    // Field 1 (the filter) says 100 bytes follow; two do.
    let garbage = oomlens_proto::preencoded::Preencoded(vec![0x0a, 100, 1, 2].into());
    let refused = grpc
        .server_streaming(
            tonic::Request::new(garbage),
            tonic::codegen::http::uri::PathAndQuery::from_static("/oomlens.v1.EventService/Subscribe"),
            tonic_prost::ProstCodec::<oomlens_proto::preencoded::Preencoded, SubscribeResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");
    assert_eq!(gauge(&server, "oomlens_collector_subscribers"), 0.0);

    let mut stream = subscribe(&config, "").await.unwrap();
    ingest(&config, 0..1, 10).await;
    assert_eq!(next_events(&mut stream, 1).await.len(), 1);
    server.stop().await.unwrap();
}

/// The next `count` events of `stream`, with their cursors.
async fn next_events(
    stream: &mut tonic::Streaming<SubscribeResponse>,
    count: usize,
) -> Vec<(String, oomlens_proto::v1::OomEvent)> {
    let mut events = Vec::new();
    while events.len() < count {
        let (event, cursor) = common::next_event(stream).await;
        events.push((cursor, event));
    }
    events
}

/// Stores events `range`, each acknowledged.
async fn ingest(config: &ClientConfig, range: std::ops::Range<u64>, samples: usize) {
    let events: Vec<_> = range.map(|n| event(n, "shop", samples)).collect();
    let count = events.len();
    let acks = common::ingest(config, events).await.unwrap();
    assert_eq!(acks.len(), count, "an ack per event");
}
