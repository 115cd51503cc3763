//! The OOM parser on saved kernel output of every format still in the
//! field, and on decoys. Fixtures under `tests/fixtures/`: the `.kmsg` file
//! was captured from this machine's kernel (6.18, cgroup v1); the `logs/`
//! files reproduce the shapes of real reports from the kernels and tools
//! their names give.

use oomlens_agent::event::{NodeContext, event_from_report};
use oomlens_agent::logtext::reports_from_text;
use oomlens_agent::oom::{OomReport, ParserStats};
use oomlens_proto::json::event_to_json_line;
use oomlens_proto::v1::{Constraint, OomEvent, QosClass, Runtime, Scope};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(name: &str) -> (Vec<OomReport>, Vec<OomEvent>, ParserStats) {
    let (reports, stats) = reports_from_text(&fixture(name), 2024);
    let ctx = NodeContext::default();
    let events = reports
        .iter()
        .enumerate()
        .map(|(i, r)| event_from_report(r, &ctx, i as u64))
        .collect();
    (reports, events, stats)
}

fn scope(event: &OomEvent) -> Scope {
    Scope::try_from(event.scope).expect("known scope")
}

#[test]
fn linux_6_18_memcg_captured_here() {
    let (reports, events, stats) = parse("kmsg/linux-6.18-memcg-v1.kmsg");
    assert_eq!(events.len(), 1, "{events:?}");
    let (report, event) = (&reports[0], &events[0]);
    assert!(!report.partial);
    assert_eq!(event.constraint, Constraint::Memcg as i32);
    // Not a Kubernetes path: the kill of a plain memcg.
    assert_eq!(scope(event), Scope::OtherCgroup);
    assert_eq!(event.oom_memcg.as_deref(), Some("/oomlens-probe-1037"));
    assert_eq!(event.task_memcg.as_deref(), Some("/oomlens-probe-1037"));
    let victim = event.victim.as_ref().expect("victim");
    assert_eq!(
        (victim.pid, victim.comm.as_deref(), victim.uid),
        (Some(2061), Some("tail"), Some(0))
    );
    assert_eq!(
        (victim.anon_rss_kb, victim.file_rss_kb, victim.pgtables_kb),
        (Some(32512), Some(1584), Some(116))
    );
    let trigger = event.trigger.as_ref().expect("trigger");
    assert_eq!(
        (trigger.pid, trigger.comm.as_deref(), trigger.gfp_mask.as_deref()),
        (Some(2061), Some("tail"), Some("0xcc0(GFP_KERNEL)"))
    );
    let usage = event.memcg_usage.as_ref().expect("usage");
    assert_eq!(
        (usage.usage_kb, usage.limit_kb, usage.failcnt),
        (Some(32768), Some(32768), Some(19))
    );
    assert_eq!(event.tasks.len(), 1);
    assert_eq!(
        (
            event.tasks[0].pid,
            event.tasks[0].rss_pages,
            event.tasks[0].pgtables_bytes
        ),
        (2061, Some(8524), Some(118_784))
    );
    let kernel = event.kernel.as_ref().expect("kernel ref");
    assert_eq!(
        (kernel.seq, kernel.monotonic_us),
        (Some(447), Some(10_837_389_275))
    );
    // The call trace and the stats dump are not evidence; the report's own lines are.
    assert!(
        event
            .kernel_lines
            .iter()
            .any(|l| l.text.starts_with("oom-kill:constraint=CONSTRAINT_MEMCG"))
    );
    assert!(event.kernel_lines.iter().all(|l| !l.text.contains("dump_stack")));
    assert_eq!(event.kernel_lines.last().and_then(|l| l.seq), Some(447));
    assert_eq!(stats.forged, 0);
}

/// A real kill by page cache that could not be written back, captured
/// here: `dd` writing to ext4 on the busy root disk from a 32Mi memory
/// cgroup, killed when ext4 needed buffer heads (a GFP_NOFS allocation,
/// which may not wait for writeback) while 29Mi of the charge was dirty or
/// under writeback.
#[test]
fn linux_6_18_dirty_page_cache_kill_captured_here() {
    let (_, events, stats) = parse("kmsg/linux-6.18-memcg-v1-dirty-page-cache.kmsg");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.oom_memcg.as_deref(), Some("/oomlens-exp-dirty"));
    assert_eq!(
        event.trigger.as_ref().and_then(|t| t.gfp_mask.as_deref()),
        Some("0x408d40(GFP_NOFS|__GFP_ZERO|__GFP_NOFAIL|__GFP_ACCOUNT)")
    );
    let b = event.breakdown.as_ref().expect("breakdown");
    assert_eq!(b.source, oomlens_proto::v1::BreakdownSource::KernelReport as i32);
    assert_eq!(b.cgroup, "/oomlens-exp-dirty");
    assert_eq!(
        (
            b.page_cache_bytes,
            b.inactive_file_bytes,
            b.active_file_bytes,
            b.dirty_bytes,
            b.writeback_bytes,
            b.shmem_bytes
        ),
        (
            Some(31_457_280),
            Some(31_457_280),
            Some(0),
            Some(5_242_880),
            Some(25_165_824),
            Some(0)
        )
    );
    assert_eq!(b.anon_bytes, Some(1_163_264));
    assert_eq!(stats.forged, 0);
}

#[test]
fn ubuntu_5_4_container_limit() {
    let (_, events, _) = parse("logs/ubuntu-5.4-memcg-dmesg.txt");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(scope(event), Scope::ContainerLimit);
    let pod = event.pod.as_ref().expect("pod");
    assert_eq!(pod.uid, "3e2f4a1b-5c6d-4e7f-8a9b-0c1d2e3f4a5b");
    assert_eq!(pod.qos, QosClass::Burstable as i32);
    let container = event.container.as_ref().expect("container");
    assert!(container.id.starts_with("9f8e7d6c"));
    let victim = event.victim.as_ref().expect("victim");
    assert_eq!(
        (victim.pid, victim.oom_score_adj, victim.shmem_rss_kb),
        (Some(63214), Some(986), Some(92))
    );
    assert_eq!(event.trigger.as_ref().and_then(|t| t.pid), Some(63635));
    assert_eq!(event.tasks.len(), 3);
    // A dmesg log has no wall clock: time is unknown, not guessed.
    assert_eq!(event.time, None);
    assert_eq!(
        event.kernel.as_ref().and_then(|k| k.monotonic_us),
        Some(7_093_543_895)
    );
    assert_eq!(event.kernel.as_ref().and_then(|k| k.seq), None);
    assert_eq!(event.node, None);
}

#[test]
fn rhel7_3_10_sacrifice_child_kill() {
    let (reports, events, _) = parse("logs/rhel7-3.10-memcg-dmesg-T.txt");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    // The kernel chose sh but killed its child java.
    assert_eq!(event.victim.as_ref().and_then(|v| v.pid), Some(28438));
    assert_eq!(event.victim.as_ref().and_then(|v| v.oom_score), None);
    assert_eq!(
        reports[0].constraint(),
        oomlens_agent::oom::ReportConstraint::Memcg
    );
    assert_eq!(scope(event), Scope::ContainerLimit);
    assert_eq!(
        event.pod.as_ref().map(|p| p.qos),
        Some(QosClass::Guaranteed as i32)
    );
    assert_eq!(event.tasks.len(), 2);
    assert_eq!(event.tasks[1].swapents, Some(136_409));
    // dmesg -T gives wall time: Thu Dec 7 00:05:15 2017 UTC.
    assert_eq!(event.time.as_ref().map(|t| t.seconds), Some(1_512_605_115));
    assert_eq!(event.trigger.as_ref().and_then(|t| t.pid), Some(24610));
}

#[test]
fn ubuntu_4_15_plain_docker_in_syslog() {
    let (_, events, _) = parse("logs/ubuntu-4.15-memcg-syslog.txt");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(scope(event), Scope::OtherCgroup);
    assert_eq!(
        event.docker_id.as_deref(),
        Some("a742b3f6f0b5c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6")
    );
    assert_eq!(event.node.as_deref(), Some("ubuntu-s-1vcpu-2gb-ams3-01"));
    assert_eq!(event.victim.as_ref().and_then(|v| v.pid), Some(4254));
    assert_eq!(
        event.memcg_usage.as_ref().and_then(|u| u.swap_limit_kb),
        Some(204_800)
    );
    assert!(event.time.is_some());
}

#[test]
fn debian_6_1_global_oom_and_npd_echo() {
    let (_, events, stats) = parse("logs/debian-6.1-global-journalctl.txt");
    // node-problem-detector echoes the kill verbatim: not a second kill.
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(stats.forged, 1);
    let event = &events[0];
    assert_eq!(event.constraint, Constraint::Global as i32);
    assert_eq!(scope(event), Scope::NodeOom);
    // No cgroup's limit was hit (#14: the kernel prints `global_oom`, no
    // oom_memcg; it was "/" before).
    assert_eq!(event.oom_memcg.as_deref(), None);
    assert_eq!(
        event.task_memcg.as_deref(),
        Some("/user.slice/user-1000.slice/session-3.scope")
    );
    assert_eq!(event.systemd_unit.as_deref(), Some("session-3.scope"));
    assert_eq!(event.victim.as_ref().and_then(|v| v.uid), Some(1000));
    assert_eq!(event.node.as_deref(), Some("node-b"));
    assert_eq!(event.tasks.len(), 2);
}

#[test]
fn oom_group_kill_reports_each_process_once() {
    let (_, events, stats) = parse("logs/v2-oom-group-kmsg.txt");
    let pids: Vec<i32> = events.iter().filter_map(|e| e.victim.as_ref()?.pid).collect();
    assert_eq!(
        pids,
        [730, 729, 731],
        "victim first, then the rest of the group, 730 once"
    );
    assert_eq!(stats.duplicate_kills, 1);
    for event in &events {
        assert!(event.group_kill);
        assert!(!event.partial);
        assert_eq!(scope(event), Scope::ContainerLimit);
        assert_eq!(
            event.container.as_ref().map(|c| c.runtime),
            Some(Runtime::Containerd as i32)
        );
        assert_eq!(
            event.pod.as_ref().map(|p| p.uid.as_str()),
            Some("0330b2c1-a15b-4cdd-b5e5-72d4a90bee82")
        );
    }
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 3, "each kill has its own id");
}

#[test]
fn rate_limited_storm_yields_partial_events() {
    let (_, events, stats) = parse("logs/storm-ratelimited-dmesg.txt");
    assert_eq!(events.len(), 3);
    assert_eq!(stats.partial, 3);
    for event in &events {
        assert!(event.partial);
        assert_eq!(event.constraint, Constraint::Memcg as i32);
        assert_eq!(scope(event), Scope::Unknown);
        assert_eq!(event.oom_memcg, None);
        assert!(event.trigger.is_none());
    }
    let json: serde_json::Value = serde_json::from_str(&event_to_json_line(&events[0])).expect("json");
    assert_eq!(json["partial"], true);
    assert!(json["pod"].is_null() && json["oom_memcg"].is_null() && json["trigger"].is_null());
}

#[test]
fn interleaved_reports_are_kept_apart_by_caller() {
    let (reports, events, _) = parse("logs/interleaved-callers-kmsg.txt");
    assert_eq!(events.len(), 2);
    let beta = events
        .iter()
        .find(|e| e.victim.as_ref().and_then(|v| v.pid) == Some(777))
        .expect("beta");
    let alpha = events
        .iter()
        .find(|e| e.victim.as_ref().and_then(|v| v.pid) == Some(501))
        .expect("alpha");
    assert_eq!(scope(beta), Scope::PodLimit);
    assert_eq!(scope(alpha), Scope::ContainerLimit);
    assert_eq!(beta.memcg_usage.as_ref().and_then(|u| u.limit_kb), Some(131_072));
    assert_eq!(alpha.memcg_usage.as_ref().and_then(|u| u.limit_kb), Some(65_536));
    assert_eq!(beta.trigger.as_ref().and_then(|t| t.oom_score_adj), Some(500));
    assert!(reports.iter().all(|r| !r.partial));
}

#[test]
fn old_constraint_none_memcg_kill_is_memcg() {
    let (reports, events, stats) = parse("logs/old-4.19-constraint-none-memcg-dmesg-x.txt");
    // The daemon-facility line is not the kernel's.
    assert_eq!(events.len(), 1);
    assert_eq!(stats.forged, 1);
    let event = &events[0];
    assert_eq!(
        event.constraint,
        Constraint::Memcg as i32,
        "CONSTRAINT_NONE with an oom_memcg is a memcg kill"
    );
    assert_eq!(scope(event), Scope::PodLimit);
    assert_eq!(event.victim.as_ref().and_then(|v| v.oom_score), Some(1962));
    // cpuset= names the invoking task's cgroup; identity comes from task_memcg.
    assert_eq!(
        event.container.as_ref().map(|c| c.id.as_str()),
        Some("cafe".repeat(16).as_str())
    );
    assert_eq!(
        reports[0].summary.as_ref().and_then(|s| s.cpuset.as_deref()),
        Some("cri-containerd-cafe.scope")
    );
}

#[test]
fn rhel_uid_variant_global_kill() {
    let (_, events, _) = parse("logs/rhel7-uid-variant-kern-log.txt");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.constraint, Constraint::Global as i32);
    assert_eq!(scope(event), Scope::NodeOom);
    let victim = event.victim.as_ref().expect("victim");
    assert_eq!(
        (victim.uid, victim.anon_rss_kb, victim.oom_score),
        (Some(26), Some(15_204_884), Some(929))
    );
}

#[test]
fn cpuset_mempolicy_and_no_killable() {
    let (_, events, stats) = parse("logs/cpuset-kmsg.txt");
    let scopes: Vec<Scope> = events.iter().map(scope).collect();
    assert_eq!(scopes, [Scope::Cpuset, Scope::Mempolicy]);
    assert_eq!(events[0].constraint, Constraint::Cpuset as i32);
    assert_eq!(events[1].constraint, Constraint::Mempolicy as i32);
    assert_eq!(stats.no_killable, 1);
    assert_eq!(stats.abandoned, 0);
}

#[test]
fn decoys_yield_nothing() {
    let (_, events, stats) = parse("logs/decoys.txt");
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(stats.forged, 2, "java's and node-problem-detector's kill lines");
}

#[test]
fn every_fixture_prints_valid_json_with_documented_enums() {
    for name in [
        "kmsg/linux-6.18-memcg-v1.kmsg",
        "logs/ubuntu-5.4-memcg-dmesg.txt",
        "logs/rhel7-3.10-memcg-dmesg-T.txt",
        "logs/debian-6.1-global-journalctl.txt",
        "logs/v2-oom-group-kmsg.txt",
        "logs/cpuset-kmsg.txt",
    ] {
        for event in parse(name).1 {
            let json: serde_json::Value = serde_json::from_str(&event_to_json_line(&event)).expect("json");
            let scope = json["scope"].as_str().expect("scope word");
            assert!(
                [
                    "container_limit",
                    "pod_limit",
                    "node_allocatable",
                    "node_oom",
                    "cpuset",
                    "mempolicy",
                    "other_cgroup",
                    "unknown"
                ]
                .contains(&scope)
            );
            assert!(json["victim"]["pid"].is_number(), "{name}");
        }
    }
}
