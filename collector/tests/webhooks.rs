//! Webhook sinks against a local receiver that fails, goes down and comes
//! back, across a collector restart: every event delivered at least once
//! and in order, signed; an event the receiver refuses dead-lettered while
//! the rest go on.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{event, fresh_database, ingest, postgres_url, serve_at};
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_collector::webhook::{Attempt, Format, RetryPolicy, WebhookConfig, Webhooks};
use oomlens_common::client::ClientConfig;

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, unreachable_pub)]
mod http;

const SECRET: &[u8] = b"a-webhook-secret-of-some-length";

fn webhooks(url: &str, format: Format) -> Webhooks {
    let mut webhooks = Webhooks::new(&WebhookConfig {
        urls: vec![url.to_owned()],
        secret: Some(SECRET.to_vec()),
        format,
        ca_cert: None,
    })
    .unwrap();
    // Fast retries: the test waits for them.
    webhooks.retry = RetryPolicy {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        refused_attempts: 3,
    };
    webhooks
}

async fn start(database: &str, hooks: &Webhooks) -> (Embedded, ClientConfig) {
    let (mut server, client) = serve_at(database, ServerConfig::default()).await;
    server.start_webhooks(hooks).await;
    (server, client)
}

fn id(n: u64) -> String {
    oomlens_proto::event_id("node-a", "boot-1", n)
}

/// The ids the receiver accepted, each at its first acceptance.
fn accepted(requests: &[http::Received]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for request in requests.iter().filter(|r| r.status == 200) {
        let id = request.header("x-oomlens-event-id").unwrap().to_owned();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_through_failures_outages_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    // The first three requests fail as an overloaded receiver would.
    let mut receiver = http::Receiver::start(|n, _| if n < 3 { 503 } else { 200 }).await;
    let hooks = webhooks(&receiver.url("/hooks/oom?key=abc"), Format::Full);
    let (server, client) = start(&database, &hooks).await;

    ingest(&client, (1..=5).map(|n| event(n, "shop", 20)).collect())
        .await
        .unwrap();
    receiver
        .wait_until(Duration::from_secs(20), |r| accepted(r).len() == 5)
        .await;
    let label = format!("0:127.0.0.1:{}", receiver.url("").rsplit(':').next().unwrap());
    assert_eq!(server.metrics().webhooks().attempts(&label, Attempt::Retried), 3);

    // The receiver goes down; events keep coming; the collector restarts.
    receiver.go_down();
    ingest(&client, (6..=8).map(|n| event(n, "shop", 20)).collect())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.stop().await.unwrap();
    let (server, client) = start(&database, &hooks).await;
    ingest(&client, (9..=10).map(|n| event(n, "shop", 20)).collect())
        .await
        .unwrap();
    receiver.come_back().await;
    let requests = receiver
        .wait_until(Duration::from_secs(20), |r| accepted(r).len() == 10)
        .await;

    assert_eq!(
        accepted(&requests),
        (1..=10).map(id).collect::<Vec<_>>(),
        "in order"
    );
    for request in &requests {
        assert_eq!(request.path, "/hooks/oom?key=abc");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body["type"], "oom_kill");
        assert_eq!(body["event"]["id"], request.header("x-oomlens-event-id").unwrap());
        assert_eq!(body["cursor"], request.header("x-oomlens-cursor").unwrap());
        // The signature is HMAC-SHA256 of "t.body" under the secret.
        let signature = request.header("x-oomlens-signature").unwrap();
        let t: u64 = signature
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            signature,
            oomlens_collector::webhook::signature(SECRET, t, &request.body)
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_dead_lettered_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let poison = id(2);
    let receiver = http::Receiver::start(move |_, request| {
        if request.header("x-oomlens-event-id") == Some(poison.as_str()) {
            400
        } else {
            200
        }
    })
    .await;
    let hooks = webhooks(&receiver.url("/summary"), Format::Summary);
    let (server, client) = start(&database, &hooks).await;
    ingest(&client, (1..=3).map(|n| event(n, "pay", 5)).collect())
        .await
        .unwrap();
    let requests = receiver
        .wait_until(Duration::from_secs(20), |r| accepted(r).len() == 2)
        .await;
    assert_eq!(accepted(&requests), vec![id(1), id(3)]);
    assert_eq!(
        requests.iter().filter(|r| r.status == 400).count(),
        3,
        "refused three times, then dead-lettered"
    );
    let label = format!("0:127.0.0.1:{}", receiver.url("").rsplit(':').next().unwrap());
    assert_eq!(
        server.metrics().webhooks().attempts(&label, Attempt::DeadLetter),
        1
    );
    let summary: serde_json::Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(summary["namespace"], "pay");
    assert_eq!(summary["scope"], "container_limit");
    assert!(
        summary["text"]
            .as_str()
            .unwrap()
            .starts_with("pay/api-1 (container app) killed at its container limit 256Mi")
    );
    assert!(summary.get("event").is_none(), "a summary carries no history");
    let page = server.metrics().encode();
    assert!(
        page.contains("oomlens_collector_webhook_deliveries_total{sink=\""),
        "{page}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_sink_starts_with_events_stored_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    let receiver = http::Receiver::start(|_, _| 200).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = Embedded::start(&database, listener, ServerConfig::default())
        .await
        .unwrap();
    let client = ClientConfig {
        endpoint: server.endpoint(),
        ..ClientConfig::default()
    };
    ingest(&client, (1..=3).map(|n| event(n, "old", 5)).collect())
        .await
        .unwrap();
    server
        .start_webhooks(&webhooks(&receiver.url("/"), Format::Full))
        .await;
    ingest(&client, vec![event(4, "new", 5)]).await.unwrap();
    let requests = receiver
        .wait_until(Duration::from_secs(10), |r| !accepted(r).is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted(&receiver.requests()), vec![id(4)], "{requests:?}");
    server.stop().await.unwrap();
}

/// Two replicas on one PostgreSQL database, one sink: one replica at a
/// time delivers (no event twice), and when it stops the other takes over
/// from the shared cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_replica_delivers_and_another_takes_over() {
    let Some(url) = postgres_url("on_postgres_one_replica_delivers_and_another_takes_over").await else {
        return;
    };
    let database = fresh_database(&url, "webhook_replicas").await;
    let receiver = http::Receiver::start(|_, _| 200).await;
    let hooks = webhooks(&receiver.url("/"), Format::Summary);
    let (first, first_client) = start(&database, &hooks).await;
    let (second, second_client) = start(&database, &hooks).await;
    ingest(&first_client, (1..=4).map(|n| event(n, "a", 5)).collect())
        .await
        .unwrap();
    ingest(&second_client, (5..=6).map(|n| event(n, "b", 5)).collect())
        .await
        .unwrap();
    receiver
        .wait_until(Duration::from_secs(20), |r| accepted(r).len() == 6)
        .await;
    // Whichever leads stops; the other takes the lock within seconds.
    let label = format!("0:127.0.0.1:{}", receiver.url("").rsplit(':').next().unwrap());
    let first_led = first.metrics().webhooks().attempts(&label, Attempt::Delivered) > 0;
    let (leader, follower, client) = if first_led {
        (first, second, second_client)
    } else {
        (second, first, first_client)
    };
    assert_eq!(
        follower.metrics().webhooks().attempts(&label, Attempt::Delivered),
        0
    );
    leader.stop().await.unwrap();
    ingest(&client, (7..=8).map(|n| event(n, "c", 5)).collect())
        .await
        .unwrap();
    let requests = receiver
        .wait_until(Duration::from_secs(30), |r| accepted(r).len() == 8)
        .await;
    assert_eq!(accepted(&requests), (1..=8).map(id).collect::<Vec<_>>());
    assert_eq!(requests.len(), 8, "no event delivered twice");
    follower.stop().await.unwrap();
}

/// A webhook that cannot work is a startup error naming it, and never
/// prints the URL's secret path.
#[test]
fn webhook_mistakes_stop_the_collector_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "short\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oomlens-collector"))
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""])
            .arg("--database")
            .arg(dir.path().join("events.db"))
            .args(args)
            .env_remove("OOMLENS_WEBHOOKS")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--webhook", "ftp://hooks.example.com/T0/SECRETPATH"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("use an http:// or https:// URL"), "{stderr}");
    assert!(!stderr.contains("SECRETPATH"), "{stderr}");
    let (code, stderr) = run(&[
        "--webhook",
        "https://hooks.example.com/x",
        "--webhook-secret-file",
        &secret.display().to_string(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("holds 5 bytes: use at least 16"), "{stderr}");
}
