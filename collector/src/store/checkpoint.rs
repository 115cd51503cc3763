//! SQLite checkpoints off the writer's path.
//!
//! By default SQLite checkpoints inside the COMMIT that takes its
//! write-ahead log past 1000 pages: the writer copies the log into the
//! database and syncs it while the next batch, and the agents' acks, wait.
//! In `store_bench` that was a quarter of the writer's time in SQLite.
//! Here the writer's connection never checkpoints; after commits, a task
//! on a connection of its own runs passive checkpoints, which copy what is
//! committed while the writer goes on appending. The log starts over when
//! a write transaction begins with all of it copied, which a writer that
//! never pauses does not allow: past [`RESTART_FRAMES`] the task holds the
//! writer back ([`Checkpointer::writing`]) for one checkpoint of what it
//! has not copied yet, so that the next transaction starts the log afresh
//! (unless a reader still uses it, as with SQLite's own checkpoints). The
//! log stays bounded through a storm.
//!
//! Durability is unchanged: a commit is synced in the log before it is
//! acknowledged, and SQLite reads committed pages from the log until they
//! are checkpointed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::{Mutex, MutexGuard, Notify};
use tracing::{debug, info, warn};

/// Log pages past which the writer waits for a checkpoint so that the log
/// starts over (64 MiB at 4 KiB pages).
pub(super) const RESTART_FRAMES: i64 = 16_384;

/// At most one checkpoint per interval: a storm's commits share them.
/// What the writer commits in one interval is by how much the log may
/// pass [`RESTART_FRAMES`] (about 15 MB at 9,000 kills/s).
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// The writer's connection: its commits never checkpoint (the task does).
/// The log's file keeps its largest size (no `journal_size_limit`): cut
/// back each time the log started over, it grew again with every storm's
/// commits, and each sync of a growing file also syncs its size (8% of
/// ingest, store_bench).
pub(super) fn writer_options(shared: SqliteConnectOptions) -> SqliteConnectOptions {
    shared.pragma("wal_autocheckpoint", "0")
}

/// Runs checkpoints after commits until the last handle is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    wake: Arc<Notify>,
    /// Held by the writer through each transaction, and by the task while
    /// it brings the log to its start.
    gate: Arc<Mutex<()>>,
    task: tokio::task::AbortHandle,
}

impl Checkpointer {
    /// Checkpoints through `pool` (its own connection: checkpoints never
    /// take the writer's or a query's) at most once per `interval`,
    /// bringing the log back to its start past `restart_frames` pages.
    pub(super) fn start(pool: SqlitePool, restart_frames: i64, interval: Duration) -> Self {
        let wake = Arc::new(Notify::new());
        let gate = Arc::new(Mutex::new(()));
        let task = tokio::spawn(run(
            pool,
            Arc::clone(&wake),
            Arc::clone(&gate),
            restart_frames,
            interval,
        ))
        .abort_handle();
        Self { wake, gate, task }
    }

    /// To hold through a write transaction: uncontended unless the log is
    /// being brought back to its start.
    pub(super) async fn writing(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// Something was committed: checkpoint soon.
    pub(super) fn committed(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What `PRAGMA wal_checkpoint` reports.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// It could not finish (a writer or reader was in the way).
    busy: bool,
    /// Pages in the log.
    log: i64,
    /// Of them, copied into the database.
    copied: i64,
}

async fn checkpoint(pool: &SqlitePool, mode: &str) -> Result<Outcome, sqlx::Error> {
    let (busy, log, copied): (i64, i64, i64) = sqlx::query_as(&format!("PRAGMA wal_checkpoint({mode})"))
        .fetch_one(pool)
        .await?;
    Ok(Outcome {
        busy: busy != 0,
        log,
        copied,
    })
}

async fn run(
    pool: SqlitePool,
    wake: Arc<Notify>,
    gate: Arc<Mutex<()>>,
    restart_frames: i64,
    interval: Duration,
) {
    let mut failing = false;
    loop {
        wake.notified().await;
        let mut result = checkpoint(&pool, "PASSIVE").await;
        if let Ok(outcome) = result
            && outcome.log > restart_frames
        {
            // With the writer held back, a passive checkpoint copies what
            // the one above could not (at most an interval's commits) and
            // the next transaction starts the log over. SQLite's RESTART
            // mode would do this too, but waits for readers while holding
            // the write lock.
            debug!(
                pages = outcome.log,
                "write-ahead log past its bound: copying the rest to restart it"
            );
            let _writer_held = gate.lock().await;
            result = checkpoint(&pool, "PASSIVE").await;
        }
        let mut pause = interval;
        match result {
            Ok(outcome) => {
                if failing {
                    info!("SQLite checkpoints work again");
                    failing = false;
                }
                debug!(
                    busy = outcome.busy,
                    log = outcome.log,
                    copied = outcome.copied,
                    "checkpoint"
                );
                // Half way to the bound: no pause, so that a storm's log
                // passes it by little.
                if outcome.log > restart_frames / 2 {
                    pause = Duration::ZERO;
                }
            }
            Err(_) if pool.is_closed() => return,
            Err(error) => {
                // Once per outage: on a full disk this repeats with every
                // commit, and what is committed stays readable in the log.
                if !failing {
                    warn!(%error, "SQLite checkpoint failed; the write-ahead log grows until one succeeds");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// A writer that never pauses, its commits never checkpointing, with
    /// the checkpointer bringing the log back past 64 pages (checking every
    /// 5 ms, so that what one interval adds is small here): the log stays
    /// far below what was written, and every row is there.
    #[tokio::test]
    async fn the_log_stays_bounded_under_a_writer_that_never_pauses() {
        let dir = tempfile::tempdir().unwrap();
        // The store's own settings, synced commits included.
        let options = super::super::sqlite_options(&dir.path().join("c.db").display().to_string()).unwrap();
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options(options.clone()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)")
            .execute(&write)
            .await
            .unwrap();
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let checkpointer = Checkpointer::start(checkpoints.clone(), 64, Duration::from_millis(5));
        let wal = dir.path().join("c.db-wal");
        let (rows, pad) = (2_000i64, vec![7u8; 6_000]);
        // Two pages a row: never restarted, the log would pass 16 MB.
        let written = 2_000u64 * 2 * 4096;
        let mut largest = 0;
        for n in 0..rows {
            let gate = checkpointer.writing().await;
            sqlx::query("INSERT INTO t (n, pad) VALUES (?, ?)")
                .bind(n)
                .bind(&pad)
                .execute(&write)
                .await
                .unwrap();
            drop(gate);
            checkpointer.committed();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        assert!(
            largest < written / 8,
            "the log reached {largest} bytes of {written} written"
        );
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&write)
            .await
            .unwrap();
        assert_eq!(count, rows);
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&write)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        drop(checkpointer);
        write.close().await;
        checkpoints.close().await;
    }
}
