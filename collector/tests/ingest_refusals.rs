//! Every ingest message the collector cannot take is answered, over
//! loopback against the real server: an invalid event with a `REJECTED`
//! ack and its reason (the stream goes on), a malformed message with
//! `INVALID_ARGUMENT` and an oversized one with `RESOURCE_EXHAUSTED`
//! (ending the stream after the acks of the events before it); each logged
//! at `warn` with the peer. Raw bytes go out through a codec of our own,
//! as a broken or hostile client would send them.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::event;
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_proto::v1::{AckStatus, IngestAck, IngestRequest, OomEvent, ingest_request};
use prost::Message as _;
use prost::bytes::BufMut as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends each item as it is (already encoded, or not a message at all);
/// decodes acks.
struct RawCodec;
struct RawEncoder;
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = IngestAck;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<IngestAck>, tonic::Status> {
        IngestAck::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = IngestAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

fn encoded(event: OomEvent) -> Vec<u8> {
    IngestRequest {
        item: Some(ingest_request::Item::Event(event)),
    }
    .encode_to_vec()
}

/// How an ingest stream stood after its answers.
#[derive(Debug)]
enum End {
    /// Still open: the stream goes on.
    Open,
    /// Ended with OK.
    Ok,
    Status(tonic::Status),
}

/// Sends `messages` on one ingest stream, which stays open (no
/// half-close); reads `answers` acks (or fewer, if it ends first), then
/// how the stream stands.
async fn ingest_raw(address: &str, messages: Vec<Vec<u8>>, answers: usize) -> (Vec<IngestAck>, End) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    let (sender, receiver) = mpsc::channel(messages.len() + 1);
    for message in messages {
        sender.send(message).await.unwrap();
    }
    let path = http::uri::PathAndQuery::from_static("/oomlens.v1.IngestService/Ingest");
    let response = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(receiver)), path, RawCodec)
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), End::Status(status)),
    };
    let mut acks = Vec::new();
    let end = loop {
        // Once every answer is in, a moment for an end that may follow.
        let wait = if acks.len() < answers { 20_000 } else { 1_000 };
        let Ok(next) = tokio::time::timeout(Duration::from_millis(wait), stream.message()).await else {
            assert!(
                acks.len() >= answers,
                "{answers} answers within 20 s, got {acks:?}"
            );
            break End::Open;
        };
        match next {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => break End::Ok,
            Err(status) => break End::Status(status),
        }
    };
    drop(sender);
    (acks, end)
}

fn ended_with(end: End) -> tonic::Status {
    match end {
        End::Status(status) => status,
        other => panic!("the stream should end with a status, not {other:?}"),
    }
}

/// Log lines at `warn` and above while it lives, from this thread (a
/// current-thread runtime runs the server here too).
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Shared(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    /// The warn lines that contain `what`, each checked to name the peer.
    fn warned(&self, what: &str) -> Vec<String> {
        let lines: Vec<String> = self
            .text()
            .lines()
            .filter(|line| line.contains(what))
            .map(str::to_owned)
            .collect();
        for line in &lines {
            assert!(line.contains(" WARN "), "{line}");
            assert!(line.contains("peer=127.0.0.1:"), "the peer is named: {line}");
        }
        lines
    }
}

async fn start() -> (tempfile::TempDir, Embedded) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = Embedded::start(&database, listener, ServerConfig::default())
        .await
        .unwrap();
    (dir, collector)
}

#[tokio::test]
async fn a_malformed_message_ends_the_stream_with_invalid_argument_after_the_acks_before_it() {
    let logs = Logs::capture();
    let (_dir, collector) = start().await;
    let address = collector.address().to_string();
    // Not protobuf: field 1 with wire type 7, which does not exist.
    let garbage = vec![0x0f, 0x00];
    // Well-formed protobuf, but the event id is not UTF-8.
    let not_utf8 = {
        let inner = [0x0a, 0x02, 0xff, 0xfe];
        let mut outer = vec![0x12, u8::try_from(inner.len()).unwrap()];
        outer.extend_from_slice(&inner);
        outer
    };
    for (n, bad) in [(0, garbage), (10, not_utf8)] {
        let messages = vec![
            encoded(event(n, "shop", 5)),
            encoded(event(n + 1, "shop", 5)),
            bad,
        ];
        let (acks, end) = ingest_raw(&address, messages, 2).await;
        let stored: Vec<i32> = acks.iter().map(|a| a.status).collect();
        assert_eq!(
            stored,
            vec![AckStatus::Stored as i32; 2],
            "the events before it are acknowledged"
        );
        let end = ended_with(end);
        assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
        assert!(end.message().starts_with("malformed ingest message: "), "{end:?}");
    }
    assert!(logs.text().contains("invalid wire type"), "{}", logs.text());
    assert!(logs.text().contains("UTF-8"), "{}", logs.text());
    assert_eq!(logs.warned("ingest message refused").len(), 2, "{}", logs.text());
    collector.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_ends_the_stream_with_resource_exhausted() {
    let logs = Logs::capture();
    let (_dir, collector) = start().await;
    let address = collector.address().to_string();
    let mut huge = event(2, "shop", 5);
    huge.node = Some("x".repeat(17 << 20));
    let messages = vec![encoded(event(1, "shop", 5)), encoded(huge)];
    let (acks, end) = ingest_raw(&address, messages, 1).await;
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].status, AckStatus::Stored as i32);
    let end = ended_with(end);
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(end.message().contains("too large"), "{end:?}");
    let limit = format!(
        "the limit is: {} bytes",
        oomlens_common::limits::MAX_INGEST_MESSAGE
    );
    assert!(end.message().contains(&limit), "{end:?}");
    assert_eq!(logs.warned("ingest message refused").len(), 1, "{}", logs.text());
    collector.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_event_is_rejected_with_its_reason_and_the_stream_goes_on() {
    let logs = Logs::capture();
    let (_dir, collector) = start().await;
    let address = collector.address().to_string();
    let mut timeless = event(1, "shop", 5);
    timeless.time = None;
    // A kind of item this collector does not know (a newer agent's):
    // field 15, skipped.
    let unknown = vec![0x7a, 0x00];
    let messages = vec![
        encoded(timeless.clone()),
        unknown.clone(),
        unknown,
        encoded(event(2, "shop", 5)),
    ];
    let (acks, end) = ingest_raw(&address, messages, 2).await;
    assert!(matches!(end, End::Open), "the stream goes on: {end:?}");
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].id, timeless.id);
    assert_eq!(acks[0].status, AckStatus::Rejected as i32);
    assert_eq!(acks[0].message, "the event has no time");
    assert_eq!(acks[1].status, AckStatus::Stored as i32);
    assert_eq!(logs.warned("event rejected").len(), 1, "{}", logs.text());
    assert_eq!(
        logs.warned("no item this collector knows").len(),
        1,
        "once per stream"
    );
    collector.stop().await.unwrap();
}
