//! Inputs that once misled the collector or its CLI, over loopback with
//! the real `oomlens` binary where what it prints is the point: escape
//! sequences from events.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::event;
use oomlens_collector::auth::Tokens;
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{IngestRequest, OomEvent, ingest_request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CLI: &str = env!("CARGO_BIN_EXE_oomlens");

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
        let mut client = self.client(token).ingest_client().await.unwrap();
        let (sender, receiver) = mpsc::channel(events.len() + 1);
        let count = events.len();
        for event in events {
            sender
                .send(IngestRequest {
                    item: Some(ingest_request::Item::Event(event)),
                })
                .await
                .unwrap();
        }
        let mut acks = client
            .ingest(ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..count {
            acks.message().await.unwrap().unwrap();
        }
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
