//! What `oomlens` prints, checked against golden files in tests/golden/.
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p
//! oomlens-collector --test cli_golden`, then review the diff.
#![allow(clippy::unwrap_used)]

mod common;

use common::event;
use oomlens_collector::analysis::{Rules, analyse};
use oomlens_common::render::{
    Style, WIDTH, event_row, events_header, show_event, summary_header, summary_row, top_header, top_row,
};
use oomlens_proto::v1::{
    Constraint, Container, ContainerMemoryStatus, KernelLine, NodeMemory, OomEvent, Pod, Scope, SummaryGroup,
};
use prost_types::Timestamp;

fn check(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

fn analysed(mut e: OomEvent) -> OomEvent {
    e.analysis = Some(analyse(&e, &Rules::default()));
    e
}

fn node_kill() -> OomEvent {
    OomEvent {
        id: oomlens_proto::event_id("node-b", "boot-9", 4411),
        node: Some("node-b".into()),
        time: Some(Timestamp {
            seconds: 1_795_003_600,
            nanos: 250_000_000,
        }),
        constraint: Constraint::Global as i32,
        scope: Scope::NodeOom as i32,
        pod: Some(Pod {
            uid: "5c7e0a52-0000-4000-8000-000000000001".into(),
            name: Some("etl-28861210-x7k2p".into()),
            namespace: Some("batch".into()),
            ..Pod::default()
        }),
        container: Some(Container {
            id: "ab".repeat(32),
            name: Some("worker".into()),
            ..Container::default()
        }),
        node_memory: Some(NodeMemory {
            mem_total_bytes: Some(8 << 30),
            mem_available_bytes: Some(90 << 20),
            pressure_full_avg10: Some(42.5),
            ..NodeMemory::default()
        }),
        partial: true,
        kernel_lines: vec![KernelLine {
            seq: Some(4411),
            monotonic_us: Some(86_400_123_456),
            level: Some(3),
            text: "Out of memory: Killed process 7 (worker) total-vm:1kB, anon-rss:2kB".into(),
            input_line: None,
        }],
        ..OomEvent::default()
    }
}

#[test]
fn events_table() {
    let mut text = events_header();
    text.push('\n');
    for e in [
        analysed(event(12, "shop", 600)),
        analysed(event(15, "payments", 40)),
        analysed(node_kill()),
    ] {
        let row = event_row(&e, Style::PLAIN);
        assert!(row.chars().count() <= WIDTH, "{row}");
        text.push_str(&row);
        text.push('\n');
    }
    check("events.txt", &text);
}

#[test]
fn show_a_container_kill_with_its_chart() {
    check(
        "show-container.txt",
        &show_event(&analysed(event(12, "shop", 600)), Style::PLAIN),
    );
}

#[test]
fn show_a_node_kill() {
    check("show-node.txt", &show_event(&analysed(node_kill()), Style::PLAIN));
}

#[test]
fn summary_and_top() {
    let mut text = summary_header("namespace");
    text.push('\n');
    for (key, count, silent) in [("shop", 84, 21), ("payments", 83, 20), ("", 2, 0)] {
        text.push_str(&summary_row(&SummaryGroup {
            key: key.into(),
            count,
            silent,
            first: Some(Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            last: Some(Timestamp {
                seconds: 1_795_086_399,
                nanos: 0,
            }),
        }));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&top_header());
    text.push('\n');
    for (name, ws, limit, growth, eta) in [
        ("api-7d9f", 243u64 << 20, 256u64 << 20, 1_048_576.0, Some(13.0)),
        ("cache-0", 900 << 20, 1 << 30, 0.0, None),
        ("ingest-5c", 1900 << 20, 2 << 30, -52_428.8, None),
    ] {
        let status = ContainerMemoryStatus {
            node: "node-a".into(),
            pod: Some(Pod {
                uid: "u".into(),
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..Pod::default()
            }),
            container: Some(Container {
                id: "c".repeat(64),
                name: Some("app".into()),
                ..Container::default()
            }),
            working_set_bytes: ws,
            limit_bytes: Some(limit),
            growth_bytes_per_second: growth,
            seconds_to_limit: eta,
            ..ContainerMemoryStatus::default()
        };
        let row = top_row(&status, Style::PLAIN);
        assert!(row.chars().count() <= WIDTH, "{row}");
        text.push_str(&row);
        text.push('\n');
    }
    check("summary-top.txt", &text);
}
