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
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use oomlens_proto::json::{event_from_json, event_to_json_line};
use oomlens_proto::v1::{OomEvent, QosClass, Scope};
use oomlens_tests::containerd::{Containerd, containerd_unavailable};
use oomlens_tests::{
    ScratchTree, cli_binary, collector_binary, free_port, http_get, metric, pod_and_container_ids, unique,
};

/// Feeds 1 MiB every 50 ms (20 MiB/s) until the reader dies: the climb to
/// a 32 MiB limit takes about 1.6 s, several samples at 10 Hz.
const FEED: &str = "while head -c 1048576 /dev/zero; do usleep 50000; done";

/// The storm's hog: `tail` (the main process) holds 2 MiB of its 8 MiB
/// while the feeder waits for the start gun; then 3.5 MiB, a 100 ms pause
/// (sampled: the history shows the climb through two thirds of the
/// limit), and 3.5 MiB more, which the limit stops. Few steps and no
/// process per step after the gun: the kills bunch up.
fn storm_hog(gun_port: u16) -> String {
    format!(
        "mkfifo /feed; ( head -c 2097152 /dev/zero; \
         until wget -q -O /dev/null http://127.0.0.1:{gun_port}/; do usleep 100000; done; \
         head -c 3670016 /dev/zero; usleep 100000; head -c 8388608 /dev/zero ) > /feed & exec tail /feed"
    )
}

/// `tail` buffers an endless line: it is the hog, and the main process
/// (exec) reading the feed through a FIFO.
fn main_process_hog(wait: &str, feed: &str) -> String {
    format!("{wait}; mkfifo /feed; ( {feed} ) > /feed & exec tail /feed")
}

/// The hog is a child of the shell, which lives on after the kill.
fn child_hog(wait: &str) -> String {
    format!("{wait}; ( {FEED} ) | tail; sleep 1000")
}

const LIMIT: u64 = 32 << 20;
const STORM_LIMIT: u64 = 8 << 20;
const STORM_PODS: usize = 4;
const STORM_CONTAINERS_PER_POD: usize = 5;
const STORM: usize = STORM_PODS * STORM_CONTAINERS_PER_POD;

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

/// Sum over every series of a metric.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn metrics_page(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Answers every waiting `wget` at once when triggered: the storm's start.
struct StartGun {
    port: u16,
    waiting: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl StartGun {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let queue = std::sync::Arc::clone(&waiting);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                queue.lock().unwrap().push(stream);
            }
        });
        Self { port, waiting }
    }

    fn waiting(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }

    fn fire(&self) {
        for mut stream in self.waiting.lock().unwrap().drain(..) {
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    }
}

fn brief(event: &OomEvent) -> String {
    format!(
        "{} {} partial={} pod={:?} container={:?} task_memcg={:?} victim={:?}",
        &event.id[..8],
        Scope::try_from(event.scope).map_or("?", |s| s.as_str_name()),
        event.partial,
        event.pod.as_ref().and_then(|p| p.name.as_deref()),
        event
            .container
            .as_ref()
            .map(|c| (c.id.get(..12), c.name.as_deref())),
        event.task_memcg,
        event.victim.as_ref().and_then(|v| v.pid),
    )
}

/// The hog (`tail`) is the process each scenario means to kill.
fn hog_victim(event: &OomEvent) -> bool {
    event
        .victim
        .as_ref()
        .is_some_and(|v| v.comm.as_deref() == Some("tail"))
}

/// The expected facts of one kill.
#[derive(Debug)]
struct Expected {
    scope: Scope,
    pod: Option<(String, String)>,
    container: Option<String>,
    qos: Option<QosClass>,
    silent: Option<bool>,
    /// The limit the climb ran into.
    limit: u64,
}

/// The history shows the climb: sampled at least 5 times in the last
/// second before the kill, starting well below the limit and ending near it.
fn assert_climb(event: &OomEvent, limit: u64) {
    let json = event_to_json_line(event);
    let history = event
        .history
        .as_ref()
        .unwrap_or_else(|| panic!("no history: {json}"));
    let kill_ms = event
        .time
        .as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap();
    let points: Vec<(i64, u64)> = history
        .samples
        .iter()
        .filter_map(|s| {
            let t = s.time.as_ref()?;
            Some((
                t.seconds * 1000 + i64::from(t.nanos) / 1_000_000,
                s.working_set_bytes?,
            ))
        })
        .collect();
    let last_second = points
        .iter()
        .filter(|(t, _)| (kill_ms - 1000..=kill_ms + 100).contains(t))
        .count();
    let low = points
        .iter()
        .filter(|(t, _)| *t >= kill_ms - 5000)
        .map(|(_, ws)| *ws)
        .min()
        .unwrap_or(u64::MAX);
    let high = points.iter().map(|(_, ws)| *ws).max().unwrap_or(0);
    assert!(
        last_second >= 5,
        "{last_second} samples in the last second before the kill: {json}"
    );
    assert!(
        low < limit * 2 / 5,
        "the climb starts below 40% of the limit ({low} B): {json}"
    );
    assert!(
        high > limit * 3 / 5,
        "the climb reaches 60% of the limit ({high} B): {json}"
    );
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

    let mut expected: HashMap<String, Expected> = HashMap::new();
    let wait = "sleep 2";

    // A container's main process at its own limit (burstable).
    let (uid, _) = pod_and_container_ids();
    let pod = containerd
        .run_pod(
            &mut cri,
            "api-0",
            &ns("shop"),
            &uid,
            &format!("kubepods/burstable/pod{uid}"),
        )
        .await
        .unwrap();
    let id = containerd
        .run_container(
            &mut cri,
            &pod,
            "api",
            &main_process_hog(wait, FEED),
            Some(i64::try_from(LIMIT).unwrap()),
        )
        .await
        .unwrap();
    expected.insert(
        id.clone(),
        Expected {
            scope: Scope::ContainerLimit,
            pod: Some(("api-0".into(), ns("shop"))),
            container: Some("api".into()),
            qos: Some(QosClass::Burstable),
            silent: Some(false),
            limit: LIMIT,
        },
    );
    // A child while the container lives on (besteffort): silent.
    let (uid, _) = pod_and_container_ids();
    let pod = containerd
        .run_pod(
            &mut cri,
            "worker-0",
            &ns("jobs"),
            &uid,
            &format!("kubepods/besteffort/pod{uid}"),
        )
        .await
        .unwrap();
    let id = containerd
        .run_container(
            &mut cri,
            &pod,
            "worker",
            &child_hog(wait),
            Some(i64::try_from(LIMIT).unwrap()),
        )
        .await
        .unwrap();
    expected.insert(
        id,
        Expected {
            scope: Scope::ContainerLimit,
            pod: Some(("worker-0".into(), ns("jobs"))),
            container: Some("worker".into()),
            qos: Some(QosClass::Besteffort),
            silent: Some(true),
            limit: LIMIT,
        },
    );
    // A container under a pod-level limit (guaranteed; set as the kubelet does).
    let (uid, _) = pod_and_container_ids();
    let pod_cgroup = format!("kubepods/pod{uid}");
    memory.create(&pod_cgroup);
    memory.limit(&pod_cgroup, LIMIT);
    let pod = containerd
        .run_pod(&mut cri, "db-0", &ns("db"), &uid, &pod_cgroup)
        .await
        .unwrap();
    let id = containerd
        .run_container(&mut cri, &pod, "db", &main_process_hog(wait, FEED), None)
        .await
        .unwrap();
    expected.insert(
        id,
        Expected {
            scope: Scope::PodLimit,
            pod: Some(("db-0".into(), ns("db"))),
            container: Some("db".into()),
            qos: Some(QosClass::Guaranteed),
            silent: Some(false),
            limit: LIMIT,
        },
    );
    // A plain cgroup, not Kubernetes: a systemd-service-shaped one, which
    // the agent follows with --include-other-cgroups. `tail` is alone in
    // it (fed from here at the same 20 MiB/s), so the kernel has one
    // process to kill; it starts with the containers' hogs.
    let plain = "batch-report.service";
    let plain_dir = memory.create(plain);
    memory.limit(plain, LIMIT);
    let plain_path = memory.kernel_path(plain);
    let plain_hog = std::thread::spawn(move || {
        let mut tail = Command::new("/bin/busybox")
            .args(["sh", "-c", "echo $$ > \"$1/cgroup.procs\" && exec tail", "sh"])
            .arg(&plain_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut feed = tail.stdin.take().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let chunk = vec![0u8; 1 << 20];
        while feed.write_all(&chunk).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        tail.wait().unwrap()
    });
    expected.insert(
        plain_path.clone(),
        Expected {
            scope: Scope::OtherCgroup,
            pod: None,
            container: None,
            qos: None,
            silent: None,
            limit: LIMIT,
        },
    );

    // The storm: 20 containers in 4 pods, each waiting for the start gun.
    let gun = StartGun::new();
    let mut storm_ids = Vec::new();
    for p in 0..STORM_PODS {
        let (uid, _) = pod_and_container_ids();
        let name = format!("storm-{p}");
        let pod = containerd
            .run_pod(
                &mut cri,
                &name,
                &ns("storm"),
                &uid,
                &format!("kubepods/besteffort/pod{uid}"),
            )
            .await
            .unwrap();
        for c in 0..STORM_CONTAINERS_PER_POD {
            let container = format!("hog-{c}");
            let id = containerd
                .run_container(
                    &mut cri,
                    &pod,
                    &container,
                    &storm_hog(gun.port),
                    Some(i64::try_from(STORM_LIMIT).unwrap()),
                )
                .await
                .unwrap();
            storm_ids.push(id.clone());
            expected.insert(
                id,
                Expected {
                    scope: Scope::ContainerLimit,
                    pod: Some((name.clone(), ns("storm"))),
                    container: Some(container),
                    qos: Some(QosClass::Besteffort),
                    silent: Some(false),
                    limit: STORM_LIMIT,
                },
            );
        }
    }
    assert!(
        !plain_hog.join().unwrap().success(),
        "the plain cgroup's hog was killed"
    );
    // Every storm container waits at the gun, sampled at rest, before it fires.
    wait_until(
        "the storm's containers at the start gun",
        Duration::from_secs(60),
        || gun.waiting() >= STORM,
    );
    std::thread::sleep(Duration::from_millis(1500));
    gun.fire();

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
        if let Some(k) = key(&event) {
            ours.entry(k).or_default().push(event.clone());
        }
        received.push(event);
    }
    // Late duplicates would arrive now.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(3)) {
        let event = event_from_json(&line).unwrap();
        if let Some(k) = key(&event) {
            ours.entry(k).or_default().push(event.clone());
        }
        received.push(event);
    }
    let agent_page = metrics_page(agent_metrics);
    let collector_page = metrics_page(collector_metrics);
    assert!(agent.stop().success(), "the agent exits cleanly on SIGTERM");
    let _ = watch.stop();
    assert!(
        collector.stop().success(),
        "the collector exits cleanly on SIGTERM"
    );
    containerd.remove_pods(&mut cri).await;

    // One line per event for failure messages; the assertions about one
    // event print its full JSON.
    let dump = received.iter().map(brief).collect::<Vec<_>>().join("\n");
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !ours.get(*k).is_some_and(hog_killed))
        .collect();
    assert!(
        missing.is_empty(),
        "{} kills never reached the subscriber: {missing:?}\nreceived:\n{dump}\nagent log:\n{}",
        missing.len(),
        agent_log()
    );
    // Each kill once: the kernel sometimes kills a second process of the
    // same cgroup (the feeder) before the hog's memory is freed; that is
    // another kill, with another victim, and it must arrive once too.
    let mut second_kills = 0;
    for (k, events) in &ours {
        let mut victims: Vec<Option<i32>> = events
            .iter()
            .map(|e| e.victim.as_ref().and_then(|v| v.pid))
            .collect();
        victims.sort_unstable();
        victims.dedup();
        assert_eq!(victims.len(), events.len(), "{k}: a kill received twice:\n{dump}");
        second_kills += events.len() - 1;
        let hogs: Vec<&OomEvent> = events.iter().filter(|e| hog_victim(e)).collect();
        assert_eq!(hogs.len(), 1, "{k}: the hog killed once:\n{dump}");
        for event in events {
            let json = event_to_json_line(event);
            let want = &expected[k];
            assert_eq!(event.scope, want.scope as i32, "scope of {k}: {json}");
            assert_eq!(event.node.as_deref(), Some("e2e-node"), "{json}");
        }
        let event = hogs[0];
        let json = event_to_json_line(event);
        let want = &expected[k];
        assert_eq!(event.silent, want.silent, "silent flag of {k}: {json}");
        match &want.pod {
            Some((name, namespace)) => {
                let pod = event.pod.as_ref().unwrap_or_else(|| panic!("no pod: {json}"));
                assert_eq!(pod.name.as_ref(), Some(name), "{json}");
                assert_eq!(pod.namespace.as_deref(), Some(namespace.as_str()), "{json}");
                assert_eq!(Some(pod.qos), want.qos.map(|q| q as i32), "{json}");
                let container = event.container.as_ref().unwrap();
                assert_eq!(container.name, want.container, "{json}");
            }
            None => {
                assert!(event.pod.is_none() && event.container.is_none(), "{json}");
                assert_eq!(event.task_memcg.as_deref(), Some(plain_path.as_str()), "{json}");
                assert_eq!(event.systemd_unit.as_deref(), Some(plain), "{json}");
            }
        }
        assert_climb(event, want.limit);
    }
    let ids: std::collections::HashSet<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "an event id twice:\n{dump}");

    // The storm was one: 20 kills within 2 s, more than the kernel reports.
    let storm_times: Vec<i64> = storm_ids
        .iter()
        .map(|id| {
            let hog = ours[id].iter().find(|e| hog_victim(e)).unwrap();
            let t = hog.time.as_ref().unwrap();
            t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
        })
        .collect();
    let spread = storm_times.iter().max().unwrap() - storm_times.iter().min().unwrap();
    let first = *storm_times.iter().min().unwrap();
    let mut offsets: Vec<i64> = storm_times.iter().map(|t| t - first).collect();
    offsets.sort_unstable();
    eprintln!("storm kill times after the first, ms: {offsets:?}");
    let partial = storm_ids
        .iter()
        .flat_map(|id| &ours[id])
        .filter(|e| e.partial)
        .count();
    eprintln!(
        "storm: {STORM} hogs killed within {spread} ms, {partial} reports rate-limited by the kernel; \
         {second_kills} second kills in a hog's cgroup"
    );
    assert!(spread < 2000, "the storm took {spread} ms");

    // The counters agree with what arrived.
    for (namespace, scope) in [
        (ns("shop"), Scope::ContainerLimit),
        (ns("jobs"), Scope::ContainerLimit),
        (ns("db"), Scope::PodLimit),
        (ns("storm"), Scope::ContainerLimit),
    ] {
        let count = received
            .iter()
            .filter(|e| e.scope == scope as i32)
            .filter(|e| e.pod.as_ref().and_then(|p| p.namespace.as_deref()) == Some(namespace.as_str()))
            .count();
        assert!(count >= 1);
        let word = scope.as_str_name().trim_start_matches("SCOPE_").to_lowercase();
        let series = format!("oomlens_agent_oom_kills_total{{scope=\"{word}\",namespace=\"{namespace}\"}}");
        assert_eq!(
            metric(&agent_page, &series),
            count as f64,
            "{series}\n{agent_page}"
        );
    }
    let agent_kills = metric_sum(&agent_page, "oomlens_agent_oom_kills_total");
    let shipped = metric(
        &agent_page,
        "oomlens_agent_shipped_events_total{result=\"stored\"}",
    );
    let stored = metric(
        &collector_page,
        "oomlens_collector_events_total{result=\"stored\"}",
    );
    assert_eq!(
        agent_kills,
        received.len() as f64,
        "agent kills vs subscriber:\n{agent_page}"
    );
    assert_eq!(
        shipped,
        received.len() as f64,
        "agent shipped vs subscriber:\n{agent_page}"
    );
    assert_eq!(
        stored,
        received.len() as f64,
        "collector stored vs subscriber:\n{collector_page}"
    );
    assert_eq!(
        metric(&agent_page, "oomlens_agent_spool_events"),
        0.0,
        "{agent_page}"
    );
    // The storm's containers were followed; by now their cgroups are gone
    // and their histories kept for the grace period.
    let followed = metric(&agent_page, "oomlens_agent_cgroups_tracked")
        + metric(&agent_page, "oomlens_agent_cgroups_in_grace");
    assert!(followed >= STORM as f64, "{agent_page}");
    assert!(
        metric(&agent_page, "oomlens_agent_kmsg_records_total") > 0.0,
        "{agent_page}"
    );
    assert_eq!(
        metric(&agent_page, "oomlens_agent_kmsg_forged_lines_total"),
        0.0,
        "{agent_page}"
    );
    drop(containerd);
    drop(memory);
}
