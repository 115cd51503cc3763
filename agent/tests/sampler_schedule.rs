//! The sampler over time on fixture cgroup trees: how often each level is
//! read, warnings, hot cgroups, late limits, and placing a kill the kernel
//! rate-limited. Runs anywhere (no root), like `sampler_fixtures.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use oomlens_agent::cgroup::Sampler;
use oomlens_proto::time::unix_ms;
use tokio::sync::mpsc;

use common::{UID, UID2, config, fill_v1, fixture, id, v1_cgroup, write};

#[test]
fn a_container_closing_on_its_limit_gets_one_warning_a_minute() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    let container = memory.join(format!("kubepods/burstable/pod{UID}/{}", id('a')));
    v1_cgroup(&container, 230 << 20, Some(256 << 20), 0);
    let (warnings, mut rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(config(&f.cgroup_root, &f.proc_root, false), warnings);
    let start = Instant::now();
    for i in 0..20u64 {
        // Climbing about 1 MiB per sample, above 90% of the limit.
        v1_cgroup(&container, (231 << 20) + i * (1 << 20) / 2, Some(256 << 20), 0);
        sampler.tick(start + Duration::from_millis(50 * i));
        std::thread::sleep(Duration::from_millis(5));
    }
    let warning = rx.try_recv().expect("a warning");
    assert_eq!(warning.limit_bytes, 256 << 20);
    assert!(warning.working_set_bytes >= 231 << 20);
    assert!(warning.seconds_to_limit.is_some_and(|s| s > 0.0 && s < 300.0));
    assert_eq!(
        warning.container.as_ref().map(|c| c.id.as_str()),
        Some(id('a').as_str())
    );
    assert!(
        rx.try_recv().is_err(),
        "at most one warning per container per minute"
    );
    assert_eq!(sampler.stats().warnings, 1);
}

/// Unlimited containers are bounded by their ancestors: each warns against
/// the tightest limit above it, also when that ancestor is followed only
/// after the container (here a pod directory that had no memory files at
/// first, found by a rescan once it has them).
#[test]
fn unlimited_containers_warn_against_the_tightest_limit_above_them() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    let qos = memory.join("kubepods/burstable");
    let limited_pod = qos.join(format!("pod{UID}"));
    let open_pod = qos.join(format!("pod{UID2}"));
    let (a, b) = (limited_pod.join(id('a')), open_pod.join(id('b')));
    v1_cgroup(&qos, 400 << 20, Some(512 << 20), 0);
    v1_cgroup(&a, 200 << 20, None, 0);
    v1_cgroup(&b, 200 << 20, None, 0);
    fill_v1(&memory);
    std::fs::remove_file(limited_pod.join("memory.usage_in_bytes")).expect("rm");
    let (warnings, mut rx) = mpsc::channel(4);
    let mut config = config(&f.cgroup_root, &f.proc_root, false);
    config.rescan = Duration::from_millis(500);
    let mut sampler = Sampler::new(config, warnings);
    let start = Instant::now();
    sampler.tick(start);
    assert_eq!(
        sampler.stats().tracked,
        5,
        "not the pod yet: {:?}",
        sampler.tracked_paths()
    );
    v1_cgroup(&limited_pod, 240 << 20, Some(256 << 20), 0);
    for i in 1..=60u64 {
        // Both climbing, the first above 90% of its pod's 256 MiB, the
        // second above 90% of the QoS level's 512 MiB.
        v1_cgroup(&a, (231 << 20) + i * (1 << 20) / 2, None, 0);
        v1_cgroup(&b, (470 << 20) + i * (1 << 20) / 2, None, 0);
        sampler.tick(start + Duration::from_millis(50 * i));
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut limits = std::collections::BTreeMap::new();
    while let Ok(warning) = rx.try_recv() {
        let container = warning.container.map(|c| c.id).unwrap_or_default();
        limits.insert(container, warning.limit_bytes);
    }
    assert_eq!(
        limits,
        std::collections::BTreeMap::from([(id('a'), 256 << 20), (id('b'), 512 << 20)])
    );
}

/// A kill whose report the kernel rate-limited names only a pid: the
/// sampler lists the processes of cgroups near their limit, and tells
/// which level's limit was hit from the sampled usage.
#[test]
fn processes_near_a_limit_place_a_rate_limited_kill() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    // A pod limited at 64 MiB with an unlimited container close to it, and
    // a container far below its own 32 MiB limit.
    let pod = memory.join(format!("kubepods/burstable/pod{UID}"));
    v1_cgroup(&pod, 62 << 20, Some(64 << 20), 0);
    let near = pod.join(id('a'));
    v1_cgroup(&near, 60 << 20, None, 0);
    write(&near, "cgroup.procs", "101\n102\n");
    let far = pod.join(id('b'));
    v1_cgroup(&far, 2 << 20, Some(32 << 20), 0);
    write(&far, "cgroup.procs", "201\n");
    fill_v1(&memory);
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(config(&f.cgroup_root, &f.proc_root, false), warnings);
    let start = Instant::now();
    for i in 0..6u64 {
        sampler.tick(start + Duration::from_millis(100 * i));
        std::thread::sleep(Duration::from_millis(5));
    }
    let path = |dir: &Path| format!("/{}", dir.strip_prefix(&memory).expect("under root").display());
    let since = oomlens_proto::time::now_unix_ms() - 5_000;
    assert_eq!(sampler.cgroup_of_pid(102, since), Some(path(&near)));
    assert_eq!(
        sampler.cgroup_of_pid(201, since),
        None,
        "a cold cgroup's processes are not listed"
    );
    assert_eq!(sampler.cgroup_of_pid(102, since + 60_000), None, "too old");
    let now = oomlens_proto::time::now_unix_ms();
    // The container has no limit of its own: the pod's was hit.
    assert_eq!(sampler.limited_cgroup(&path(&near), now), Some(path(&pod)));
    // Its sibling is far below its own limit, but the pod was at its
    // limit: a kill there hit the pod's too.
    assert_eq!(sampler.limited_cgroup(&path(&far), now), Some(path(&pod)));
    // A container closer to its own limit than the pod is to the pod's:
    // the container's was hit.
    let own = pod.join(id('c'));
    v1_cgroup(&own, 28 << 20, Some(32 << 20), 0);
    v1_cgroup(&pod, 40 << 20, Some(64 << 20), 0);
    // Histories are stamped with the wall clock: let the pod's old samples
    // age out of the last second.
    for i in 6..30u64 {
        sampler.tick(start + Duration::from_millis(100 * i));
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = oomlens_proto::time::now_unix_ms();
    assert_eq!(sampler.limited_cgroup(&path(&own), now), Some(path(&own)));
    // No samples in the second before the kill: no answer, not a guess.
    assert_eq!(sampler.limited_cgroup(&path(&near), now - 60_000), None);
}

/// The default schedule, counted: containers get usage 10 times a second
/// and a full sample every second; pods and the levels above them usage
/// every second and a full sample every 5 s; limits are read with every
/// full sample in a cgroup's first 10 s (a runtime sets them just after
/// creating it), then every 10 s, or with every sample of a hot cgroup
/// (20 a second); a file that cannot be parsed is retried on schedule, not
/// on every tick.
#[test]
fn each_level_is_read_as_often_as_its_schedule_says() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    let kubepods = memory.join("kubepods");
    v1_cgroup(&kubepods, 40 << 20, Some(8 << 30), 0);
    let pod = kubepods.join(format!("burstable/pod{UID}"));
    v1_cgroup(&pod, 30 << 20, Some(512 << 20), 0);
    let limited = pod.join(id('a'));
    v1_cgroup(&limited, 20 << 20, Some(256 << 20), 0);
    let unlimited = pod.join(id('b'));
    v1_cgroup(&unlimited, 10 << 20, None, 0);
    fill_v1(&memory);
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(config(&f.cgroup_root, &f.proc_root, false), warnings);
    let start = Instant::now();
    let mut tick = 0u64;
    // Ticks every 50 ms, as the sampler task runs, up to `until_ms`.
    let mut run_until = |sampler: &mut Sampler, until_ms: u64| {
        while tick * 50 <= until_ms {
            sampler.tick(start + Duration::from_millis(tick * 50));
            tick += 1;
        }
    };

    // 0..=10 s: 2 containers x 11 full samples, 3 upper levels (kubepods,
    // burstable, pod) x 3 (0, 5, 10 s); usage 10 a second between a
    // container's full samples, once a second between an upper level's.
    // Limits with the full samples of the first 10 s: 0..=9 s for the
    // containers, 0 and 5 s for the upper levels.
    run_until(&mut sampler, 10_000);
    let stats = sampler.stats();
    assert_eq!(stats.tracked, 5);
    assert_eq!(stats.full_samples, 2 * 11 + 3 * 3);
    assert_eq!(stats.fast_samples, 2 * (101 - 11) + 3 * (11 - 3));
    assert_eq!(stats.limit_reads, 2 * 10 + 3 * 2);

    // Then a limit changed after its read is seen at the next one, 10 s
    // later: the pod's, read at 5 s, again at 15 s.
    let pod_path = format!("/kubepods/burstable/pod{UID}");
    let pod_limit = |sampler: &Sampler| {
        sampler
            .snapshot(None, Some(&pod_path), u64::MAX)
            .oom_memcg
            .and_then(|h| h.limit_bytes)
    };
    write(&pod, "memory.limit_in_bytes", &format!("{}\n", 400u64 << 20));
    run_until(&mut sampler, 14_950);
    assert_eq!(pod_limit(&sampler), Some(512 << 20));
    run_until(&mut sampler, 15_000);
    assert_eq!(pod_limit(&sampler), Some(400 << 20));
    run_until(&mut sampler, 20_000);

    // A container at 94% of its limit turns hot on its next usage sample
    // and then gets a full sample, limits included, every 50 ms.
    write(&limited, "memory.usage_in_bytes", &format!("{}\n", 240u64 << 20));
    let before = sampler.stats();
    run_until(&mut sampler, 21_000);
    let after = sampler.stats();
    // Its usage sample at 20.1 s turns it hot: full samples from 20.15 to
    // 21 s (18), each with its limits; and the other container's full
    // sample at 21 s, without (its limits were read at 19 s).
    assert_eq!(after.full_samples - before.full_samples, 18 + 1);
    assert_eq!(after.limit_reads - before.limit_reads, 18);

    // Unparsable usage: one error per scheduled sample (10 a second), not
    // one per tick (20 a second).
    write(&unlimited, "memory.usage_in_bytes", "garbage\n");
    let before = sampler.stats();
    run_until(&mut sampler, 22_000);
    let errors = sampler.stats().read_errors - before.read_errors;
    assert_eq!(errors, 10, "{errors} read errors in a second");
}

/// A runtime creates a container's cgroup, then writes its limit: a
/// sampler that saw the cgroup first knows the limit by the next full
/// sample, not only at the next periodic limits read. (Found by the
/// end-to-end test: storm kills got scope `unknown`.)
#[test]
fn a_limit_written_after_the_cgroup_appeared_is_known_within_a_second() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    let container = memory.join(format!("kubepods/besteffort/pod{UID}/{}", id('a')));
    v1_cgroup(&container, 2 << 20, None, 0);
    fill_v1(&memory);
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(config(&f.cgroup_root, &f.proc_root, false), warnings);
    let start = Instant::now();
    sampler.tick(start);
    write(&container, "memory.limit_in_bytes", &format!("{}\n", 8u64 << 20));
    for tick in 1..=20u64 {
        sampler.tick(start + Duration::from_millis(50 * tick));
    }
    let path = format!("/kubepods/besteffort/pod{UID}/{}", id('a'));
    let history = sampler
        .snapshot(Some(&path), None, u64::MAX)
        .victim
        .expect("history");
    assert_eq!(history.limit_bytes, Some(8 << 20));
}

/// A pod is sampled once a second while cold, so whether it climbs fast is
/// judged over its last two usage samples: a pod climbing 50 MiB/s towards
/// its limit turns hot (20 full samples a second) before it is near it.
#[test]
fn a_pod_climbing_fast_turns_hot_on_its_usage_samples() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    let pod = memory.join(format!("kubepods/burstable/pod{UID}"));
    v1_cgroup(&pod, 150 << 20, Some(512 << 20), 0);
    v1_cgroup(&pod.join(id('a')), 100 << 20, None, 0);
    fill_v1(&memory);
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(config(&f.cgroup_root, &f.proc_root, false), warnings);
    // Real time: histories are stamped with the wall clock.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3_200) {
        let climbed = u64::try_from(start.elapsed().as_millis()).unwrap() * (50 << 20) / 1000;
        write(
            &pod,
            "memory.usage_in_bytes",
            &format!("{}\n", (150u64 << 20) + climbed),
        );
        sampler.tick(Instant::now());
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = format!("/kubepods/burstable/pod{UID}");
    let history = sampler
        .snapshot(None, Some(&path), u64::MAX)
        .oom_memcg
        .expect("pod history");
    let last = history.samples.last().and_then(|s| s.time).expect("sampled");
    let last_ms = unix_ms(&last);
    let recent = history
        .samples
        .iter()
        .filter_map(|s| s.time)
        .filter(|t| unix_ms(t) + 500 >= last_ms)
        .count();
    let usage = history.samples.last().and_then(|s| s.usage_bytes).unwrap_or(0);
    assert!(usage < (512 << 20) * 8 / 10, "still below the 80% rule: {usage}");
    assert!(
        recent >= 5,
        "{recent} samples in the pod's last half second: {history:?}"
    );
}
