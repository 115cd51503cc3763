//! The whole product as it runs on a node, as separate processes: a real
//! containerd (pods created through CRI with kubelet-style cgroups), the
//! `oomlens-agent` binary shipping to the `oomlens-collector` binary, and
//! an `oomlens watch` subscriber, with real kernel OOM kills of:
//! - a container's main process at its own limit,
//! - a child process while the container lives on (a silent kill),
//! - a container under a pod-level limit,
//! - a process in a plain (non-Kubernetes) cgroup,
//! - a storm of 20 containers killed within 2 seconds (more than the
//!   kernel's report rate limit, so some reports carry no cgroup path).
//!
//! Every kill must reach the subscriber exactly once with the right
//! identity, scope, silent flag and a history that shows the climb, and
//! the agent's and collector's `/metrics` must agree with what arrived.
//!
//! Needs root, cgroup v1 memory, containerd, runc and static busybox;
//! elsewhere it says why it skips.
//!
//! `scenarios` starts the kills; `checks` judges what arrived.

#![allow(clippy::unwrap_used)]

mod checks;
mod scenarios;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use oomlens_proto::json::event_from_json;
use oomlens_proto::v1::OomEvent;
use oomlens_tests::containerd::{Containerd, containerd_unavailable};
use oomlens_tests::{ScratchTree, cli_binary, collector_binary, free_port, http_get, metric, unique};

use checks::hog_victim;

/// A child process stopped on drop: SIGTERM, then SIGKILL after 10 s.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Self {
        let child = command.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child }
    }

    /// SIGTERM and wait; the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(self.child.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                eprintln!("{} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics_page(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_in_containerd_reach_a_watch_subscriber_once_each_with_their_history() {
    if let Some(reason) = containerd_unavailable() {
        eprintln!(
            "SKIPPED kills_in_containerd_reach_a_watch_subscriber_once_each_with_their_history: {reason}"
        );
        return;
    }
    let scratch = unique("oomlens-e2e");
    let memory = ScratchTree::new(&scratch);
    let mut containerd = Containerd::start(&scratch).unwrap_or_else(|e| panic!("containerd: {e}"));
    let mut cri = containerd.client().await.expect("CRI client");
    let dir = tempfile::tempdir().unwrap();
    // Namespaces of this run only: other OOM kills on the machine (there
    // may be some) are told apart by them.
    let ns = |name: &str| format!("{name}-{}", std::process::id());

    // The collector, with its metrics.
    let (port, collector_metrics) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut collector = Process::spawn(
        "oomlens-collector",
        Command::new(collector_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", &dir.path().join("events.db").display().to_string()])
            .args(["--metrics-listen", &format!("127.0.0.1:{collector_metrics}")])
            .env("OOMLENS_LOG", "warn")
            .stdout(Stdio::null()),
    );
    wait_until("the collector to be ready", Duration::from_secs(20), || {
        http_get(collector_metrics, "/readyz").is_ok_and(|(s, _)| s == 200)
    });

    // A subscriber, as a tool consuming the stream would run it.
    let mut watch = Process::spawn(
        "oomlens watch",
        Command::new(cli_binary())
            .args(["watch", "--collector", &endpoint, "--output", "json"])
            .stdout(Stdio::piped()),
    );
    let (lines_tx, lines) = std_mpsc::channel::<String>();
    let stdout = watch.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until("the subscriber to connect", Duration::from_secs(20), || {
        metric(&metrics_page(collector_metrics), "oomlens_collector_subscribers") >= 1.0
    });

    // The agent, as the DaemonSet runs it (but on loopback).
    let agent_metrics = free_port();
    let mut agent = Process::spawn(
        "oomlens-agent",
        Command::new(oomlens_tests::agent_binary())
            .args(["run", "--collector", &endpoint])
            .args(["--state-dir", &dir.path().join("agent").display().to_string()])
            .args(["--cri-socket", &containerd.socket.display().to_string()])
            .args(["--metrics-listen", &format!("127.0.0.1:{agent_metrics}")])
            .args([
                "--node-name",
                "e2e-node",
                "--include-other-cgroups",
                "--output",
                "json",
            ])
            .env("OOMLENS_LOG", "info,oomlens_agent::live=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap()),
    );
    wait_until("the agent to be ready", Duration::from_secs(30), || {
        http_get(agent_metrics, "/readyz").is_ok_and(|(s, _)| s == 200)
    });
    // The pipeline's own lines (kills, attribution), for failure messages.
    let agent_log = || {
        std::fs::read_to_string(dir.path().join("agent.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("oomlens_agent::live"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let scenarios::Kills {
        expected,
        storm_ids,
        plain_path,
    } = scenarios::start(&mut containerd, &mut cri, &memory, &ns).await;

    // Collect what the subscriber receives: ours by container id (or, for
    // the plain cgroup, by path); anything else on this machine is counted
    // but not judged.
    let key = |event: &OomEvent| {
        event
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .filter(|id| expected.contains_key(id))
            .or_else(|| event.task_memcg.clone().filter(|p| expected.contains_key(p)))
    };
    let mut received: Vec<OomEvent> = Vec::new();
    let mut ours: HashMap<String, Vec<OomEvent>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let hog_killed = |events: &Vec<OomEvent>| events.iter().any(hog_victim);
    while ours.values().filter(|e| hog_killed(e)).count() < expected.len() && Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let event = event_from_json(&line).unwrap_or_else(|e| panic!("watch printed {line:?}: {e}"));
        take(event, key, &mut received, &mut ours);
    }
    // Late duplicates would arrive now.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(3)) {
        let event = event_from_json(&line).unwrap();
        take(event, key, &mut received, &mut ours);
    }
    let revised = received.iter().filter(|e| e.revision > 0).count();
    eprintln!(
        "{revised} of {} kills received with the runtime's report (a later revision)",
        received.len()
    );
    let agent_page = metrics_page(agent_metrics);
    let collector_page = metrics_page(collector_metrics);
    assert!(agent.stop().success(), "the agent exits cleanly on SIGTERM");
    let _ = watch.stop();
    assert!(
        collector.stop().success(),
        "the collector exits cleanly on SIGTERM"
    );
    containerd.remove_pods(&mut cri).await;

    let second_kills = checks::each_kill_arrived_once(&expected, &ours, &received, &plain_path, agent_log);
    checks::storm_was_one(&ours, &storm_ids, second_kills);
    checks::counters_agree(&received, &agent_page, &collector_page, ns);
    drop(containerd);
    drop(memory);
}

/// What a subscriber does with each streamed event: a later revision of a
/// kill (same id, higher `revision`: what the runtime reported after it)
/// replaces the one held; anything else is kept, so a kill streamed twice
/// shows as twice.
fn take(
    event: OomEvent,
    key: impl Fn(&OomEvent) -> Option<String>,
    received: &mut Vec<OomEvent>,
    ours: &mut HashMap<String, Vec<OomEvent>>,
) {
    let k = key(&event);
    if let Some(held) = received
        .iter_mut()
        .find(|e| e.id == event.id && e.revision < event.revision)
    {
        *held = event.clone();
        if let Some(held) = k
            .and_then(|k| ours.get_mut(&k))
            .and_then(|events| events.iter_mut().find(|e| e.id == event.id))
        {
            *held = event;
        }
        return;
    }
    if let Some(k) = k {
        ours.entry(k).or_default().push(event.clone());
    }
    received.push(event);
}
