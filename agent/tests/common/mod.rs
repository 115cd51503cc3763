//! Shared by the sampler's fixture tests: cgroup trees written as plain
//! files in the kernel's formats, under a temporary directory.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use oomlens_agent::cgroup::{SamplerConfig, Selection, detect};

pub const UID: &str = "8a1b7c6d-1111-2222-3333-444455556666";
pub const UID_US: &str = "8a1b7c6d_1111_2222_3333_444455556666";
pub const UID2: &str = "0330b2c1-a15b-4cdd-b5e5-72d4a90bee82";
pub const UID3: &str = "95387fa4-da9c-11e7-9d36-5254b24cbf5e";

pub fn id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

pub fn write(path: &Path, name: &str, text: &str) {
    std::fs::write(path.join(name), text).unwrap_or_else(|e| panic!("{}/{name}: {e}", path.display()));
}

/// A v1 memory cgroup as the kernel shows it (files trimmed to those read).
pub fn v1_cgroup(dir: &Path, usage: u64, limit: Option<u64>, inactive_file: u64) {
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
pub fn v2_cgroup(dir: &Path, current: u64, max: Option<u64>, inactive_file: u64, oom_kill: u64) {
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
pub fn fill_v1(root: &Path) {
    for dir in dirs(root) {
        if !dir.join("memory.usage_in_bytes").exists() {
            v1_cgroup(&dir, 1 << 20, None, 0);
        }
    }
}

pub fn fill_v2(root: &Path) {
    for dir in dirs(root) {
        if !dir.join("memory.current").exists() {
            v2_cgroup(&dir, 1 << 20, None, 0, 0);
        }
    }
}

pub fn dirs(root: &Path) -> Vec<PathBuf> {
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

pub fn config(cgroup_root: &Path, proc_root: &Path, include_other: bool) -> SamplerConfig {
    SamplerConfig {
        selection: Selection { include_other },
        ..SamplerConfig::new(
            detect(cgroup_root).expect("detect"),
            proc_root.into(),
            "node-a".into(),
        )
    }
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
}

pub fn fixture() -> Fixture {
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
