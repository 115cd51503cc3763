//! Inputs that once misled the collector or its CLI, over loopback with
//! the real `oomlens` binary where what it prints is the point: filters
//! too large for one SQL statement, times past the end of `i64`
//! microseconds, the database's file mode, a header printed before an
//! error, and escape sequences from events.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::event;
use oomlens_collector::auth::{Role, Tokens};
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{EventFilter, OomEvent, QueryRequest, SubscribeRequest, SummaryRequest, TopRequest};

const CLI: &str = env!("CARGO_BIN_EXE_oomlens");
const READ_TOKEN: &str = "read-token-0123456789";
const INGEST_TOKEN: &str = "ingest-token-0123456789";

struct Server {
    collector: Embedded,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(tokens: Tokens) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let database = dir.path().join("events.db").display().to_string();
        let config = ServerConfig {
            tokens,
            ..ServerConfig::default()
        };
        let collector = Embedded::start(&database, listener, config).await.unwrap();
        Self { collector, dir }
    }

    fn client(&self, token: Option<&str>) -> ClientConfig {
        ClientConfig {
            endpoint: self.collector.endpoint(),
            token: token.map(str::to_owned),
            ..ClientConfig::default()
        }
    }

    /// Stores `events`, waiting for each ack.
    async fn ingest(&self, token: Option<&str>, events: Vec<OomEvent>) {
        let count = events.len();
        let acks = common::ingest(&self.client(token), events).await.unwrap();
        assert_eq!(acks.len(), count, "an ack per event");
    }

    /// Runs the `oomlens` binary against this collector.
    async fn cli(&self, token: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(CLI);
        command
            .args(["--collector", &self.collector.endpoint()])
            .args(args)
            .env_remove("OOMLENS_TOKEN")
            .env("NO_COLOR", "1");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.collector.stop().await.unwrap();
        drop(self.dir);
    }
}

/// 40 000 namespaces once reached SQLite (at most 32 766 parameters) and
/// came back as `UNAVAILABLE`, as if the collector were down.
#[tokio::test]
async fn a_filter_with_too_many_values_is_an_invalid_argument() {
    let server = Server::start(Tokens::default()).await;
    server.ingest(None, vec![event(1, "shop", 1)]).await;
    let mut client = server.client(None).event_client().await.unwrap();
    let huge = EventFilter {
        namespaces: (0..40_000).map(|n| format!("ns-{n}")).collect(),
        ..EventFilter::default()
    };
    let expected = "the filter holds 40000 values; at most 1000 are allowed, all lists together";
    let query = client
        .query(QueryRequest {
            filter: Some(huge.clone()),
            ..QueryRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(query.code(), tonic::Code::InvalidArgument, "{query:?}");
    assert_eq!(query.message(), expected);
    let summary = client
        .summary(SummaryRequest {
            filter: Some(huge.clone()),
            ..SummaryRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(summary.code(), tonic::Code::InvalidArgument);
    let subscribe = client
        .subscribe(SubscribeRequest {
            filter: Some(huge.clone()),
            ..SubscribeRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(subscribe.code(), tonic::Code::InvalidArgument);
    let top = client
        .top(TopRequest {
            namespaces: huge.namespaces.clone(),
            ..TopRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(top.code(), tonic::Code::InvalidArgument);
    // At the cap it still works.
    let page = client
        .query(QueryRequest {
            filter: Some(EventFilter {
                namespaces: (0..999)
                    .map(|n| format!("ns-{n}"))
                    .chain(["shop".to_owned()])
                    .collect(),
                ..EventFilter::default()
            }),
            ..QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 1);
    server.stop().await;
}

/// A `since` past the end of `i64` microseconds once wrapped into the
/// past and matched every event (and an event stamped there sorted first).
#[tokio::test]
async fn a_since_far_in_the_future_matches_nothing() {
    let server = Server::start(Tokens::default()).await;
    server
        .ingest(None, (0..3).map(|n| event(n, "shop", 1)).collect())
        .await;
    let mut client = server.client(None).event_client().await.unwrap();
    for seconds in [i64::MAX / 1_000_000 + 1, i64::MAX / 1000, i64::MAX] {
        let page = client
            .query(QueryRequest {
                filter: Some(EventFilter {
                    since: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                    ..EventFilter::default()
                }),
                ..QueryRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.events.is_empty(),
            "since {seconds} s matched {} events",
            page.events.len()
        );
    }
    // The CLI: an age too long for u64 seconds is an error, not "forever".
    let out = server
        .cli(None, &["events", "--since", "30000000000000000w"])
        .await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--since \"30000000000000000w\" is too long"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

/// The SQLite database was created 0644 (SQLite's default): every user of
/// the host could read pod names, commands and kernel lines.
#[tokio::test]
async fn the_database_is_created_private() {
    let server = Server::start(Tokens::default()).await;
    server.ingest(None, vec![event(1, "shop", 1)]).await;
    for name in ["events.db", "events.db-wal", "events.db-shm"] {
        let path = server.dir.path().join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}: {mode:o}");
    }
    server.stop().await;
}

/// `oomlens events` printed its table header, then the error: a script
/// reading standard output saw a table with no rows instead of nothing.
#[tokio::test]
async fn no_table_header_is_printed_before_an_error() {
    let mut tokens = Tokens::default();
    tokens.insert(READ_TOKEN, Role::Read);
    tokens.insert(INGEST_TOKEN, Role::Ingest);
    let server = Server::start(tokens).await;
    server.ingest(Some(INGEST_TOKEN), vec![event(1, "shop", 1)]).await;
    for args in [
        &["events"][..],
        &["summary"][..],
        &["top"][..],
        &["show", "0123456789"][..],
    ] {
        let out = server.cli(Some("not-a-known-token-at-all"), args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the token is not known to this collector"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = server.cli(Some(READ_TOKEN), &["events"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ID  "), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    server.stop().await;
}

/// A pod name or kernel line with escape sequences reached the terminal
/// raw from `events` and `show`; JSON stays JSON (serde escapes them).
#[tokio::test]
async fn the_cli_escapes_control_characters_from_events() {
    let server = Server::start(Tokens::default()).await;
    let mut hostile = event(1, "shop\x1b]0;pwned\x07", 1);
    if let Some(pod) = hostile.pod.as_mut() {
        pod.name = Some("api\x1b[2J\u{9b}31m".into());
    }
    if let Some(victim) = hostile.victim.as_mut() {
        victim.comm = Some("ja\rva\x7f".into());
    }
    server.ingest(None, vec![hostile.clone()]).await;
    let table = server.cli(None, &["events"]).await;
    let shown = server.cli(None, &["show", &hostile.id]).await;
    for out in [&table, &shown] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the terminal: {text:?}"
        );
    }
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("shop\\x1b]0;pwned\\x07/ap"), "{table}");
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown.contains("pod        shop\\x1b]0;pwned\\x07/api\\x1b[2J\\u{9b}31m"),
        "{shown}"
    );
    assert!(shown.contains("victim     ja\\rva\\x7f[1001]"), "{shown}");
    let json = server.cli(None, &["events", "--output", "json"]).await;
    let line = String::from_utf8(json.stdout).unwrap();
    let back = oomlens_proto::json::event_from_json(line.trim()).unwrap();
    assert_eq!(back.pod.unwrap().name.as_deref(), Some("api\x1b[2J\u{9b}31m"));
    assert!(!line.contains('\x1b'), "{line:?}");
    server.stop().await;
}

/// `oomlens-collector serve` with these arguments (on a free port, its
/// database in `dir`): its exit code and standard error; killed if it
/// still runs after 10 s (it started serving).
fn collector_exit(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oomlens-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .arg("--database")
        .arg(dir.join("events.db"))
        .args(args)
        .env_remove("OOMLENS_TOKEN_FILE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

/// An empty or comment-only token file once turned authentication off
/// (`tokens=false` in the log; every caller admitted). Now it, a token
/// file others may read under `--strict-permissions`, and a TLS key that
/// is not the certificate's stop the collector at start.
#[test]
fn the_collector_refuses_to_start_without_usable_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let path = tokens.display().to_string();
    let write = |text: &str, mode: u32| {
        std::fs::write(&tokens, text).unwrap();
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for text in ["", "# tokens for the agents go here\n"] {
        write(text, 0o600);
        let (code, stderr) = collector_exit(dir.path(), &["--token-file", &path]);
        assert_eq!(code, Some(1), "{text:?}: {stderr}");
        assert!(
            stderr.contains(&format!("the token file {path} holds no token")),
            "{stderr}"
        );
    }
    write("read abcdefghijklmnop#qrstuv\n", 0o600);
    let (code, stderr) = collector_exit(dir.path(), &["--token-file", &path]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:1: a token may hold only")),
        "{stderr}"
    );
    write("read abcdefghijklmnopqrstuv\n", 0o644);
    let (code, stderr) = collector_exit(dir.path(), &["--token-file", &path, "--strict-permissions"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("has mode 0644"), "{stderr}");
    // Without --strict-permissions it starts (and warns).
    let (code, stderr) = collector_exit(dir.path(), &["--token-file", &path]);
    assert_eq!(code, None, "it serves: {stderr}");
    assert!(stderr.contains("may be read by other users"), "{stderr}");

    // A key that is not the certificate's: named at start.
    let make = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        std::fs::set_permissions(
            dir.path().join(format!("{name}-key.pem")),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    };
    make("a");
    make("b");
    let cert = dir.path().join("a.pem").display().to_string();
    let key = dir.path().join("b-key.pem").display().to_string();
    let (code, stderr) = collector_exit(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the key {key} does not belong to the certificate {cert}"
        )),
        "{stderr}"
    );
}
