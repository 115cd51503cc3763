//! `oomlens-agent demo`: a real OOM kill, captured end to end in a minute.
//!
//! Starts the whole pipeline in this process (kernel log, cgroup sampler,
//! spool, sender, embedded collector on a loopback port, state in a
//! temporary directory), creates a scratch memory cgroup with a 64 MiB
//! limit, runs a memory hog in it (this binary again, `demo-hog`), waits
//! for the kill to reach the collector's subscription stream, prints it as
//! `oomlens show` would, and removes everything it created.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_common::client::ClientConfig;
use oomlens_common::render::{Style, show_event};
use oomlens_proto::v1::{AgentHello, OomEvent, SubscribeRequest, subscribe_response};

use crate::cgroup::{self, Sampler, SamplerConfig, Selection, Version};
use crate::event::NodeContext;
use crate::kmsg::{StartAt, read_boot_id};
use crate::live::{self, EventSink, LiveConfig};
use crate::ship::{self, SharedSpool, ShipperConfig};
use crate::telemetry::AgentMetrics;

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

/// Runs the demo; `cgroup_root` and `proc_root` as for `run`.
pub async fn run(cgroup_root: &Path, proc_root: &Path) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the demo creates a memory cgroup and reads /dev/kmsg: run it as root");
    }
    let root = cgroup::detect(cgroup_root)?;
    let state = tempfile_dir()?;
    let say = |text: &str| {
        println!("{text}");
        let _ = std::io::stdout().flush();
    };
    // The embedded collector.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let database = state.join("oomlens.db").display().to_string();
    let collector = Embedded::start(&database, listener, ServerConfig::default()).await?;
    let endpoint = collector.endpoint();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    // The agent pipeline, shipping to it.
    let node_name = std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "demo".into());
    let metrics = Arc::new(AgentMetrics::new());
    let (sampler_handle, requests) = Sampler::channel();
    let (warnings, _warning_rx) = tokio::sync::mpsc::channel(16);
    let sampler_config = SamplerConfig {
        selection: Selection { include_other: true },
        ..SamplerConfig::new(root.clone(), proc_root.to_owned(), node_name.clone())
    };
    let sampler = Sampler::new(sampler_config, warnings).with_metrics(Arc::clone(&metrics));
    let sampler_task = tokio::spawn(sampler.run(requests, wait_stop()));
    let spool = SharedSpool::open(&state.join("spool"), 64 << 20)?;
    let node = NodeContext {
        node: node_name.clone(),
        boot_id: read_boot_id(proc_root)?,
        boot_wall_us: live::boot_wall_us(),
        kernel_release: None,
    };
    let (_side, side_rx) = tokio::sync::mpsc::channel(1);
    let shipper = tokio::spawn(ship::run_shipper(
        spool.clone(),
        ShipperConfig::new(
            ClientConfig {
                endpoint: endpoint.clone(),
                ..ClientConfig::default()
            },
            AgentHello {
                node: node_name,
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                ..AgentHello::default()
            },
        ),
        side_rx,
        Arc::clone(&metrics),
        wait_stop(),
    ));
    let config = LiveConfig {
        kmsg_path: PathBuf::from("/dev/kmsg"),
        proc_root: proc_root.to_owned(),
        state_dir: None,
        node,
        start_without_cursor: StartAt::End,
        idle_flush: Duration::from_millis(20),
        sampler: Some(sampler_handle),
        metrics,
        cri: None,
        kube: None,
    };
    let sink = EventSink {
        spool: Some(spool),
        channel: None,
    };
    let pipeline = tokio::spawn(live::run(config, sink, wait_stop()));

    let mut client = ClientConfig {
        endpoint,
        ..ClientConfig::default()
    }
    .event_client()
    .await?;
    let mut stream = client.subscribe(SubscribeRequest::default()).await?.into_inner();
    // A systemd-unit-shaped name: the sampler follows units outside
    // Kubernetes with --include-other-cgroups, as here.
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
    let _ = stop.send(true);
    let _ = pipeline.await;
    let _ = shipper.await;
    let _ = sampler_task.await;
    let _ = collector.stop().await;
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
