//! The real `oomlens-agent` binary on a real OOM kill: it reports the kill
//! as JSON on standard output with its memory history, its /metrics agree,
//! and SIGTERM stops it cleanly.
//!
//! Needs root and cgroup v1 memory; elsewhere it says why it skips. The
//! startup checks (TLS settings, token files, private state) run anywhere.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oomlens_proto::json::event_from_json;
use oomlens_proto::v1::Scope;
use oomlens_tests::{
    ScratchTree, agent_binary, free_port, http_get, metric, pod_and_container_ids, require_real_kernel,
    spawn_memhog, unique,
};

const MEMHOG: &str = env!("CARGO_BIN_EXE_oomlens-memhog");

#[test]
fn the_agent_binary_reports_a_real_kill_with_history_and_metrics() {
    require_real_kernel!();
    let state = tempfile::tempdir().expect("state");
    let port = free_port();
    let mut agent = Command::new(agent_binary())
        .args([
            "run",
            "--output",
            "json",
            "--node-name",
            "e2e-node",
            "--log-format",
            "json",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let stdout = agent.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(port, "/readyz").map(|(status, _)| status).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(port, "/healthz").expect("healthz").0, 200);

    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{id}");
    let dir = tree.create(&container);
    tree.limit(&container, 48 << 20);
    let path = tree.kernel_path(&container);
    // Let the sampler pick the new cgroup up, then climb into the limit.
    std::thread::sleep(Duration::from_millis(500));
    let mut hog = spawn_memhog(MEMHOG, &dir, 40.0, 400, 10.0);
    let _ = hog.wait();

    let mut event = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while event.is_none() && Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let parsed =
            event_from_json(&line).unwrap_or_else(|e| panic!("stdout is not event JSON: {e}: {line}"));
        if parsed.oom_memcg.as_deref() == Some(path.as_str()) {
            event = Some((parsed, line));
        }
    }
    let (event, line) = event.unwrap_or_else(|| panic!("no event for {path} on the agent's stdout"));
    let (status, metrics) = http_get(port, "/metrics").expect("metrics");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(agent.id())),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = agent.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");

    assert_eq!(event.scope, Scope::ContainerLimit as i32, "{line}");
    assert_eq!(event.node.as_deref(), Some("e2e-node"), "{line}");
    assert_eq!(
        event.pod.as_ref().map(|p| p.uid.as_str()),
        Some(uid.as_str()),
        "{line}"
    );
    let history = event
        .history
        .as_ref()
        .unwrap_or_else(|| panic!("no history: {line}"));
    assert!(history.samples.len() >= 10, "{line}");
    assert!(
        history.peak_working_set_bytes.is_some_and(|p| p > 40 << 20),
        "{line}"
    );
    assert!(event.node_memory.is_some(), "{line}");

    assert_eq!(status, 200);
    let kills = metric(
        &metrics,
        r#"oomlens_agent_oom_kills_total{scope="container_limit",namespace=""}"#,
    );
    assert!(kills >= 1.0, "{metrics}");
    assert!(
        metric(&metrics, "oomlens_agent_kmsg_records_total") > 0.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "oomlens_agent_cgroups_tracked") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, r#"oomlens_agent_samples_total{kind="usage"}"#) > 0.0,
        "{metrics}"
    );
    assert!(
        state.path().join("kmsg.cursor").exists(),
        "cursor saved on shutdown"
    );
}

/// A container's OOM notification hurries the kernel log reader: kills are
/// read at the reader's own wake-ups after the notification, before the
/// kernel wakes it at its next timer tick. The kernel's tick can come first
/// now and then (one kill in ten or so at HZ=250), so four kills are made
/// and one hurried read is enough.
#[test]
fn oom_notifications_hurry_the_kernel_log_reader() {
    require_real_kernel!();
    let state = tempfile::tempdir().expect("state");
    let port = free_port();
    let mut agent = Command::new(agent_binary())
        .args(["run", "--node-name", "hurry-node", "--log-format", "json"])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(port, "/readyz").map(|(status, _)| status).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{id}");
    let dir = tree.create(&container);
    tree.limit(&container, 32 << 20);
    // The sampler finds the cgroup and registers for its notifications.
    std::thread::sleep(Duration::from_millis(800));
    let kills = r#"oomlens_agent_oom_kills_total{scope="container_limit",namespace=""}"#;
    let before = http_get(port, "/metrics").map_or(0.0, |(_, page)| metric(&page, kills));
    for _ in 0..4 {
        let (_, status) = oomlens_tests::run_hog(&dir);
        assert!(!status.success(), "the hog was killed");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let page = http_get(port, "/metrics").expect("metrics").1;
        if metric(&page, kills) >= before + 4.0 {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the four kills were not all reported: {page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = agent.kill();
    let _ = agent.wait();
    let hurried = metric(&metrics, "oomlens_agent_kmsg_hurried_reads_total");
    assert!(
        hurried >= 1.0,
        "no read was hurried by the four kills' notifications: {metrics}"
    );
}

/// The README's run command: `--standalone` is a complete monitor, and
/// the `oomlens` CLI queries it on its listen address.
#[test]
fn standalone_mode_answers_the_cli_about_a_real_kill() {
    require_real_kernel!();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let http_port = free_port();
    let mut agent = std::process::Command::new(agent_binary())
        .args(["run", "--standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--state-dir", &state.path().display().to_string()])
        .args(["--metrics-listen", &format!("127.0.0.1:{http_port}")])
        .args(["--cri-socket", "none", "--output", "json"])
        .env("OOMLENS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the embedded collector did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Connected to its own collector before the kill, so the kill is sent
    // as its spool write starts.
    let connected = || {
        oomlens_tests::http_get(http_port, "/metrics")
            .is_ok_and(|(_, page)| metric(&page, "oomlens_agent_collector_connected") == 1.0)
    };
    while !connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not connect to its collector"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tree = ScratchTree::new(&oomlens_tests::unique("oomlens-standalone"));
    let cgroup = tree.create("victim");
    tree.limit("victim", 32 << 20);
    let (_, status) = oomlens_tests::run_hog(&cgroup);
    assert!(!status.success());
    let ours = tree.kernel_path("victim");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(oomlens_tests::cli_binary())
            .args(["--collector", &format!("http://127.0.0.1:{port}")])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let json = cli(&["events", "--output", "json", "--limit", "1000"]);
        if let Some(line) = json
            .lines()
            .find(|l| l.contains(&format!("\"oom_memcg\":\"{ours}\"")))
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kill did not reach the embedded collector"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["scope"], "other_cgroup");
    assert!(event["analysis"]["verdict"].is_string(), "{line}");
    let table = cli(&["events", "--limit", "1000"]);
    let id = event["id"].as_str().unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id[..8]) && l.contains("other_cgroup")),
        "{table}"
    );
    let summary = cli(&["summary", "--by", "scope"]);
    assert!(
        summary.lines().any(|l| l.starts_with("other_cgroup")),
        "{summary}"
    );
    // The embedded collector's web pages and API on the agent's own
    // metrics address, beside its metrics.
    let (status, page) = oomlens_tests::http_get(http_port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains(&format!("<tr id=\"kill-{id}\">")), "{page}");
    let (status, page) = oomlens_tests::http_get(http_port, &format!("/kills/{id}")).unwrap();
    assert_eq!(status, 200);
    // A cgroup outside Kubernetes is not sampled: facts, no chart.
    assert!(page.contains("<th scope=\"row\">victim</th><td>tail["), "{page}");
    let (status, _) = oomlens_tests::http_get(http_port, &format!("/api/v1/events/{id}")).unwrap();
    assert_eq!(status, 200);
    let (status, metrics) = oomlens_tests::http_get(http_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("oomlens_agent_"), "the agent's own metrics stay");
    assert!(
        metric(&metrics, "oomlens_agent_events_sent_early_total") >= 1.0,
        "the kill was sent while it was spooled: {metrics}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(agent.id())),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(agent.wait().unwrap().success());
    // The store outlives the process.
    assert!(state.path().join("oomlens.db").exists());
}

/// `--web-listen`: the embedded collector's API and pages on an address
/// of their own, and no longer beside the agent's metrics.
#[test]
fn standalone_web_listen_moves_the_pages_off_the_metrics_address() {
    require_real_kernel!();
    let state = tempfile::tempdir().unwrap();
    let (port, metrics_port, web_port) = (free_port(), free_port(), free_port());
    let agent = std::process::Command::new(agent_binary())
        .args(["run", "--standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--state-dir", &state.path().display().to_string()])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--web-listen", &format!("127.0.0.1:{web_port}")])
        .args(["--cri-socket", "none", "--output", "json"])
        .env("OOMLENS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _agent = oomlens_tests::agent::KillOnDrop(agent);
    // The routes exist once the embedded collector has started.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = oomlens_tests::http_get(web_port, "/api/v1/events") {
            assert!(body.starts_with('{'), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the web address never served the API"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, page) = oomlens_tests::http_get(web_port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");
    assert_eq!(oomlens_tests::http_get(web_port, "/metrics").unwrap().0, 404);
    let (status, metrics) = oomlens_tests::http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("oomlens_agent_"), "{metrics}");
    for path in ["/", "/api/v1/events"] {
        assert_eq!(
            oomlens_tests::http_get(metrics_port, path).unwrap().0,
            404,
            "{path} still on the metrics address"
        );
    }
}

/// `oomlens-agent demo` captures a real kill and leaves nothing behind.
#[test]
fn the_demo_shows_a_real_kill_and_cleans_up() {
    require_real_kernel!();
    let out = std::process::Command::new(agent_binary())
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("this is what oomlens recorded"), "{text}");
    assert!(text.contains("scope      other_cgroup (memcg)"), "{text}");
    assert!(text.contains("Working set before the kill"), "{text}");
    assert!(text.contains("Verdict: "), "{text}");
    let name = text
        .split_whitespace()
        .find(|w| w.starts_with("/oomlens-demo-"))
        .unwrap()
        .trim_start_matches('/');
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory").join(name).exists(),
        "the cgroup is removed"
    );
}

/// `oomlens top` ranks live containers by how close they are to their
/// limit, from the status reports the agent sends every 5 s.
#[test]
fn top_shows_a_live_container_close_to_its_limit() {
    require_real_kernel!();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = Command::new(agent_binary())
        .args(["run", "--standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--state-dir", &state.path().display().to_string()])
        .args([
            "--metrics-listen",
            "",
            "--cri-socket",
            "none",
            "--node-name",
            "top-node",
        ])
        .env("OOMLENS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tree = ScratchTree::new(&unique("oomlens-top"));
    let (uid, id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{id}");
    let dir = tree.create(&container);
    tree.limit(&container, 64 << 20);
    std::thread::sleep(Duration::from_millis(500));
    // 48 MiB of 64 MiB, held while we look.
    let mut hog = spawn_memhog(MEMHOG, &dir, 48.0, 48, 30.0);
    // `top-node pod <uid> <id>  WORKSET  LIMIT  USE ...`; the first reports
    // may predate the hog's allocation, so wait for one that shows it.
    let use_of = |row: &str| -> Option<f64> {
        row.split_whitespace()
            .find_map(|w| w.strip_suffix('%'))
            .and_then(|p| p.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut last = String::new();
    let row = loop {
        let out = Command::new(oomlens_tests::cli_binary())
            .args(["--collector", &format!("http://127.0.0.1:{port}"), "top"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(row) = text
            .lines()
            .find(|l| l.starts_with("top-node") && l.contains(&id[..12]))
        {
            if use_of(row).is_some_and(|used| (60.0..=100.0).contains(&used)) {
                break row.to_owned();
            }
            last = row.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "48 of 64 MiB (about 75%) never showed in `oomlens top`; last row: {last:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = hog.kill();
    let _ = hog.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(agent.id())),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(agent.wait().unwrap().success());
    assert!(row.contains(&format!("pod {}", &uid[..8])), "{row}");
    assert!(row.contains(" 64Mi "), "the container's limit: {row}");
}

/// `oomlens-agent run` with these arguments (no sampler, no runtime
/// socket, no metrics endpoint) until it exits or `within` passes (then
/// it is killed): its exit status, if it exited, and its standard error.
fn agent_exit(args: &[&str], state: &std::path::Path, within: Duration) -> (Option<i32>, String) {
    let mut agent = Command::new(agent_binary())
        .args([
            "run",
            "--no-sampler",
            "--cri-socket",
            "none",
            "--metrics-listen",
            "",
        ])
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("OOMLENS_LOG", "warn")
        .env_remove("OOMLENS_COLLECTOR")
        .env_remove("OOMLENS_CA_CERT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(status) = agent.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = agent.kill();
            let _ = agent.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut agent.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    (code, stderr)
}

/// `https://` without `--ca-cert` can never connect: the agent refuses to
/// start, saying why (it used to retry forever, spooling every kill).
#[test]
fn an_https_collector_without_a_ca_is_refused_at_start() {
    let state = tempfile::tempdir().expect("state");
    let (code, stderr) = agent_exit(
        &["--collector", "https://127.0.0.1:9"],
        state.path(),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "the agent must exit at once: {stderr}");
    assert!(
        stderr.contains(
            "https://127.0.0.1:9 is TLS: give --ca-cert, the CA that signed the collector's certificate"
        ),
        "{stderr}"
    );
    // A CA file that holds no certificate: refused too, the file named.
    let ca = state.path().join("ca.pem");
    std::fs::write(&ca, "").expect("ca");
    let (code, stderr) = agent_exit(
        &[
            "--collector",
            "https://127.0.0.1:9",
            "--ca-cert",
            &ca.display().to_string(),
        ],
        state.path(),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{} holds no certificate", ca.display())),
        "{stderr}"
    );
}

/// An empty token file, a `#` inside the token, and (with
/// `--strict-permissions`) a token file others may read: startup errors.
#[test]
fn token_files_that_cannot_be_right_are_refused_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let state = tempfile::tempdir().expect("state");
    let token = state.path().join("token");
    let run = |text: &str, mode: u32, strict: bool| {
        std::fs::write(&token, text).expect("token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mut args = vec!["--collector", "http://127.0.0.1:9", "--token-file"];
        let path = token.display().to_string();
        args.push(&path);
        if strict {
            args.push("--strict-permissions");
        }
        agent_exit(&args, state.path(), Duration::from_secs(20))
    };
    let (code, stderr) = run("# the agents' token goes here\n", 0o600, false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("holds no token"), "{stderr}");
    let (code, stderr) = run("abcdefghijklmnop#qrstuv\n", 0o600, false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1: a token may hold only", token.display())),
        "{stderr}"
    );
    let (code, stderr) = run("abcdefghijklmnopqrstuv\n", 0o644, true);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("has mode 0644"), "{stderr}");
}

/// The state directory, the kernel log cursor and the spool were created
/// with the default mode (0755/0644): every user of the node could read
/// which pods were killed and the kernel's lines about them.
#[test]
fn the_agent_state_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::File::open("/dev/kmsg").is_err() {
        eprintln!("SKIPPED the_agent_state_is_private: needs a readable /dev/kmsg");
        return;
    }
    let parent = tempfile::tempdir().expect("state");
    let state = parent.path().join("state");
    let mut agent = Command::new(agent_binary())
        .args([
            "run",
            "--no-sampler",
            "--cri-socket",
            "none",
            "--metrics-listen",
            "",
        ])
        .args(["--from", "oldest", "--output", "json"])
        // Nothing listens there: events would wait in the spool.
        .args(["--collector", &format!("http://127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(&state)
        .env("OOMLENS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let spool = state.join("spool");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !spool.exists() {
        assert!(Instant::now() < deadline, "no spool directory");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let it read the ring buffer, then stop: the cursor is saved.
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(agent.id())),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    assert!(agent.wait().expect("wait").success());
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "the state directory");
    assert_eq!(mode(&spool), 0o700, "the spool");
    let cursor = state.join("kmsg.cursor");
    assert!(cursor.exists(), "the cursor is saved on shutdown");
    assert_eq!(mode(&cursor), 0o600, "the cursor");
    for entry in std::fs::read_dir(&spool).expect("spool") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}
