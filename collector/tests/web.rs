//! The web pages against a real collector: the kill list with its filters
//! and pages, one kill with its chart and kernel lines, summary and top;
//! hostile strings from events inert; the strict headers; and sign-in
//! with a read token kept in an HttpOnly, SameSite=Strict cookie.
#![allow(clippy::unwrap_used)]

mod common;

use common::{event, ingest, with_http};
use oomlens_collector::auth::{Role, Tokens};
use oomlens_proto::v1::{Analysis, KernelLine, OomEvent, Verdict};

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, unreachable_pub)]
mod http;

const READ: &str = "read-token-0123456789";
const INGEST: &str = "ingest-token-0123456789";
const HOSTILE_POD: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_LINE: &str = "</pre><script>alert('kernel')</script>";

/// A kill with a hostile pod name and kernel line, and a verdict with a
/// recommended limit.
fn hostile(n: u64) -> OomEvent {
    let mut event = event(n, "shop", 120);
    if let Some(pod) = event.pod.as_mut() {
        pod.name = Some(HOSTILE_POD.to_owned());
    }
    event.kernel_lines = vec![KernelLine {
        seq: Some(1),
        monotonic_us: Some(12_345_678),
        level: Some(4),
        text: HOSTILE_LINE.to_owned(),
        input_line: None,
    }];
    event.analysis = Some(Analysis {
        verdict: Verdict::LimitTooLow as i32,
        reasoning: "steady climb <b>to</b> the limit".to_owned(),
        recommended_limit_bytes: Some(384 << 20),
        recommendation_reasoning: Some("peak plus headroom".to_owned()),
        ..Analysis::default()
    });
    event
}

fn assert_inert(page: &str) {
    for raw in ["<img src=x", "<script>alert", "<b>to</b>"] {
        assert!(!page.contains(raw), "unescaped {raw:?} in the page");
    }
}

#[tokio::test]
async fn pages_show_kills_with_charts_and_keep_hostile_strings_inert() {
    let served = with_http(Tokens::default(), Some(INGEST)).await;
    let (server, address, client) = (served.server, served.http, served.grpc);
    let mut events: Vec<OomEvent> = (1..=60)
        .map(|n| event(n, if n % 2 == 0 { "shop" } else { "pay" }, 30))
        .collect();
    events.push(hostile(61));
    ingest(&client, events).await.unwrap();

    let list = http::get(&address, "/", &[]).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = list.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(list.header("x-content-type-options"), Some("nosniff"));
    let text = list.text();
    assert_inert(&text);
    assert_eq!(text.matches("<tr id=\"kill-").count(), 50, "a page of 50");
    assert!(text.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(
        text.contains("data-stream=\"/api/v1/stream\""),
        "the first page is live"
    );
    assert_eq!(text.matches("<svg class=\"spark\"").count(), 50);
    let older = text.split("class=\"more\" href=\"").nth(1).unwrap();
    let older = older[..older.find('"').unwrap()].replace("&amp;", "&");
    let second = http::get(&address, &older, &[]).await.text();
    assert_eq!(second.matches("<tr id=\"kill-").count(), 11);
    assert!(!second.contains("data-stream"), "older pages are not live");

    let shop = http::get(&address, "/?namespace=shop&scope=pod_limit&since=1d", &[])
        .await
        .text();
    assert_eq!(
        shop.matches("<tr id=\"kill-").count(),
        0,
        "the fixtures are older than a day"
    );
    assert!(shop.contains("<option value=\"1d\" selected>"));
    // Events 10, 20, ..., 60 are pod-limit kills in shop (n % 5 == 0 and even).
    let shop = http::get(&address, "/?namespace=shop&scope=pod_limit", &[])
        .await
        .text();
    assert_eq!(shop.matches("<tr id=\"kill-").count(), 6);
    assert!(shop.contains("data-stream=\"/api/v1/stream?namespace=shop&amp;scope=pod_limit\""));
    assert!(shop.contains("<option value=\"pod_limit\" selected>"));

    let id = oomlens_proto::event_id("node-a", "boot-1", 61);
    let kill = http::get(&address, &format!("/kills/{id}"), &[]).await;
    assert_eq!(kill.status, 200);
    let kill = kill.text();
    assert_inert(&kill);
    assert!(kill.contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;kernel&#39;)&lt;/script&gt;"));
    assert!(kill.contains("[   12.345678]"));
    let points = kill.split("class=\"ws\" points=\"").nth(1).unwrap();
    assert_eq!(
        points[..points.find('"').unwrap()].split(' ').count(),
        121,
        "a point per sample, and the kernel's own at the kill"
    );
    assert!(kill.contains("The last point is the kernel's own report at the kill."));
    assert!(kill.contains("memory: 384Mi"), "the YAML snippet");
    assert_eq!(
        kill.matches("<polygon class=\"layer ").count(),
        4,
        "anon, kernel, shmem, page cache"
    );
    assert!(kill.contains("The container used all the memory its own limit allows"));
    assert!(kill.contains("<th scope=\"row\">victim</th>"));

    let row = http::get(&address, &format!("/kills/{}/row", &id[..12]), &[])
        .await
        .text();
    assert!(
        row.starts_with("<tr id=\"kill-") && row.trim_end().ends_with("</tr>"),
        "{row}"
    );
    assert_eq!(
        http::get(&address, "/kills/ffffffffffffffffffffffffffffffff", &[])
            .await
            .status,
        404
    );

    let summary = http::get(&address, "/summary?group_by=namespace", &[])
        .await
        .text();
    assert!(summary.contains("61 kills."));
    assert_eq!(summary.matches("<rect class=\"bar\"").count(), 2);
    // Over time: the kills span a minute, one interval per group.
    assert!(summary.contains("<h2>Over time</h2>"), "{summary}");
    assert_eq!(summary.matches("<rect class=\"cell\"").count(), 2, "{summary}");
    assert_eq!(
        http::get(&address, "/summary?group_by=colour", &[]).await.status,
        400
    );
    let top = http::get(&address, "/top", &[]).await;
    assert_eq!(top.status, 200);
    let css = http::get(&address, "/static/app.css", &[]).await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.text().contains("prefers-color-scheme: dark"));
    server.stop().await.unwrap();
}

fn tokens() -> Tokens {
    let mut tokens = Tokens::default();
    tokens.insert(READ, Role::Read);
    tokens.insert(INGEST, Role::Ingest);
    tokens
}

#[tokio::test]
async fn with_tokens_the_pages_need_a_read_token_kept_in_a_strict_cookie() {
    let served = with_http(tokens(), Some(INGEST)).await;
    let (server, address, client) = (served.server, served.http, served.grpc);
    ingest(&client, vec![event(1, "shop", 10)]).await.unwrap();

    let anonymous = http::get(&address, "/?namespace=shop", &[]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(
        anonymous.header("location"),
        Some("/login?next=%2F%3Fnamespace%3Dshop")
    );
    let form = http::get(&address, "/login?next=%2F%3Fnamespace%3Dshop", &[])
        .await
        .text();
    assert!(
        form.contains("name=\"next\" value=\"/?namespace=shop\""),
        "{form}"
    );

    for wrong in [INGEST, "not-a-token-we-know", ""] {
        let refused = http::post_form(&address, "/login", &format!("token={wrong}&next=%2F"), &[]).await;
        assert_eq!(refused.status, 401, "{wrong}");
        assert!(refused.header("set-cookie").is_none());
        assert!(refused.text().contains("not a read or admin token"));
    }
    // A login never sends anyone elsewhere.
    let signed_in = http::post_form(
        &address,
        "/login",
        &format!("token={READ}&next=%2F%2Fevil.example%2F"),
        &[],
    )
    .await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.header("location"), Some("/"));
    let cookie = signed_in.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = http::get(&address, "/", &[("Cookie", &pair)]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.text().matches("<tr id=\"kill-").count(), 1);
    // The page's own requests (the live row, the stream) use the cookie.
    let api = http::get(&address, "/api/v1/events", &[("Cookie", &pair)]).await;
    assert_eq!(api.status, 200);
    let bearer = format!("Bearer {READ}");
    assert_eq!(
        http::get(&address, "/top", &[("Authorization", &bearer)])
            .await
            .status,
        200
    );
    let ingest_cookie = format!("oomlens_token={INGEST}");
    assert_eq!(
        http::get(&address, "/", &[("Cookie", &ingest_cookie)])
            .await
            .status,
        403
    );
    let out = http::get(&address, "/logout", &[("Cookie", &pair)]).await;
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    // Assets are open: the login page needs its style.
    assert_eq!(http::get(&address, "/static/live.js", &[]).await.status, 200);
    server.stop().await.unwrap();
}
