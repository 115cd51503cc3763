//! Revisions of a stored kill (what the runtime reported after it): a
//! higher revision replaces the stored event under a new sequence number,
//! so subscribers and readers see it again; an equal or lower one is a
//! duplicate, in any order and within one batch; the analysis compares
//! the runtime's report with the kill. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{event, fresh_database, ingest, postgres_url, serve_at};
use oomlens_collector::server::ServerConfig;
use oomlens_proto::v1::{
    AckStatus, ContainerState, GetRequest, OomEvent, QueryRequest, RuntimeStatus, Scope, StatusMatch,
    SubscribeRequest, subscribe_response,
};

fn revised(mut kill: OomEvent, revision: u32, reason: &str) -> OomEvent {
    kill.revision = revision;
    kill.runtime_status = Some(RuntimeStatus {
        state: ContainerState::Exited as i32,
        exit_code: Some(137),
        reason: Some(reason.to_owned()),
        restart_count: Some(revision),
        settled: true,
        ..RuntimeStatus::default()
    });
    kill
}

fn statuses(acks: &[oomlens_proto::v1::IngestAck]) -> Vec<AckStatus> {
    acks.iter()
        .map(|a| AckStatus::try_from(a.status).unwrap())
        .collect()
}

async fn revisions_replace_and_stream(database: &str) {
    let (server, client) = serve_at(database, ServerConfig::default()).await;
    let mut kill = event(1, "shop", 30);
    kill.scope = Scope::PodLimit as i32;
    kill.silent = Some(false);
    let acks = ingest(&client, vec![kill.clone()]).await.unwrap();
    assert_eq!(statuses(&acks), [AckStatus::Stored]);

    let mut events = client.event_client().await.unwrap();
    let mut stream = events
        .subscribe(SubscribeRequest {
            cursor: "0".into(),
            ..SubscribeRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || loop {
        let response = stream.message().await.unwrap().unwrap();
        if let Some(subscribe_response::Item::Event(e)) = response.item {
            return (response.cursor, e);
        }
    };
    let (first_cursor, first) = next().await;
    assert_eq!((first.id.as_str(), first.revision), (kill.id.as_str(), 0));

    // The runtime's report: Error, exit 137, for a pod-limit kill.
    let acks = ingest(&client, vec![revised(kill.clone(), 1, "Error")])
        .await
        .unwrap();
    assert_eq!(statuses(&acks), [AckStatus::Stored]);
    let (second_cursor, second) = next().await;
    assert_eq!((second.id.as_str(), second.revision), (kill.id.as_str(), 1));
    assert!(second_cursor.parse::<i64>().unwrap() > first_cursor.parse::<i64>().unwrap());
    let analysis = second.analysis.unwrap();
    assert_eq!(analysis.status_match, StatusMatch::ErrorNotOomkilled as i32);
    assert_eq!(
        analysis.status_reasoning.as_deref(),
        Some(
            "Kubernetes shows Error (exit 137) for container app; the kernel killed it because the pod's memory \
             limit was reached, not the container's own"
        )
    );
    // Resends of either revision change nothing.
    let acks = ingest(&client, vec![kill.clone(), revised(kill.clone(), 1, "Error")])
        .await
        .unwrap();
    assert_eq!(statuses(&acks), [AckStatus::Duplicate, AckStatus::Duplicate]);
    let stored = events
        .get(GetRequest { id: kill.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.revision, 1);

    // A new kill and its revision in one batch, the revision first: the
    // revision is what is stored.
    let other = event(2, "shop", 30);
    let acks = ingest(
        &client,
        vec![revised(other.clone(), 1, "OOMKilled"), other.clone()],
    )
    .await
    .unwrap();
    assert_eq!(statuses(&acks), [AckStatus::Stored, AckStatus::Duplicate]);
    let stored = events
        .get(GetRequest { id: other.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.revision, 1);
    assert_eq!(
        stored.analysis.unwrap().status_match,
        StatusMatch::Consistent as i32
    );
    // Still one row per kill.
    let all = events
        .query(QueryRequest {
            page_size: 100,
            ..QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.events.len(), 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn revisions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    revisions_replace_and_stream(&dir.path().join("events.db").display().to_string()).await;
}

#[tokio::test]
async fn revisions_on_postgres() {
    let Some(url) = postgres_url("revisions_on_postgres").await else {
        return;
    };
    revisions_replace_and_stream(&fresh_database(&url, "revisions").await).await;
}
