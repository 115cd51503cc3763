//! Real pods in a real containerd (Debian's package), created through CRI
//! as the kubelet would, with kubelet-style cgroup parents, in three QoS
//! classes, and real kernel OOM kills:
//! (a) a container's main process at its own limit,
//! (b) a child process while the main process survives (a silent OOM),
//! (c) a container under a pod-level limit.
//! The events name the pod, namespace, container, QoS, scope and silent flag.
//!
//! Needs root, cgroup v1 memory, containerd and runc; elsewhere it says why
//! it skips.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use oomlens_agent::cgroup::Sampler;
use oomlens_agent::pipeline::{self, Enrichers};
use oomlens_agent::pods::cri::{CriClient, CriResolver};
use oomlens_collector::analysis::{Rules, analyse};
use oomlens_proto::json::event_to_json_line;
use oomlens_proto::v1::{OomEvent, QosClass, Scope, Verdict};
use oomlens_tests::containerd::{Containerd, IMAGE, containerd_unavailable};
use oomlens_tests::{ScratchTree, pod_and_container_ids, unique};
use tokio::sync::{mpsc, watch};

/// Waits 2 s (time for the agent to see the container running and learn
/// its main pid), then allocates 100 MiB in one buffer.
const HOG: &str = "/bin/busybox dd if=/dev/zero of=/dev/null bs=100M count=1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_in_containerd_are_named_classified_and_silent_kills_flagged() {
    if let Some(reason) = containerd_unavailable() {
        eprintln!("SKIPPED pods_in_containerd_are_named_classified_and_silent_kills_flagged: {reason}");
        return;
    }
    let scratch = unique("oomlens-test");
    let memory = ScratchTree::new(&scratch);
    let mut containerd = Containerd::start(&scratch).unwrap_or_else(|e| panic!("containerd: {e}"));
    let mut client = containerd.client().await.expect("CRI client");

    let (stop, stopped) = watch::channel(false);
    let wait_stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let (sampler_handle, requests) = Sampler::channel();
    let (warnings, _warning_rx) = mpsc::channel(64);
    let sampler = Sampler::new(oomlens_tests::host_sampler_config(), warnings);
    let sampler_task = tokio::spawn(sampler.run(requests, wait_stop()));
    let cri_client = CriClient::connect(&containerd.socket)
        .await
        .expect("agent's CRI client");
    let (cri, cri_requests) = CriResolver::channel();
    let resolver = CriResolver::new(cri_client, Duration::from_secs(120), Duration::from_secs(5));
    let resolver_task = tokio::spawn(resolver.run(cri_requests, wait_stop()));
    let state = tempfile::tempdir().expect("state");
    let config = oomlens_tests::test_pipeline_with(
        state.path(),
        Enrichers {
            sampler: Some(sampler_handle),
            cri: Some(cri.clone()),
            kube: None,
            host_proc: Some("/proc".into()),
        },
    );
    let (sender, mut events) = mpsc::channel(64);
    let pipeline = tokio::spawn(pipeline::run(config, sender, wait_stop()));

    // (a) burstable, container limit, the main process is the hog.
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
    let main_a = containerd
        .run_container(
            &mut client,
            &pod_a,
            "api",
            &format!("sleep 2; exec {HOG}"),
            Some(32 << 20),
        )
        .await
        .expect("container a");
    // (b) besteffort, a child is the hog and the main shell lives on.
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
    let child_b = containerd
        .run_container(
            &mut client,
            &pod_b,
            "worker",
            &format!("sleep 2; {HOG}; sleep 1000"),
            Some(32 << 20),
        )
        .await
        .expect("container b");
    // (c) guaranteed, the limit on the pod's cgroup (set as the kubelet does).
    let (uid_c, _) = pod_and_container_ids();
    let pod_cgroup = format!("kubepods/pod{uid_c}");
    memory.create(&pod_cgroup);
    memory.limit(&pod_cgroup, 32 << 20);
    let pod_c = containerd
        .run_pod(&mut client, "db-0", "db", &uid_c, &pod_cgroup)
        .await
        .expect("pod c");
    // A sidecar holding 6 MiB of the pod's 32 (a file in its /dev/shm).
    let sidecar = containerd
        .run_container(
            &mut client,
            &pod_c,
            "cache",
            "/bin/busybox head -c 6291456 /dev/zero > /dev/shm/hold; /bin/busybox sleep 1000",
            None,
        )
        .await
        .expect("sidecar c");
    let pod_limited = containerd
        .run_container(&mut client, &pod_c, "db", &format!("sleep 2; exec {HOG}"), None)
        .await
        .expect("container c");
    // The agent learns the containers (and their main pids) while they sleep.
    for id in [&main_a, &child_b, &pod_limited, &sidecar] {
        let resolved = cri
            .resolve(id)
            .await
            .unwrap_or_else(|| panic!("{id} unknown to the resolver"));
        assert!(
            resolved.info.main_pid.is_some(),
            "no main pid for {id}: {resolved:?}"
        );
    }

    let mut found: HashMap<String, OomEvent> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < 3 && Instant::now() < deadline {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await else {
            continue;
        };
        if let Some(id) = event.container.as_ref().map(|c| c.id.clone())
            && [&main_a, &child_b, &pod_limited].contains(&&id)
        {
            found.insert(id, event);
        }
    }
    let _ = stop.send(true);
    containerd.remove_pods(&mut client).await;
    pipeline.await.expect("join").expect("pipeline");
    sampler_task.await.expect("sampler");
    resolver_task.await.expect("resolver");

    let dump = found
        .values()
        .map(event_to_json_line)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        found.len(),
        3,
        "one event per pod:\n{dump}\ncontainerd log:\n{}",
        containerd.log()
    );

    let a = &found[&main_a];
    let json = event_to_json_line(a);
    assert_eq!(a.scope, Scope::ContainerLimit as i32, "{json}");
    let pod = a.pod.as_ref().expect("pod");
    assert_eq!(
        (pod.name.as_deref(), pod.namespace.as_deref()),
        (Some("api-0"), Some("shop")),
        "{json}"
    );
    assert_eq!(pod.uid, uid_a, "{json}");
    assert_eq!(pod.qos, QosClass::Burstable as i32, "{json}");
    let container = a.container.as_ref().expect("container");
    assert_eq!(
        (container.name.as_deref(), container.image.as_deref()),
        (Some("api"), Some(IMAGE)),
        "{json}"
    );
    assert_eq!(
        a.victim.as_ref().and_then(|v| v.main_process),
        Some(true),
        "{json}"
    );
    assert_eq!(a.silent, Some(false), "{json}");

    let b = &found[&child_b];
    let json = event_to_json_line(b);
    assert_eq!(b.scope, Scope::ContainerLimit as i32, "{json}");
    assert_eq!(
        b.pod.as_ref().map(|p| p.qos),
        Some(QosClass::Besteffort as i32),
        "{json}"
    );
    assert_eq!(
        b.pod.as_ref().and_then(|p| p.namespace.as_deref()),
        Some("jobs"),
        "{json}"
    );
    assert_eq!(
        b.victim.as_ref().and_then(|v| v.main_process),
        Some(false),
        "{json}"
    );
    assert_eq!(
        b.container.as_ref().and_then(|c| c.survived),
        Some(true),
        "{json}"
    );
    assert_eq!(
        b.silent,
        Some(true),
        "a child killed while the container lives on: {json}"
    );

    let c = &found[&pod_limited];
    let json = event_to_json_line(c);
    assert_eq!(c.scope, Scope::PodLimit as i32, "{json}");
    assert_eq!(
        c.pod.as_ref().map(|p| p.qos),
        Some(QosClass::Guaranteed as i32),
        "{json}"
    );
    assert_eq!(
        c.pod.as_ref().and_then(|p| p.name.as_deref()),
        Some("db-0"),
        "{json}"
    );
    assert_eq!(
        c.container.as_ref().and_then(|c| c.name.as_deref()),
        Some("db"),
        "{json}"
    );
    // Who held the pod's memory at the kill: both containers, named.
    let held = |name: &str| {
        c.limited_containers
            .iter()
            .find(|m| m.name.as_deref() == Some(name))
            .and_then(|m| m.working_set_bytes)
            .unwrap_or_else(|| panic!("no {name} below the pod's limit: {json}"))
    };
    assert!(held("cache") > 5 << 20, "{json}");
    assert!(held("db") > 0, "{json}");
    let analysis = analyse(c, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::PodLimit as i32,
        "{}",
        analysis.reasoning
    );
    assert!(analysis.reasoning.contains("cache "), "{}", analysis.reasoning);
    drop(containerd);
    drop(memory);
}
