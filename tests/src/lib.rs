//! End-to-end tests of oomlens on the real kernel (see `tests/`), and the
//! helpers they share: scratch memory cgroups, memory hogs, skipping with a
//! printed reason where the machine cannot run them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod agent;
pub mod browser;
pub mod collector;
pub mod containerd;
pub mod deploy;
pub mod faults;
pub mod http;
pub mod kernel_log;
pub mod kube_api;
pub mod vm;

/// The cgroup v1 memory controller's mount point.
pub const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";

/// Why real-kernel tests cannot run here, if they cannot.
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

/// Skips the calling test, saying why, when the real kernel is not usable.
#[macro_export]
macro_rules! require_real_kernel {
    () => {
        if let Some(reason) = $crate::real_kernel_unavailable() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}

/// A unique name: kernel records are matched on it, since other processes
/// may log OOM kills too.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pod-uid-shaped unique id (with dashes) and a container-id-shaped one.
pub fn pod_and_container_ids() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = format!("{:08x}", std::process::id());
    let k = format!("{:04x}", NEXT.fetch_add(1, Ordering::Relaxed));
    (
        format!("{n}-{k}-4000-8000-00000000abcd"),
        format!("{n}{k}{}", "d".repeat(52)),
    )
}

/// A tree of v1 memory cgroups created for one test, removed when dropped
/// (processes killed, directories removed deepest first).
#[derive(Debug)]
pub struct ScratchTree {
    root: PathBuf,
}

impl ScratchTree {
    pub fn new(name: &str) -> Self {
        let root = Path::new(MEMCG_ROOT).join(name);
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Self { root }
    }

    /// The path as the kernel prints it (relative to the controller root).
    pub fn kernel_path(&self, relative: &str) -> String {
        let base = self.root.strip_prefix(MEMCG_ROOT).expect("under the root");
        let joined = Path::new("/").join(base).join(relative.trim_start_matches('/'));
        joined.to_string_lossy().trim_end_matches('/').to_owned()
    }

    pub fn create(&self, relative: &str) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        path
    }

    pub fn limit(&self, relative: &str, bytes: u64) {
        let file = self.path(relative).join("memory.limit_in_bytes");
        std::fs::write(&file, bytes.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Removes one cgroup of the tree now (and what is below it).
    pub fn remove(&self, relative: &str) {
        remove_tree(&self.path(relative));
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

pub(crate) fn remove_tree(root: &Path) {
    let mut dirs = Vec::new();
    collect_dirs(root, &mut dirs);
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
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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

/// A `std::process` id (u32) as the kernel and the contract type pids
/// (i32).
pub fn kernel_pid(id: u32) -> i32 {
    i32::try_from(id).expect("Linux pids stay below 2^22")
}

/// Runs `tail /dev/zero` (which buffers without bound) inside `cgroup` and
/// waits for it to die. Returns its pid and exit status.
pub fn run_hog(cgroup: &Path) -> (u32, std::process::ExitStatus) {
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

/// Makes one real kill: a hog in a new cgroup `name` of `tree`, limited to
/// 32 MiB, killed by the kernel; the cgroup is removed afterwards.
pub fn oom_kill_in(tree: &ScratchTree, name: &str) {
    let cgroup = tree.create(name);
    tree.limit(name, 32 << 20);
    let (_, status) = run_hog(&cgroup);
    assert!(!status.success(), "the hog was killed");
    tree.remove(name);
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

/// Starts the test memory hog in `cgroup`. Its stdout says `started MS`
/// and `grown MS` (Unix milliseconds).
pub fn spawn_memhog(memhog: &str, cgroup: &Path, rate_mib: f64, total_mib: u64, hold_secs: f64) -> Child {
    Command::new(memhog)
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--rate-mib", &rate_mib.to_string()])
        .args(["--total-mib", &total_mib.to_string()])
        .args(["--hold-secs", &hold_secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {memhog}: {e}"))
}

/// The workspace's `oomlens-agent` binary, built for this test run's
/// profile first (a no-op when it is current): `cargo test -p
/// oomlens-tests` alone does not rebuild other packages' binaries, and a
/// stale one would test old code.
pub fn agent_binary() -> PathBuf {
    workspace_binary("oomlens-agent", "oomlens-agent")
}

/// The `oomlens-collector` binary, built as for [`agent_binary`].
pub fn collector_binary() -> PathBuf {
    workspace_binary("oomlens-collector", "oomlens-collector")
}

/// The `oomlens` CLI binary, built as for [`agent_binary`].
pub fn cli_binary() -> PathBuf {
    workspace_binary("oomlens-collector", "oomlens")
}

/// Builds `bin` of `package` once per test process, in this test's
/// profile: cargo does not build other packages' binaries for a test.
fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(name, _)| name == bin) {
        return path.clone();
    }
    // target/<profile>/deps/<test> -> target/<profile>/<bin>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build");
    assert!(status.success(), "building {bin} failed");
    let path = dir.join(bin);
    built.push((bin.to_owned(), path.clone()));
    path
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// The value of one series (`name{labels}` exactly) in a Prometheus text
/// page; 0 when absent, as for a counter never incremented.
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A program on PATH, by name.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    found
        .status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()))
}

/// The environment variables a `--help` text names (`[env: NAME=...]`).
pub fn help_variables(help: &str) -> Vec<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect()
        })
        .collect()
}

/// A plain HTTP/1.1 GET on 127.0.0.1; (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sampler's default configuration for this host's memory controller.
pub fn host_sampler_config() -> oomlens_agent::cgroup::SamplerConfig {
    let root = oomlens_agent::cgroup::detect(Path::new("/sys/fs/cgroup")).expect("memory controller");
    oomlens_agent::cgroup::SamplerConfig::new(root, "/proc".into(), "test-node".into())
}

/// This host's node facts for events (node "test-node", this boot).
pub fn test_node() -> oomlens_agent::event::NodeContext {
    let log_clock_offset_us = oomlens_agent::clock::log_clock_offset_us(Path::new("/dev/kmsg")).unwrap_or(0);
    oomlens_agent::event::NodeContext {
        node: "test-node".into(),
        boot_id: oomlens_agent::procfs::read_boot_id(Path::new("/proc")).expect("boot id"),
        boot_wall_us: oomlens_agent::clock::boot_wall_us(log_clock_offset_us),
        log_clock_offset_us,
        kernel_release: None,
    }
}

/// The live pipeline's configuration for tests: the real `/dev/kmsg`
/// from its end, state in `state_dir`, no sampler or identity sources
/// (set them with [`test_pipeline_with`]).
pub fn test_pipeline_config(state_dir: &Path) -> oomlens_agent::pipeline::PipelineConfig {
    oomlens_agent::pipeline::PipelineConfig {
        state_dir: Some(state_dir.to_path_buf()),
        ..oomlens_agent::pipeline::PipelineConfig::new("/dev/kmsg".into(), "/proc".into(), test_node())
    }
}

/// [`test_pipeline_config`] with these enrichers (sampler, runtime).
pub fn test_pipeline_with(
    state_dir: &Path,
    enrichers: oomlens_agent::pipeline::Enrichers,
) -> oomlens_agent::pipeline::PipelineConfig {
    oomlens_agent::pipeline::PipelineConfig {
        enrichers,
        ..test_pipeline_config(state_dir)
    }
}

/// A kill-shaped event from `node`, number `n` (its id follows from both),
/// with `samples` of 10 Hz working-set history ending at the kill: what
/// the delivery and storage tests send without a real kill.
pub fn synthetic_kill(node: &str, n: u64, samples: i64) -> oomlens_proto::v1::OomEvent {
    use oomlens_proto::v1::{MemoryHistory, MemorySample, OomEvent};
    let t = 1_795_000_000 + i64::try_from(n).expect("a test's event number");
    OomEvent {
        id: oomlens_proto::event_id(node, "boot", n),
        node: Some(node.into()),
        time: Some(prost_types::Timestamp { seconds: t, nanos: 0 }),
        scope: 1,
        constraint: 1,
        history: Some(MemoryHistory {
            cgroup: format!("/kubepods/pod{n}/c"),
            samples: (0..samples)
                .map(|i| MemorySample {
                    time: Some(prost_types::Timestamp {
                        seconds: t - samples / 10 + i / 10,
                        nanos: i32::try_from((i % 10) * 100_000_000).expect("below 10^9"),
                    }),
                    working_set_bytes: Some(1_000_000 + u64::try_from(i).expect("positive") * 1000),
                    usage_bytes: Some(1_100_000 + u64::try_from(i).expect("positive") * 1000),
                    ..MemorySample::default()
                })
                .collect(),
            limit_bytes: Some(2_000_000),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}
