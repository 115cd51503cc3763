//! Helpers for tests on the real kernel: scratch memory cgroups, memory
//! hogs, and skipping with a printed reason where the machine cannot run
//! them. Tests only touch cgroups they create, named uniquely, and remove
//! them when done.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};

/// The cgroup v1 memory controller's mount point.
pub const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";

/// Why real-kernel tests cannot run here, if they cannot. Callers print it
/// and return: a skipped test says so, it never silently passes.
pub fn real_kernel_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (creates memory cgroups, reads /dev/kmsg)".into());
    }
    if !Path::new(MEMCG_ROOT).join("memory.limit_in_bytes").exists() {
        return Some(format!("needs the cgroup v1 memory controller at {MEMCG_ROOT}"));
    }
    if std::fs::File::open("/dev/kmsg").is_err() {
        return Some("needs a readable /dev/kmsg".into());
    }
    None
}

#[macro_export]
macro_rules! require_real_kernel {
    () => {
        if let Some(reason) = support::real_kernel_unavailable() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}

/// A unique name for this test process and call: kernel records are
/// matched on it, since other processes may log OOM kills too.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A tree of memory cgroups created for one test and removed (processes
/// killed, directories removed deepest first) when dropped.
#[derive(Debug)]
pub struct ScratchTree {
    root: PathBuf,
}

impl ScratchTree {
    /// Creates `/sys/fs/cgroup/memory/<name>`.
    pub fn new(name: &str) -> Self {
        let root = Path::new(MEMCG_ROOT).join(name);
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Self { root }
    }

    /// The tree's path relative to the controller root, as the kernel
    /// prints it (`/oomlens-test-1-0`).
    pub fn kernel_path(&self, relative: &str) -> String {
        let base = self.root.strip_prefix(MEMCG_ROOT).expect("under the root");
        let joined = Path::new("/").join(base).join(relative.trim_start_matches('/'));
        joined.to_string_lossy().trim_end_matches('/').to_owned()
    }

    /// Creates `relative` (and its parents) inside the tree.
    pub fn create(&self, relative: &str) -> PathBuf {
        let path = self.root.join(relative.trim_start_matches('/'));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        path
    }

    /// Sets `memory.limit_in_bytes` of `relative`.
    pub fn limit(&self, relative: &str, bytes: u64) {
        let file = self
            .root
            .join(relative.trim_start_matches('/'))
            .join("memory.limit_in_bytes");
        std::fs::write(&file, bytes.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        let mut dirs = Vec::new();
        collect_dirs(&self.root, &mut dirs);
        // Deepest first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in &dirs {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        for dir in &dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

/// Runs `tail /dev/zero` (which buffers without bound) inside `cgroup` and
/// waits for it to die. Returns its pid and exit status.
pub fn run_hog(cgroup: &Path) -> (u32, ExitStatus) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && exec tail /dev/zero")
        .arg("sh")
        .arg(cgroup)
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    let status = child.wait().expect("wait");
    (pid, status)
}

/// A pod-uid-shaped unique id (with dashes) and a container-id-shaped one.
pub fn pod_and_container_ids() -> (String, String) {
    let n = format!("{:08x}", std::process::id());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let k = format!("{:04x}", NEXT.fetch_add(1, Ordering::Relaxed));
    let uid = format!("{n}-{k}-4000-8000-00000000abcd");
    let container = format!("{n}{k}{}", "c".repeat(52));
    (uid, container)
}

/// Sets a sysctl for the guard's lifetime and restores the old value.
#[derive(Debug)]
pub struct SysctlGuard {
    path: PathBuf,
    old: String,
}

impl SysctlGuard {
    pub fn set(path: &str, value: &str) -> std::io::Result<Self> {
        let old = std::fs::read_to_string(path)?.trim().to_owned();
        // Some sysctls (printk_devkmsg) reject a value without its newline.
        std::fs::write(path, format!("{value}\n"))?;
        Ok(Self {
            path: path.into(),
            old,
        })
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, format!("{}\n", self.old)) {
            eprintln!("could not restore {} to {:?}: {e}", self.path.display(), self.old);
        }
    }
}
