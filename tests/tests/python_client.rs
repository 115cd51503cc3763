//! The Python client (`clients/python`, generated from `proto/` by
//! grpcio-tools at test time) against the real collector binary and real
//! kernel OOM kills: the health probe, and `watch` following kills with a
//! saved cursor through a collector SIGKILL and restart, and through a
//! restart of the watcher itself, with nothing missed or repeated.
//!
//! Needs python3 with grpcio, grpcio-tools and grpcio-health-checking
//! (`clients/python/requirements.txt`; `.ci/run` installs them). Without
//! them it skips with the reason printed, unless
//! `OOMLENS_REQUIRE_PYTHON_CLIENT=1` (CI).
#![allow(clippy::unwrap_used)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oomlens_tests::agent::{start_shipping, stop};
use oomlens_tests::collector::CollectorProcess;
use oomlens_tests::{ScratchTree, oom_kill_in, require_real_kernel, unique};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/python")
}

/// Whether python3 has the client's packages; when not, why.
fn python_ready() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .output()
        .map_err(|e| format!("python3 does not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 lacks grpcio, grpcio-tools or grpcio-health-checking ({}); pip install -r clients/python/requirements.txt",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ))
    }
}

fn python_client(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-m", "oomlens_client"])
        .args(args)
        .env("PYTHONPATH", client_dir())
        .env("PYTHONUNBUFFERED", "1");
    command
}

/// A running `watch --json`; its lines arrive on a channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(collector: &CollectorProcess, cursor: &Path) -> Self {
        let address = collector.endpoint().trim_start_matches("http://").to_owned();
        let mut child = python_client(&["watch", "--collector", &address, "--json", "--from-beginning"])
            .arg("--cursor-file")
            .arg(cursor)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python watcher");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The `oom_memcg` of the next kill printed that is one of `ours`.
    fn next_ours(&self, ours: &[String], wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("one of our kills printed by the Python watcher in time");
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(value["cursor"].as_str().is_some_and(|c| !c.is_empty()), "{line}");
            if let Some(memcg) = value["event"]["oom_memcg"].as_str()
                && ours.iter().any(|o| o == memcg)
            {
                return memcg.to_owned();
            }
        }
    }

    /// Our kills it printed within `wait` (none expected).
    fn ours_within(&self, ours: &[String], wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut found = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(memcg) = value["event"]["oom_memcg"].as_str()
                && ours.iter().any(|o| o == memcg)
            {
                found.push(memcg.to_owned());
            }
        }
        found
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(self.child.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the watcher exits cleanly on SIGTERM: {status}");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_python_client_probes_health_and_follows_real_kills_across_restarts() {
    require_real_kernel!();
    if let Err(reason) = python_ready() {
        assert!(
            std::env::var_os("OOMLENS_REQUIRE_PYTHON_CLIENT").is_none(),
            "OOMLENS_REQUIRE_PYTHON_CLIENT is set but {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let generated = Command::new("python3")
        .arg(client_dir().join("generate.py"))
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "generate.py: {}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let mut collector =
        CollectorProcess::start(&dir.path().join("events.db").display().to_string(), dir.path());
    let address = collector.endpoint().trim_start_matches("http://").to_owned();
    let health = python_client(&[
        "health",
        "--collector",
        &address,
        "--service",
        "oomlens.v1.IngestService",
    ])
    .output()
    .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        "oomlens.v1.IngestService: SERVING"
    );
    let unknown = python_client(&["health", "--collector", &address, "--service", "no.such.Service"])
        .output()
        .unwrap();
    assert!(!unknown.status.success(), "an unknown service is not healthy");

    let tree = ScratchTree::new(&unique("oomlens-py"));
    let names: Vec<String> = (0..4).map(|i| format!("kill{i}")).collect();
    let ours: Vec<String> = names.iter().map(|n| tree.kernel_path(n)).collect();
    let cursor = dir.path().join("watch.cursor");
    let watcher = Watcher::start(&collector, &cursor);
    let state = dir.path().join("agent");
    let mut agent = start_shipping(&collector.endpoint(), &state);
    std::thread::sleep(Duration::from_millis(500));

    oom_kill_in(&tree, &names[0]);
    assert_eq!(watcher.next_ours(&ours, Duration::from_secs(30)), ours[0]);

    // The collector dies; a kill while it is down; it comes back. The
    // watcher resubscribes by itself from its last cursor.
    collector.kill();
    oom_kill_in(&tree, &names[1]);
    collector.restart();
    assert_eq!(watcher.next_ours(&ours, Duration::from_secs(60)), ours[1]);
    oom_kill_in(&tree, &names[2]);
    assert_eq!(watcher.next_ours(&ours, Duration::from_secs(30)), ours[2]);
    assert_eq!(
        watcher.ours_within(&ours, Duration::from_secs(1)),
        Vec::<String>::new()
    );

    // The watcher itself stops; a kill meanwhile; it starts again from
    // its cursor file: that kill once, none of the earlier ones again.
    watcher.stop();
    oom_kill_in(&tree, &names[3]);
    let watcher = Watcher::start(&collector, &cursor);
    assert_eq!(watcher.next_ours(&ours, Duration::from_secs(30)), ours[3]);
    assert_eq!(
        watcher.ours_within(&ours, Duration::from_secs(2)),
        Vec::<String>::new()
    );
    stop(&mut agent);
}
