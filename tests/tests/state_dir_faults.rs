//! The real agent binary with its state directory on a real, small tmpfs:
//! full under it, then freed; read-only from the start. A kill made while
//! the disk takes no writes is printed at once, the agent says it is not
//! ready (one log line, a metric, `/readyz` 503), and the kill reaches the
//! collector while the disk is still full (it is sent as its spool write
//! starts, and kept in memory until the collector stored it).
//!
//! Needs root (mount) and cgroup v1 memory; elsewhere it says why it skips.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oomlens_common::client::ClientConfig;
use oomlens_proto::json::event_from_json;
use oomlens_proto::v1::{OomEvent, QueryRequest};
use oomlens_tests::collector::CollectorProcess;
use oomlens_tests::{
    ScratchTree, agent_binary, free_port, http_get, metric, oom_kill_in, require_real_kernel, tmpfs_or_skip,
    unique,
};

/// The agent binary with its standard output and error read line by line.
struct Agent {
    child: Child,
    port: u16,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Agent {
    fn start(collector: &str, state: &Path) -> Self {
        let port = free_port();
        let mut child = Command::new(agent_binary())
            .args(["run", "--collector", collector, "--output", "json"])
            .args(["--state-dir", &state.display().to_string()])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--cri-socket", "none", "--log-format", "json"])
            .env("OOMLENS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oomlens-agent");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        let agent = Self {
            child,
            port,
            stdout,
            stderr,
        };
        agent.until("the agent serves /healthz", Duration::from_secs(15), |a| {
            a.status("/healthz") == 200
        });
        agent
    }

    fn status(&self, path: &str) -> u16 {
        http_get(self.port, path).map_or(0, |(status, _)| status)
    }

    fn metric(&self, series: &str) -> f64 {
        metric(&http_get(self.port, "/metrics").unwrap().1, series)
    }

    fn until(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The printed event of the kill in the cgroup named `name`.
    fn printed_kill(&self, name: &str) -> OomEvent {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            let event = event_from_json(&line).unwrap_or_else(|e| panic!("not event JSON: {e}: {line}"));
            if event.oom_memcg.as_deref().is_some_and(|m| m.contains(name)) {
                return event;
            }
        }
        panic!("the kill in {name} was not printed");
    }

    /// Log lines so far that contain `text`.
    fn logged(&self, text: &str) -> usize {
        self.stderr.try_iter().filter(|line| line.contains(text)).count()
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(self.child.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
    }
}

async fn stored(endpoint: &str, id: &str) -> bool {
    let config = ClientConfig {
        endpoint: endpoint.to_owned(),
        ..ClientConfig::default()
    };
    let Ok(mut client) = config.event_client().await else {
        return false;
    };
    let page = client
        .query(QueryRequest {
            page_size: 1000,
            ..QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.events.iter().any(|event| event.id == id)
}

const UNWRITABLE_LINE: &str = "the state directory takes no writes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_directory_is_not_ready_and_its_kill_is_delivered_all_the_same() {
    require_real_kernel!();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start(&dir.path().join("events.db").display().to_string(), dir.path());
    let mut disk = tmpfs_or_skip!("1m");
    let agent = Agent::start(&collector.endpoint(), disk.path());
    agent.until("ready", Duration::from_secs(15), |a| a.status("/readyz") == 200);

    disk.fill();
    let tree = ScratchTree::new(&unique("oomlens-statedir"));
    oom_kill_in(&tree, "full");
    let event = agent.printed_kill(&tree.kernel_path("full"));
    agent.until("not ready while the disk is full", Duration::from_secs(10), |a| {
        a.status("/readyz") == 503
    });
    assert_eq!(agent.metric("oomlens_agent_state_unwritable"), 1.0);
    // Stored by the collector while the disk is still full, and then
    // needing no spool: nothing is kept in memory for it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !stored(&collector.endpoint(), &event.id).await {
        assert!(
            Instant::now() < deadline,
            "the kill reached the collector while the disk is full"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.until("nothing kept for the spool", Duration::from_secs(10), |a| {
        a.metric("oomlens_agent_unspooled_events") == 0.0
    });
    assert!(agent.metric("oomlens_agent_spool_writes_skipped_total") >= 1.0);
    assert_eq!(agent.status("/readyz"), 503, "the disk is still full");

    disk.free();
    agent.until("ready once the disk frees", Duration::from_secs(10), |a| {
        a.status("/readyz") == 200
    });
    assert_eq!(agent.metric("oomlens_agent_state_unwritable"), 0.0);
    assert_eq!(agent.metric("oomlens_agent_spool_events"), 0.0, "never written");
    assert_eq!(agent.logged(UNWRITABLE_LINE), 1, "said once, not per write");
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_directory_is_not_ready_from_the_start_and_kills_are_still_printed() {
    require_real_kernel!();
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start(&dir.path().join("events.db").display().to_string(), dir.path());
    let disk = tmpfs_or_skip!("1m", "ro");
    let agent = Agent::start(&collector.endpoint(), disk.path());
    agent.until("not ready", Duration::from_secs(10), |a| {
        a.status("/readyz") == 503
    });
    assert_eq!(agent.metric("oomlens_agent_state_unwritable"), 1.0);

    let tree = ScratchTree::new(&unique("oomlens-statedir"));
    oom_kill_in(&tree, "ro");
    agent.printed_kill(&tree.kernel_path("ro"));
    assert_eq!(agent.status("/readyz"), 503, "still not ready");
    assert_eq!(agent.logged(UNWRITABLE_LINE), 1, "one clear log line");
    agent.stop();
}
