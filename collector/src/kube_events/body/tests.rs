use oomlens_proto::v1::{
    Analysis, Container, ContainerRole, MemcgUsage, MemoryHistory, OomEvent, Pod, Scope, Verdict, Victim,
};
use prost_types::Timestamp;

use super::*;

const ID: &str = "5e34102c9a0b4c1d8e2f3a4b5c6d7e8f";

fn kill(scope: Scope) -> OomEvent {
    OomEvent {
        id: ID.to_owned(),
        node: Some("node-a".to_owned()),
        time: Some(Timestamp {
            seconds: 1_796_032_800,
            nanos: 123_456_789,
        }),
        scope: scope as i32,
        victim: Some(Victim {
            pid: Some(4242),
            comm: Some("java".to_owned()),
            ..Victim::default()
        }),
        memcg_usage: Some(MemcgUsage {
            usage_kb: Some(511 * 1024),
            limit_kb: Some(512 * 1024),
            ..MemcgUsage::default()
        }),
        pod: Some(Pod {
            uid: "6f1c-uid".to_owned(),
            name: Some("api-7d9f".to_owned()),
            namespace: Some("shop".to_owned()),
            ..Pod::default()
        }),
        container: Some(Container {
            id: "c".repeat(64),
            name: Some("api".to_owned()),
            role: ContainerRole::Main as i32,
            ..Container::default()
        }),
        history: Some(MemoryHistory {
            peak_working_set_bytes: Some(511 * 1024 * 1024),
            ..MemoryHistory::default()
        }),
        analysis: Some(Analysis {
            verdict: Verdict::Spike as i32,
            reasoning: "working set climbed from 100 MiB (20% of the 512 MiB limit) to 511 MiB in 3.2 s"
                .to_owned(),
            recommended_limit_bytes: Some(768 * 1024 * 1024),
            ..Analysis::default()
        }),
        ..OomEvent::default()
    }
}

#[test]
fn a_container_limit_kill_becomes_a_warning_on_the_pod_and_its_container() {
    let occurrence = Occurrence::of(&kill(Scope::ContainerLimit)).unwrap();
    let name = occurrence.event_name();
    assert_eq!(name, "api-7d9f.oomlens.5e34102c9a0b4c1d");
    let body = occurrence.create_body(&name, "oomlens-collector-0");
    let expected = serde_json::json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": "api-7d9f.oomlens.5e34102c9a0b4c1d",
            "namespace": "shop",
            "labels": {"oomlens.io/event-id": ID},
            "annotations": {"oomlens.io/last-event-id": ID},
        },
        "eventTime": "2026-11-30T10:00:00.123456Z",
        "reportingController": "oomlens",
        "reportingInstance": "oomlens-collector-0",
        "action": "Killed",
        "reason": "OOMKilledContainerLimit",
        "regarding": {
            "apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "api-7d9f",
            "uid": "6f1c-uid", "fieldPath": "spec.containers{api}",
        },
        "related": {"apiVersion": "v1", "kind": "Node", "name": "node-a"},
        "note": "container api (java 4242) killed at its 512Mi container limit: usage 511Mi at the kill; \
                 spike: working set climbed from 100 MiB (20% of the 512 MiB limit) to 511 MiB in 3.2 s; \
                 recommended limit 768Mi; oomlens show 5e34102c",
        "type": "Warning",
    });
    assert_eq!(body, expected, "{body:#}");
}

#[test]
fn reasons_tell_the_limits_and_silent_kills_apart() {
    let reason = |scope, silent| {
        let mut event = kill(scope);
        event.silent = silent;
        Occurrence::of(&event).unwrap().reason.as_str()
    };
    assert_eq!(
        reason(Scope::ContainerLimit, Some(false)),
        "OOMKilledContainerLimit"
    );
    assert_eq!(reason(Scope::PodLimit, None), "OOMKilledPodLimit");
    assert_eq!(reason(Scope::NodeAllocatable, None), "OOMKilledNodeAllocatable");
    assert_eq!(reason(Scope::NodeOom, None), "OOMKilledNodeOutOfMemory");
    assert_eq!(reason(Scope::Cpuset, None), "OOMKilledCpuset");
    assert_eq!(reason(Scope::Mempolicy, None), "OOMKilledMemoryPolicy");
    assert_eq!(reason(Scope::Unknown, None), "OOMKilled");
    assert_eq!(reason(Scope::ContainerLimit, Some(true)), "OOMKilledChildProcess");

    let mut silent = kill(Scope::ContainerLimit);
    silent.silent = Some(true);
    let note = Occurrence::of(&silent).unwrap().note;
    assert!(
        note.starts_with("process java 4242 killed inside container api at its 512Mi container limit; the container kept running, so Kubernetes shows no restart"),
        "{note}"
    );
    let node = Occurrence::of(&kill(Scope::NodeOom)).unwrap().note;
    assert!(
        node.contains("the node running out of memory (Kubernetes shows Error, exit 137, not OOMKilled)"),
        "{node}"
    );
}

#[test]
fn only_pods_with_a_name_and_namespace_get_events() {
    let mut host = kill(Scope::OtherCgroup);
    host.pod = None;
    host.container = None;
    assert_eq!(Occurrence::of(&host), None);
    let mut unnamed = kill(Scope::ContainerLimit);
    unnamed.pod.as_mut().unwrap().name = None;
    assert_eq!(Occurrence::of(&unnamed), None);
    // Without a container name the Event regards the whole pod.
    let mut no_container = kill(Scope::PodLimit);
    no_container.container.as_mut().unwrap().name = None;
    let occurrence = Occurrence::of(&no_container).unwrap();
    assert_eq!(occurrence.field_path, None);
    assert!(
        occurrence
            .note
            .starts_with("the pod (java 4242) killed at its 512Mi pod limit")
    );
}

#[test]
fn init_sidecar_and_ephemeral_containers_have_their_field_paths() {
    for (role, path) in [
        (ContainerRole::Init, "spec.initContainers{api}"),
        (ContainerRole::Sidecar, "spec.initContainers{api}"),
        (ContainerRole::Ephemeral, "spec.ephemeralContainers{api}"),
        (ContainerRole::Unspecified, "spec.containers{api}"),
    ] {
        let mut event = kill(Scope::ContainerLimit);
        event.container.as_mut().unwrap().role = role as i32;
        assert_eq!(Occurrence::of(&event).unwrap().field_path.as_deref(), Some(path));
    }
}

#[test]
fn hostile_and_long_values_stay_within_the_api_limits() {
    let mut event = kill(Scope::ContainerLimit);
    event.analysis.as_mut().unwrap().reasoning = "ü".repeat(2000);
    event.pod.as_mut().unwrap().name = Some(format!("{}-x", "a".repeat(250)));
    let occurrence = Occurrence::of(&event).unwrap();
    assert!(
        occurrence.note.len() <= NOTE_MAX_BYTES,
        "{}",
        occurrence.note.len()
    );
    assert!(
        occurrence
            .note
            .ends_with("...; recommended limit 768Mi; oomlens show 5e34102c"),
        "{}",
        occurrence.note
    );
    let name = occurrence.event_name();
    assert!(
        name.len() <= 253 && name.ends_with(".oomlens.5e34102c9a0b4c1d"),
        "{name}"
    );
    let body = occurrence.create_body(&name, &"i".repeat(300));
    assert_eq!(body["reportingInstance"].as_str().unwrap().len(), 128);
}

#[test]
fn a_series_carried_on_after_its_event_expired_says_its_count() {
    let occurrence = Occurrence::of(&kill(Scope::ContainerLimit))
        .unwrap()
        .with_series(7);
    let body = occurrence.create_body("n", "i");
    assert_eq!(
        body["series"],
        serde_json::json!({"count": 7, "lastObservedTime": "2026-11-30T10:00:00.123456Z"})
    );
    let patch = series_patch(3, "2026-11-30T10:01:00.000000Z", "abc");
    assert_eq!(
        patch,
        serde_json::json!({
            "metadata": {"annotations": {"oomlens.io/last-event-id": "abc"}},
            "series": {"count": 3, "lastObservedTime": "2026-11-30T10:01:00.000000Z"},
        })
    );
}

#[test]
fn micro_time_has_six_digits() {
    assert_eq!(micro_time(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(micro_time(1_796_032_800, 5_000), "2026-11-30T10:00:00.000005Z");
}
