//! Every message of the contract survives protobuf encoding, and the event
//! types survive their JSON form, with the documented JSON paths present.

mod fixtures;

use fixtures::*;
use oomlens_proto::json::{event_from_json, event_to_json_line};
use oomlens_proto::v1::*;
use prost::Message;
use serde_json::Value;

fn protobuf_round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let bytes = message.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(&decoded, message);
}

fn json_round_trip<M>(message: &M) -> Value
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(message).expect("serialises");
    let back: M = serde_json::from_str(&text).expect("parses back");
    assert_eq!(&back, message);
    serde_json::from_str(&text).expect("valid JSON")
}

/// Looks up a documented path like `history.samples[].time` (`[]` = first).
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |v, key| match key.strip_suffix("[]") {
            Some(array) => v.get(array)?.get(0),
            None => v.get(key),
        })
}

const DOCUMENTED_PATHS: &[&str] = &[
    "id",
    "node",
    "time",
    "constraint",
    "scope",
    "oom_memcg",
    "task_memcg",
    "victim.pid",
    "victim.comm",
    "victim.uid",
    "victim.total_vm_kb",
    "victim.anon_rss_kb",
    "victim.file_rss_kb",
    "victim.shmem_rss_kb",
    "victim.oom_score_adj",
    "trigger.pid",
    "trigger.comm",
    "pod.uid",
    "pod.name",
    "pod.namespace",
    "pod.qos",
    "container.id",
    "container.name",
    "history.samples[].time",
    "history.samples[].working_set_bytes",
    "history.samples[].usage_bytes",
    "history.samples[].limit_bytes",
    "history.peak_working_set_bytes",
    "history.growth_bytes_per_second",
    "silent",
    "partial",
];

#[test]
fn every_message_round_trips_through_protobuf() {
    protobuf_round_trip(&full_event());
    protobuf_round_trip(&warning());
    protobuf_round_trip(&status());
    for item in [
        ingest_request::Item::Hello(AgentHello {
            node: "node-a".into(),
            agent_version: "0.1.0".into(),
            boot_id: "boot".into(),
            kernel_release: "6.18.44".into(),
            cgroup_mode: "v1".into(),
        }),
        ingest_request::Item::Event(full_event()),
        ingest_request::Item::Warning(warning()),
        ingest_request::Item::Status(ContainerStatusReport {
            containers: vec![status()],
        }),
    ] {
        protobuf_round_trip(&IngestRequest { item: Some(item) });
    }
    protobuf_round_trip(&IngestAck {
        id: "abc".into(),
        status: AckStatus::Duplicate as i32,
        message: String::new(),
    });
    let filter = EventFilter {
        since: ts(1, 0),
        until: ts(2, 0),
        nodes: vec!["node-a".into()],
        namespaces: vec!["shop".into()],
        pods: vec!["api-1".into()],
        containers: vec!["api".into()],
        scopes: vec![Scope::PodLimit as i32, Scope::NodeOom as i32],
        constraints: vec![Constraint::Global as i32],
        workloads: vec!["Deployment/api".into()],
        silent_only: true,
        verdicts: vec![Verdict::PodLimit as i32],
    };
    protobuf_round_trip(&QueryRequest {
        filter: Some(filter.clone()),
        page_size: 50,
        page_token: "t".into(),
    });
    protobuf_round_trip(&QueryResponse {
        events: vec![full_event(), OomEvent::default()],
        next_page_token: "n".into(),
    });
    protobuf_round_trip(&GetRequest { id: "x".into() });
    protobuf_round_trip(&SubscribeRequest {
        filter: Some(filter.clone()),
        cursor: "c".into(),
        include_warnings: true,
    });
    for item in [
        subscribe_response::Item::Event(full_event()),
        subscribe_response::Item::Warning(warning()),
        subscribe_response::Item::Lagged(Lagged { missed: 7 }),
    ] {
        protobuf_round_trip(&SubscribeResponse {
            item: Some(item),
            cursor: "c".into(),
        });
    }
    protobuf_round_trip(&SummaryRequest {
        filter: Some(filter),
        group_by: GroupBy::Workload as i32,
        bucket_seconds: 3600,
    });
    protobuf_round_trip(&SummaryResponse {
        groups: vec![SummaryGroup {
            key: "pod_limit".into(),
            count: 3,
            silent: 1,
            first: ts(1, 0),
            last: ts(2, 0),
            timeline: vec![2, 0, 1],
        }],
        total: 3,
        timeline_start: ts(0, 0),
        bucket_seconds: 3600,
    });
    protobuf_round_trip(&TopRequest {
        nodes: vec!["n".into()],
        namespaces: vec![],
        limit: 5,
    });
    protobuf_round_trip(&TopResponse {
        containers: vec![status()],
    });
}

#[test]
fn full_event_json_has_every_documented_path_and_round_trips() {
    let event = full_event();
    let json = json_round_trip(&event);
    for path in DOCUMENTED_PATHS {
        let value = lookup(&json, path).unwrap_or_else(|| panic!("missing {path} in {json}"));
        assert!(!value.is_null(), "{path} is null in a full event");
    }
    assert_eq!(json["constraint"], "memcg");
    assert_eq!(json["scope"], "container_limit");
    assert_eq!(json["pod"]["qos"], "burstable");
    assert_eq!(json["container"]["runtime"], "containerd");
    assert_eq!(json["analysis"]["verdict"], "limit_too_low");
    assert_eq!(json["identity_source"], "cri");
    assert_eq!(json["time"], "2024-06-25T10:05:31.389275Z");
    assert_eq!(json["history"]["samples"][1]["time"], "2024-06-25T10:05:30.100Z");
    assert_eq!(json["victim"]["anon_rss_kb"], 32_512);

    // The single-line form the CLI prints parses back to the same event.
    let line = event_to_json_line(&event);
    assert!(!line.contains('\n'));
    assert_eq!(event_from_json(&line).expect("parses"), event);

    json_round_trip(&warning());
    json_round_trip(&status());
}

#[test]
fn unknown_values_are_null_never_guessed() {
    // What the parser knows from a rate-limited kill line alone.
    let event = OomEvent {
        id: "x".into(),
        node: Some("node-a".into()),
        constraint: Constraint::Unspecified as i32,
        scope: Scope::Unknown as i32,
        victim: Some(Victim {
            pid: Some(42),
            comm: Some("java".into()),
            ..Default::default()
        }),
        partial: true,
        ..Default::default()
    };
    let json = json_round_trip(&event);
    for path in DOCUMENTED_PATHS {
        let value = lookup(&json, path);
        let expected_known = matches!(
            *path,
            "id" | "node" | "scope" | "victim.pid" | "victim.comm" | "partial"
        );
        match value {
            Some(v) if expected_known => assert!(!v.is_null(), "{path} should be known"),
            Some(v) => assert!(v.is_null(), "{path} should be null, is {v}"),
            // Paths under an absent parent (pod.uid under a null pod) are
            // absent because their parent is null.
            None => assert!(!expected_known, "{path} missing"),
        }
    }
    assert_eq!(json["scope"], "unknown");
    assert!(json["constraint"].is_null());
    assert!(json["victim"]["uid"].is_null());
    assert!(json["pod"].is_null());
}

#[test]
fn enum_words_are_lowercase_and_complete() {
    use oomlens_proto::json::JsonEnum;
    let scopes: Vec<String> = (1..=8)
        .map(|n| Scope::try_from(n).expect("defined").word().expect("named"))
        .collect();
    assert_eq!(
        scopes,
        [
            "container_limit",
            "pod_limit",
            "node_allocatable",
            "node_oom",
            "cpuset",
            "mempolicy",
            "other_cgroup",
            "unknown"
        ]
    );
    let constraints: Vec<String> = (1..=4)
        .map(|n| Constraint::try_from(n).expect("defined").word().expect("named"))
        .collect();
    assert_eq!(constraints, ["memcg", "global", "cpuset", "mempolicy"]);
    let qos: Vec<String> = (1..=3)
        .map(|n| QosClass::try_from(n).expect("defined").word().expect("named"))
        .collect();
    assert_eq!(qos, ["guaranteed", "burstable", "besteffort"]);
    assert_eq!(Scope::from_word("pod_limit"), Some(Scope::PodLimit));
    assert_eq!(Scope::from_word("POD_LIMIT"), None);
    assert_eq!(Scope::from_word("unspecified"), None);
}

#[test]
fn json_rejects_unknown_words_and_bad_times_with_a_clear_error() {
    let err = event_from_json(r#"{"scope":"pod_limits"}"#).expect_err("bad word");
    assert!(
        err.to_string().contains("unknown scope value \"pod_limits\""),
        "{err}"
    );
    let err = event_from_json(r#"{"time":"yesterday"}"#).expect_err("bad time");
    assert!(err.to_string().contains("invalid RFC 3339 timestamp"), "{err}");
    // A value from a newer contract is carried as its number, not dropped.
    let event = event_from_json(r#"{"scope":42}"#).expect("numbers accepted");
    assert_eq!(event.scope, 42);
    assert_eq!(json_round_trip(&event)["scope"], 42);
}

#[test]
fn descriptor_set_describes_the_services() {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid");
    let services: Vec<&str> = set
        .file
        .iter()
        .flat_map(|f| f.service.iter().filter_map(|s| s.name.as_deref()))
        .collect();
    assert!(services.contains(&"IngestService"));
    assert!(services.contains(&"EventService"));
}
