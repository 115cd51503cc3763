//! Replicas on one PostgreSQL database answer for the whole fleet: `Top`
//! through replica B shows a container whose agent reports to replica A,
//! and a subscriber on B hears A's agents' warnings (each once). Before,
//! both lived in the memory of the replica the agent was connected to.
//!
//! Needs PostgreSQL (`.ci/run` starts one); skips, saying so, without it
//! unless `OOMLENS_REQUIRE_POSTGRES=1`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use oomlens_collector::server::ServerConfig;
use oomlens_proto::v1::{
    AgentHello, ContainerMemoryStatus, ContainerStatusReport, IngestRequest, MemoryWarning, SubscribeRequest,
    TopRequest, ingest_request, subscribe_response,
};
use prost_types::Timestamp;
use tokio_stream::wrappers::ReceiverStream;

const CGROUP: &str = "/kubepods/burstable/pod5e1f/0123abcd";

fn status(working_set: u64) -> ContainerMemoryStatus {
    ContainerMemoryStatus {
        node: "node-a".into(),
        time: Some(Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        cgroup: CGROUP.into(),
        working_set_bytes: working_set,
        limit_bytes: Some(512 << 20),
        growth_bytes_per_second: 1_048_576.0,
        seconds_to_limit: Some(120.0),
        ..ContainerMemoryStatus::default()
    }
}

fn item(item: ingest_request::Item) -> IngestRequest {
    IngestRequest { item: Some(item) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_and_warnings_through_replica_b_cover_replica_a_agents() {
    let Some(url) = common::postgres_url("top_and_warnings_through_replica_b_cover_replica_a_agents").await
    else {
        return;
    };
    let database = common::fresh_database(&url, "fleet").await;
    let (replica_a, client_a) = common::serve_at(&database, ServerConfig::default()).await;
    let (replica_b, client_b) = common::serve_at(&database, ServerConfig::default()).await;

    let mut subscriber = client_b
        .event_client()
        .await
        .unwrap()
        .subscribe(SubscribeRequest {
            include_warnings: true,
            ..SubscribeRequest::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Warnings are not stored: one sent before B listens is gone. A kill
    // stored through A reaches B's subscriber only through B's relay, so
    // once it has, B is listening.
    common::ingest(&client_a, vec![common::event(1, "shop", 5)])
        .await
        .unwrap();
    let relayed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(response) = subscriber.message().await.unwrap() {
            if matches!(response.item, Some(subscribe_response::Item::Event(_))) {
                return;
            }
        }
    })
    .await;
    assert!(relayed.is_ok(), "replica B never relayed replica A's kill");

    // An agent on replica A: its status report, then a warning; the
    // stream stays open, as an agent's does.
    let (agent, items) = tokio::sync::mpsc::channel(8);
    agent
        .send(item(ingest_request::Item::Hello(AgentHello {
            node: "node-a".into(),
            agent_version: "0.1.0".into(),
            ..AgentHello::default()
        })))
        .await
        .unwrap();
    agent
        .send(item(ingest_request::Item::Status(ContainerStatusReport {
            containers: vec![status(400 << 20)],
        })))
        .await
        .unwrap();
    let warning = MemoryWarning {
        id: "node-a/0123abcd/29916666".into(),
        node: "node-a".into(),
        cgroup: CGROUP.into(),
        working_set_bytes: 400 << 20,
        limit_bytes: 512 << 20,
        ..MemoryWarning::default()
    };
    agent
        .send(item(ingest_request::Item::Warning(warning.clone())))
        .await
        .unwrap();
    let _acks = client_a
        .ingest_client()
        .await
        .unwrap()
        .ingest(ReceiverStream::new(items))
        .await
        .unwrap();

    // Top through B: shared within a second or two.
    let mut events_b = client_b.event_client().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let shown = loop {
        let top = events_b.top(TopRequest::default()).await.unwrap().into_inner();
        if let Some(found) = top.containers.into_iter().find(|c| c.cgroup == CGROUP) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica B's Top never showed replica A's container"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(shown, status(400 << 20));
    // A, which holds it in memory, shows it once, not twice.
    let mut events_a = client_a.event_client().await.unwrap();
    let top_a = events_a.top(TopRequest::default()).await.unwrap().into_inner();
    assert_eq!(top_a.containers.iter().filter(|c| c.cgroup == CGROUP).count(), 1);
    // A filter by node applies to shared statuses too.
    let elsewhere = events_b
        .top(TopRequest {
            nodes: vec!["node-z".into()],
            ..TopRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(elsewhere.containers.is_empty(), "{elsewhere:?}");

    // The warning reaches B's subscriber, once.
    let mut heard = Vec::new();
    let listen_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(Some(response))) = tokio::time::timeout_at(listen_until, subscriber.message()).await {
        if let Some(subscribe_response::Item::Warning(w)) = response.item {
            heard.push(w);
        }
    }
    assert_eq!(heard, [warning]);

    drop(agent);
    replica_a.stop().await.unwrap();
    replica_b.stop().await.unwrap();
}
