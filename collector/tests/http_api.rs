//! The HTTP JSON API against a real collector: pages that end at their
//! byte budget, one event by id or prefix, mistakes named, tokens
//! enforced, and the event stream resuming from `Last-Event-ID` with
//! nothing missed or repeated.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{WithHttp, event, ingest, with_http};
use oomlens_collector::auth::{Role, Tokens};
use oomlens_proto::json::event_from_json;

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, unreachable_pub)]
mod http;

const READ: &str = "read-token-0123456789";
const INGEST: &str = "ingest-token-0123456789";

async fn start(tokens: Tokens) -> WithHttp {
    with_http(tokens, Some(INGEST)).await
}

fn tokens() -> Tokens {
    let mut tokens = Tokens::default();
    tokens.insert(READ, Role::Read);
    tokens.insert(INGEST, Role::Ingest);
    tokens
}

const AUTH: (&str, &str) = ("Authorization", "Bearer read-token-0123456789");

/// Every page of `query`, following `next_page_token`.
async fn all_pages(address: &str, query: &str) -> (Vec<serde_json::Value>, usize) {
    let mut events = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            None => format!("/api/v1/events?{query}"),
            Some(t) => format!("/api/v1/events?{query}&page_token={t}"),
        };
        let response = http::get(address, &path, &[AUTH]).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        let page = response.json();
        pages += 1;
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return (events, pages),
        }
    }
}

#[tokio::test]
async fn pages_of_events_filtered_newest_first_and_one_event_by_id() {
    let collector = start(tokens()).await;
    let events: Vec<_> = (1..=24)
        .map(|n| event(n, if n % 2 == 0 { "shop" } else { "pay" }, 20))
        .collect();
    ingest(&collector.grpc, events.clone()).await.unwrap();

    let (shop, pages) = all_pages(&collector.http, "namespace=shop&limit=5").await;
    assert_eq!(shop.len(), 12);
    assert_eq!(pages, 3);
    let times: Vec<&str> = shop.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    let ids: BTreeSet<&str> = shop.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 12);
    assert!(shop.iter().all(|e| e["pod"]["namespace"] == "shop"));
    // The documented JSON form reads back as the event sent.
    let first = event_from_json(&shop[0].to_string()).unwrap();
    let sent = events.iter().find(|e| e.id == first.id).unwrap();
    assert_eq!(first.pod, sent.pod);
    assert_eq!(first.history.as_ref().unwrap().samples.len(), 20);

    // Every event was analysed at ingest; a verdict filter finds exactly
    // the events with that verdict.
    let (all, _) = all_pages(&collector.http, "limit=1000").await;
    let verdict = all[0]["analysis"]["verdict"].as_str().unwrap().to_owned();
    let with_it = all
        .iter()
        .filter(|e| e["analysis"]["verdict"] == verdict.as_str())
        .count();
    let (filtered, _) = all_pages(&collector.http, &format!("verdict={verdict}")).await;
    assert_eq!(filtered.len(), with_it);
    assert!(
        filtered
            .iter()
            .all(|e| e["analysis"]["verdict"] == verdict.as_str())
    );
    let page = http::get(&collector.http, &format!("/?verdict={verdict}"), &[AUTH])
        .await
        .text();
    assert_eq!(page.matches("<tr id=\"kill-").count(), with_it.min(50));
    assert!(page.contains(&format!("<option value=\"{verdict}\" selected>")));

    let (pod_limit, _) = all_pages(&collector.http, "scope=pod_limit&scope=node_oom").await;
    assert_eq!(pod_limit.len(), 4, "events 5, 10, 15, 20");

    let id = sent.id.clone();
    let one = http::get(&collector.http, &format!("/api/v1/events/{id}"), &[AUTH]).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], id.as_str());
    let by_prefix = http::get(&collector.http, &format!("/api/v1/events/{}", &id[..10]), &[AUTH]).await;
    assert_eq!(by_prefix.json()["id"], id.as_str());
    let missing = http::get(
        &collector.http,
        "/api/v1/events/ffffffffffffffffffffffffffffffff",
        &[AUTH],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");

    let summary = http::get(&collector.http, "/api/v1/summary?group_by=namespace", &[AUTH]).await;
    assert_eq!(summary.status, 200, "{}", summary.text());
    let summary = summary.json();
    assert_eq!(summary["total"], 24);
    let groups = summary["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g["key"] == "shop" && g["count"] == 12));

    let top = http::get(&collector.http, "/api/v1/top?limit=3", &[AUTH]).await;
    assert_eq!(top.status, 200);
    assert_eq!(top.json()["containers"], serde_json::json!([]));
    collector.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_page_ends_at_its_byte_budget() {
    let collector = start(tokens()).await;
    // About 2.5 MB encoded each: a 4 MiB page holds one of them.
    let events: Vec<_> = (1..=3).map(|n| event(n, "big", 60_000)).collect();
    ingest(&collector.grpc, events).await.unwrap();
    let (all, pages) = all_pages(&collector.http, "limit=100").await;
    assert_eq!(all.len(), 3);
    assert!(pages >= 2, "{pages} page(s) for 7.5 MB of events");
    collector.server.stop().await.unwrap();
}

#[tokio::test]
async fn mistakes_are_named_with_a_400() {
    let collector = start(Tokens::default()).await;
    for (path, named) in [
        ("/api/v1/events?namespce=shop", "namespce"),
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?scope=oom", "scope"),
        ("/api/v1/events?since=yesterday", "since"),
        ("/api/v1/events?page_token=garbage", "page"),
        ("/api/v1/events/abc", "4 characters"),
        ("/api/v1/stream?cursor=abc", "cursor"),
        ("/api/v1/summary?group_by=colour", "group_by"),
        ("/api/v1/top?limit=-1", "limit"),
    ] {
        let response = http::get(&collector.http, path, &[]).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        let body = response.json();
        assert_eq!(body["error"]["code"], "invalid_argument", "{path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{path}: {message}");
    }
    let unknown = http::get(&collector.http, "/api/v1/nothing", &[]).await;
    assert_eq!(unknown.status, 404);
    collector.server.stop().await.unwrap();
}

#[tokio::test]
async fn the_read_token_guards_the_data_but_not_the_description() {
    let collector = start(tokens()).await;
    let none = http::get(&collector.http, "/api/v1/events", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert_eq!(none.json()["error"]["code"], "unauthenticated");
    let wrong = http::get(
        &collector.http,
        "/api/v1/events",
        &[("Authorization", "Bearer not-a-token-at-all")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let ingest_only = http::get(
        &collector.http,
        "/api/v1/stream",
        &[("Authorization", "Bearer ingest-token-0123456789")],
    )
    .await;
    assert_eq!(ingest_only.status, 403);
    assert_eq!(ingest_only.json()["error"]["code"], "permission_denied");
    let read = http::get(&collector.http, "/api/v1/events", &[AUTH]).await;
    assert_eq!(read.status, 200);
    let openapi = http::get(&collector.http, "/api/v1/openapi.json", &[]).await;
    assert_eq!(openapi.status, 200);
    assert_eq!(openapi.json()["openapi"], "3.1.0");
    collector.server.stop().await.unwrap();
}

async fn oom_events(stream: &mut http::EventStream, count: usize) -> Vec<http::ServerSent> {
    let mut got = Vec::new();
    while got.len() < count {
        let event = stream
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("only {} of {count} events came: {got:?}", got.len()));
        assert_eq!(event.event, "oom", "{event:?}");
        got.push(event);
    }
    got
}

#[tokio::test]
async fn the_stream_resumes_after_the_last_event_id_with_nothing_missed_or_repeated() {
    let collector = start(tokens()).await;
    let mut live = http::stream(&collector.http, "/api/v1/stream?namespace=shop", &[AUTH]).await;
    assert_eq!(live.status, 200);
    let content_type = live.headers.iter().find(|(n, _)| n == "content-type").unwrap();
    assert_eq!(content_type.1, "text/event-stream");
    // Opening the stream has registered the subscriber before the headers.
    let first: Vec<_> = (1..=6)
        .map(|n| event(n, if n % 2 == 0 { "shop" } else { "pay" }, 10))
        .collect();
    ingest(&collector.grpc, first).await.unwrap();
    let got = oom_events(&mut live, 3).await;
    let ids: Vec<String> = got.iter().map(|e| event_from_json(&e.data).unwrap().id).collect();
    let wanted: Vec<String> = [2, 4, 6]
        .iter()
        .map(|&n| oomlens_proto::event_id("node-a", "boot-1", n))
        .collect();
    assert_eq!(ids, wanted);
    let last_id = got.last().unwrap().id.clone().unwrap();
    drop(live);

    // While disconnected: two more for the filter, one not.
    let second: Vec<_> = [8, 9, 10]
        .iter()
        .map(|&n| event(n, if n == 9 { "pay" } else { "shop" }, 10))
        .collect();
    ingest(&collector.grpc, second).await.unwrap();
    let mut resumed = http::stream(
        &collector.http,
        "/api/v1/stream?namespace=shop&cursor=0",
        &[AUTH, ("Last-Event-ID", &last_id)],
    )
    .await;
    assert_eq!(resumed.status, 200);
    let got = oom_events(&mut resumed, 2).await;
    let ids: Vec<String> = got.iter().map(|e| event_from_json(&e.data).unwrap().id).collect();
    assert_eq!(
        ids,
        [8, 10]
            .iter()
            .map(|&n| oomlens_proto::event_id("node-a", "boot-1", n))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        resumed.next(Duration::from_millis(500)).await,
        None,
        "nothing repeated"
    );

    // The collector stopping ends the stream rather than leaving it open.
    collector.server.stop().await.unwrap();
    assert!(resumed.ends_within(Duration::from_secs(5)).await);
}

/// `oomlens-collector serve` with TLS on gRPC and `extra` arguments; the
/// status of `GET /api/v1/events` and of `/metrics` on its HTTP address.
async fn api_status_with_tls(extra: &[&str]) -> (u16, u16) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oomlens-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", &address])
        .arg("--database")
        .arg(dir.path().join("events.db"))
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .args(extra)
        .env_remove("OOMLENS_TOKEN_FILE")
        .env_remove("OOMLENS_HTTP_API")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the collector never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = http::get(&address, "/api/v1/events", &[]).await.status;
    let metrics = http::get(&address, "/metrics", &[]).await.status;
    let _ = child.kill();
    let _ = child.wait();
    (api, metrics)
}

/// The HTTP address has no TLS: a collector set up with TLS does not serve
/// events there unless told to (`--http-api on`, for a TLS proxy in front).
#[tokio::test]
async fn with_tls_on_grpc_the_plaintext_api_is_off_unless_asked_for() {
    assert_eq!(api_status_with_tls(&[]).await, (404, 200));
    assert_eq!(api_status_with_tls(&["--http-api", "on"]).await, (200, 200));
}

/// schemathesis (from PyPI; `.ci/run` installs it) against the running
/// API: every operation but the endless stream, with generated valid and
/// invalid parameters, each real response checked against
/// docs/api/openapi.json (status, content type, schema), no server error,
/// valid input accepted, and the token required. Skips with the reason
/// printed when schemathesis is absent, unless
/// `OOMLENS_REQUIRE_SCHEMATHESIS=1` (CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() {
    let st = std::env::var("OOMLENS_SCHEMATHESIS").unwrap_or_else(|_| "st".to_owned());
    let found = std::process::Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("OOMLENS_REQUIRE_SCHEMATHESIS").is_none(),
            "OOMLENS_REQUIRE_SCHEMATHESIS is set but {st} does not run"
        );
        eprintln!(
            "skipped: schemathesis ({st}) not found; `pip install schemathesis` or set OOMLENS_SCHEMATHESIS"
        );
        return;
    }
    let collector = start(tokens()).await;
    let events: Vec<_> = (1..=30)
        .map(|n| event(n, if n % 3 == 0 { "shop" } else { "pay" }, 50))
        .collect();
    ingest(&collector.grpc, events).await.unwrap();
    let url = format!("http://{}/api/v1/openapi.json", collector.http);
    // Bounded: coreutils' timeout ends a run that would hang.
    let mut command = std::process::Command::new("timeout");
    command
        .args(["600", &st])
        .args(["run", &url, "--checks", "all", "--exclude-path", "/api/v1/stream"])
        // Not this one: a query string has no types, so schemathesis's
        // "invalid" values (`node=true` for a string list, a null limit
        // sent as nothing) are valid requests. Invalid input is still
        // generated, and every answer to it must be a documented 4xx.
        .args(["--exclude-checks", "negative_data_rejection"])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--workers",
            "2",
            "--no-color",
        ])
        .args(["--header", "Authorization: Bearer read-token-0123456789"])
        .env("SCHEMATHESIS_TELEMETRY", "false");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    collector.server.stop().await.unwrap();
}
