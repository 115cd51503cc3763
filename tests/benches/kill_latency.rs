//! Kill-to-subscriber latency on real kernel OOM kills: from the kill
//! record's kernel timestamp (as wall-clock time, the event's `time`) to
//! receipt by a subscriber of the collector's stream (what `oomlens watch`
//! does), through the real agent binary in `--standalone` mode (kernel log,
//! sampler, spool with fsync, gRPC, store with fsync, subscription).
//!
//! Run as root on cgroup v1: `cargo bench -p oomlens-tests --bench
//! kill_latency` (KILLS=N to change the 40 kills).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oomlens_common::client::ClientConfig;
use oomlens_common::units::saturating_u64;
use oomlens_proto::v1::{SubscribeRequest, subscribe_response};
use oomlens_tests::{ScratchTree, agent_binary, free_port, real_kernel_unavailable, run_hog, unique};

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
    let port = free_port();
    let agent = Command::new(agent_binary())
        .args(["run", "--standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--state-dir", &state.path().display().to_string()])
        .args(["--metrics-listen", "", "--cri-socket", "none", "--output", "json"])
        .env("OOMLENS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the agent");
    let mut agent = StopOnDrop(agent);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the embedded collector did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tree = ScratchTree::new(&unique("oomlens-latency"));
    let prefix = tree.kernel_path("");
    let latencies = runtime.block_on(async {
        let mut client = ClientConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
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
        for i in 0..kills {
            let name = format!("k{i}");
            let cgroup = tree.create(&name);
            tree.limit(&name, 16 << 20);
            tokio::task::block_in_place(|| run_hog(&cgroup));
            tree.remove(&name);
            // Spaced out: one kill at a time, as latency is per kill, and
            // below the kernel's report rate limit (10 per 5 s), so every
            // report names its cgroup.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        receiver.await.expect("receiver")
    });
    agent.stop();
    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| {
        let at = saturating_u64(((sorted.len() as f64 - 1.0) * p).round());
        sorted[usize::try_from(at).unwrap_or(usize::MAX)].as_secs_f64() * 1e3
    };
    assert!(!sorted.is_empty(), "no kill reached the subscriber");
    println!(
        "kill -> subscriber: {} of {kills} kills received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        pct(0.5),
        pct(0.99),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}
