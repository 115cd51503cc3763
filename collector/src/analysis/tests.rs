//! The verdicts and recommended limits on shaped histories.
use super::*;
use oomlens_proto::v1::{MemcgUsage, MemoryBreakdown, MemorySample, NodeMemory};
use prost_types::Timestamp;

fn history(points: &[(f64, u64)], limit: u64, above_90: f64) -> MemoryHistory {
    MemoryHistory {
        cgroup: "/kubepods/pod1/c1".into(),
        samples: points
            .iter()
            .map(|(t, ws)| MemorySample {
                time: Some(Timestamp {
                    seconds: 1_700_000_000 + i64::try_from(saturating_u64(t.floor())).unwrap(),
                    nanos: i32::try_from(saturating_u64(t.fract() * 1e9)).unwrap(),
                }),
                working_set_bytes: Some(*ws),
                limit_bytes: Some(limit),
                ..MemorySample::default()
            })
            .collect(),
        peak_working_set_bytes: points.iter().map(|p| p.1).max(),
        seconds_above_90pct: Some(above_90),
        limit_bytes: Some(limit),
        sample_interval_ms: 100,
        ..MemoryHistory::default()
    }
}

fn container_kill(history: MemoryHistory) -> OomEvent {
    OomEvent {
        scope: Scope::ContainerLimit as i32,
        constraint: Constraint::Memcg as i32,
        history: Some(history),
        ..OomEvent::default()
    }
}

#[test]
fn clean_limits_round_up_to_values_people_write() {
    assert_eq!(clean_limit(100 * MIB), Some(112 * MIB));
    assert_eq!(clean_limit(125 * MIB), Some(128 * MIB));
    assert_eq!(clean_limit(300 * MIB), Some(320 * MIB));
    assert_eq!(clean_limit(1100 * MIB), Some(1280 * MIB));
    assert_eq!(clean_limit(5 * GIB + 1), Some(5 * GIB + 512 * MIB));
    assert_eq!(clean_limit(20 * GIB + 1), Some(21 * GIB));
    assert_eq!(clean_limit(u64::MAX), None);
    assert_eq!(quantity(clean_limit(1100 * MIB).unwrap()), "1280Mi");
}

#[test]
fn a_sudden_climb_is_a_spike() {
    let limit = 100 * MIB;
    let mut points: Vec<(f64, u64)> = (0..50).map(|i| (f64::from(i) * 0.1, 20 * MIB)).collect();
    points.extend((0..10u32).map(|i| (5.0 + f64::from(i) * 0.1, 20 * MIB + (u64::from(i) + 1) * 8 * MIB)));
    let analysis = analyse(&container_kill(history(&points, limit, 0.2)), &Rules::default());
    assert_eq!(analysis.verdict, Verdict::Spike as i32, "{}", analysis.reasoning);
    assert!(
        analysis.reasoning.contains("climbed from 20Mi"),
        "{}",
        analysis.reasoning
    );
    // Peak 100Mi + 25% = 125Mi -> 128Mi.
    assert_eq!(analysis.recommended_limit_bytes, Some(128 * MIB));
}

#[test]
fn steady_growth_is_a_suspected_leak() {
    let limit = 200 * MIB;
    let points: Vec<(f64, u64)> = (0..600u32)
        .map(|i| (f64::from(i) * 0.1, 60 * MIB + u64::from(i) * (140 * MIB / 600)))
        .collect();
    let analysis = analyse(&container_kill(history(&points, limit, 4.0)), &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::LeakSuspected as i32,
        "{}",
        analysis.reasoning
    );
    assert!(
        analysis
            .recommendation_reasoning
            .as_deref()
            .unwrap()
            .contains("fix the growth first")
    );
}

#[test]
fn a_plateau_near_the_limit_means_the_limit_is_too_low() {
    let limit = 100 * MIB;
    let mut points: Vec<(f64, u64)> = (0..10).map(|i| (f64::from(i) * 0.1, 60 * MIB)).collect();
    points.extend((0..80u32).map(|i| (1.0 + f64::from(i) * 0.1, 95 * MIB + u64::from(i % 3) * MIB)));
    let analysis = analyse(&container_kill(history(&points, limit, 8.0)), &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::LimitTooLow as i32,
        "{}",
        analysis.reasoning
    );
    assert!(analysis.reasoning.contains("8.0 s"), "{}", analysis.reasoning);
    assert_eq!(analysis.recommended_limit_bytes, Some(128 * MIB));
    let why = analysis.recommendation_reasoning.unwrap();
    assert!(
        why.contains("peak working set 97Mi") && why.contains("the current limit is 100Mi"),
        "{why}"
    );
}

#[test]
fn node_kills_blame_the_node_and_recommend_no_limit() {
    let event = OomEvent {
        scope: Scope::NodeOom as i32,
        constraint: Constraint::Global as i32,
        node_memory: Some(NodeMemory {
            mem_total_bytes: Some(4 * GIB),
            mem_available_bytes: Some(30 * MIB),
            ..NodeMemory::default()
        }),
        ..OomEvent::default()
    };
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(analysis.verdict, Verdict::NodePressure as i32);
    assert!(analysis.reasoning.contains("MemAvailable 30Mi of 4Gi"));
    assert_eq!(analysis.recommended_limit_bytes, None);
}

#[test]
fn without_history_the_kernel_numbers_still_give_a_recommendation() {
    let event = OomEvent {
        scope: Scope::ContainerLimit as i32,
        constraint: Constraint::Memcg as i32,
        memcg_usage: Some(MemcgUsage {
            usage_kb: Some(51_200),
            limit_kb: Some(51_200),
            ..MemcgUsage::default()
        }),
        ..OomEvent::default()
    };
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(analysis.verdict, Verdict::InsufficientData as i32);
    // 50Mi + 25% = 62.5Mi -> 64Mi.
    assert_eq!(analysis.recommended_limit_bytes, Some(64 * MIB));
}

#[test]
fn other_cgroups_get_a_verdict_but_no_kubernetes_limit() {
    let limit = 100 * MIB;
    let points: Vec<(f64, u64)> = (0..20).map(|i| (f64::from(i) * 0.1, 99 * MIB)).collect();
    let mut event = container_kill(history(&points, limit, 2.0));
    event.scope = Scope::OtherCgroup as i32;
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(analysis.verdict, Verdict::LimitTooLow as i32);
    assert_eq!(analysis.recommended_limit_bytes, None);
}

/// Numbers no machine has once gave a recommended limit of 0 (the
/// rounding wrapped past u64) or of exbibytes; now they give none, and
/// a cgroup v1 "unlimited" limit counts as no limit.
#[test]
fn absurd_numbers_never_give_a_zero_or_absurd_recommendation() {
    let kernel_only = |usage_kb: u64, limit_kb: u64| OomEvent {
        scope: Scope::ContainerLimit as i32,
        constraint: Constraint::Memcg as i32,
        memcg_usage: Some(MemcgUsage {
            usage_kb: Some(usage_kb),
            limit_kb: Some(limit_kb),
            ..MemcgUsage::default()
        }),
        ..OomEvent::default()
    };
    for (usage_kb, limit_kb) in [
        (u64::MAX, u64::MAX),
        (u64::MAX / 1024, u64::MAX / 1024),
        (1 << 52, 1 << 52),
        (0, 0),
        (0, 51_200),
    ] {
        let analysis = analyse(&kernel_only(usage_kb, limit_kb), &Rules::default());
        assert_eq!(
            analysis.recommended_limit_bytes, None,
            "usage {usage_kb} kB, limit {limit_kb} kB: {analysis:?}"
        );
        assert_eq!(analysis.recommendation_reasoning, None);
    }
    let mut peak_only = container_kill(history(&[(0.0, 64 * MIB); 10], 100 * MIB, 0.0));
    if let Some(h) = peak_only.history.as_mut() {
        h.peak_working_set_bytes = Some(u64::MAX);
    }
    assert_eq!(
        analyse(&peak_only, &Rules::default()).recommended_limit_bytes,
        None
    );
    // cgroup v1's "unlimited" (PAGE_COUNTER_MAX pages) is no limit: the
    // recommendation follows the peak, not 8 EiB + 1.
    let unlimited = kernel_only(51_200, 0x7FFF_FFFF_FFFF_F000 / 1024);
    let analysis = analyse(&unlimited, &Rules::default());
    assert_eq!(analysis.recommended_limit_bytes, Some(64 * MIB), "{analysis:?}");
    assert!(
        analysis.reasoning.contains("no memory limit known"),
        "{analysis:?}"
    );
}

fn with_breakdown(mut event: OomEvent, breakdown: MemoryBreakdown) -> OomEvent {
    event.breakdown = Some(breakdown);
    event
}

/// A plateau near a 512Mi limit: `limit_too_low` by the curve alone.
fn plateau_kill() -> OomEvent {
    let limit = 512 * MIB;
    let points: Vec<(f64, u64)> = (0..100).map(|i| (f64::from(i) * 0.1, 500 * MIB)).collect();
    container_kill(history(&points, limit, 10.0))
}

#[test]
fn the_curve_alone_says_limit_too_low_for_the_plateau() {
    let analysis = analyse(&plateau_kill(), &Rules::default());
    assert_eq!(analysis.verdict, Verdict::LimitTooLow as i32);
}

#[test]
fn a_charge_mostly_shmem_is_a_full_tmpfs_with_no_limit_to_recommend() {
    let event = with_breakdown(
        plateau_kill(),
        MemoryBreakdown {
            anon_bytes: Some(80 * MIB),
            page_cache_bytes: Some(10 * MIB),
            shmem_bytes: Some(410 * MIB),
            kernel_bytes: Some(8 * MIB),
            ..MemoryBreakdown::default()
        },
    );
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::TmpfsFull as i32,
        "{}",
        analysis.reasoning
    );
    assert!(
        analysis.reasoning.contains("shmem held 410Mi of the 512Mi limit"),
        "{}",
        analysis.reasoning
    );
    assert!(analysis.reasoning.contains("sizeLimit"), "{}", analysis.reasoning);
    assert_eq!(
        analysis.recommended_limit_bytes, None,
        "a higher limit only delays the next kill"
    );
}

#[test]
fn a_stale_breakdown_does_not_outweigh_the_kernels_usage_at_the_kill() {
    // Seen in CI: a pod's sidecar held 6Mi in a memory-backed volume; the
    // breakdown came from the last sample, before the victim's climb to
    // the 32Mi limit in under 100 ms; the kernel's report said 32Mi used.
    let mut event = with_breakdown(
        plateau_kill(),
        MemoryBreakdown {
            cgroup: "/kubepods/pod1".into(),
            source: oomlens_proto::v1::BreakdownSource::LastSample as i32,
            anon_bytes: Some(MIB),
            shmem_bytes: Some(6 * MIB),
            ..MemoryBreakdown::default()
        },
    );
    event.oom_memcg = Some("/kubepods/pod1".into());
    event.memcg_usage = Some(oomlens_proto::v1::MemcgUsage {
        usage_kb: Some(32 * 1024),
        ..oomlens_proto::v1::MemcgUsage::default()
    });
    let analysis = analyse(&event, &Rules::default());
    assert_ne!(
        analysis.verdict,
        Verdict::TmpfsFull as i32,
        "{}",
        analysis.reasoning
    );
    // Without the kernel's figure (or of another cgroup), the layers are
    // all there is to go by.
    event.memcg_usage = None;
    assert_eq!(
        analyse(&event, &Rules::default()).verdict,
        Verdict::TmpfsFull as i32
    );
    event.memcg_usage = Some(oomlens_proto::v1::MemcgUsage {
        usage_kb: Some(32 * 1024),
        ..oomlens_proto::v1::MemcgUsage::default()
    });
    event.oom_memcg = Some("/kubepods/pod1/other".into());
    assert_eq!(
        analyse(&event, &Rules::default()).verdict,
        Verdict::TmpfsFull as i32
    );
}

#[test]
fn a_charge_mostly_kernel_memory_names_its_parts() {
    let event = with_breakdown(
        plateau_kill(),
        MemoryBreakdown {
            anon_bytes: Some(100 * MIB),
            kernel_bytes: Some(300 * MIB),
            sock_bytes: Some(250 * MIB),
            slab_unreclaimable_bytes: Some(40 * MIB),
            ..MemoryBreakdown::default()
        },
    );
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::KernelMemory as i32,
        "{}",
        analysis.reasoning
    );
    assert!(
        analysis.reasoning.contains("sockets 250Mi, slab 40Mi"),
        "{}",
        analysis.reasoning
    );
    assert!(analysis.recommended_limit_bytes.is_some());
}

#[test]
fn page_cache_is_pressure_only_when_much_of_it_is_unwritten() {
    let dirty = with_breakdown(
        plateau_kill(),
        MemoryBreakdown {
            anon_bytes: Some(60 * MIB),
            page_cache_bytes: Some(400 * MIB),
            dirty_bytes: Some(120 * MIB),
            writeback_bytes: Some(30 * MIB),
            ..MemoryBreakdown::default()
        },
    );
    let analysis = analyse(&dirty, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::PageCachePressure as i32,
        "{}",
        analysis.reasoning
    );
    assert!(
        analysis
            .reasoning
            .contains("150Mi of it dirty or under writeback"),
        "{}",
        analysis.reasoning
    );
    assert_eq!(analysis.recommended_limit_bytes, None);
    // Clean cache the kernel could have dropped: the curve decides.
    let clean = with_breakdown(
        plateau_kill(),
        MemoryBreakdown {
            anon_bytes: Some(60 * MIB),
            page_cache_bytes: Some(400 * MIB),
            dirty_bytes: Some(MIB),
            writeback_bytes: Some(0),
            ..MemoryBreakdown::default()
        },
    );
    assert_eq!(
        analyse(&clean, &Rules::default()).verdict,
        Verdict::LimitTooLow as i32
    );
}

#[test]
fn an_anonymous_charge_keeps_the_curve_verdicts() {
    let event = with_breakdown(
        plateau_kill(),
        MemoryBreakdown {
            anon_bytes: Some(490 * MIB),
            page_cache_bytes: Some(4 * MIB),
            shmem_bytes: Some(0),
            kernel_bytes: Some(6 * MIB),
            ..MemoryBreakdown::default()
        },
    );
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(analysis.verdict, Verdict::LimitTooLow as i32);
    assert!(analysis.recommended_limit_bytes.is_some());
    // An empty breakdown changes nothing.
    let empty = with_breakdown(plateau_kill(), MemoryBreakdown::default());
    assert_eq!(
        analyse(&empty, &Rules::default()).verdict,
        Verdict::LimitTooLow as i32
    );
}

#[test]
fn a_pod_level_kill_says_which_container_held_what() {
    use oomlens_proto::v1::ContainerUsage;
    let mut event = plateau_kill();
    event.scope = Scope::PodLimit as i32;
    event.task_memcg = Some("/kubepods/pod1/db".into());
    event.limited_containers = vec![
        ContainerUsage {
            cgroup: "/kubepods/pod1/cache".into(),
            container_id: "c".repeat(64),
            name: Some("cache".into()),
            working_set_bytes: Some(300 * MIB),
        },
        ContainerUsage {
            cgroup: "/kubepods/pod1/db".into(),
            container_id: "d".repeat(64),
            name: None,
            working_set_bytes: Some(200 * MIB),
        },
    ];
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::PodLimit as i32,
        "{}",
        analysis.reasoning
    );
    assert!(
        analysis
            .reasoning
            .contains("cache 300Mi, dddddddddddd 200Mi (the victim's)"),
        "{}",
        analysis.reasoning
    );
    assert!(analysis.recommended_limit_bytes.is_some());
    // A container-limit kill, or no shares known: the curve decides.
    event.limited_containers.clear();
    assert_eq!(
        analyse(&event, &Rules::default()).verdict,
        Verdict::LimitTooLow as i32
    );
}

/// Four real kills from containerd pods (collector/tests/fixtures/web):
/// busybox filled its 32Mi in under 100 ms, between two samples, so the
/// samples alone saw a flat 300Ki-10Mi. The kernel's numbers at the kill
/// end the curve and set the peak.
#[test]
fn real_kills_the_samples_missed_are_judged_by_the_kernel_numbers() {
    let kills: Vec<OomEvent> = include_str!("../../tests/fixtures/web/real-kills.jsonl")
        .lines()
        .map(|line| oomlens_proto::json::event_from_json(line).unwrap())
        .collect();
    let pod = |e: &OomEvent| e.pod.as_ref().and_then(|p| p.name.clone()).unwrap();
    for kill in &kills {
        let analysis = analyse(kill, &Rules::default());
        let name = pod(kill);
        let why = analysis.recommendation_reasoning.clone().unwrap_or_default();
        assert!(
            why.starts_with("working set at the kill (the kernel's report) 32Mi"),
            "{name}: {why}"
        );
        assert_eq!(analysis.recommended_limit_bytes, Some(48 * MIB), "{name}");
        if name == "db-0" {
            assert_eq!(analysis.verdict, Verdict::PodLimit as i32, "{name}");
            assert!(
                analysis
                    .reasoning
                    .contains("db at least 31Mi at the kill (the victim busybox's anonymous and shared memory; 528Ki at the last sample)"),
                "{name}: {}",
                analysis.reasoning
            );
        } else {
            assert_eq!(
                analysis.verdict,
                Verdict::Spike as i32,
                "{name}: {}",
                analysis.reasoning
            );
            assert!(
                analysis.reasoning.contains("to 32Mi in"),
                "{name}: {}",
                analysis.reasoning
            );
        }
    }
    // Without the kernel's usage the same samples say nothing of a climb.
    let mut blind = kills[0].clone();
    blind.memcg_usage = None;
    assert_eq!(
        analyse(&blind, &Rules::default()).verdict,
        Verdict::LimitTooLow as i32
    );
}
