//! The gRPC services over loopback: acknowledged ingest, subscriptions
//! that resume from a cursor and survive lagging, tokens, TLS and mutual
//! TLS, and PostgreSQL replicas sharing one database.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{event, fresh_database, ingest, next_event, postgres_url};
use oomlens_collector::auth::{Role, Tokens};
use oomlens_collector::server::{Embedded, ServerConfig, TlsFiles};
use oomlens_common::client::{ClientConfig, EventClient, status_line};
use oomlens_proto::v1::{
    AckStatus, OomEvent, QueryRequest, SubscribeRequest, SubscribeResponse, subscribe_response,
};

struct Running {
    address: String,
    collector: Embedded,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    async fn stop(self) {
        self.collector.stop().await.unwrap();
    }
}

async fn start(database: Option<String>, config: ServerConfig) -> Running {
    let (dir, database) = match database {
        Some(url) => (None, url),
        None => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.db").display().to_string();
            (Some(dir), path)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = Embedded::start(&database, listener, config).await.unwrap();
    Running {
        address: collector.address().to_string(),
        collector,
        _dir: dir,
    }
}

fn plain(address: &str) -> ClientConfig {
    ClientConfig {
        endpoint: format!("http://{address}"),
        ..ClientConfig::default()
    }
}

async fn subscribe(client: &mut EventClient, cursor: &str) -> tonic::Streaming<SubscribeResponse> {
    client
        .subscribe(SubscribeRequest {
            filter: None,
            cursor: cursor.to_owned(),
            include_warnings: false,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn ingest_acks_each_event_once_stored_and_flags_resends() {
    let server = start(None, ServerConfig::default()).await;
    let config = plain(&server.address);
    let events: Vec<OomEvent> = (0..20).map(|n| event(n, "shop", 600)).collect();
    let acks = ingest(&config, events.clone()).await.unwrap();
    assert_eq!(acks.len(), 20);
    assert!(acks.iter().all(|a| a.status == AckStatus::Stored as i32));
    assert_eq!(
        acks.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        "acks in the order sent"
    );
    let mut bad = event(99, "shop", 0);
    bad.id.clear();
    let again = ingest(&config, vec![events[3].clone(), bad]).await.unwrap();
    assert_eq!(again[0].status, AckStatus::Duplicate as i32);
    assert_eq!(again[1].status, AckStatus::Rejected as i32);
    assert_eq!(again[1].message, "the event has no id");
    // Stored with its analysis.
    let mut client = config.event_client().await.unwrap();
    let page = client
        .query(QueryRequest {
            page_size: 100,
            ..QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 20);
    assert!(page.events.iter().all(|e| e.analysis.is_some()));
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_resuming_from_its_cursor_gets_exactly_what_it_missed() {
    let server = start(None, ServerConfig::default()).await;
    let config = plain(&server.address);
    let mut client = config.event_client().await.unwrap();
    ingest(&config, (0..3).map(|n| event(n, "shop", 10)).collect())
        .await
        .unwrap();
    // From the start of the store (cursor 0), then live.
    let mut stream = subscribe(&mut client, "0").await;
    for n in 0..3 {
        let (event_seen, _) = next_event(&mut stream).await;
        assert_eq!(event_seen.id, event(n, "", 0).id);
    }
    ingest(&config, vec![event(3, "shop", 10)]).await.unwrap();
    let (live, cursor) = next_event(&mut stream).await;
    assert_eq!(live.id, event(3, "", 0).id);
    drop(stream);
    // Missed while away.
    ingest(&config, (4..9).map(|n| event(n, "shop", 10)).collect())
        .await
        .unwrap();
    let mut stream = subscribe(&mut client, &cursor).await;
    for n in 4..9 {
        let (event_seen, _) = next_event(&mut stream).await;
        assert_eq!(event_seen.id, event(n, "", 0).id, "resumed in order, none twice");
    }
    // Nothing more is pending.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(extra.is_err(), "no duplicate after the missed events: {extra:?}");
    // A bad cursor is a clear error.
    let error = client
        .subscribe(SubscribeRequest {
            cursor: "yesterday".into(),
            ..SubscribeRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_is_told_it_lagged_and_still_gets_every_event() {
    let server = start(None, ServerConfig::default()).await;
    let config = plain(&server.address);
    let mut client = config.event_client().await.unwrap();
    let mut stream = subscribe(&mut client, "").await;
    // Far more than the live ring (1024) plus the stream's buffers, while
    // this subscriber reads nothing.
    // Events with 300 samples (~10 KiB): the transport's windows hold a
    // few hundred, not thousands.
    let total = 3000u64;
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        ingest(&config, chunk.iter().map(|&n| event(n, "shop", 300)).collect())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut lagged = 0;
    while seen.len() < usize::try_from(total).unwrap() {
        let response = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the stream keeps delivering")
            .unwrap()
            .unwrap();
        match response.item {
            Some(subscribe_response::Item::Event(e)) => seen.push(e.id),
            Some(subscribe_response::Item::Lagged(l)) => {
                assert!(l.missed > 0);
                lagged += 1;
            }
            _ => {}
        }
    }
    assert!(lagged >= 1, "the subscriber was told it lagged");
    let expected: Vec<String> = (0..total).map(|n| event(n, "", 0).id).collect();
    assert_eq!(seen, expected, "every event, in order, once");
    server.stop().await;
}

const READ_TOKEN: &str = "read-token-0123456789";
const INGEST_TOKEN: &str = "ingest-token-0123456789";

#[tokio::test]
async fn tokens_admit_their_role_only() {
    let mut tokens = Tokens::default();
    tokens.insert(READ_TOKEN, Role::Read);
    tokens.insert(INGEST_TOKEN, Role::Ingest);
    let server = start(
        None,
        ServerConfig {
            tokens,
            ..ServerConfig::default()
        },
    )
    .await;
    let with = |token: Option<&str>| ClientConfig {
        token: token.map(str::to_owned),
        ..plain(&server.address)
    };
    // The ingest token sends events; the read token cannot.
    let acks = ingest(&with(Some(INGEST_TOKEN)), vec![event(1, "shop", 1)])
        .await
        .unwrap();
    assert_eq!(acks[0].status, AckStatus::Stored as i32);
    let refused = ingest(&with(Some(READ_TOKEN)), vec![event(2, "shop", 1)])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status_line(&refused),
        "the collector refused: this token may not send events (it is not an ingest or admin token)"
    );
    // The read token queries; no token, a wrong one and the ingest token cannot.
    let query = |config: ClientConfig| async move {
        let mut client = config.event_client().await.unwrap();
        client.query(QueryRequest::default()).await
    };
    assert_eq!(
        query(with(Some(READ_TOKEN)))
            .await
            .unwrap()
            .into_inner()
            .events
            .len(),
        1
    );
    let missing = query(with(None)).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        status_line(&missing),
        "the collector rejected the credentials: a bearer token is required (--token)"
    );
    let wrong = query(with(Some("not-a-known-token-at-all"))).await.unwrap_err();
    assert_eq!(
        status_line(&wrong),
        "the collector rejected the credentials: the token is not known to this collector"
    );
    assert_eq!(
        query(with(Some(INGEST_TOKEN))).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    server.stop().await;
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for localhost/127.0.0.1, and a client
    /// certificate; plus a second CA nobody trusts.
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        for prefix in ["", "rogue-"] {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            write(&format!("{prefix}ca.pem"), ca.pem());
            let issuer = Issuer::new(ca_params, ca_key);
            for (name, sans) in [
                ("server", vec!["localhost".to_owned(), "127.0.0.1".to_owned()]),
                ("client", vec!["agent-node-a".to_owned()]),
            ] {
                let key = KeyPair::generate().unwrap();
                let cert = CertificateParams::new(sans)
                    .unwrap()
                    .signed_by(&key, &issuer)
                    .unwrap();
                write(&format!("{prefix}{name}.pem"), cert.pem());
                write(&format!("{prefix}{name}-key.pem"), key.serialize_pem());
            }
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    let pki = Pki::new();
    let tls = |client_ca: Option<std::path::PathBuf>| ServerConfig {
        tls: Some(TlsFiles {
            cert: pki.path("server.pem"),
            key: pki.path("server-key.pem"),
            client_ca,
        }),
        ..ServerConfig::default()
    };
    // Server TLS only.
    let server = start(None, tls(None)).await;
    let secure = ClientConfig {
        endpoint: format!("https://localhost:{}", server.address.rsplit(':').next().unwrap()),
        ca_cert: Some(pki.path("ca.pem")),
        ..ClientConfig::default()
    };
    let acks = ingest(&secure, vec![event(1, "shop", 1)]).await.unwrap();
    assert_eq!(acks[0].status, AckStatus::Stored as i32);
    // A client that trusts another CA fails with a one-line reason.
    let distrustful = ClientConfig {
        ca_cert: Some(pki.path("rogue-ca.pem")),
        ..secure.clone()
    };
    let error = distrustful.event_client().await.unwrap_err().to_string();
    assert!(
        error.starts_with("cannot connect to the collector at https://localhost:"),
        "{error}"
    );
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(!error.contains('\n'));
    // Plain text to a TLS port fails too, clearly.
    let cleartext = plain(&format!(
        "127.0.0.1:{}",
        server.address.rsplit(':').next().unwrap()
    ));
    assert!(ingest(&cleartext, vec![event(2, "shop", 1)]).await.is_err());
    // https without a CA is a usage mistake, said before connecting.
    let no_ca = ClientConfig {
        ca_cert: None,
        ..secure.clone()
    };
    assert!(
        no_ca
            .event_client()
            .await
            .unwrap_err()
            .to_string()
            .contains("--ca-cert")
    );
    server.stop().await;

    // Mutual TLS: a client certificate from the CA is required.
    let server = start(None, tls(Some(pki.path("ca.pem")))).await;
    let port = server.address.rsplit(':').next().unwrap().to_owned();
    let anonymous = ClientConfig {
        endpoint: format!("https://localhost:{port}"),
        ca_cert: Some(pki.path("ca.pem")),
        ..ClientConfig::default()
    };
    let refused = ingest(&anonymous, vec![event(3, "shop", 1)]).await;
    assert!(refused.is_err(), "no client certificate: refused");
    let rogue = ClientConfig {
        client_cert: Some(pki.path("rogue-client.pem")),
        client_key: Some(pki.path("rogue-client-key.pem")),
        ..anonymous.clone()
    };
    assert!(
        ingest(&rogue, vec![event(4, "shop", 1)]).await.is_err(),
        "untrusted client CA: refused"
    );
    let agent = ClientConfig {
        client_cert: Some(pki.path("client.pem")),
        client_key: Some(pki.path("client-key.pem")),
        ..anonymous.clone()
    };
    let acks = ingest(&agent, vec![event(5, "shop", 1)]).await.unwrap();
    assert_eq!(acks[0].status, AckStatus::Stored as i32);
    let half = ClientConfig {
        client_key: None,
        ..agent.clone()
    };
    assert_eq!(
        half.event_client().await.unwrap_err().to_string(),
        "--client-cert and --client-key go together"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_on_one_replica_receives_events_ingested_by_another() {
    let Some(url) = postgres_url("a_subscriber_on_one_replica_receives_events_ingested_by_another").await
    else {
        return;
    };
    let url = fresh_database(&url, "replicas").await;
    let a = start(Some(url.clone()), ServerConfig::default()).await;
    let b = start(Some(url.clone()), ServerConfig::default()).await;
    let mut on_b = plain(&b.address).event_client().await.unwrap();
    let mut stream = subscribe(&mut on_b, "").await;
    // Let B's subscription and LISTEN settle before the event is stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    ingest(&plain(&a.address), vec![event(7, "shop", 600)])
        .await
        .unwrap();
    let (seen, cursor) = next_event(&mut stream).await;
    assert_eq!(seen.id, event(7, "", 0).id);
    eprintln!("replica A -> subscriber on B: {:?}", started.elapsed());
    // Both replicas answer queries from the one database, and B's cursor
    // resumes on A.
    ingest(&plain(&b.address), vec![event(8, "shop", 1)])
        .await
        .unwrap();
    let mut on_a = plain(&a.address).event_client().await.unwrap();
    let mut resumed = subscribe(&mut on_a, &cursor).await;
    assert_eq!(next_event(&mut resumed).await.0.id, event(8, "", 0).id);
    a.stop().await;
    b.stop().await;
}
