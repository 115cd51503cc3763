//! Event storage through sqlx: SQLite (one file, WAL; the default) or
//! PostgreSQL (a `postgres://` URL; several collector replicas share it).
//!
//! Events are stored whole (protobuf, histories delta-encoded: `body`)
//! with their filterable fields in indexed columns. `seq` orders events by storage: it is the subscription
//! cursor. Inserts are idempotent by event id. On PostgreSQL every insert
//! transaction takes one advisory lock, so `seq` order is commit order
//! across replicas (a reader that has seen `seq` N has seen everything
//! before it), and notifies `oomlens_events` so that every replica's
//! subscribers hear of it.
//!
//! This module opens the store and holds what every part shares; the
//! schema and its migrations, writes, queries and retention each have
//! their own module.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use oomlens_proto::v1::OomEvent;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tracing::{info, warn};

use crate::filter::Placeholders;

/// Concurrent SQLite queries; the writer has a connection of its own.
const SQLITE_READ_CONNECTIONS: u32 = 4;

/// Advisory lock key serialising inserts (ASCII "oomlens"); migrations
/// take the next key.
const INSERT_LOCK: i64 = 0x006f_6f6d_6c65_6e73;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {target}: {source}")]
    Open { target: String, source: sqlx::Error },
    #[error("database migration {version} failed: {source}")]
    Migrate { version: i64, source: sqlx::Error },
    #[error("database error while {doing}: {source}")]
    Sql {
        doing: &'static str,
        source: sqlx::Error,
    },
    #[error("stored event {seq} cannot be decoded: {source}")]
    Corrupt { seq: i64, source: body::BodyError },
    #[error("invalid page token {0:?}")]
    PageToken(String),
}

fn sql(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { doing, source }
}

/// An event with its storage sequence number.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: OomEvent,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePools),
    Postgres(PgPool),
}

/// SQLite takes one writer at a time, so writes get a pool of their own,
/// of one connection, and reads another. In one shared pool, a burst of
/// queries (the web UI, SREs, subscribers catching up) could hold every
/// connection while the ingest's batch, and so the agents' acks, waited
/// for one; a second writer only waited on SQLite's lock. The write
/// connection has no memory map: it mostly appends, and the map would be
/// re-established as the file grows. A third connection checkpoints the
/// write-ahead log (`checkpoint`), off the writer's path.
#[derive(Debug, Clone)]
struct SqlitePools {
    read: SqlitePool,
    write: SqlitePool,
    checkpoints: SqlitePool,
    checkpointer: Arc<checkpoint::Checkpointer>,
}

/// The event store. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

// The binding macros come before the submodules: `macro_rules!` is seen
// only by code after it.

/// Binds owned `values` to a query, in order (no copy of event bodies).
macro_rules! bind_owned {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                SqlValue::Text(text) => query.bind(text),
                SqlValue::Int(int) => query.bind(int),
                SqlValue::Bytes(bytes) => query.bind(bytes),
                SqlValue::Null => query.bind(None::<String>),
            };
        }
        query
    }};
}

/// Binds `values` to a query, in order.
macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                SqlValue::Text(text) => query.bind(text.clone()),
                SqlValue::Int(int) => query.bind(*int),
                SqlValue::Bytes(bytes) => query.bind(bytes.clone()),
                SqlValue::Null => query.bind(None::<String>),
            };
        }
        query
    }};
}

mod body;
mod checkpoint;
mod cursors;
mod fleet;
mod queries;
mod retention;
mod schema;
mod writes;

pub use body::{BodyError, Histories};
pub use cursors::Leadership;
pub use fleet::{MAX_NOTIFY_PAYLOAD, WARNINGS_CHANNEL};
pub use queries::{GroupColumn, GroupRow, PageToken, READ_BUDGET, SeqPage};
pub use writes::{Inserted, NOTIFY_CHANNEL};

impl Store {
    /// Opens (creating if needed) and migrates the database at `target`: a
    /// `postgres://` / `postgresql://` URL, or a SQLite file path (also
    /// `sqlite://path`).
    pub async fn open(target: &str) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            target: redact(target),
            source,
        };
        let backend = if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(target)
                .await
                .map_err(open_err)?;
            Backend::Postgres(pool)
        } else {
            let path = target.strip_prefix("sqlite://").unwrap_or(target);
            // Created 0600 before SQLite creates it with its default mode.
            crate::private::create_sqlite_file(path);
            let options = sqlite_options(path).map_err(open_err)?;
            // Writes first: this pool creates the file and its WAL.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(checkpoint::writer_options(options.clone()))
                .await
                .map_err(open_err)?;
            let checkpoints = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options.clone());
            // Lazy: its connections open after the migration and the
            // statistics below, and load both.
            let read = SqlitePoolOptions::new()
                .max_connections(SQLITE_READ_CONNECTIONS)
                .connect_lazy_with(
                    options
                        // Reads through a memory map rather than a pread
                        // per page: Query p99 at 1,000,000 events 1.3-1.5
                        // ms instead of 2-3 (store_bench). SQLite caps it
                        // just under 2 GiB; beyond, pread. The cost: a disk
                        // read error ends the process (SIGBUS) rather than
                        // one query; what was acked is on disk and agents
                        // resend the rest (docs/collector.md).
                        .pragma("mmap_size", "2147418112")
                        // A write here would be a bug: it belongs to the
                        // write pool.
                        .pragma("query_only", "ON"),
                );
            Backend::Sqlite(SqlitePools {
                read,
                write,
                checkpointer: Arc::new(checkpoint::Checkpointer::start(
                    checkpoints.clone(),
                    checkpoint::RESTART_FRAMES,
                    checkpoint::INTERVAL,
                )),
                checkpoints,
            })
        };
        let store = Self { backend };
        store.migrate().await?;
        store.optimize(true).await;
        info!(database = %redact(target), backend = store.backend_name(), "event store open");
        Ok(store)
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The PostgreSQL pool, for LISTEN.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    fn style(&self) -> Placeholders {
        match self.backend {
            Backend::Sqlite(_) => Placeholders::Question,
            Backend::Postgres(_) => Placeholders::Dollar,
        }
    }

    /// Refreshes the planner's statistics (SQLite: `PRAGMA optimize`,
    /// which analyses only what changed; PostgreSQL's autovacuum does this
    /// itself). Without them SQLite may scan a day of all namespaces
    /// instead of one namespace's index range.
    pub async fn optimize(&self, at_open: bool) {
        if let Backend::Sqlite(pools) = &self.backend {
            let pragma = if at_open {
                "PRAGMA optimize=0x10002"
            } else {
                "PRAGMA optimize"
            };
            if let Err(error) = sqlx::query(pragma).execute(&pools.write).await {
                warn!(%error, "PRAGMA optimize failed; queries may be slower");
            }
        }
    }

    /// After a write on SQLite: its log is checkpointed soon.
    fn committed(&self) {
        if let Backend::Sqlite(pools) = &self.backend {
            pools.checkpointer.committed();
        }
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pools) => {
                pools.read.close().await;
                pools.write.close().await;
                pools.checkpoints.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// What every connection to the SQLite file at `path` shares.
fn sqlite_options(path: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk before the agent is told it is stored.
        .synchronous(SqliteSynchronous::Full)
        // Bodies are stored packed (~8 KiB with a full history): 16 KiB
        // pages held one each, half empty; 4 KiB pages (the default) chain
        // them with little waste, and every index leaf an insert dirties
        // costs a quarter as much to write (only applies to a new file).
        .page_size(4096)
        .busy_timeout(Duration::from_secs(10)))
}

/// The target without a password, for logs and errors.
pub fn redact(target: &str) -> String {
    match (target.find("://"), target.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &target[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &target[..scheme + 3], &target[at..]),
                None => target.to_owned(),
            }
        }
        _ => target.to_owned(),
    }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://oomlens:s3cret@db:5432/oomlens"),
            "postgres://oomlens:***@db:5432/oomlens"
        );
        assert_eq!(
            redact("/var/lib/oomlens/oomlens.db"),
            "/var/lib/oomlens/oomlens.db"
        );
    }

    fn event(n: u64) -> OomEvent {
        OomEvent {
            id: format!("{n:032x}"),
            node: Some("n".into()),
            ..OomEvent::default()
        }
    }

    #[tokio::test]
    async fn sqlite_reads_and_the_writer_never_wait_for_each_other_and_reads_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("e.db").display().to_string())
            .await
            .unwrap();
        store.insert_batch(&[event(1)]).await.unwrap();
        let Backend::Sqlite(pools) = &store.backend else {
            unreachable!()
        };
        // The one write connection, held in an open write transaction,
        // as a long insert batch holds it.
        let mut writer = pools.write.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *writer)
            .await
            .unwrap();
        sqlx::query("DELETE FROM events")
            .execute(&mut *writer)
            .await
            .unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), store.query(None, 10, None))
            .await
            .expect("a query waits for no write")
            .unwrap();
        assert_eq!(
            read.0.len(),
            1,
            "the reader sees the last commit, not the open write"
        );
        // A second write waits for the first rather than failing on a busy
        // database.
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.insert_batch(&[event(2)]).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "the writer's connection is still taken");
        sqlx::query("ROLLBACK").execute(&mut *writer).await.unwrap();
        drop(writer);
        second.await.unwrap().unwrap();
        assert_eq!(store.totals().await.unwrap().0, 2);
        // Queries holding every read connection do not hold up a write.
        let mut readers = Vec::new();
        for _ in 0..SQLITE_READ_CONNECTIONS {
            readers.push(pools.read.acquire().await.unwrap());
        }
        tokio::time::timeout(Duration::from_secs(5), store.insert_batch(&[event(3)]))
            .await
            .expect("a write waits for no query")
            .unwrap();
        drop(readers);
        assert_eq!(store.totals().await.unwrap().0, 3);
        // Reads go through connections that refuse writes: a write that
        // took the read pool by mistake fails instead of racing the writer.
        let refused = sqlx::query("DELETE FROM events").execute(&pools.read).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(store.totals().await.unwrap().0, 3);
        store.close().await;
    }
}
