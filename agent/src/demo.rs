//! `oomlens-agent demo`: a real OOM kill, captured end to end in a minute.
//!
//! Starts the whole agent in this process ([`crate::app`]: kernel log,
//! cgroup sampler, spool, sender, embedded collector on a loopback port,
//! state in a temporary directory), creates a scratch memory cgroup with a 64 MiB
//! limit, runs a memory hog in it (this binary again, `demo-hog`), waits
//! for the kill to reach the collector's subscription stream, prints it as
//! `oomlens show` would, and removes everything it created.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use oomlens_common::client::ClientConfig;
use oomlens_common::process::Shutdown;
use oomlens_common::render::{Style, show_event};
use oomlens_proto::v1::{OomEvent, SubscribeRequest, subscribe_response};

use crate::app::{Config, CriSocket, Delivery, Sampling};
use crate::cgroup::{self, Schedule, Version, WarningRules};
use crate::kmsg::StartAt;

const LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The scratch cgroup, removed (with its processes killed) when dropped.
struct ScratchCgroup {
    path: PathBuf,
}

impl ScratchCgroup {
    fn create(root: &cgroup::MemoryRoot, name: &str) -> anyhow::Result<Self> {
        let path = root.path.join(name);
        std::fs::create_dir(&path).with_context(|| format!("cannot create the cgroup {}", path.display()))?;
        let scratch = Self { path };
        let (file, value) = match root.version {
            Version::V1 => ("memory.limit_in_bytes", LIMIT_BYTES.to_string()),
            Version::V2 => ("memory.max", LIMIT_BYTES.to_string()),
        };
        std::fs::write(scratch.path.join(file), value)
            .with_context(|| format!("cannot set {file} in {}", scratch.path.display()))?;
        if root.version == Version::V2 {
            // No swap, so the limit kills rather than swaps.
            let _ = std::fs::write(scratch.path.join("memory.swap.max"), "0");
        }
        Ok(scratch)
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.path.display());
    }
}

/// The hog: joins `cgroup`, then allocates and touches `rate_mib` MiB a
/// second until `total_mib`, then holds (the kernel kills it first).
pub fn hog(cgroup: &Path, rate_mib: u64, total_mib: u64) -> anyhow::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("cannot join {}", cgroup.display()))?;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let step = Duration::from_millis(1000 / rate_mib.max(1));
    for _ in 0..total_mib {
        // Touch every page: untouched memory is not charged.
        held.push(vec![0x5a; 1024 * 1024]);
        std::thread::sleep(step);
    }
    std::thread::sleep(Duration::from_secs(5));
    drop(held);
    Ok(())
}

/// Where the demo reads; as for `run`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub kmsg: PathBuf,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
}

/// Runs the demo.
pub async fn run(paths: &Paths) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the demo creates a memory cgroup and reads /dev/kmsg: run it as root");
    }
    let root = cgroup::detect(&paths.cgroup_root)?;
    let state = tempfile_dir()?;
    let say = |text: &str| {
        println!("{text}");
        let _ = std::io::stdout().flush();
    };
    // The whole agent, with an embedded collector on a loopback port.
    let config = Config {
        kmsg: paths.kmsg.clone(),
        proc_root: paths.proc_root.clone(),
        cgroup_root: paths.cgroup_root.clone(),
        state_dir: state.clone(),
        node_name: crate::procfs::hostname(&paths.proc_root).or_else(|| Some("demo".to_owned())),
        start_without_cursor: StartAt::End,
        // A systemd-unit-shaped name below: the sampler follows units
        // outside Kubernetes with --include-other-cgroups, as here.
        sampling: Some(Sampling {
            include_other: true,
            schedule: Schedule::default(),
            grace: Duration::from_secs(120),
            warnings: WarningRules::default(),
        }),
        cri_socket: CriSocket::Off,
        kubernetes_api: false,
        kubeconfig: None,
        kill_series_grace: crate::pipeline::container_kills::SERIES_GRACE,
        metrics_listen: None,
        web_listen: None,
        output: None,
        delivery: Delivery::Standalone {
            listen: "127.0.0.1:0".to_owned(),
            database: None,
            kubernetes_events: false,
        },
        spool_max_bytes: 64 << 20,
    };
    let (stopper, shutdown) = Shutdown::new();
    let agent = config.build()?.start(shutdown).await?;
    let endpoint = agent
        .collector_endpoint()
        .context("the embedded collector has no address")?
        .to_owned();
    let mut client = ClientConfig {
        endpoint,
        ..ClientConfig::default()
    }
    .event_client()
    .await?;
    let mut stream = client.subscribe(SubscribeRequest::default()).await?.into_inner();
    let name = format!("oomlens-demo-{}.service", std::process::id());
    let scratch = ScratchCgroup::create(&root, &name)?;
    say(&format!(
        "created the memory cgroup /{name} with a 64 MiB limit; starting a hog that grows 24 MiB/s..."
    ));
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["demo-hog", "--cgroup"])
        .arg(&scratch.path)
        .spawn()
        .context("cannot start the memory hog")?;
    let started = Instant::now();
    let event = wait_for_kill(&mut stream, &name).await;
    let _ = child.kill();
    let _ = child.wait();
    drop(scratch);
    let outcome = match event {
        Some(event) => {
            say(&format!(
                "the kernel killed it after {:.1} s; this is what oomlens recorded:\n",
                started.elapsed().as_secs_f64()
            ));
            let style = Style {
                color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            };
            print!("{}", show_event(&event, style));
            say("\ncleaned up: the cgroup and the demo's state are gone.");
            Ok(())
        }
        None => Err(anyhow::anyhow!(
            "no OOM kill of /{name} arrived within 60 s: is /dev/kmsg readable and the memory controller usable here?"
        )),
    };
    stopper.stop();
    let _ = agent.wait().await;
    let _ = std::fs::remove_dir_all(&state);
    outcome
}

async fn wait_for_kill(
    stream: &mut tonic::Streaming<oomlens_proto::v1::SubscribeResponse>,
    name: &str,
) -> Option<OomEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?
            .ok()??;
        if let Some(subscribe_response::Item::Event(event)) = message.item
            && event.oom_memcg.as_deref().is_some_and(|m| m.ends_with(name))
        {
            return Some(event);
        }
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("oomlens-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
