//! What Kubernetes users see of real kills in real containerd pods, from
//! the real agent binary in standalone mode with `--kubernetes-events` and
//! a node kubeconfig: each kill becomes an Event on its pod in the
//! Kubernetes API (the stand-in of `tests/src/kube_api.rs`, which enforces
//! the API's validation rules), and a series of the per-container kill
//! counter on `/metrics`, which goes a grace after the pod's cgroup does.
//! A container killed at its limit, a child process killed inside a
//! container that lives on (the kill Kubernetes itself never shows), a
//! container killed by its pod's limit (shown as Error), and a container
//! that exits cleanly after a child was killed (shown as OOMKilled): each
//! stored kill carries what the runtime reported and the mismatch.
//!
//! Needs root, cgroup v1 memory, containerd and runc; elsewhere it says why
//! it skips.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{ContainerState, OomEvent, QueryRequest, StatusMatch};
use oomlens_tests::containerd::{Containerd, containerd_unavailable};
use oomlens_tests::kube_api::FakeEventsApi;
use oomlens_tests::{ScratchTree, free_port, pod_and_container_ids, unique};
use serde_json::Value;

const HOG: &str = "/bin/busybox dd if=/dev/zero of=/dev/null bs=100M count=1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kills_in_pods_become_events_on_those_pods() {
    if let Some(reason) = containerd_unavailable() {
        eprintln!("SKIPPED real_kills_in_pods_become_events_on_those_pods: {reason}");
        return;
    }
    let scratch = unique("oomlens-test");
    let memory = ScratchTree::new(&scratch);
    let mut containerd = Containerd::start(&scratch).unwrap_or_else(|e| panic!("containerd: {e}"));
    let mut client = containerd.client().await.expect("CRI client");
    let api = FakeEventsApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(state.path());
    let node = unique("node");
    let port = free_port();
    let metrics_port = free_port();
    let mut agent = oomlens_tests::agent::KillOnDrop(
        Command::new(oomlens_tests::agent_binary())
            .args(["run", "--standalone", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--state-dir", &state.path().display().to_string()])
            .args(["--cri-socket", &containerd.socket.display().to_string()])
            .args([
                "--kubernetes-events",
                "--kubeconfig",
                &kubeconfig.display().to_string(),
            ])
            .args(["--node-name", &node, "--output", "json"])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--kill-series-grace-secs", "2"])
            .env("OOMLENS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start oomlens-agent"),
    );
    // Up when its embedded collector accepts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A container killed at its 32 MiB limit, its main process the hog.
    let (uid_a, _) = pod_and_container_ids();
    let pod_a = containerd
        .run_pod(
            &mut client,
            "api-0",
            "shop",
            &uid_a,
            &format!("kubepods/burstable/pod{uid_a}"),
        )
        .await
        .expect("pod a");
    containerd
        .run_container(
            &mut client,
            &pod_a,
            "api",
            &format!("sleep 3; exec {HOG}"),
            Some(32 << 20),
        )
        .await
        .expect("container a");
    // A child killed while the main shell lives on.
    let (uid_b, _) = pod_and_container_ids();
    let pod_b = containerd
        .run_pod(
            &mut client,
            "worker-0",
            "jobs",
            &uid_b,
            &format!("kubepods/besteffort/pod{uid_b}"),
        )
        .await
        .expect("pod b");
    containerd
        .run_container(
            &mut client,
            &pod_b,
            "worker",
            &format!("sleep 3; {HOG}; sleep 1000"),
            Some(32 << 20),
        )
        .await
        .expect("container b");

    // A container under a pod-level limit (set on the pod's cgroup, as the
    // kubelet does), its main process the hog.
    let (uid_c, _) = pod_and_container_ids();
    let pod_cgroup_c = format!("kubepods/pod{uid_c}");
    memory.create(&pod_cgroup_c);
    memory.limit(&pod_cgroup_c, 32 << 20);
    let pod_c = containerd
        .run_pod(&mut client, "db-0", "db", &uid_c, &pod_cgroup_c)
        .await
        .expect("pod c");
    containerd
        .run_container(&mut client, &pod_c, "db", &format!("sleep 3; exec {HOG}"), None)
        .await
        .expect("container c");
    // A child killed, then the main process exits cleanly: the runtime
    // still says OOMKilled of that exit.
    let (uid_d, _) = pod_and_container_ids();
    let pod_d = containerd
        .run_pod(
            &mut client,
            "batch-0",
            "jobs",
            &uid_d,
            &format!("kubepods/burstable/pod{uid_d}"),
        )
        .await
        .expect("pod d");
    containerd
        .run_container(
            &mut client,
            &pod_d,
            "batch",
            &format!("sleep 3; {HOG}; sleep 2; exit 0"),
            Some(32 << 20),
        )
        .await
        .expect("container d");

    let ours = |events: &std::collections::BTreeMap<(String, String), Value>| {
        events
            .values()
            .filter(|e| e["related"]["name"] == node.as_str())
            .cloned()
            .collect::<Vec<_>>()
    };
    let events = api
        .wait_for_events(Duration::from_secs(40), |events| ours(events).len() >= 4)
        .await;

    // What the runtime reported after each kill, next to what happened.
    let statuses = runtime_statuses(port, &["api-0", "worker-0", "db-0", "batch-0"]).await;
    // OOMLENS_RECORD_KILLS=FILE keeps these real kills as JSON lines: the
    // web pages' golden test (collector/tests/web_golden.rs) renders them.
    if let Some(path) = std::env::var_os("OOMLENS_RECORD_KILLS") {
        let mut recorded: Vec<&OomEvent> = statuses.values().collect();
        recorded.sort_by_key(|e| e.time.as_ref().map(|t| (t.seconds, t.nanos)));
        let lines: String = recorded
            .iter()
            .map(|e| oomlens_proto::json::event_to_json_line(e) + "\n")
            .collect();
        std::fs::write(&path, lines).unwrap();
        // And the live containers as `Top` showed them then.
        let top = oomlens_tests::http::get(&format!("127.0.0.1:{metrics_port}"), "/api/v1/top", &[]).await;
        let mut top_path = path;
        top_path.push(".top.json");
        std::fs::write(top_path, top.body).unwrap();
    }
    let expect =
        |pod: &str, state: ContainerState, reason: Option<&str>, exit: Option<i32>, matched: StatusMatch| {
            let event = &statuses[pod];
            let status = event.runtime_status.clone().unwrap();
            let json = format!(
                "{:?} {:?}",
                event.runtime_status,
                event.analysis.as_ref().map(|a| &a.status_reasoning)
            );
            assert_eq!(status.state, state as i32, "{pod}: {json}");
            assert_eq!(status.reason.as_deref(), reason, "{pod}: {json}");
            assert_eq!(status.exit_code, exit, "{pod}: {json}");
            assert_eq!(
                event.analysis.as_ref().unwrap().status_match,
                matched as i32,
                "{pod}: {json}"
            );
            eprintln!(
                "{pod}: {:?} {:?} {:?} -> {}",
                state,
                reason,
                exit,
                event
                    .analysis
                    .as_ref()
                    .unwrap()
                    .status_reasoning
                    .as_deref()
                    .unwrap_or("consistent")
            );
        };
    expect(
        "api-0",
        ContainerState::Exited,
        Some("OOMKilled"),
        Some(137),
        StatusMatch::Consistent,
    );
    expect(
        "worker-0",
        ContainerState::Running,
        None,
        None,
        StatusMatch::KillNotShown,
    );
    // On cgroup v1 containerd hears the pod cgroup's OOM in the container's
    // too, so the status is right here (a whole-node OOM, shown as Error,
    // is covered by the analysis's unit tests).
    expect(
        "db-0",
        ContainerState::Exited,
        Some("OOMKilled"),
        Some(137),
        StatusMatch::Consistent,
    );
    expect(
        "batch-0",
        ContainerState::Exited,
        Some("OOMKilled"),
        Some(0),
        StatusMatch::OomkilledNotAKill,
    );

    // The counter: one series per killed container, with the truth about
    // the silent kill.
    let (_, metrics) = oomlens_tests::http_get(metrics_port, "/metrics").unwrap();
    let series = |namespace: &str, pod: &str, container: &str, silent: &str| {
        format!(
            "oomlens_agent_container_oom_kills_total{{namespace=\"{namespace}\",pod=\"{pod}\",container=\"{container}\",scope=\"container_limit\",silent=\"{silent}\"}} 1"
        )
    };
    let killed_series = series("shop", "api-0", "api", "false");
    let silent_series = series("jobs", "worker-0", "worker", "true");
    for expected in [&killed_series, &silent_series] {
        assert!(
            metrics.contains(expected.as_str()),
            "{expected} missing from:\n{metrics}"
        );
    }
    // The pods go (and their cgroups, as the kubelet removes them): the
    // series leave after the grace.
    containerd.remove_pods(&mut client).await;
    for uid in [&uid_a, &uid_b, &uid_c, &uid_d] {
        for qos in ["burstable/", "besteffort/", ""] {
            let pod_cgroup = format!("kubepods/{qos}pod{uid}");
            if memory.path(&pod_cgroup).exists() {
                memory.remove(&pod_cgroup);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = oomlens_tests::http_get(metrics_port, "/metrics").unwrap();
        if !metrics.contains("pod=\"api-0\"") && !metrics.contains("pod=\"worker-0\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the series outlived their pods by far more than the grace:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    oomlens_tests::agent::stop(&mut agent.0);

    let ours = ours(&events);
    let by_pod = |pod: &str| {
        ours.iter()
            .find(|e| e["regarding"]["name"] == pod)
            .unwrap_or_else(|| panic!("no Event on {pod}: {ours:#?}"))
    };
    let killed = by_pod("api-0");
    assert_eq!(killed["metadata"]["namespace"], "shop", "{killed:#}");
    assert_eq!(killed["reason"], "OOMKilledContainerLimit", "{killed:#}");
    assert_eq!(killed["regarding"]["uid"], uid_a.as_str(), "{killed:#}");
    assert_eq!(
        killed["regarding"]["fieldPath"], "spec.containers{api}",
        "{killed:#}"
    );
    assert_eq!(
        killed["reportingInstance"],
        format!("oomlens-agent-{node}"),
        "{killed:#}"
    );
    let note = killed["note"].as_str().unwrap();
    assert!(
        note.starts_with("container api (busybox ")
            && note.contains("killed at its 32Mi container limit: usage 32"),
        "{note}"
    );
    let silent = by_pod("worker-0");
    assert_eq!(silent["metadata"]["namespace"], "jobs", "{silent:#}");
    assert_eq!(silent["reason"], "OOMKilledChildProcess", "{silent:#}");
    let note = silent["note"].as_str().unwrap();
    assert!(
        note.contains("killed inside container worker") && note.contains("Kubernetes shows no restart"),
        "{note}"
    );
    // What `kubectl describe pod` would list, from the recorded requests.
    for request in api
        .requests()
        .iter()
        .filter(|r| r.body["related"]["name"] == node.as_str())
    {
        assert_eq!(request.status, 201, "{request:#?}");
        eprintln!("{} {}\n{:#}", request.method, request.path, request.body);
    }
}

/// The stored kill of each pod, once the runtime's report on it has
/// settled (the kill's last revision): what `oomlens show` prints.
async fn runtime_statuses(port: u16, pods: &[&str]) -> std::collections::HashMap<String, OomEvent> {
    let client = ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..ClientConfig::default()
    };
    let mut events = client.event_client().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = events
            .query(QueryRequest {
                page_size: 100,
                ..QueryRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let found: std::collections::HashMap<String, OomEvent> = page
            .events
            .into_iter()
            .filter_map(|e| Some((e.pod.as_ref()?.name.clone()?, e)))
            .filter(|(name, _)| pods.contains(&name.as_str()))
            .collect();
        // Settled, or (the child killed in a live container) reported.
        let done = |e: &OomEvent| {
            e.runtime_status
                .as_ref()
                .is_some_and(|s| s.settled || s.state == ContainerState::Running as i32)
        };
        if found.len() == pods.len() && found.values().all(done) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no settled runtime report for every pod: {:#?}",
            found
                .values()
                .map(oomlens_proto::json::event_to_json_line)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
