//! Nothing acknowledged is ever lost when the collector's storage fails:
//! real faults (a full filesystem under SQLite, a full tablespace and an
//! outage under PostgreSQL) under the real `oomlens-collector` binary and
//! `oomlens-agent run --standalone`, while an agent's spool and sender
//! stream events. Every event that was acknowledged is stored exactly once
//! after a restart, every one that was not is still in the agent's spool
//! and is delivered once the store can write again, the collector is not
//! ready meanwhile and recovers by itself.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oomlens_agent::app::AgentMetrics;
use oomlens_agent::ship::SharedSpool;
use oomlens_collector::store::{Inserted, Store};
use oomlens_proto::v1::OomEvent;
use oomlens_tests::agent::InProcessShipper;
use oomlens_tests::collector::{CollectorProcess, stored_ids, try_stored_ids};
use oomlens_tests::faults::{FullablePostgres, Tmpfs, fresh_database, postgres_required, postgres_url};
use oomlens_tests::{
    ScratchTree, free_port, metric, oom_kill_in, require_real_kernel, tmpfs_or_skip, unique,
};

const NODE: &str = "faults-node";

/// A kill-sized event (a minute of history at 10 Hz is ~25 KiB; a third
/// of that here, so that a small filesystem holds enough of them).
fn synthetic(n: u64) -> OomEvent {
    oomlens_tests::synthetic_kill(NODE, n, 200)
}

fn ids(range: std::ops::Range<u64>) -> HashSet<String> {
    range.map(|n| synthetic(n).id).collect()
}

/// Stored ids, each checked to be there once.
async fn stored_once(endpoint: &str) -> HashSet<String> {
    let ids = stored_ids(endpoint).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an event stored twice");
    unique
}

/// The agent's sender, retrying fast, with a small window and a short
/// drain.
fn start_shipper(spool: &SharedSpool, endpoint: &str, metrics: &Arc<AgentMetrics>) -> InProcessShipper {
    InProcessShipper::start(spool, endpoint, metrics, NODE, |config| {
        config.min_backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_millis(500);
        config.max_in_flight = 32;
        config.drain = Duration::from_millis(200);
    })
}

/// Appends events to the spool at a steady pace, as the pipeline does
/// with kills, until stopped; numbered on from `next`.
struct Producer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl Producer {
    fn start(spool: &SharedSpool, mut next: u64, produced: &Arc<AtomicU64>) -> Self {
        let spool = spool.clone();
        let produced = Arc::clone(produced);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = &mut stopped => return next,
                }
                spool.append(synthetic(next)).await.unwrap();
                next += 1;
                produced.store(next, Ordering::Relaxed);
            }
        });
        Self { stop, task }
    }

    /// Stops; returns the next number (events 0..it exist).
    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spooled_ids(spool: &SharedSpool) -> HashSet<String> {
    spool
        .with(|s| s.pending())
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// The storage fault a scenario puts under the collector.
enum Fault<'a> {
    /// This filesystem fills up, then is freed.
    FullDisk(&'a mut Tmpfs),
    /// The collector's PostgreSQL database refuses connections and its
    /// open ones are terminated (the server, shared, keeps running).
    Outage { server: String, database: String },
}

impl Fault<'_> {
    async fn begin(&mut self) {
        match self {
            Self::FullDisk(disk) => disk.fill(),
            Self::Outage { server, database } => {
                outage_sql(
                    server,
                    &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false"),
                )
                .await;
                outage_sql(
                    server,
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
                    ),
                )
                .await;
            }
        }
    }

    async fn end(&mut self) {
        match self {
            Self::FullDisk(disk) => disk.free(),
            Self::Outage { server, database } => {
                outage_sql(
                    server,
                    &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"),
                )
                .await;
            }
        }
    }

    /// Whether a collector can start (open its store) during the fault.
    fn collector_starts(&self) -> bool {
        matches!(self, Self::FullDisk(_))
    }
}

async fn outage_sql(server: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(server).await.unwrap();
    sqlx::raw_sql(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

fn count(log: &str, line: &str) -> usize {
    log.lines().filter(|l| l.contains(line)).count()
}

const CANNOT_WRITE: &str = "the event store cannot write";
const CAN_WRITE: &str = "the event store can write again";

/// The promise, under `fault`: events stream in while the store fails;
/// the collector turns not ready; what was acknowledged survives a
/// restart during the fault (where one can start) and what was not is
/// still spooled; once the fault ends the collector is ready again by
/// itself and every event is stored exactly once.
async fn nothing_acknowledged_is_lost(database: &str, mut fault: Fault<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProcess::start(database, dir.path());
    let metrics = Arc::new(AgentMetrics::new());
    let spool = SharedSpool::open(&dir.path().join("spool"), 256 << 20, metrics.spool.clone()).unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    // Off by one at times (an append is counted after it lands): enough
    // to wait on.
    let acked = || {
        produced
            .load(Ordering::Relaxed)
            .saturating_sub(spool.stats().events)
    };

    // Healthy: events flow and are acknowledged.
    let shipper = start_shipper(&spool, &collector.endpoint(), &metrics);
    let producer = Producer::start(&spool, 0, &produced);
    wait_for("acks", Duration::from_secs(30), || acked() >= 20).await;
    assert_eq!(collector.ready(), Some(true));
    assert_eq!(
        metric(&collector.metrics(), "oomlens_collector_store_writable"),
        1.0
    );

    // The fault, while events keep coming: not ready, nothing acked that
    // is not stored.
    fault.begin().await;
    wait_for("not ready", Duration::from_secs(60), || {
        collector.ready() == Some(false)
    })
    .await;
    assert_eq!(
        metric(&collector.metrics(), "oomlens_collector_store_writable"),
        0.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = producer.stop().await;
    shipper.stop().await;
    let waiting = spooled_ids(&spool).await;
    assert!(
        !waiting.is_empty(),
        "the fault kept some events from being stored"
    );
    let acknowledged: HashSet<String> = ids(0..next).difference(&waiting).cloned().collect();
    assert_eq!(count(&collector.log(), CANNOT_WRITE), 1, "{}", collector.log());
    eprintln!(
        "during the fault: {next} events, {} acknowledged, {} waiting in the spool",
        acknowledged.len(),
        waiting.len()
    );
    if fault.collector_starts() {
        // Whatever was acknowledged is committed: a restart keeps it.
        collector.kill();
        collector.restart();
        match try_stored_ids(&collector.endpoint()).await {
            Ok(ids) => {
                let stored: HashSet<String> = ids.iter().cloned().collect();
                assert_eq!(stored.len(), ids.len(), "an event stored twice");
                let lost: Vec<&String> = acknowledged.difference(&stored).collect();
                assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
            }
            // PostgreSQL on a full tablespace may refuse new connections
            // ("could not write init file") when its relation cache file
            // was invalidated: the restarted collector then cannot read
            // either. Acknowledged events left the spool, so the final
            // check (every event stored once) still finds any it lost.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                eprintln!(
                    "the store cannot be read during the fault ({}); acknowledged events are checked once it ends",
                    status.message()
                );
            }
            Err(status) => panic!("reading the store after a restart: {status}"),
        }
    }

    // The agent goes on sending while the fault lasts: the (maybe
    // restarted) collector finds out by itself that it cannot write.
    let shipper = start_shipper(&spool, &collector.endpoint(), &metrics);
    let producer = Producer::start(&spool, next, &produced);
    wait_for("not ready", Duration::from_secs(60), || {
        collector.ready() == Some(false)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The fault ends: ready again without a restart, everything delivered.
    fault.end().await;
    wait_for("ready again", Duration::from_secs(60), || {
        collector.ready() == Some(true)
    })
    .await;
    assert_eq!(
        metric(&collector.metrics(), "oomlens_collector_store_writable"),
        1.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = producer.stop().await;
    wait_for("an empty spool", Duration::from_secs(60), || {
        spool.stats().events == 0
    })
    .await;
    shipper.stop().await;
    let log = collector.log();
    assert_eq!(
        count(&log, CANNOT_WRITE),
        1,
        "one line when writes start failing:\n{log}"
    );
    assert_eq!(count(&log, CAN_WRITE), 1, "one line when they work again:\n{log}");

    // After a restart: every event exactly once.
    collector.kill();
    collector.restart();
    let stored = stored_once(&collector.endpoint()).await;
    assert_eq!(stored, ids(0..total), "every event stored, exactly once");
    eprintln!("{total} events, all stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_collector_on_a_full_disk_loses_nothing_acknowledged() {
    let mut disk = tmpfs_or_skip!("64m");
    let database = disk.path().join("events.db").display().to_string();
    nothing_acknowledged_is_lost(&database, Fault::FullDisk(&mut disk)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collector_on_a_full_tablespace_loses_nothing_acknowledged() {
    let test = "postgres_collector_on_a_full_tablespace_loses_nothing_acknowledged";
    let Some(server) = postgres_url(test).await else {
        return;
    };
    let mut postgres = match FullablePostgres::create(&server, "full_tablespace", "32m") {
        Ok(postgres) => postgres,
        Err(reason) => {
            assert!(!postgres_required(), "{test}: {reason}");
            eprintln!("SKIPPED {test}: {reason}");
            return;
        }
    };
    let database = postgres.url.clone();
    nothing_acknowledged_is_lost(&database, Fault::FullDisk(&mut postgres.disk)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collector_through_an_outage_loses_nothing_acknowledged() {
    let Some(server) = postgres_url("postgres_collector_through_an_outage_loses_nothing_acknowledged").await
    else {
        return;
    };
    let database = fresh_database(&server, "outage").await;
    let fault = Fault::Outage {
        server,
        database: "oomlens_t_outage".into(),
    };
    nothing_acknowledged_is_lost(&database, fault).await;
}

mod standalone;
