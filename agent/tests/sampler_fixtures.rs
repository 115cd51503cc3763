//! The sampler on fixture cgroup trees in temporary directories, one per
//! layout seen in the field. Runs anywhere (no root): the files are plain
//! files with the kernel's formats. Its behaviour over time on such trees
//! is in `sampler_schedule.rs`.

mod common;

use std::time::{Duration, Instant};

use oomlens_agent::cgroup::{MemcgReader, Mode, Sampler, Version, detect};
use tokio::sync::mpsc;

use common::{UID, UID_US, UID2, UID3, config, fill_v1, fill_v2, fixture, id, v1_cgroup, v2_cgroup, write};

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
