//! Every message of the contract survives protobuf encoding, and the event
//! types survive their JSON form, with the documented JSON paths present.

use oomlens_proto::json::{event_from_json, event_to_json_line};
use oomlens_proto::v1::*;
use prost::Message;
use prost_types::Timestamp;
use serde_json::Value;

fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn sample_history(cgroup: &str) -> MemoryHistory {
    MemoryHistory {
        cgroup: cgroup.into(),
        samples: (0..3u8)
            .map(|i| MemorySample {
                time: ts(1_719_309_930, i32::from(i) * 100_000_000),
                working_set_bytes: Some(30_000_000 + u64::from(i) * 1_000_000),
                usage_bytes: Some(31_000_000 + u64::from(i) * 1_000_000),
                anon_bytes: Some(29_000_000),
                file_bytes: Some(1_000_000),
                shmem_bytes: Some(0),
                limit_bytes: Some(33_554_432),
                pressure_some_avg10: Some(1.5),
                pressure_full_avg10: None,
                kernel_bytes: Some(163_840),
            })
            .collect(),
        buckets: vec![MemoryBucket {
            time: ts(1_719_309_929, 0),
            working_set_min_bytes: 20_000_000,
            working_set_max_bytes: 29_000_000,
            working_set_last_bytes: 29_000_000,
            usage_last_bytes: Some(30_000_000),
            limit_bytes: Some(33_554_432),
        }],
        peak_working_set_bytes: Some(32_000_000),
        growth_bytes_per_second: Some(10_000_000.0),
        seconds_above_90pct: Some(0.3),
        limit_bytes: Some(33_554_432),
        sample_interval_ms: 100,
    }
}

fn pod() -> Pod {
    Pod {
        uid: "8a1b7c6d-1111-2222-3333-444455556666".into(),
        name: Some("api-7d9f8b6c5-x2x9q".into()),
        namespace: Some("shop".into()),
        qos: QosClass::Burstable as i32,
        owner: Some(Workload {
            kind: "Deployment".into(),
            name: "api".into(),
        }),
        cgroup: Some("/kubepods/burstable/pod8a1b7c6d-1111-2222-3333-444455556666".into()),
        memory_limit_bytes: Some(33_554_432),
        memory_request_bytes: Some(16_777_216),
    }
}

fn container() -> Container {
    Container {
        id: "4f1c".repeat(16),
        name: Some("api".into()),
        runtime: Runtime::Containerd as i32,
        image: Some("registry.example/shop/api:1.2.3".into()),
        cgroup: Some(format!(
            "/kubepods/burstable/pod8a1b7c6d-1111-2222-3333-444455556666/{}",
            "4f1c".repeat(16)
        )),
        restart_count: Some(3),
        main_pid: Some(2061),
        role: ContainerRole::Main as i32,
        memory_limit_bytes: Some(33_554_432),
        memory_request_bytes: Some(16_777_216),
        survived: Some(false),
    }
}

/// An event with every field set.
fn full_event() -> OomEvent {
    OomEvent {
        id: oomlens_proto::event_id("node-a", "boot", 447),
        node: Some("node-a".into()),
        time: ts(1_719_309_931, 389_275_000),
        constraint: Constraint::Memcg as i32,
        scope: Scope::ContainerLimit as i32,
        oom_memcg: container().cgroup,
        task_memcg: container().cgroup,
        victim: Some(Victim {
            pid: Some(2061),
            comm: Some("tail".into()),
            uid: Some(0),
            total_vm_kb: Some(35_476),
            anon_rss_kb: Some(32_512),
            file_rss_kb: Some(1_584),
            shmem_rss_kb: Some(0),
            pgtables_kb: Some(116),
            oom_score_adj: Some(0),
            oom_score: Some(999),
            main_process: Some(true),
        }),
        trigger: Some(Trigger {
            pid: Some(2061),
            comm: Some("tail".into()),
            gfp_mask: Some("0xcc0(GFP_KERNEL)".into()),
            order: Some(0),
            oom_score_adj: Some(0),
        }),
        memcg_usage: Some(MemcgUsage {
            usage_kb: Some(32_768),
            limit_kb: Some(32_768),
            failcnt: Some(19),
            swap_usage_kb: Some(32_768),
            swap_limit_kb: Some(9_007_199_254_740_988),
        }),
        tasks: vec![TaskEntry {
            pid: 2061,
            uid: Some(0),
            tgid: Some(2061),
            total_vm_pages: Some(8869),
            rss_pages: Some(8524),
            pgtables_bytes: Some(118_784),
            swapents: Some(0),
            oom_score_adj: Some(0),
            comm: "tail".into(),
        }],
        pod: Some(pod()),
        container: Some(container()),
        systemd_unit: Some("cron.service".into()),
        docker_id: Some("ab".repeat(32)),
        history: Some(sample_history("/kubepods/burstable/pod8a1b/4f1c")),
        oom_memcg_history: Some(sample_history("/kubepods/burstable/pod8a1b")),
        node_memory: Some(NodeMemory {
            time: ts(1_719_309_931, 0),
            mem_total_bytes: Some(25_000_000_000),
            mem_available_bytes: Some(24_000_000_000),
            pressure_some_avg10: Some(0.0),
            pressure_full_avg10: Some(0.0),
            pressure_some_avg60: Some(0.25),
            pressure_full_avg60: Some(0.1),
            vmstat_oom_kill: Some(12),
        }),
        silent: Some(false),
        partial: false,
        group_kill: true,
        kernel_lines: vec![KernelLine {
            seq: Some(447),
            monotonic_us: Some(10_837_389_275),
            level: Some(3),
            text: "Memory cgroup out of memory: Killed process 2061 (tail)".into(),
            input_line: None,
        }],
        kernel: Some(KernelRef {
            boot_id: Some("boot".into()),
            seq: Some(447),
            monotonic_us: Some(10_837_389_275),
            release: Some("6.18.44".into()),
        }),
        analysis: Some(Analysis {
            verdict: Verdict::LimitTooLow as i32,
            reasoning: "working set stayed within 3% of the limit for 40 s".into(),
            recommended_limit_bytes: Some(48 << 20),
            recommendation_reasoning: Some("peak 32 MiB + 40% headroom, rounded up".into()),
        }),
        identity_source: IdentitySource::Cri as i32,
        agent_version: "0.1.0".into(),
        breakdown: Some(MemoryBreakdown {
            cgroup: container().cgroup.unwrap_or_default(),
            source: BreakdownSource::KernelReport as i32,
            anon_bytes: Some(30 << 20),
            page_cache_bytes: Some(1 << 20),
            active_file_bytes: Some(1 << 19),
            inactive_file_bytes: Some(1 << 19),
            dirty_bytes: Some(4096),
            writeback_bytes: Some(0),
            shmem_bytes: Some(2 << 20),
            kernel_bytes: Some(163_840),
            slab_reclaimable_bytes: Some(0),
            slab_unreclaimable_bytes: Some(8344),
            sock_bytes: Some(0),
            kernel_stack_bytes: Some(16_384),
            pagetables_bytes: Some(110_592),
            percpu_bytes: Some(0),
            swap_bytes: None,
        }),
        memory_volumes: vec![MemoryVolume {
            name: "cache".into(),
            path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache".into(),
            used_bytes: Some(2 << 20),
            size_bytes: Some(256 << 20),
        }],
        limited_containers: vec![ContainerUsage {
            cgroup: container().cgroup.unwrap_or_default(),
            container_id: "ab".repeat(32),
            name: Some("app".into()),
            working_set_bytes: Some(30 << 20),
        }],
    }
}

fn warning() -> MemoryWarning {
    MemoryWarning {
        id: "w1".into(),
        node: "node-a".into(),
        time: ts(1_719_309_900, 0),
        pod: Some(pod()),
        container: Some(container()),
        cgroup: "/kubepods/burstable/pod8a1b/4f1c".into(),
        working_set_bytes: 31_000_000,
        limit_bytes: 33_554_432,
        growth_bytes_per_second: 20_000.0,
        seconds_to_limit: Some(127.7),
        history: Some(sample_history("/kubepods/burstable/pod8a1b/4f1c")),
    }
}

fn status() -> ContainerMemoryStatus {
    ContainerMemoryStatus {
        node: "node-a".into(),
        time: ts(1_719_309_900, 0),
        pod: Some(pod()),
        container: Some(container()),
        cgroup: "/kubepods/burstable/pod8a1b/4f1c".into(),
        working_set_bytes: 31_000_000,
        limit_bytes: Some(33_554_432),
        growth_bytes_per_second: 1.0,
        seconds_to_limit: None,
    }
}

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
    });
    protobuf_round_trip(&SummaryResponse {
        groups: vec![SummaryGroup {
            key: "pod_limit".into(),
            count: 3,
            silent: 1,
            first: ts(1, 0),
            last: ts(2, 0),
        }],
        total: 3,
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
