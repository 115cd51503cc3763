//! The summary over time: kills per group and interval, from the filter's
//! `since` (or the first kill), widened to at most 200 intervals; on SQLite
//! and PostgreSQL, and on the web page's summary.
#![allow(clippy::unwrap_used)]

mod common;

use common::{event, fresh_database, ingest, postgres_url, serve_at};
use oomlens_collector::server::ServerConfig;
use oomlens_proto::v1::{EventFilter, GroupBy, OomEvent, Scope, SummaryRequest, SummaryResponse};
use prost_types::Timestamp;

const START: i64 = 1_795_000_000;

/// Kill `n` of namespace `ns`, `minute` minutes and `n` seconds after START.
fn kill(n: u64, ns: &str, minute: i64) -> OomEvent {
    let mut e = event(n, ns, 0);
    e.time = Some(Timestamp {
        seconds: START + minute * 60 + i64::try_from(n % 50).unwrap(),
        nanos: 0,
    });
    e.scope = Scope::ContainerLimit as i32;
    e
}

/// Kills by namespace from START for `span_s`, asked per minute.
async fn by_minute(events: &mut oomlens_common::client::EventClient, span_s: i64) -> SummaryResponse {
    let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
    events
        .summary(SummaryRequest {
            filter: Some(EventFilter {
                since: at(START),
                until: at(START + span_s),
                ..EventFilter::default()
            }),
            group_by: GroupBy::Namespace as i32,
            bucket_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn timeline_counts_per_interval(database: &str) {
    let (server, client) = serve_at(database, ServerConfig::default()).await;
    // shop: 2 kills in minute 0, 1 in minute 2; db: 1 in minute 1, 3 in
    // minute 4; one before the window that must not count.
    let kills = vec![
        kill(1, "shop", 0),
        kill(2, "shop", 0),
        kill(3, "shop", 2),
        kill(4, "db", 1),
        kill(5, "db", 4),
        kill(6, "db", 4),
        kill(7, "db", 4),
        kill(8, "shop", -3),
    ];
    ingest(&client, kills).await.unwrap();
    let mut events = client.event_client().await.unwrap();
    let response = by_minute(&mut events, 300).await;
    assert_eq!(response.bucket_seconds, 60);
    assert_eq!(response.timeline_start.unwrap().seconds, START);
    let timeline = |ns: &str| {
        response
            .groups
            .iter()
            .find(|g| g.key == ns)
            .map(|g| g.timeline.clone())
            .unwrap()
    };
    assert_eq!(timeline("shop"), [2, 0, 1, 0, 0]);
    assert_eq!(timeline("db"), [0, 1, 0, 0, 3]);
    assert_eq!(response.total, 7);

    // A day at one-minute intervals is widened to 200 intervals.
    let wide = by_minute(&mut events, 86_400).await;
    assert_eq!(wide.bucket_seconds, 432);
    let db = wide.groups.iter().find(|g| g.key == "db").unwrap();
    assert_eq!(db.timeline.len(), 200);
    assert_eq!(db.timeline.iter().sum::<u64>(), 4);
    assert_eq!(db.timeline[0], 4);
    // Without bucket_seconds: no timeline.
    let plain = events
        .summary(SummaryRequest {
            group_by: GroupBy::Namespace as i32,
            ..SummaryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plain.groups.iter().all(|g| g.timeline.is_empty()));
    assert_eq!(plain.bucket_seconds, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn timeline_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    timeline_counts_per_interval(&dir.path().join("events.db").display().to_string()).await;
}

#[tokio::test]
async fn timeline_on_postgres() {
    let Some(url) = postgres_url("timeline_on_postgres").await else {
        return;
    };
    timeline_counts_per_interval(&fresh_database(&url, "timeline").await).await;
}
