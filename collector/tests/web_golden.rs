//! The web pages rendered from real kills (tests/fixtures/web, recorded
//! from real containerd pods killed by the kernel), checked against golden
//! outlines in tests/golden/web/: every element with its id, classes and
//! the attributes that matter, its text, and for chart shapes the number of
//! points rather than their coordinates. Also: a hostile pod name and
//! kernel line stay inert on every page that shows them, and each page
//! needs a read token.
//!
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p
//! oomlens-collector --test web_golden`, then review the diff.
#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use common::{ingest, with_http};
use oomlens_collector::auth::{Role, Tokens};
use oomlens_proto::v1::{
    AgentHello, ContainerMemoryStatus, ContainerStatusReport, IngestRequest, KernelLine, OomEvent,
    ingest_request,
};

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, unreachable_pub)]
mod http;

const READ: &str = "read-token-0123456789";
const INGEST: &str = "ingest-token-0123456789";
const HOSTILE_POD: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_LINE: &str = "</pre><script>alert('kernel')</script>";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/web")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The recorded kills without the analysis they were stored with: the
/// collector judges them again with today's rules, as agents send them.
fn real_kills() -> Vec<OomEvent> {
    fixture("real-kills.jsonl")
        .lines()
        .map(|line| OomEvent {
            analysis: None,
            ..oomlens_proto::json::event_from_json(line).unwrap()
        })
        .collect()
}

fn real_top() -> Vec<ContainerMemoryStatus> {
    let top: serde_json::Value = serde_json::from_str(&fixture("real-top.json")).unwrap();
    serde_json::from_value(top["containers"].clone()).unwrap()
}

/// The first real kill again, a second later, with a hostile pod name and
/// kernel line.
fn hostile(real: &OomEvent) -> OomEvent {
    let mut event = real.clone();
    event.id = "0123456789abcdef0123456789abcdef".to_owned();
    if let Some(time) = event.time.as_mut() {
        time.seconds += 1;
    }
    if let Some(pod) = event.pod.as_mut() {
        pod.name = Some(HOSTILE_POD.to_owned());
    }
    event.kernel_lines.push(KernelLine {
        text: HOSTILE_LINE.to_owned(),
        ..event.kernel_lines[0].clone()
    });
    event
}

/// Sends the recorded `Top` as one agent's status report.
async fn report(config: &oomlens_common::client::ClientConfig, containers: Vec<ContainerMemoryStatus>) {
    let node = containers[0].node.clone();
    let items = vec![
        ingest_request::Item::Hello(AgentHello {
            node,
            agent_version: "0.1.0".to_owned(),
            ..AgentHello::default()
        }),
        ingest_request::Item::Status(ContainerStatusReport { containers }),
    ];
    let mut client = config.ingest_client().await.unwrap();
    let stream = tokio_stream::iter(items.into_iter().map(|item| IngestRequest { item: Some(item) }));
    // Statuses are not acknowledged: the stream ends once both are read.
    let _ = client.ingest(stream).await.unwrap();
}

/// The page as an outline: one line per element (indented by depth) with
/// its id, classes and telling attributes, one per text run; chart shapes
/// give their point count. Scripts' and styles' bodies are left out.
fn outline(html: &str) -> String {
    const VOID: &[&str] = &["meta", "link", "input", "br", "img", "hr", "col", "source", "wbr"];
    const KEPT: &[&str] = &[
        "href",
        "action",
        "method",
        "name",
        "type",
        "value",
        "role",
        "aria-label",
        "aria-live",
        "for",
        "scope",
        "colspan",
        "lang",
        "data-cursor",
        "title",
        "viewbox",
        "checked",
        "selected",
    ];
    let mut out = String::new();
    let mut depth = 0usize;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            text(&mut out, depth, rest);
            break;
        };
        text(&mut out, depth, &rest[..open]);
        rest = &rest[open..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let close = tag_end(rest);
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            depth = depth.saturating_sub(1);
            let _ = name;
            continue;
        }
        if tag.starts_with('!') {
            let _ = writeln!(out, "{}<{}>", "  ".repeat(depth), tag.to_ascii_lowercase());
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, attributes) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let name = name.to_ascii_lowercase();
        let mut line = format!("{}<{name}", "  ".repeat(depth));
        for (key, value) in parse_attributes(attributes) {
            match key.as_str() {
                "id" => line.push_str(&format!("#{value}")),
                "class" => value
                    .split_whitespace()
                    .for_each(|c| line.push_str(&format!(".{c}"))),
                "points" => line.push_str(&format!(" points=[{}]", value.split_whitespace().count())),
                "d" => line.push_str(&format!(
                    " d=[{}]",
                    value.chars().filter(char::is_ascii_alphabetic).count()
                )),
                key if KEPT.contains(&key) => line.push_str(&format!(" {key}={value:?}")),
                _ => {}
            }
        }
        line.push('>');
        let _ = writeln!(out, "{line}");
        if matches!(name.as_str(), "script" | "style") {
            let end = format!("</{name}>");
            rest = rest.find(&end).map_or("", |at| &rest[at + end.len()..]);
            continue;
        }
        if !self_closing && !VOID.contains(&name.as_str()) {
            depth += 1;
        }
    }
    out
}

/// Where the tag that starts `html` ends, quotes respected.
fn tag_end(html: &str) -> usize {
    let mut quote = None;
    for (at, c) in html.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return at,
            _ => {}
        }
    }
    panic!("unclosed tag: {}", &html[..html.len().min(80)]);
}

fn parse_attributes(mut text: &str) -> Vec<(String, String)> {
    let mut attributes = Vec::new();
    loop {
        text = text.trim_start();
        if text.is_empty() {
            return attributes;
        }
        let key_end = text
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(text.len());
        let key = text[..key_end].to_ascii_lowercase();
        text = text[key_end..].trim_start();
        let value = if let Some(after) = text.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remaining) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let end = after[1..].find(q).map_or(after.len(), |e| e + 1);
                    (&after[1..end], after.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            text = remaining;
            value.to_owned()
        } else {
            String::new()
        };
        attributes.push((key, value));
    }
}

fn text(out: &mut String, depth: usize, raw: &str) {
    let words: Vec<&str> = raw.split_whitespace().collect();
    if !words.is_empty() {
        let _ = writeln!(out, "{}{:?}", "  ".repeat(depth), words.join(" "));
    }
}

fn assert_inert(name: &str, page: &str) {
    for raw in ["<img src=x", "<script>alert", "</pre><script>"] {
        assert!(!page.contains(raw), "{name}: unescaped {raw:?}");
    }
}

#[tokio::test]
async fn pages_of_real_kills_match_their_golden_outlines() {
    let mut tokens = Tokens::default();
    tokens.insert(READ, Role::Read);
    tokens.insert(INGEST, Role::Ingest);
    let served = with_http(tokens, Some(INGEST)).await;
    let (server, address, client) = (served.server, served.http, served.grpc);
    let kills = real_kills();
    assert_eq!(kills.len(), 4);
    let mut events = kills.clone();
    events.push(hostile(&kills[0]));
    let acks = ingest(&client, events).await.unwrap();
    assert_eq!(acks.len(), 5);
    report(&client, real_top()).await;

    let bearer = format!("Bearer {READ}");
    let auth = [("Authorization", bearer.as_str())];
    // Explicit periods, ended in the past: the pages' defaults, and a
    // timeline's last interval, are relative to now.
    let period = "since=2026-11-30T12%3A00%3A00Z&until=2026-11-30T13%3A00%3A00Z";
    let mut pages = vec![
        ("kills.outline".to_owned(), format!("/?{period}")),
        (
            "kills-jobs.outline".to_owned(),
            format!("/?namespace=jobs&{period}"),
        ),
        (
            "summary-namespace.outline".to_owned(),
            format!("/summary?group_by=namespace&{period}"),
        ),
        ("summary-scope.outline".to_owned(), format!("/summary?{period}")),
        ("top.outline".to_owned(), "/top".to_owned()),
        (
            "kill-hostile.outline".to_owned(),
            format!("/kills/{}", hostile(&kills[0]).id),
        ),
    ];
    for kill in &kills {
        let pod = kill.pod.as_ref().and_then(|p| p.name.clone()).unwrap();
        pages.push((format!("kill-{pod}.outline"), format!("/kills/{}", kill.id)));
    }
    for (name, path) in &pages {
        let anonymous = http::get(&address, path, &[]).await;
        assert_eq!(anonymous.status, 303, "{path} without a token");
        let page = http::get(&address, path, &auth).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text());
        let html = page.text();
        assert_inert(name, &html);
        common::check_golden(&format!("web/{name}"), &outline(&html));
    }
    // The hostile strings did reach the pages that show them, escaped.
    let list = http::get(&address, &format!("/?{period}"), &auth).await.text();
    assert!(list.contains("&lt;img src=x onerror=alert(1)&gt;"), "{list}");
    let kill = http::get(&address, &format!("/kills/{}", hostile(&kills[0]).id), &auth)
        .await
        .text();
    assert!(kill.contains("&lt;/pre&gt;&lt;script&gt;"), "{kill}");
    server.stop().await.unwrap();
}

#[test]
fn the_outline_keeps_structure_and_drops_coordinates() {
    let html = r#"<!doctype html><html lang="en"><body class="a b"><!-- x --><p id="p1">Hello   <b>big</b> world</p>
<svg viewBox="0 0 10 10"><polyline points="0,1 2,3 4,5"/><path d="M0 0L1 1Z"></path></svg><br><script>let a = "<p>";</script><i title='q > r'>t</i></body></html>"#;
    assert_eq!(
        outline(html),
        r#"<!doctype html>
<html lang="en">
  <body.a.b>
    <p#p1>
      "Hello"
      <b>
        "big"
      "world"
    <svg viewbox="0 0 10 10">
      <polyline points=[3]>
      <path d=[3]>
    <br>
    <script>
    <i title="q > r">
      "t"
"#
    );
}
