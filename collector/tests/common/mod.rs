//! Shared by the collector's integration tests: synthetic events shaped
//! like the agent's, sending them, and the PostgreSQL test database.

#![allow(dead_code, unreachable_pub)]

use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{
    Constraint, Container, MemcgUsage, MemoryHistory, MemorySample, OomEvent, Pod, QosClass, Scope, Victim,
    Workload,
};
use oomlens_proto::v1::{IngestAck, IngestRequest, ingest_request};
use prost_types::Timestamp;
use tokio_stream::wrappers::ReceiverStream;

pub const BASE_SECS: i64 = 1_795_000_000;

/// A container-limit kill with `samples` of 10 Hz history.
pub fn event(n: u64, namespace: &str, samples: usize) -> OomEvent {
    let time = BASE_SECS + i64::try_from(n).unwrap();
    let limit = 256 * 1024 * 1024u64;
    OomEvent {
        id: oomlens_proto::event_id("node-a", "boot-1", n),
        node: Some(if n.is_multiple_of(3) { "node-b" } else { "node-a" }.to_owned()),
        time: Some(Timestamp {
            seconds: time,
            nanos: 0,
        }),
        constraint: Constraint::Memcg as i32,
        scope: if n.is_multiple_of(5) {
            Scope::PodLimit
        } else {
            Scope::ContainerLimit
        } as i32,
        oom_memcg: Some(format!("/kubepods/burstable/pod{n}/c{n}")),
        task_memcg: Some(format!("/kubepods/burstable/pod{n}/c{n}")),
        victim: Some(Victim {
            pid: Some(1000 + i32::try_from(n).unwrap()),
            comm: Some("java".into()),
            anon_rss_kb: Some(limit / 1024),
            ..Victim::default()
        }),
        memcg_usage: Some(MemcgUsage {
            usage_kb: Some(limit / 1024),
            limit_kb: Some(limit / 1024),
            failcnt: Some(3),
            ..MemcgUsage::default()
        }),
        pod: Some(Pod {
            uid: format!("uid-{n}"),
            name: Some(format!("api-{}", n % 7)),
            namespace: Some(namespace.to_owned()),
            qos: QosClass::Burstable as i32,
            owner: Some(Workload {
                kind: "Deployment".into(),
                name: "api".into(),
            }),
            ..Pod::default()
        }),
        container: Some(Container {
            id: format!("{n:064x}"),
            name: Some("app".into()),
            memory_limit_bytes: Some(limit),
            ..Container::default()
        }),
        silent: Some(n.is_multiple_of(4)),
        history: Some(MemoryHistory {
            cgroup: format!("/kubepods/burstable/pod{n}/c{n}"),
            samples: (0..samples)
                .map(|i| {
                    let t_ms = time * 1000 - i64::try_from(samples - i).unwrap() * 100;
                    MemorySample {
                        time: Some(Timestamp {
                            seconds: t_ms.div_euclid(1000),
                            nanos: i32::try_from(t_ms.rem_euclid(1000) * 1_000_000).unwrap(),
                        }),
                        working_set_bytes: Some(limit / 2 + (i as u64 * (limit / 2)) / samples.max(1) as u64),
                        usage_bytes: Some(
                            limit / 2 + (i as u64 * (limit / 2)) / samples.max(1) as u64 + 4096,
                        ),
                        anon_bytes: Some(limit / 3),
                        file_bytes: Some(4096),
                        limit_bytes: Some(limit),
                        ..MemorySample::default()
                    }
                })
                .collect(),
            limit_bytes: Some(limit),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

/// Sends `events` on one ingest stream, fed as the collector reads them;
/// returns the acks (fewer if the collector ended the stream).
pub async fn ingest(config: &ClientConfig, events: Vec<OomEvent>) -> Result<Vec<IngestAck>, tonic::Status> {
    let mut client = config
        .ingest_client()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
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
    let mut acks = client.ingest(ReceiverStream::new(receiver)).await?.into_inner();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match acks.message().await? {
            Some(ack) => out.push(ack),
            None => break,
        }
    }
    Ok(out)
}

/// The PostgreSQL database for tests: `OOMLENS_TEST_POSTGRES`, or the one
/// `.ci/run` creates. None (with the reason printed) when unreachable,
/// unless `OOMLENS_REQUIRE_POSTGRES=1` (CI), which makes that a failure.
pub async fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("OOMLENS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://oomlens:oomlens@127.0.0.1:5432/oomlens_test".to_owned());
    use sqlx::Connection as _;
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::postgres::PgConnection::connect(&url),
    )
    .await
    .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
    match attempt {
        Ok(connection) => {
            let _ = connection.close().await;
            Some(url)
        }
        Err(error) => {
            assert!(
                std::env::var("OOMLENS_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{test}: PostgreSQL required but unreachable at {url}: {error}"
            );
            eprintln!("SKIPPED {test}: no PostgreSQL at {url} ({error}); .ci/run starts one");
            None
        }
    }
}

/// A database of its own for one test (tests run in parallel): dropped
/// and created afresh on the server at `url`; returns its URL.
pub async fn fresh_database(url: &str, name: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.expect("connect to PostgreSQL");
    let db = format!("oomlens_t_{name}");
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&pool)
        .await
        .expect("drop the test database");
    sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .expect("create the test database (the role needs CREATEDB)");
    pool.close().await;
    match url.rfind('/') {
        Some(slash) => format!("{}/{db}", &url[..slash]),
        None => panic!("database URL without a database: {url}"),
    }
}

/// A collector serving gRPC and, on a second port, its HTTP address (the
/// JSON API and the pages), with `tokens`.
pub struct WithHttp {
    pub server: oomlens_collector::server::Embedded,
    /// `127.0.0.1:PORT` of the HTTP address.
    pub http: String,
    /// For sending events, with `ingest_token`.
    pub grpc: ClientConfig,
    _dir: tempfile::TempDir,
}

/// A collector on a free port with `config`, its database in a fresh
/// directory (kept alive by the returned guard), and a client for it.
pub async fn embedded(
    config: oomlens_collector::server::ServerConfig,
) -> (
    oomlens_collector::server::Embedded,
    ClientConfig,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let (server, client) = serve_at(&database, config).await;
    (server, client, dir)
}

/// A collector on a free port storing in `database` (a SQLite file or a
/// PostgreSQL URL), and a client for it.
pub async fn serve_at(
    database: &str,
    config: oomlens_collector::server::ServerConfig,
) -> (oomlens_collector::server::Embedded, ClientConfig) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = oomlens_collector::server::Embedded::start(database, listener, config)
        .await
        .unwrap();
    let client = ClientConfig {
        endpoint: server.endpoint(),
        ..ClientConfig::default()
    };
    (server, client)
}

pub async fn with_http(tokens: oomlens_collector::auth::Tokens, ingest_token: Option<&str>) -> WithHttp {
    let config = oomlens_collector::server::ServerConfig {
        tokens,
        ..oomlens_collector::server::ServerConfig::default()
    };
    let (mut server, mut grpc, dir) = embedded(config).await;
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap().to_string();
    server.serve_http(http_listener);
    grpc.token = ingest_token.map(str::to_owned);
    WithHttp {
        server,
        http,
        grpc,
        _dir: dir,
    }
}

/// Compares `actual` with the golden file `tests/golden/<name>`; with
/// `UPDATE_GOLDEN` set, rewrites it instead. A difference names its first
/// differing line.
pub fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
        panic!(
            "{name} differs from its golden file at line {}:\n  now:    {:?}\n  golden: {:?}\n(UPDATE_GOLDEN=1 rewrites it; review the diff)",
            first + 1,
            actual.lines().nth(first),
            expected.lines().nth(first)
        );
    }
}

/// The next event `stream` sends (within 10 s), with its cursor; other
/// items are skipped.
pub async fn next_event(
    stream: &mut tonic::Streaming<oomlens_proto::v1::SubscribeResponse>,
) -> (OomEvent, String) {
    loop {
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        if let Some(oomlens_proto::v1::subscribe_response::Item::Event(event)) = response.item {
            return (event, response.cursor);
        }
    }
}
