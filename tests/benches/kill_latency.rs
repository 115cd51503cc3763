//! Kill-to-subscriber latency on real kernel OOM kills: from the kill
//! record's kernel timestamp (as wall-clock time, the event's `time`) to
//! receipt by a subscriber of the collector's stream (what `oomlens watch`
//! does), through the real agent binary in `--standalone` mode (kernel log,
//! sampler, spool with fsync, gRPC, store with fsync, subscription).
//!
//! Run as root on cgroup v1: `cargo bench -p oomlens-tests --bench
//! kill_latency` (KILLS=N to change the 40 kills).
//!
//! The kernel stamps its log with its own clock, which drifts from
//! `CLOCK_MONOTONIC` with uptime (7.4 ms after 22 hours on this VM). The
//! agent measures the difference when it starts and converts kill stamps
//! with it (before, it was added to every latency here); the benchmark
//! prints it, measured before and after the kills.
//!
//! `COLLECTOR=process` runs the collector binary as its own process on
//! loopback (the agent sends over gRPC as a DaemonSet's does) instead of
//! the agent's embedded one.
//!
//! Each kill's cgroup exists for 600 ms before it, so the sampler has
//! registered for its OOM notification, which hurries the kernel log reader
//! (`kmsg::hurry`); the benchmark prints how many reads it hurried.
//!
//! Then the agent's own stage histograms (`/metrics`): the kernel's
//! timestamp to the finished report, placing, enrichment, the spool, and
//! sending to the collector's acknowledgement (which includes its durable
//! store); the rest is the collector's fan-out to the subscriber. An event
//! is sent as its spool write starts (`ship::early`), so `spool` and
//! `deliver` overlap; the benchmark prints how many kills went that way.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oomlens_common::client::ClientConfig;
use oomlens_common::units::saturating_u64;
use oomlens_proto::v1::{SubscribeRequest, subscribe_response};
use oomlens_tests::{
    ScratchTree, agent_binary, free_port, pod_and_container_ids, real_kernel_unavailable, run_hog, unique,
};

/// The agent, stopped however the benchmark ends.
struct StopOnDrop(std::process::Child);

impl StopOnDrop {
    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(self.0.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

fn main() {
    if let Some(reason) = real_kernel_unavailable() {
        println!("kill_latency: skipped: {reason}");
        return;
    }
    let kills: usize = std::env::var("KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let state = tempfile::tempdir().expect("tempdir");
    let separate = std::env::var("COLLECTOR").as_deref() == Ok("process");
    let collector = separate.then(|| {
        let database = state.path().join("events.db").display().to_string();
        oomlens_tests::collector::CollectorProcess::start(&database, state.path())
    });
    let port = free_port();
    let endpoint = collector
        .as_ref()
        .map_or_else(|| format!("http://127.0.0.1:{port}"), |c| c.endpoint());
    let metrics_port = free_port();
    let agent_state = state.path().join("agent");
    let mut command = Command::new(agent_binary());
    command.arg("run");
    match &collector {
        Some(_) => command.args(["--collector", &endpoint]),
        None => command.args(["--standalone", "--listen", &format!("127.0.0.1:{port}")]),
    };
    let agent = command
        .args(["--state-dir", &agent_state.display().to_string()])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--cri-socket", "none", "--output", "json"])
        .env("OOMLENS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the agent");
    let mut agent = StopOnDrop(agent);
    let address = endpoint.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "the collector did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let clock_before = oomlens_agent::clock::log_clock_offset_us(std::path::Path::new("/dev/kmsg"));
    let tree = ScratchTree::new(&unique("oomlens-latency"));
    let prefix = tree.kernel_path("");
    let latencies = runtime.block_on(async {
        let mut client = ClientConfig {
            endpoint: endpoint.clone(),
            ..ClientConfig::default()
        }
        .event_client()
        .await
        .expect("connect");
        let mut stream = client
            .subscribe(SubscribeRequest::default())
            .await
            .expect("subscribe")
            .into_inner();
        let receiver = tokio::spawn(async move {
            let mut latencies = Vec::new();
            while latencies.len() < kills {
                let Ok(Ok(Some(message))) =
                    tokio::time::timeout(Duration::from_secs(30), stream.message()).await
                else {
                    break;
                };
                let received = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
                if let Some(subscribe_response::Item::Event(event)) = message.item
                    && event.oom_memcg.as_deref().is_some_and(|m| m.starts_with(&prefix))
                    && let Some(t) = event.time
                {
                    let killed = Duration::new(
                        u64::try_from(t.seconds).unwrap_or(0),
                        u32::try_from(t.nanos).unwrap_or(0),
                    );
                    latencies.push(received.saturating_sub(killed));
                }
            }
            latencies
        });
        for _ in 0..kills {
            // Where the kubelet puts a container: the sampler follows
            // Kubernetes cgroups only.
            let (uid, id) = pod_and_container_ids();
            let pod = format!("kubepods/burstable/pod{uid}");
            let name = format!("{pod}/{id}");
            let cgroup = tree.create(&name);
            tree.limit(&name, 16 << 20);
            // Spaced out: one kill at a time, as latency is per kill, and
            // below the kernel's report rate limit (10 per 5 s), so every
            // report names its cgroup. The pause also lets the sampler find
            // the cgroup and register for its OOM notifications, as it has
            // for any container that lived a while before its kill.
            tokio::time::sleep(Duration::from_millis(600)).await;
            tokio::task::block_in_place(|| run_hog(&cgroup));
            tree.remove(&pod);
        }
        receiver.await.expect("receiver")
    });
    let clock_after = oomlens_agent::clock::log_clock_offset_us(std::path::Path::new("/dev/kmsg"));
    let metrics = oomlens_tests::http_get(metrics_port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    agent.stop();
    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| {
        let at = saturating_u64(((sorted.len() as f64 - 1.0) * p).round());
        sorted[usize::try_from(at).unwrap_or(usize::MAX)].as_secs_f64() * 1e3
    };
    assert!(!sorted.is_empty(), "no kill reached the subscriber");
    println!(
        "kill -> subscriber ({}): {} of {kills} kills received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        if separate {
            "the collector as its own process"
        } else {
            "standalone"
        },
        sorted.len(),
        pct(0.5),
        pct(0.99),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    let mut stages = Vec::new();
    for (name, selector) in [
        ("read", r#"oomlens_agent_kill_stage_seconds_{}{stage="read""#),
        ("place", r#"oomlens_agent_kill_stage_seconds_{}{stage="place""#),
        ("enrich", r#"oomlens_agent_kill_stage_seconds_{}{stage="enrich""#),
        ("spool", r#"oomlens_agent_kill_stage_seconds_{}{stage="spool""#),
        ("deliver", "oomlens_agent_delivery_seconds_{}"),
    ] {
        if let Some(stage) = Stage::from_metrics(&metrics, selector) {
            stages.push(format!(
                "{name} {:.2} ms (p50 <= {:.2}, p99 <= {:.2})",
                stage.mean_ms, stage.p50_ms, stage.p99_ms
            ));
        }
    }
    println!("by stage, mean (histogram bounds): {}", stages.join("; "));
    println!(
        "sent as their spool write started (spool and deliver side by side): {} for {} kills",
        oomlens_tests::metric(&metrics, "oomlens_agent_events_sent_early_total"),
        sorted.len()
    );
    println!(
        "reads hurried by an OOM notification (ahead of the kernel's wake-up): {} for {} kills",
        oomlens_tests::metric(&metrics, "oomlens_agent_kmsg_hurried_reads_total"),
        sorted.len()
    );
    match (clock_before, clock_after) {
        (Ok(before), Ok(after)) => println!(
            "kernel log clock minus CLOCK_MONOTONIC: {:+.2} ms before the kills, {:+.2} ms after \
             (the agent measures it at start and converts kill stamps with it)",
            before as f64 / 1e3,
            after as f64 / 1e3
        ),
        (Err(error), _) | (_, Err(error)) => println!("kernel log clock not measured: {error}"),
    }
}

/// One stage's histogram from the agent's `/metrics`.
struct Stage {
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Stage {
    /// `selector` names the series with `{}` where `_sum`, `_count` and
    /// `_bucket` go (label set left open for `le`).
    fn from_metrics(text: &str, selector: &str) -> Option<Self> {
        let value = |line: &str| line.rsplit(' ').next()?.parse::<f64>().ok();
        let find = |part: &str| {
            let prefix = selector.replace("{}", part);
            text.lines().find(|l| l.starts_with(&prefix)).and_then(value)
        };
        let (sum, count) = (find("sum")?, find("count")?);
        if count == 0.0 {
            return None;
        }
        // `le` may come before or after the stage in a bucket's labels.
        let bucket_prefix = selector.replace("{}", "bucket");
        let (bucket_name, labels) = bucket_prefix.split_once('{').unwrap_or((&bucket_prefix, ""));
        let buckets: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| l.starts_with(bucket_name) && l.contains(labels))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                Some((le.parse::<f64>().unwrap_or(f64::INFINITY), value(l)?))
            })
            .collect();
        let quantile = |q: f64| {
            buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= q * count)
                .map_or(f64::INFINITY, |(le, _)| le * 1e3)
        };
        Some(Self {
            mean_ms: sum / count * 1e3,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        })
    }
}
