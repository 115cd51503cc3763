//! The store on SQLite and on PostgreSQL: the same behaviour on both.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{BASE_SECS, event, fresh_database, postgres_url};
use oomlens_collector::filter::matches;
use oomlens_collector::store::{GroupColumn, Histories, Inserted, Store};
use oomlens_proto::v1::{EventFilter, Scope};
use prost_types::Timestamp;

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("events.db").display().to_string())
        .await
        .unwrap();
    (dir, store)
}

async fn idempotent_inserts(store: &Store) {
    let a = event(1, "shop", 10);
    let b = event(2, "shop", 10);
    let first = store.insert_batch(&[a.clone(), b.clone()]).await.unwrap();
    assert!(matches!(first[..], [Inserted::Stored(_), Inserted::Stored(_)]));
    // A resend (same id), also inside one batch twice.
    let again = store.insert_batch(&[a.clone(), a.clone(), b]).await.unwrap();
    assert_eq!(again, vec![Inserted::Duplicate; 3]);
    assert_eq!(store.totals().await.unwrap().0, 2);
    let got = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(got.event, a);
    assert_eq!(store.by_id_prefix(&a.id[..8], 2).await.unwrap().len(), 1);
    assert!(store.get("nope").await.unwrap().is_none());
}

async fn filters_pages_and_summaries(store: &Store) {
    let namespaces = ["shop", "payments", "batch"];
    let events: Vec<_> = (0..250u64)
        .map(|n| event(n, namespaces[usize::try_from(n % 3).unwrap()], 5))
        .collect();
    for chunk in events.chunks(64) {
        store.insert_batch(chunk).await.unwrap();
    }
    // Page through everything: newest first, each once.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = store.query(None, 100, token).await.unwrap();
        seen.extend(page.into_iter().map(|e| e.event));
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    let times: Vec<i64> = seen.iter().map(|e| e.time.unwrap().seconds).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(seen.iter().map(|e| &e.id).collect::<HashSet<_>>().len(), 250);
    // SQL and in-memory filtering agree.
    let filters = [
        EventFilter {
            namespaces: vec!["shop".into()],
            ..EventFilter::default()
        },
        EventFilter {
            namespaces: vec!["shop".into(), "batch".into()],
            scopes: vec![Scope::PodLimit as i32],
            ..EventFilter::default()
        },
        EventFilter {
            nodes: vec!["node-b".into()],
            since: Some(Timestamp {
                seconds: BASE_SECS + 100,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: BASE_SECS + 200,
                nanos: 0,
            }),
            ..EventFilter::default()
        },
        EventFilter {
            silent_only: true,
            pods: vec!["api-3".into()],
            workloads: vec!["Deployment/api".into()],
            ..EventFilter::default()
        },
        EventFilter {
            containers: vec!["sidecar".into()],
            ..EventFilter::default()
        },
    ];
    for filter in &filters {
        let (page, _) = store.query(Some(filter), 1000, None).await.unwrap();
        let from_sql: HashSet<String> = page.into_iter().map(|e| e.event.id).collect();
        let in_memory: HashSet<String> = events
            .iter()
            .filter(|e| matches(Some(filter), e))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(from_sql, in_memory, "{filter:?}");
    }
    let by_namespace = store.summary(None, GroupColumn::Namespace).await.unwrap();
    assert_eq!(by_namespace.len(), 3);
    assert_eq!(by_namespace.iter().map(|g| g.count).sum::<i64>(), 250);
    assert_eq!(by_namespace[0].key.as_deref(), Some("shop")); // 84 of 250
    assert_eq!(by_namespace[0].count, 84);
    let by_scope = store.summary(None, GroupColumn::Scope).await.unwrap();
    let pod_limit = by_scope
        .iter()
        .find(|g| g.key.as_deref() == Some(&(Scope::PodLimit as i32).to_string()))
        .unwrap();
    assert_eq!(pod_limit.count, 50);
    assert_eq!(
        pod_limit.silent,
        i64::try_from(
            events
                .iter()
                .filter(|e| e.scope == Scope::PodLimit as i32 && e.silent == Some(true))
                .count()
        )
        .unwrap()
    );
    // Backfill by sequence: in order, after the cursor only.
    let all = store
        .after_seq(0, None, 1000, Histories::Unpacked)
        .await
        .unwrap()
        .events;
    assert_eq!(all.len(), 250);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let rest = store
        .after_seq(all[199].seq, None, 1000, Histories::Unpacked)
        .await
        .unwrap()
        .events;
    assert_eq!(rest.len(), 50);
    assert_eq!(store.last_seq().await.unwrap(), all[249].seq);
}

async fn retention(store: &Store) {
    // Old events (BASE_SECS is in 2026-11) and recent ones.
    let mut recent = event(9001, "shop", 5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = i64::try_from(now).unwrap();
    recent.time = Some(Timestamp {
        seconds: now,
        nanos: 0,
    });
    store
        .insert_batch(&[event(1, "shop", 5), event(2, "shop", 5), recent])
        .await
        .unwrap();
    let deleted = store
        .enforce_retention(Some(Duration::from_secs(3600)), None)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(store.totals().await.unwrap().0, 1);
    // By size: keep at most one event's worth.
    store
        .insert_batch(&[event(3, "shop", 5), event(4, "shop", 5)])
        .await
        .unwrap();
    let (_, bytes) = store.totals().await.unwrap();
    let deleted = store
        .enforce_retention(None, Some(u64::try_from(bytes).unwrap() / 3))
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    let left = store.query(None, 10, None).await.unwrap().0;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event.id, event(4, "", 0).id, "the newest stays");
}

#[tokio::test]
async fn sqlite_inserts_are_idempotent() {
    let (_dir, store) = sqlite().await;
    idempotent_inserts(&store).await;
}

#[tokio::test]
async fn sqlite_filters_pages_and_summaries() {
    let (_dir, store) = sqlite().await;
    filters_pages_and_summaries(&store).await;
}

#[tokio::test]
async fn sqlite_retention() {
    let (_dir, store) = sqlite().await;
    retention(&store).await;
}

#[tokio::test]
async fn sqlite_reopens_with_its_events_and_skips_a_corrupt_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db").display().to_string();
    let store = Store::open(&path).await.unwrap();
    store
        .insert_batch(&[event(1, "shop", 5), event(2, "shop", 5)])
        .await
        .unwrap();
    store.close().await;
    // Damage one row behind the store's back.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    sqlx::query("UPDATE events SET body = X'FFFFFFFF' WHERE id = ?")
        .bind(event(1, "", 0).id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = Store::open(&path).await.unwrap();
    let (page, _) = store.query(None, 10, None).await.unwrap();
    assert_eq!(page.len(), 1, "the corrupt row is skipped, the other kept");
    assert_eq!(page[0].event.id, event(2, "", 0).id);
}

#[tokio::test]
async fn postgres_inserts_are_idempotent() {
    let Some(url) = postgres_url("postgres_inserts_are_idempotent").await else {
        return;
    };
    let store = Store::open(&fresh_database(&url, "idempotent").await)
        .await
        .unwrap();
    idempotent_inserts(&store).await;
}

#[tokio::test]
async fn postgres_filters_pages_and_summaries() {
    let Some(url) = postgres_url("postgres_filters_pages_and_summaries").await else {
        return;
    };
    let store = Store::open(&fresh_database(&url, "filters").await).await.unwrap();
    filters_pages_and_summaries(&store).await;
}

#[tokio::test]
async fn postgres_retention() {
    let Some(url) = postgres_url("postgres_retention").await else {
        return;
    };
    let store = Store::open(&fresh_database(&url, "retention").await)
        .await
        .unwrap();
    retention(&store).await;
}

#[tokio::test]
async fn postgres_migrations_run_once_for_concurrent_replicas() {
    let Some(url) = postgres_url("postgres_migrations_run_once_for_concurrent_replicas").await else {
        return;
    };
    let url = fresh_database(&url, "migrations").await;
    let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.insert_batch(&[event(1, "shop", 1)]).await.unwrap();
    assert_eq!(b.totals().await.unwrap().0, 1);
}
