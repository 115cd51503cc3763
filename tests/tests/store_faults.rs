//! Nothing acknowledged is ever lost when the collector's storage fails:
//! real faults on a small tmpfs that fills.
#![allow(clippy::unwrap_used)]

use oomlens_collector::store::{Inserted, Store};
use oomlens_proto::v1::{MemoryHistory, MemorySample, OomEvent};
use oomlens_tests::tmpfs_or_skip;

const NODE: &str = "faults-node";

/// A kill-sized event (a minute of history at 10 Hz is ~25 KiB; a third
/// of that here, so that a small filesystem holds enough of them).
fn synthetic(n: u64) -> OomEvent {
    let t = 1_795_000_000 + i64::try_from(n).unwrap();
    OomEvent {
        id: oomlens_proto::event_id(NODE, "boot", n),
        node: Some(NODE.into()),
        time: Some(prost_types::Timestamp { seconds: t, nanos: 0 }),
        scope: 1,
        constraint: 1,
        history: Some(MemoryHistory {
            cgroup: format!("/kubepods/pod{n}/c"),
            samples: (0..200)
                .map(|i| MemorySample {
                    time: Some(prost_types::Timestamp {
                        seconds: t - 20 + i / 10,
                        nanos: i32::try_from((i % 10) * 100_000_000).unwrap(),
                    }),
                    working_set_bytes: Some(1_000_000 + u64::try_from(i).unwrap() * 1000),
                    usage_bytes: Some(1_100_000 + u64::try_from(i).unwrap() * 1000),
                    ..MemorySample::default()
                })
                .collect(),
            limit_bytes: Some(2_000_000),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

/// The store alone on a full disk: a write it reports stored is committed
/// (it survives a reopen), a failed one leaves no transaction open (the
/// next writes work as soon as there is room, from every pooled
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_on_a_full_disk_reports_stored_only_what_it_committed() {
    let mut disk = tmpfs_or_skip!("4m");
    let path = disk.path().join("events.db").display().to_string();
    let store = Store::open(&path).await.unwrap();
    let mut stored = Vec::new();
    let mut next = 0u64;
    let mut batch = || {
        let events: Vec<OomEvent> = (next..next + 4).map(synthetic).collect();
        next += 4;
        events
    };
    let mut insert = async |store: &Store, events: Vec<OomEvent>| -> bool {
        match store.insert_batch(&events).await {
            Ok(results) => {
                for (event, result) in events.iter().zip(results) {
                    assert!(matches!(result, Inserted::Stored(_)));
                    stored.push(event.id.clone());
                }
                true
            }
            Err(_) => false,
        }
    };
    for _ in 0..5 {
        assert!(insert(&store, batch()).await);
    }
    disk.fill();
    let mut failed = 0;
    for _ in 0..20 {
        if !insert(&store, batch()).await {
            failed += 1;
        }
    }
    assert!(failed > 0, "the full disk made writes fail");
    disk.free();
    // More rounds than pooled connections: none is left in a transaction.
    for _ in 0..8 {
        assert!(
            insert(&store, batch()).await,
            "writes work again once there is room"
        );
    }
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    for id in &stored {
        assert!(
            store.get(id).await.unwrap().is_some(),
            "{id} reported stored, gone"
        );
    }
    assert_eq!(
        store.totals().await.unwrap().0,
        i64::try_from(stored.len()).unwrap()
    );
    store.close().await;
}
