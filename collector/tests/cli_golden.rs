//! What `oomlens` prints, checked against golden files in tests/golden/.
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p
//! oomlens-collector --test cli_golden`, then review the diff.
#![allow(clippy::unwrap_used)]

mod common;

use common::event;
use oomlens_collector::analysis::{Rules, analyse};
use oomlens_common::render::{
    Style, WIDTH, event_row, events_header, show_event, summary_header, summary_row, top_header, top_row,
    warning_line,
};
use oomlens_proto::v1::{
    Constraint, Container, ContainerMemoryStatus, KernelLine, MemcgUsage, MemoryWarning, NodeMemory,
    OomEvent, Pod, Scope, SummaryGroup, Trigger, Victim, Workload,
};
use prost_types::Timestamp;

fn check(name: &str, actual: &str) {
    common::check_golden(name, actual);
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
        &show_event(&analysed(with_breakdown(event(12, "shop", 600))), Style::PLAIN),
    );
}

/// What the kernel's report of a tmpfs-filled container says it held, and
/// its samples with a tmpfs growing to that.
fn with_breakdown(mut e: OomEvent) -> OomEvent {
    if let Some(history) = e.history.as_mut() {
        let count = history.samples.len().max(1) as u64;
        for (i, sample) in history.samples.iter_mut().enumerate() {
            let shmem = (205 << 20) * (i as u64 + 1) / count;
            sample.anon_bytes = Some(40 << 20);
            sample.shmem_bytes = Some(shmem);
            sample.file_bytes = Some(shmem + (6 << 20));
            sample.kernel_bytes = Some(5 << 20);
        }
    }
    e.breakdown = Some(oomlens_proto::v1::MemoryBreakdown {
        cgroup: e.oom_memcg.clone().unwrap_or_default(),
        source: oomlens_proto::v1::BreakdownSource::KernelReport as i32,
        anon_bytes: Some(40 << 20),
        page_cache_bytes: Some(6 << 20),
        dirty_bytes: Some(1 << 20),
        writeback_bytes: Some(0),
        shmem_bytes: Some(205 << 20),
        kernel_bytes: Some(5 << 20),
        ..oomlens_proto::v1::MemoryBreakdown::default()
    });
    e.memory_volumes = vec![oomlens_proto::v1::MemoryVolume {
        name: "cache".into(),
        path: "/var/lib/kubelet/pods/uid-12/volumes/kubernetes.io~empty-dir/cache".into(),
        used_bytes: Some(205 << 20),
        size_bytes: Some(256 << 20),
    }];
    e
}

/// `oomlens show` of the real kills in tests/fixtures/web: four
/// containerd kills (anonymous memory), a tmpfs filled to its limit and
/// pipes full of kernel memory, each with its stacked chart of what the
/// memory held, judged afresh.
#[test]
fn show_real_kills() {
    let recorded = [
        include_str!("fixtures/web/real-kills.jsonl"),
        include_str!("fixtures/web/real-layer-kills.jsonl"),
    ];
    for line in recorded.iter().flat_map(|file| file.lines()) {
        let event = OomEvent {
            analysis: None,
            ..oomlens_proto::json::event_from_json(line).unwrap()
        };
        let event = analysed(event);
        // Named by pod, or (without the runtime's names) by verdict.
        let name = event
            .pod
            .as_ref()
            .and_then(|p| p.name.clone())
            .unwrap_or_else(|| {
                use oomlens_proto::json::JsonEnum as _;
                let verdict = event.analysis.as_ref().map_or(0, |a| a.verdict);
                oomlens_proto::v1::Verdict::try_from(verdict)
                    .ok()
                    .and_then(|v| v.word())
                    .unwrap_or_else(|| "unknown".to_owned())
            });
        check(
            &format!("show-real-{name}.txt"),
            &show_event(&event, Style::PLAIN),
        );
    }
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
            timeline: Vec::new(),
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

/// What an attacker (or an unlucky kernel line) could put in a string:
/// set the window title, clear the screen, a C1 CSI, a carriage return
/// and a newline that forge a row, DEL.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\r\nFAKE\x7f";

fn hostile(text: &str) -> String {
    format!("{text}{HOSTILE}")
}

/// A kill whose every string carries control characters.
fn hostile_kill() -> OomEvent {
    let mut e = node_kill();
    e.id = hostile("0123");
    e.node = Some(hostile("node"));
    e.scope = Scope::ContainerLimit as i32;
    e.constraint = Constraint::Memcg as i32;
    e.oom_memcg = Some(hostile("/kubepods/pod"));
    e.task_memcg = Some(hostile("/kubepods/pod/c"));
    e.systemd_unit = Some(hostile("unit"));
    e.docker_id = Some(hostile("docker"));
    e.victim = Some(Victim {
        pid: Some(7),
        comm: Some(hostile("java")),
        ..Victim::default()
    });
    e.trigger = Some(Trigger {
        pid: Some(8),
        comm: Some(hostile("trig")),
        gfp_mask: Some(hostile("0xcc0")),
        order: Some(0),
        ..Trigger::default()
    });
    e.memcg_usage = Some(MemcgUsage {
        usage_kb: Some(u64::MAX),
        limit_kb: Some(u64::MAX / 1024),
        ..MemcgUsage::default()
    });
    e.pod = Some(Pod {
        uid: hostile("uid"),
        name: Some(hostile("api")),
        namespace: Some(hostile("shop")),
        owner: Some(Workload {
            kind: hostile("Deployment"),
            name: hostile("api"),
        }),
        ..Pod::default()
    });
    e.container = Some(Container {
        id: hostile("cid"),
        name: Some(hostile("app")),
        image: Some(hostile("registry/app:1")),
        ..Container::default()
    });
    e.kernel_lines = vec![KernelLine {
        seq: Some(1),
        monotonic_us: Some(1),
        level: Some(3),
        text: hostile("Out of memory: Killed process 7 (java)"),
        input_line: None,
    }];
    analysed(e)
}

/// Only the line ends we print: no escape sequence from the data reaches
/// the terminal, and no row is forged.
fn assert_no_control(text: &str) {
    for (number, line) in text.lines().enumerate() {
        assert!(
            !line.chars().any(char::is_control),
            "line {number} holds a control character: {line:?}"
        );
    }
}

/// Control characters in event and status strings are escaped in every
/// table, in `show` and in `watch` (they once reached the terminal raw).
#[test]
fn control_characters_from_events_are_escaped() {
    let event = hostile_kill();
    let mut text = events_header();
    text.push('\n');
    let row = event_row(&event, Style::PLAIN);
    assert!(row.chars().count() <= WIDTH, "{row}");
    text.push_str(&row);
    text.push('\n');
    // Without a pod, the unit; without one, the Docker id; then the cgroup.
    let mut unit = event.clone();
    unit.pod = None;
    text.push_str(&event_row(&unit, Style::PLAIN));
    text.push('\n');
    unit.systemd_unit = None;
    text.push_str(&event_row(&unit, Style::PLAIN));
    text.push('\n');
    unit.docker_id = None;
    text.push_str(&event_row(&unit, Style::PLAIN));
    text.push('\n');
    text.push('\n');
    text.push_str(&summary_header("namespace"));
    text.push('\n');
    text.push_str(&summary_row(&SummaryGroup {
        key: hostile("shop"),
        count: 1,
        silent: 0,
        first: None,
        last: None,
        timeline: Vec::new(),
    }));
    text.push('\n');
    text.push('\n');
    text.push_str(&top_header());
    text.push('\n');
    let status = ContainerMemoryStatus {
        node: hostile("node"),
        cgroup: hostile("/kubepods/x"),
        working_set_bytes: 1 << 20,
        limit_bytes: Some(2 << 20),
        ..ContainerMemoryStatus::default()
    };
    text.push_str(&top_row(&status, Style::PLAIN));
    text.push('\n');
    text.push_str(&top_row(
        &ContainerMemoryStatus {
            pod: event.pod.clone(),
            container: event.container.clone(),
            ..status.clone()
        },
        Style::PLAIN,
    ));
    text.push('\n');
    text.push('\n');
    text.push_str(&warning_line(&MemoryWarning {
        node: hostile("node"),
        cgroup: hostile("/kubepods/y"),
        working_set_bytes: 1 << 20,
        limit_bytes: 2 << 20,
        seconds_to_limit: Some(12.0),
        growth_bytes_per_second: 87_381.0,
        trend_seconds: 60,
        ..MemoryWarning::default()
    }));
    text.push('\n');
    text.push_str(&warning_line(&MemoryWarning {
        node: "node-a".to_owned(),
        cgroup: "/kubepods/leak".to_owned(),
        working_set_bytes: 700 << 20,
        limit_bytes: 1 << 30,
        seconds_to_limit: Some(19_440.0),
        growth_bytes_per_second: 17_477.0,
        trend_seconds: 900,
        ..MemoryWarning::default()
    }));
    text.push('\n');
    assert_no_control(&text);
    check("escaped-tables.txt", &text);

    let shown = show_event(&event, Style::PLAIN);
    assert_no_control(&shown);
    check("escaped-show.txt", &shown);
    // Colour is ours alone: the only escapes are our SGR codes.
    let coloured = show_event(&event, Style { color: true });
    let ours = coloured
        .replace("\x1b[0m", "")
        .replace("\x1b[1m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[33m", "");
    assert_no_control(&ours);
}
