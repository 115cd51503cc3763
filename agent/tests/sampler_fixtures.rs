//! The sampler on fixture cgroup trees in temporary directories, one per
//! layout seen in the field. Runs anywhere (no root): the files are plain
//! files with the kernel's formats.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oomlens_agent::cgroup::{MemcgReader, Mode, Sampler, SamplerConfig, Selection, Version, detect};
use oomlens_proto::time::unix_ms;
use tokio::sync::mpsc;

const UID: &str = "8a1b7c6d-1111-2222-3333-444455556666";
const UID_US: &str = "8a1b7c6d_1111_2222_3333_444455556666";
const UID2: &str = "0330b2c1-a15b-4cdd-b5e5-72d4a90bee82";
const UID3: &str = "95387fa4-da9c-11e7-9d36-5254b24cbf5e";

fn id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn write(path: &Path, name: &str, text: &str) {
    std::fs::write(path.join(name), text).unwrap_or_else(|e| panic!("{}/{name}: {e}", path.display()));
}

/// A v1 memory cgroup as the kernel shows it (files trimmed to those read).
fn v1_cgroup(dir: &Path, usage: u64, limit: Option<u64>, inactive_file: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    write(dir, "memory.usage_in_bytes", &format!("{usage}\n"));
    write(
        dir,
        "memory.limit_in_bytes",
        &format!("{}\n", limit.unwrap_or(9_223_372_036_854_771_712)),
    );
    write(
        dir,
        "memory.stat",
        &format!(
            "cache {inactive_file}\nrss {}\nshmem 0\ninactive_file {inactive_file}\nactive_file 0\n\
             total_cache {inactive_file}\ntotal_rss {}\ntotal_shmem 0\ntotal_inactive_file {inactive_file}\ntotal_active_file 0\n",
            usage - inactive_file,
            usage - inactive_file
        ),
    );
    write(
        dir,
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    write(dir, "memory.failcnt", "0\n");
}

/// A v2 memory cgroup (kernel 6.1 file formats).
fn v2_cgroup(dir: &Path, current: u64, max: Option<u64>, inactive_file: u64, oom_kill: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    write(dir, "memory.current", &format!("{current}\n"));
    write(
        dir,
        "memory.max",
        &max.map_or("max\n".to_owned(), |m| format!("{m}\n")),
    );
    write(dir, "memory.high", "max\n");
    write(
        dir,
        "memory.stat",
        &format!(
            "anon {}\nfile {inactive_file}\nkernel 4096\nshmem 0\nactive_file 0\ninactive_file {inactive_file}\n",
            current - inactive_file
        ),
    );
    write(
        dir,
        "memory.events",
        &format!("low 0\nhigh 0\nmax 3\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n"),
    );
    write(
        dir,
        "memory.pressure",
        "some avg10=12.50 avg60=3.00 avg300=0.50 total=912\nfull avg10=6.25 avg60=1.00 avg300=0.10 total=400\n",
    );
}

/// The kernel gives every cgroup directory its memory files: fill in the
/// levels the test did not write itself.
fn fill_v1(root: &Path) {
    for dir in dirs(root) {
        if !dir.join("memory.usage_in_bytes").exists() {
            v1_cgroup(&dir, 1 << 20, None, 0);
        }
    }
}

fn fill_v2(root: &Path) {
    for dir in dirs(root) {
        if !dir.join("memory.current").exists() {
            v2_cgroup(&dir, 1 << 20, None, 0, 0);
        }
    }
}

fn dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            out.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
        i += 1;
    }
    out
}

fn config(cgroup_root: &Path, proc_root: &Path, include_other: bool) -> SamplerConfig {
    SamplerConfig {
        selection: Selection { include_other },
        ..SamplerConfig::new(
            detect(cgroup_root).expect("detect"),
            proc_root.into(),
            "node-a".into(),
        )
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    cgroup_root: PathBuf,
    proc_root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let cgroup_root = dir.path().join("sys/fs/cgroup");
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(&cgroup_root).expect("mkdir");
    std::fs::create_dir_all(&proc_root).expect("mkdir");
    std::fs::write(
        proc_root.join("meminfo"),
        "MemTotal: 4000000 kB\nMemAvailable: 1000000 kB\n",
    )
    .expect("w");
    std::fs::write(proc_root.join("vmstat"), "oom_kill 2\n").expect("w");
    Fixture {
        _dir: dir,
        cgroup_root,
        proc_root,
    }
}

/// kubeadm + containerd on Ubuntu 20.04 with cgroup v1 and the cgroupfs
/// driver: all three QoS classes.
#[test]
fn v1_cgroupfs_kubeadm_layout() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    v1_cgroup(&memory.join("kubepods"), 800 << 20, Some(3 << 30), 0);
    v1_cgroup(&memory.join("kubepods/burstable"), 500 << 20, None, 0);
    v1_cgroup(
        &memory.join(format!("kubepods/burstable/pod{UID}")),
        300 << 20,
        Some(512 << 20),
        0,
    );
    v1_cgroup(
        &memory.join(format!("kubepods/burstable/pod{UID}/{}", id('a'))),
        200 << 20,
        Some(256 << 20),
        20 << 20,
    );
    v1_cgroup(
        &memory.join(format!("kubepods/besteffort/pod{UID2}/{}", id('b'))),
        10 << 20,
        None,
        0,
    );
    v1_cgroup(
        &memory.join(format!("kubepods/pod{UID3}/{}", id('c'))),
        10 << 20,
        Some(64 << 20),
        0,
    );
    v1_cgroup(&memory.join("system.slice/cron.service"), 5 << 20, None, 0);
    fill_v1(&memory);
    std::fs::create_dir_all(f.cgroup_root.join("cpu")).expect("mkdir");

    let cfg = config(&f.cgroup_root, &f.proc_root, false);
    assert_eq!((cfg.root.mode, cfg.root.version), (Mode::V1, Version::V1));
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(cfg, warnings);
    let start = Instant::now();
    sampler.tick(start);
    let container = format!("/kubepods/burstable/pod{UID}/{}", id('a'));
    assert_eq!(
        sampler.tracked_paths(),
        [
            "/kubepods".to_owned(),
            "/kubepods/besteffort".to_owned(),
            format!("/kubepods/besteffort/pod{UID2}"),
            format!("/kubepods/besteffort/pod{UID2}/{}", id('b')),
            "/kubepods/burstable".to_owned(),
            format!("/kubepods/burstable/pod{UID}"),
            container.clone(),
            format!("/kubepods/pod{UID3}"),
            format!("/kubepods/pod{UID3}/{}", id('c')),
        ]
    );
    let snapshot = sampler.snapshot(
        Some(&container),
        Some(&format!("/kubepods/burstable/pod{UID}")),
        u64::MAX,
    );
    let history = snapshot.victim.expect("container history");
    let sample = history.samples.last().expect("sampled");
    assert_eq!(sample.usage_bytes, Some(200 << 20));
    assert_eq!(
        sample.working_set_bytes,
        Some(180 << 20),
        "usage minus total_inactive_file"
    );
    assert_eq!(sample.anon_bytes, Some(180 << 20));
    assert_eq!(history.limit_bytes, Some(256 << 20));
    let pod = snapshot.oom_memcg.expect("pod history");
    assert_eq!(pod.limit_bytes, Some(512 << 20));
    let node = snapshot.node.expect("node view");
    assert_eq!(
        (node.mem_available_bytes, node.vmstat_oom_kill),
        (Some(1_024_000_000), Some(2))
    );

    // failcnt is read on request, not in every full sample.
    let reader =
        MemcgReader::open(&memory.join(container.trim_start_matches('/')), Version::V1).expect("open");
    let mut buf = vec![0; 8192];
    assert_eq!(reader.read_failcnt(&mut buf).expect("failcnt"), Some(0));
    write(
        &memory.join(container.trim_start_matches('/')),
        "memory.failcnt",
        "17\n",
    );
    assert_eq!(reader.read_failcnt(&mut buf).expect("failcnt"), Some(17));

    // Usage is re-read from the open file on the next fast tick.
    write(
        &memory.join(container.trim_start_matches('/')),
        "memory.usage_in_bytes",
        &format!("{}\n", 230u64 << 20),
    );
    sampler.tick(start + Duration::from_millis(100));
    let history = sampler
        .snapshot(Some(&container), None, u64::MAX)
        .victim
        .expect("history");
    assert_eq!(
        history.samples.last().and_then(|s| s.usage_bytes),
        Some(230 << 20)
    );
    assert_eq!(
        history.samples.last().and_then(|s| s.working_set_bytes),
        Some(210 << 20)
    );
}

/// OpenShift 4 on RHEL 8 (cgroup v1, systemd driver, CRI-O): conmon
/// cgroups beside the containers are not containers.
#[test]
fn v1_systemd_crio_layout() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    let pod = memory.join(format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"
    ));
    v1_cgroup(&pod, 300 << 20, Some(512 << 20), 0);
    v1_cgroup(
        &pod.join(format!("crio-{}.scope", id('a'))),
        200 << 20,
        Some(256 << 20),
        0,
    );
    v1_cgroup(
        &pod.join(format!("crio-conmon-{}.scope", id('a'))),
        1 << 20,
        None,
        0,
    );
    v1_cgroup(&memory.join("system.slice/cron.service"), 5 << 20, None, 0);
    v1_cgroup(&memory.join("system.slice/user.slice"), 5 << 20, None, 0);
    fill_v1(&memory);
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(config(&f.cgroup_root, &f.proc_root, true), warnings);
    sampler.tick(Instant::now());
    let paths = sampler.tracked_paths();
    assert!(paths.contains(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{}.scope",
        id('a')
    )));
    assert!(!paths.iter().any(|p| p.contains("conmon")), "{paths:?}");
    assert_eq!(
        paths.len(),
        5,
        "kubepods, QoS, pod, container, cron.service: {paths:?}"
    );
}

/// kind on a cgroup v2 host: the node is a Docker container and the
/// kubelet's tree is nested below it, with the systemd driver.
#[test]
fn v2_systemd_nested_kind_layout() {
    let f = fixture();
    let root = &f.cgroup_root;
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .expect("w");
    let node = root.join(format!("system.slice/docker-{}.scope", id('e')));
    let kubepods = node.join("kubelet.slice/kubelet-kubepods.slice");
    let pod = kubepods.join(format!(
        "kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice"
    ));
    v2_cgroup(&kubepods, 700 << 20, Some(3 << 30), 0, 0);
    v2_cgroup(
        &kubepods.join("kubelet-kubepods-besteffort.slice"),
        400 << 20,
        None,
        0,
        0,
    );
    v2_cgroup(&pod, 300 << 20, None, 0, 0);
    let container = pod.join(format!("cri-containerd-{}.scope", id('f')));
    v2_cgroup(&container, 100 << 20, Some(128 << 20), 10 << 20, 0);
    fill_v2(&node);
    // A slice where the memory controller is not enabled has no memory
    // files: skipped quietly, not an error.
    std::fs::create_dir_all(root.join("system.slice/no-memory.service")).expect("mkdir");

    let cfg = config(root, &f.proc_root, false);
    assert_eq!((cfg.root.mode, cfg.root.version), (Mode::V2, Version::V2));
    let (warnings, _rx) = mpsc::channel(4);
    let mut sampler = Sampler::new(cfg, warnings);
    let start = Instant::now();
    sampler.tick(start);
    let container_path = format!("/{}", container.strip_prefix(root).expect("under root").display());
    assert!(
        sampler.tracked_paths().contains(&container_path),
        "{:?}",
        sampler.tracked_paths()
    );
    assert_eq!(sampler.tracked_paths().len(), 4, "kubepods, QoS, pod, container");
    assert_eq!(sampler.stats().read_errors, 0);
    let history = sampler
        .snapshot(Some(&container_path), None, u64::MAX)
        .victim
        .expect("history");
    let sample = history.samples.last().expect("sample");
    assert_eq!(sample.working_set_bytes, Some(90 << 20));
    assert_eq!(sample.pressure_some_avg10, Some(12.5));
    assert_eq!(sample.pressure_full_avg10, Some(6.25));
    assert_eq!(history.limit_bytes, Some(128 << 20));

    // memory.events' oom_kill stepping attributes a kill without a path.
    write(
        &container,
        "memory.events",
        "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    sampler.tick(start + Duration::from_secs(1));
    let steps = sampler.oom_steps(0, u64::MAX);
    assert_eq!(
        steps.iter().map(|s| s.cgroup.as_str()).collect::<Vec<_>>(),
        [container_path.as_str()]
    );

    // A new container appears (renamed into place, as runc's mkdir+populate
    // would look after the fact) and is followed on the next tick.
    let staging = f.cgroup_root.parent().expect("parent").join("staging");
    v2_cgroup(&staging, 5 << 20, Some(64 << 20), 0, 0);
    let new_container = pod.join(format!("cri-containerd-{}.scope", id('9')));
    std::fs::rename(&staging, &new_container).expect("rename");
    sampler.tick(start + Duration::from_millis(1100));
    let new_path = format!(
        "/{}",
        new_container.strip_prefix(root).expect("under root").display()
    );
    assert!(
        sampler.tracked_paths().contains(&new_path),
        "inotify did not report {new_path}"
    );

    // The old container is removed: its history stays for the grace period.
    std::fs::remove_dir_all(&container).expect("rm");
    sampler.tick(start + Duration::from_millis(1200));
    assert!(!sampler.tracked_paths().contains(&container_path));
    assert_eq!(sampler.stats().in_grace, 1);
    assert!(
        sampler
            .snapshot(Some(&container_path), None, u64::MAX)
            .victim
            .is_some(),
        "history kept in grace"
    );
    sampler.tick(start + Duration::from_secs(200));
    assert!(
        sampler
            .snapshot(Some(&container_path), None, u64::MAX)
            .victim
            .is_none(),
        "history dropped after grace"
    );
}

/// Ubuntu 20.04's default systemd hybrid mode: v1 controllers, and a v2
/// hierarchy at unified/ without controllers. Memory is read from v1.
#[test]
fn hybrid_layout_uses_v1_memory() {
    let f = fixture();
    let memory = f.cgroup_root.join("memory");
    v1_cgroup(&memory, 900 << 20, None, 0);
    v1_cgroup(
        &memory.join(format!("kubepods/burstable/pod{UID}/{}", id('a'))),
        1 << 20,
        None,
        0,
    );
    let unified = f.cgroup_root.join("unified");
    std::fs::create_dir_all(&unified).expect("mkdir");
    std::fs::write(unified.join("cgroup.controllers"), "").expect("w");
    let cfg = config(&f.cgroup_root, &f.proc_root, false);
    assert_eq!((cfg.root.mode, cfg.root.version), (Mode::Hybrid, Version::V1));
    assert_eq!(cfg.root.path, memory);
}

#[test]
fn no_memory_controller_is_a_clear_error() {
    let f = fixture();
    std::fs::write(f.cgroup_root.join("cgroup.controllers"), "cpuset cpu io pids\n").expect("w");
    let err = detect(&f.cgroup_root).expect_err("no memory controller");
    assert!(err.to_string().contains("no cgroup memory controller"), "{err}");
}

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
