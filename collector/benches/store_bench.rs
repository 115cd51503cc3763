//! Collector benchmarks (run: `cargo bench -p oomlens-collector --bench
//! store_bench`; set `OOMLENS_TEST_POSTGRES` for the PostgreSQL figures,
//! `QUERY_EVENTS` to change the 1,000,000-event query set, `QUERY_DB` to
//! keep the SQLite query set in that file between runs).
//!
//! 1. Ingest: events carrying 60 s of 10 Hz history (600 samples) sent by
//!    4 concurrent agents over gRPC into the real server, each acked only
//!    once durable: events/s into SQLite and into PostgreSQL, with the
//!    histories packed as agents send them (and, for SQLite, plain, as
//!    agents from before packing do). The agents'
//!    protobuf encoding is done before the clock starts (real agents encode
//!    on their own nodes; here they share the collector's 2 cores).
//! 2. Query: 1,000,000 stored events (30 days, 50 namespaces, 20 nodes;
//!    short histories to keep the set on disk small: a query reads the
//!    index and one page of bodies), then `Query` by namespace and a
//!    one-day time range, page size 100, through gRPC: p50/p99 of 1,000
//!    after the first 100 (reported apart: cold pages).
//! 3. Web: on the same store, the kill list (`/`, the newest 50 with
//!    their sparklines), the list filtered by namespace, and one kill's
//!    page, over HTTP on loopback: p50/p99 of the whole request.
//!
//! `STORE_BENCH=query` runs only 2 and 3, `STORE_BENCH=ingest` only 1.

use std::time::{Duration, Instant};

use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_collector::store::Store;
use oomlens_common::client::ClientConfig;
use oomlens_common::units::saturating_u64;
use oomlens_proto::preencoded::Preencoded;
use oomlens_proto::v1::{
    EventFilter, IngestAck, IngestRequest, MemoryHistory, MemorySample, OomEvent, Pod, QueryRequest,
    ingest_request,
};
use prost_types::Timestamp;
use tokio_stream::wrappers::ReceiverStream;

const START: i64 = 1_795_000_000;

fn event(n: u64, samples: usize) -> OomEvent {
    // 30 days over 1M events.
    let t = START + (i64::try_from(n).expect("bench sizes fit") * 2_592_000) / 1_000_000;
    OomEvent {
        id: oomlens_proto::event_id(&format!("node-{}", n % 20), "bench", n),
        node: Some(format!("node-{}", n % 20)),
        time: Some(Timestamp { seconds: t, nanos: 0 }),
        scope: 1 + (n % 3) as i32,
        constraint: 1,
        pod: Some(Pod {
            uid: format!("uid-{n}"),
            name: Some(format!("pod-{}", n % 997)),
            namespace: Some(format!("ns-{}", n % 50)),
            ..Pod::default()
        }),
        history: Some(MemoryHistory {
            cgroup: format!("/kubepods/pod{n}/c"),
            samples: (0..samples)
                .map(|i| MemorySample {
                    time: Some(Timestamp {
                        seconds: t - 60 + i64::try_from(i / 10).expect("bench sizes fit"),
                        nanos: i32::try_from((i % 10) * 100_000_000).expect("below 10^9"),
                    }),
                    working_set_bytes: Some(100_000_000 + i as u64 * 91_111),
                    usage_bytes: Some(110_000_000 + i as u64 * 91_111),
                    anon_bytes: Some(90_000_000 + i as u64 * 81_111),
                    file_bytes: Some(10_000_000),
                    shmem_bytes: Some(0),
                    limit_bytes: Some(268_435_456),
                    ..MemorySample::default()
                })
                .collect(),
            limit_bytes: Some(268_435_456),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

async fn serve(database: &str) -> Embedded {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Embedded::start(database, listener, ServerConfig::default())
        .await
        .expect("start the collector")
}

/// `packed`: histories packed, as agents send them to a collector that
/// announces it; otherwise plain, as older agents send them.
async fn ingest_bench(label: &str, database: &str, packed: bool) {
    let collector = serve(database).await;
    let address = collector.endpoint();
    let agents = 4u64;
    let per_agent = 5_000u64;
    // Encoded before the clock starts: the agents' cost is not measured.
    let batches: Vec<Vec<Preencoded>> = (0..agents)
        .map(|a| {
            (0..per_agent)
                .map(|i| {
                    let mut event = event(a * per_agent + i, 600);
                    if packed {
                        oomlens_proto::history::pack(event.history.as_mut().expect("a history"));
                    }
                    let item = Some(ingest_request::Item::Event(event));
                    Preencoded::of(&IngestRequest { item })
                })
                .collect()
        })
        .collect();
    let size = batches[0][0].0.len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for events in batches {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let channel = ClientConfig {
                endpoint: address,
                ..ClientConfig::default()
            }
            .connect()
            .await
            .expect("connect");
            let mut grpc = tonic::client::Grpc::new(channel);
            let (sender, receiver) = tokio::sync::mpsc::channel(512);
            let count = events.len();
            tokio::spawn(async move {
                for event in events {
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                // Keep the stream open until the acks are in.
                std::future::pending::<()>().await;
            });
            grpc.ready().await.expect("ready");
            let codec = tonic_prost::ProstCodec::<Preencoded, IngestAck>::default();
            let path = http::uri::PathAndQuery::from_static("/oomlens.v1.IngestService/Ingest");
            let mut acks = grpc
                .streaming(tonic::Request::new(ReceiverStream::new(receiver)), path, codec)
                .await
                .expect("ingest")
                .into_inner();
            for _ in 0..count {
                acks.message().await.expect("ack").expect("stream open");
            }
        }));
    }
    for task in tasks {
        task.await.expect("agent task");
    }
    let elapsed = started.elapsed();
    let total = agents * per_agent;
    println!(
        "ingest {label}: {total} events of {:.1} KiB (600 samples, {}) from {agents} agents in {:.2} s = {:.0} events/s ({:.1} MiB/s)",
        size as f64 / 1024.0,
        if packed {
            "packed"
        } else {
            "plain, as older agents send"
        },
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        (total as f64 * size as f64) / elapsed.as_secs_f64() / (1024.0 * 1024.0),
    );
    collector.stop().await.expect("stop");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = saturating_u64(((sorted.len() as f64 - 1.0) * p).round());
    sorted[usize::try_from(at).unwrap_or(usize::MAX)]
}

async fn query_bench(label: &str, database: &str, count: u64) {
    let store = Store::open(database).await.expect("open store");
    let (have, _) = store.totals().await.expect("totals");
    let have = u64::try_from(have).expect("a count");
    if have < count {
        let started = Instant::now();
        let mut n = have;
        while n < count {
            let batch: Vec<OomEvent> = (n..(n + 2000).min(count)).map(|i| event(i, 10)).collect();
            store.insert_batch(&batch).await.expect("insert");
            n += batch.len() as u64;
        }
        println!(
            "query {label}: loaded {count} events in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        // The newest 50, which the kill list shows, with a full 60 s of
        // 10 Hz history each, as real kills have.
        let newest: Vec<OomEvent> = (count..count + 50).map(|i| event(i, 600)).collect();
        store.insert_batch(&newest).await.expect("insert");
    }
    store.close().await;
    let collector = serve(database).await;
    let mut client = ClientConfig {
        endpoint: collector.endpoint(),
        ..ClientConfig::default()
    }
    .event_client()
    .await
    .expect("connect");
    // The first queries after the collector opened the store find its
    // pages cold (each pooled connection has its own cache); a collector
    // that has been up answers like the rest. Reported apart.
    const COLD: u64 = 100;
    let mut latencies = Vec::new();
    let mut cold = Vec::new();
    let mut returned = 0usize;
    for q in 0..COLD + 1000 {
        // A pseudo-random namespace and day.
        let mix = q.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        let day = i64::try_from(mix % 29).expect("below 29");
        let filter = EventFilter {
            namespaces: vec![format!("ns-{}", mix % 50)],
            since: Some(Timestamp {
                seconds: START + day * 86_400,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: START + (day + 1) * 86_400,
                nanos: 0,
            }),
            ..EventFilter::default()
        };
        let started = Instant::now();
        let page = client
            .query(QueryRequest {
                filter: Some(filter),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("query")
            .into_inner();
        if q < COLD {
            cold.push(started.elapsed());
        } else {
            latencies.push(started.elapsed());
            returned += page.events.len();
        }
    }
    latencies.sort();
    cold.sort();
    println!(
        "query {label}: {count} stored, namespace + one day, page 100 ({:.0} events/page): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; the first {COLD} after opening: p50 {:.2} ms, p99 {:.2} ms",
        returned as f64 / 1000.0,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&cold, 0.5).as_secs_f64() * 1e3,
        percentile(&cold, 0.99).as_secs_f64() * 1e3,
    );
    web_bench(label, collector).await;
}

/// `GET path` on 127.0.0.1:`port` with a fresh connection; the status.
async fn http_get(address: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response[..12.min(response.len())])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn web_bench(label: &str, mut collector: Embedded) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    collector.serve_http(listener);
    let id = oomlens_proto::event_id(&format!("node-{}", 999 % 20), "bench", 999);
    let pages = [
        ("kill list", "/".to_owned()),
        ("list, one namespace", "/?namespace=ns-7".to_owned()),
        ("one kill", format!("/kills/{id}")),
    ];
    for (name, path) in &pages {
        let mut latencies = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let status = http_get(&address, path).await;
            latencies.push(started.elapsed());
            assert_eq!(status, 200, "{path}");
        }
        latencies.sort();
        println!(
            "web {label}: {name} ({path}): p50 {:.2} ms, p99 {:.2} ms",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        );
    }
    collector.stop().await.expect("stop");
}

async fn postgres_database(name: &str) -> Option<String> {
    let url = std::env::var("OOMLENS_TEST_POSTGRES").ok()?;
    let pool = sqlx::PgPool::connect(&url).await.ok()?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .ok()?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .ok()?;
    pool.close().await;
    let slash = url.rfind('/')?;
    Some(format!("{}/{name}", &url[..slash]))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        if std::env::var("STORE_BENCH").as_deref() != Ok("query") {
            let sqlite = dir.path().join("ingest.db").display().to_string();
            ingest_bench("sqlite", &sqlite, true).await;
            let plain = dir.path().join("ingest-plain.db").display().to_string();
            ingest_bench("sqlite", &plain, false).await;
            let postgres = postgres_database("oomlens_bench_ingest").await;
            match &postgres {
                Some(url) => ingest_bench("postgres", url, true).await,
                None => println!("ingest postgres: skipped (set OOMLENS_TEST_POSTGRES to a server the role can CREATE DATABASE on)"),
            }
        }
        if std::env::var("STORE_BENCH").as_deref() == Ok("ingest") {
            return;
        }
        let count = std::env::var("QUERY_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        // QUERY_DB: a file kept between runs (loading 1,000,000 takes a
        // minute and a half).
        let sqlite = std::env::var("QUERY_DB")
            .unwrap_or_else(|_| dir.path().join("query.db").display().to_string());
        query_bench("sqlite", &sqlite, count).await;
        if let Some(url) = postgres_database("oomlens_bench_query").await {
            query_bench("postgres", &url, count).await;
        }
    });
}
