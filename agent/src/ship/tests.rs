//! The shared spool's early path: keys given out before the write, and
//! answers that overtake it. A held spool lock stands in for a stalled
//! disk, so each order of write and answer is made to happen.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use oomlens_proto::v1::OomEvent;

use super::*;

fn event(id: &str) -> OomEvent {
    OomEvent {
        id: id.to_owned(),
        ..OomEvent::default()
    }
}

fn event_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".event"))
        .collect();
    names.sort();
    names
}

/// Holds the spool's lock on a blocking thread until the returned sender
/// is dropped or sent to: every write waits meanwhile.
async fn stall(spool: &SharedSpool) -> std_mpsc::Sender<()> {
    let (release, released) = std_mpsc::channel::<()>();
    let (held, holding) = tokio::sync::oneshot::channel();
    let stalled = spool.clone();
    tokio::spawn(async move {
        stalled
            .with(move |_| {
                let _ = held.send(());
                let _ = released.recv();
            })
            .await;
    });
    holding.await.unwrap();
    release
}

/// A spool whose disk is stalled, with the sender's side of it.
struct Stalled {
    spool: SharedSpool,
    metrics: SpoolMetrics,
    early: mpsc::Receiver<EarlyEvent>,
    /// Dropping it, or sending to it, lets writes through.
    release: std_mpsc::Sender<()>,
}

async fn stalled(dir: &Path) -> Stalled {
    let metrics = SpoolMetrics::default();
    let spool = SharedSpool::open(dir, 1 << 20, metrics.clone()).unwrap();
    let early = spool.early_events(8);
    let release = stall(&spool).await;
    Stalled {
        spool,
        metrics,
        early,
        release,
    }
}

#[tokio::test]
async fn events_are_offered_early_with_their_keys_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SharedSpool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    let mut early = spool.early_events(8);
    let mut keys = Vec::new();
    for id in ["a", "b", "c"] {
        keys.push(spool.append(event(id)).await.unwrap());
    }
    for (key, id) in keys.iter().zip(["a", "b", "c"]) {
        let (offered, event) = early.try_recv().unwrap();
        assert_eq!((offered, event.id.as_str()), (*key, id));
    }
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(event_files(dir.path()).len(), 3);
    // A full receiver misses events; they are spooled all the same.
    let spool_full = SharedSpool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    let mut one = spool_full.early_events(1);
    let first = spool_full.append(event("d")).await.unwrap();
    spool_full.append(event("e")).await.unwrap();
    assert_eq!(one.try_recv().unwrap().0, first);
    assert!(one.try_recv().is_err());
    assert!(first > keys[2], "a reopened spool never reuses a key");
    assert_eq!(spool_full.stats().events, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_before_its_write_began_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let Stalled {
        spool,
        metrics,
        mut early,
        release,
    } = stalled(dir.path()).await;
    let appending = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.append_retrying(&event("k1")).await })
    };
    // The sender has it while the disk is stalled, and the collector
    // stored it.
    let (key, offered) = tokio::time::timeout(Duration::from_secs(5), early.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offered.id, "k1");
    // The answer needs no spool lock.
    tokio::time::timeout(Duration::from_secs(1), spool.settle(key, Settlement::Stored))
        .await
        .expect("an early answer does not wait for the write");
    release.send(()).unwrap();
    appending.await.unwrap().unwrap();
    assert!(event_files(dir.path()).is_empty());
    assert_eq!(spool.stats().events, 0);
    assert_eq!(metrics.writes_skipped(), 1);
    assert_eq!(locked(&spool.keys).writing(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_rejected_before_its_write_is_written_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let Stalled {
        spool,
        metrics,
        mut early,
        release,
    } = stalled(dir.path()).await;
    let appending = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.append(event("bad")).await })
    };
    let (key, _) = early.recv().await.unwrap();
    spool.settle(key, Settlement::Rejected).await;
    drop(release);
    assert_eq!(appending.await.unwrap().unwrap(), key);
    assert!(event_files(dir.path()).is_empty());
    assert_eq!(event_files(&dir.path().join("rejected")).len(), 1);
    assert_eq!(spool.stats().rejected, 1);
    assert_eq!(spool.stats().events, 0);
    assert_eq!(metrics.writes_skipped(), 0);
}

#[tokio::test]
async fn an_answer_after_the_write_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SharedSpool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    let _early = spool.early_events(8);
    let key = spool.append(event("late")).await.unwrap();
    assert_eq!(event_files(dir.path()).len(), 1);
    spool.settle(key, Settlement::Stored).await;
    assert!(event_files(dir.path()).is_empty());
    assert_eq!(spool.stats().events, 0);
}

#[tokio::test]
async fn a_write_that_fails_gives_its_key_up() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = SharedSpool::open(&spool_dir, 1 << 20, SpoolMetrics::default()).unwrap();
    let mut early = spool.early_events(8);
    // The directory turns into a file: every write fails.
    std::fs::remove_dir(&spool_dir).unwrap();
    std::fs::write(&spool_dir, b"not a directory").unwrap();
    assert!(spool.append(event("lost")).await.is_err());
    // It was offered all the same: the collector may still store it.
    let (key, _) = early.try_recv().unwrap();
    assert_eq!(locked(&spool.keys).writing(), 0);
    // Its answer finds nothing to remove, and nothing waits for it.
    spool.settle(key, Settlement::Stored).await;
    assert_eq!(locked(&spool.keys).writing(), 0);
    assert_eq!(spool.stats().events, 0);
}
