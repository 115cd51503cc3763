//! Event storage through sqlx: SQLite (one file, WAL; the default) or
//! PostgreSQL (a `postgres://` URL; several collector replicas share it).
//!
//! Events are stored whole (protobuf) with their filterable fields in
//! indexed columns. `seq` orders events by storage: it is the subscription
//! cursor. Inserts are idempotent by event id. On PostgreSQL every insert
//! transaction takes one advisory lock, so `seq` order is commit order
//! across replicas (a reader that has seen `seq` N has seen everything
//! before it), and notifies `oomlens_events` so that every replica's
//! subscribers hear of it.

use std::str::FromStr as _;
use std::time::Duration;

use oomlens_proto::v1::{EventFilter, OomEvent};
use prost::Message as _;
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tracing::{info, warn};

use crate::filter::{EventColumns, Placeholders, SqlValue, SqlWhere, to_sql};

/// The channel PostgreSQL replicas hear new events on.
pub const NOTIFY_CHANNEL: &str = "oomlens_events";

/// Events per INSERT statement (13 parameters each, far below both
/// backends' parameter limits).
const INSERT_CHUNK: usize = 64;

/// Advisory lock key serialising inserts (ASCII "oomlens").
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
    Corrupt { seq: i64, source: prost::DecodeError },
    #[error("invalid page token {0:?}")]
    PageToken(String),
}

fn sql(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { doing, source }
}

/// What happened to one inserted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Newly stored with this sequence number.
    Stored(i64),
    /// Already stored (a resend): nothing changed.
    Duplicate,
}

/// An event with its storage sequence number.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: OomEvent,
}

/// One group of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// None: events without the grouped field (e.g. no namespace).
    pub key: Option<String>,
    pub count: i64,
    pub silent: i64,
    pub first_us: i64,
    pub last_us: i64,
}

/// What a summary groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    Scope,
    Namespace,
    Node,
    Workload,
}

impl GroupColumn {
    fn sql(self) -> &'static str {
        match self {
            Self::Scope => "CAST(scope AS TEXT)",
            Self::Namespace => "namespace",
            Self::Node => "node",
            Self::Workload => "workload",
        }
    }
}

/// Position in a newest-first listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub time_us: i64,
    pub seq: i64,
}

impl PageToken {
    pub fn encode(self) -> String {
        format!("{}.{}", self.time_us, self.seq)
    }

    pub fn decode(text: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::PageToken(text.to_owned());
        let (time, seq) = text.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            time_us: time.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The event store. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        time_us INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        node TEXT NOT NULL,
        namespace TEXT,
        pod TEXT,
        container TEXT,
        workload TEXT,
        scope INTEGER NOT NULL,
        constraint_kind INTEGER NOT NULL,
        silent INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX events_time ON events (time_us, seq);
    CREATE INDEX events_namespace_time ON events (namespace, time_us, seq);
    CREATE INDEX events_node_time ON events (node, time_us, seq);
    CREATE INDEX events_pod_time ON events (pod, time_us, seq);",
)];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time_us BIGINT NOT NULL,
        received_us BIGINT NOT NULL,
        node TEXT NOT NULL,
        namespace TEXT,
        pod TEXT,
        container TEXT,
        workload TEXT,
        scope BIGINT NOT NULL,
        constraint_kind BIGINT NOT NULL,
        silent BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE INDEX events_time ON events (time_us, seq);
    CREATE INDEX events_namespace_time ON events (namespace, time_us, seq);
    CREATE INDEX events_node_time ON events (node, time_us, seq);
    CREATE INDEX events_pod_time ON events (pod, time_us, seq);",
)];

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

fn decode_rows(rows: Vec<(i64, Vec<u8>)>) -> Vec<StoredEvent> {
    rows.into_iter()
        .filter_map(|(seq, body)| match OomEvent::decode(body.as_slice()) {
            Ok(event) => Some(StoredEvent { seq, event }),
            Err(source) => {
                // One bad row must not hide the others.
                warn!(error = %StoreError::Corrupt { seq, source }, "skipping a stored event");
                None
            }
        })
        .collect()
}

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
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .map_err(open_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit is on disk before the agent is told it is stored.
                .synchronous(SqliteSynchronous::Full)
                // Events are ~25 KiB with a full history: bigger pages, fewer
                // overflow pages per event (only applies to a new file).
                .page_size(16384)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(open_err)?;
            Backend::Sqlite(pool)
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

    async fn migrate(&self) -> Result<(), StoreError> {
        const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
                              (version BIGINT PRIMARY KEY, applied_us BIGINT NOT NULL)";
        let now = now_us();
        let mut w = SqlWhere::new();
        let (version, applied) = (
            w.bind(self.style(), SqlValue::Int(0)),
            w.bind(self.style(), SqlValue::Int(0)),
        );
        let is_done = format!("SELECT version FROM schema_migrations WHERE version = {version}");
        let record =
            format!("INSERT INTO schema_migrations (version, applied_us) VALUES ({version}, {applied})");
        // The same steps on either backend's transaction.
        macro_rules! apply {
            ($tx:expr, $migrations:expr) => {
                sqlx::query(LEDGER)
                    .execute(&mut *$tx)
                    .await
                    .map_err(sql("creating schema_migrations"))?;
                for (version, script) in $migrations {
                    let done: Option<i64> = sqlx::query_scalar(&is_done)
                        .bind(version)
                        .fetch_optional(&mut *$tx)
                        .await
                        .map_err(sql("reading schema_migrations"))?;
                    if done.is_some() {
                        continue;
                    }
                    sqlx::raw_sql(script)
                        .execute(&mut *$tx)
                        .await
                        .map_err(|source| StoreError::Migrate {
                            version: *version,
                            source,
                        })?;
                    sqlx::query(&record)
                        .bind(version)
                        .bind(now)
                        .execute(&mut *$tx)
                        .await
                        .map_err(sql("recording a migration"))?;
                }
                $tx.commit()
                    .await
                    .map_err(sql("committing the migration"))?;
            };
        }
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(sql("starting the migration"))?;
                apply!(tx, SQLITE_MIGRATIONS);
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(sql("starting the migration"))?;
                // Replicas starting together migrate one at a time.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(INSERT_LOCK + 1)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("locking for the migration"))?;
                apply!(tx, POSTGRES_MIGRATIONS);
            }
        }
        Ok(())
    }

    /// Stores `events` in one transaction (one disk sync for the batch).
    pub async fn insert_batch(&self, events: &[OomEvent]) -> Result<Vec<Inserted>, StoreError> {
        let received = now_us();
        let style = self.style();
        // Multi-row statements: one round trip per chunk, not per event.
        let mut statements = Vec::new();
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut w = SqlWhere::new();
            let mut rows = Vec::with_capacity(chunk.len());
            for event in chunk {
                let c = EventColumns::of(event);
                let body = event.encode_to_vec();
                let text = |v: Option<String>| v.map_or(SqlValue::Null, SqlValue::Text);
                let marks: Vec<String> = [
                    SqlValue::Text(event.id.clone()),
                    SqlValue::Int(c.time_us),
                    SqlValue::Int(received),
                    SqlValue::Text(c.node),
                    text(c.namespace),
                    text(c.pod),
                    text(c.container),
                    text(c.workload),
                    SqlValue::Int(c.scope),
                    SqlValue::Int(c.constraint),
                    SqlValue::Int(c.silent),
                    SqlValue::Int(i64::try_from(body.len()).unwrap_or(i64::MAX)),
                    SqlValue::Bytes(body),
                ]
                .into_iter()
                .map(|v| w.bind(style, v))
                .collect();
                rows.push(format!("({})", marks.join(", ")));
            }
            let query = format!(
                "INSERT INTO events (id, time_us, received_us, node, namespace, pod, container, \
                 workload, scope, constraint_kind, silent, bytes, body) VALUES {} \
                 ON CONFLICT (id) DO NOTHING RETURNING id, seq",
                rows.join(", ")
            );
            statements.push((query, w.values));
        }
        let mut stored: Vec<(String, i64)> = Vec::with_capacity(events.len());
        // The statements, on either backend's transaction.
        macro_rules! insert_all {
            ($tx:expr) => {
                for (query, values) in statements {
                    let rows: Vec<(String, i64)> = bind_owned!(sqlx::query_as(&query), values)
                        .fetch_all(&mut *$tx)
                        .await
                        .map_err(sql("inserting events"))?;
                    stored.extend(rows);
                }
            };
        }
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(sql("starting an insert"))?;
                insert_all!(tx);
                tx.commit().await.map_err(sql("committing an insert"))?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(sql("starting an insert"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(INSERT_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("taking the insert lock"))?;
                insert_all!(tx);
                if let Some(max) = stored.iter().map(|(_, seq)| *seq).max() {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(NOTIFY_CHANNEL)
                        .bind(max.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("notifying replicas"))?;
                }
                tx.commit().await.map_err(sql("committing an insert"))?;
            }
        }
        // Returned rows are in no promised order: match them by id. An id
        // twice in one batch is stored once; the later copy is a duplicate.
        let mut by_id: std::collections::HashMap<String, i64> = stored.into_iter().collect();
        Ok(events
            .iter()
            .map(|event| {
                by_id
                    .remove(&event.id)
                    .map_or(Inserted::Duplicate, Inserted::Stored)
            })
            .collect())
    }

    async fn fetch_events(&self, query: &str, values: &[SqlValue]) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = match &self.backend {
            Backend::Sqlite(pool) => bind_all!(sqlx::query_as(query), values)
                .fetch_all(pool)
                .await
                .map_err(sql("reading events"))?,
            Backend::Postgres(pool) => bind_all!(sqlx::query_as(query), values)
                .fetch_all(pool)
                .await
                .map_err(sql("reading events"))?,
        };
        Ok(decode_rows(rows))
    }

    /// One event by id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let mut w = SqlWhere::new();
        let mark = w.bind(self.style(), SqlValue::Text(id.to_owned()));
        let query = format!("SELECT seq, body FROM events WHERE id = {mark}");
        Ok(self.fetch_events(&query, &w.values).await?.into_iter().next())
    }

    /// Events whose id starts with `prefix` (at most `limit`), for ids
    /// people type from a table.
    pub async fn by_id_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        // Ids are lowercase hex: nothing to escape for LIKE.
        if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let mut w = SqlWhere::new();
        let pattern = w.bind(
            self.style(),
            SqlValue::Text(format!("{}%", prefix.to_ascii_lowercase())),
        );
        let limit = w.bind(self.style(), SqlValue::Int(i64::from(limit)));
        let query =
            format!("SELECT seq, body FROM events WHERE id LIKE {pattern} ORDER BY seq LIMIT {limit}");
        self.fetch_events(&query, &w.values).await
    }

    /// Events matching `filter`, newest first, `page_size` at a time;
    /// returns the token of the next page when there may be one.
    pub async fn query(
        &self,
        filter: Option<&EventFilter>,
        page_size: u32,
        after: Option<PageToken>,
    ) -> Result<(Vec<StoredEvent>, Option<PageToken>), StoreError> {
        let style = self.style();
        let mut w = to_sql(filter, style);
        if let Some(token) = after {
            let t1 = w.bind(style, SqlValue::Int(token.time_us));
            let t2 = w.bind(style, SqlValue::Int(token.time_us));
            let s = w.bind(style, SqlValue::Int(token.seq));
            w.clauses
                .push(format!("(time_us < {t1} OR (time_us = {t2} AND seq < {s}))"));
        }
        let limit = w.bind(style, SqlValue::Int(i64::from(page_size)));
        let query = format!(
            "SELECT seq, body FROM events{} ORDER BY time_us DESC, seq DESC LIMIT {limit}",
            w.sql()
        );
        let events = self.fetch_events(&query, &w.values).await?;
        let next = (events.len() == page_size as usize)
            .then(|| events.last())
            .flatten()
            .map(|last| PageToken {
                time_us: crate::filter::event_time_us(&last.event),
                seq: last.seq,
            });
        Ok((events, next))
    }

    /// Events stored after `seq` that match `filter`, oldest first, at most
    /// `limit`: subscription backfill.
    pub async fn after_seq(
        &self,
        seq: i64,
        filter: Option<&EventFilter>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let style = self.style();
        let mut w = to_sql(filter, style);
        let mark = w.bind(style, SqlValue::Int(seq));
        w.clauses.push(format!("seq > {mark}"));
        let limit = w.bind(style, SqlValue::Int(i64::from(limit)));
        let query = format!(
            "SELECT seq, body FROM events{} ORDER BY seq LIMIT {limit}",
            w.sql()
        );
        self.fetch_events(&query, &w.values).await
    }

    /// The highest stored sequence number (0 when empty).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let query = "SELECT COALESCE(MAX(seq), 0) FROM events";
        let seq: i64 = match &self.backend {
            Backend::Sqlite(pool) => sqlx::query_scalar(query).fetch_one(pool).await,
            Backend::Postgres(pool) => sqlx::query_scalar(query).fetch_one(pool).await,
        }
        .map_err(sql("reading the last sequence number"))?;
        Ok(seq)
    }

    /// Number of stored events and their encoded size.
    pub async fn totals(&self) -> Result<(i64, i64), StoreError> {
        let query = "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM events";
        match &self.backend {
            Backend::Sqlite(pool) => sqlx::query_as(query).fetch_one(pool).await,
            Backend::Postgres(pool) => sqlx::query_as(query).fetch_one(pool).await,
        }
        .map_err(sql("counting events"))
    }

    /// Counts grouped by `by`, largest first.
    pub async fn summary(
        &self,
        filter: Option<&EventFilter>,
        by: GroupColumn,
    ) -> Result<Vec<GroupRow>, StoreError> {
        let w = to_sql(filter, self.style());
        let key = by.sql();
        let query = format!(
            "SELECT {key} AS k, COUNT(*) AS n, CAST(COALESCE(SUM(silent), 0) AS BIGINT) AS s, \
             MIN(time_us) AS first_us, MAX(time_us) AS last_us FROM events{} \
             GROUP BY {key} ORDER BY n DESC, k",
            w.sql()
        );
        macro_rules! rows {
            ($pool:expr) => {
                bind_all!(sqlx::query(&query), &w.values)
                    .fetch_all($pool)
                    .await
                    .map_err(sql("summarising events"))?
                    .into_iter()
                    .map(|row| GroupRow {
                        key: row.get("k"),
                        count: row.get("n"),
                        silent: row.get("s"),
                        first_us: row.get("first_us"),
                        last_us: row.get("last_us"),
                    })
                    .collect()
            };
        }
        Ok(match &self.backend {
            Backend::Sqlite(pool) => rows!(pool),
            Backend::Postgres(pool) => rows!(pool),
        })
    }

    /// Deletes events older than `max_age`, then the oldest ones while the
    /// stored events exceed `max_bytes`. Returns how many were deleted.
    pub async fn enforce_retention(
        &self,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        let style = self.style();
        let mut deleted = 0;
        if let Some(age) = max_age {
            let mut w = SqlWhere::new();
            let cutoff = now_us() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
            let mark = w.bind(style, SqlValue::Int(cutoff));
            deleted += self
                .execute(&format!("DELETE FROM events WHERE time_us < {mark}"), &w.values)
                .await?;
        }
        if let Some(max_bytes) = max_bytes {
            let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
            loop {
                let (count, bytes) = self.totals().await?;
                if bytes <= max_bytes || count == 0 {
                    break;
                }
                // Delete the oldest tenth (at least one) per round.
                let mut w = SqlWhere::new();
                let n = w.bind(style, SqlValue::Int((count / 10).max(1)));
                deleted += self
                    .execute(
                        &format!(
                            "DELETE FROM events WHERE seq IN \
                             (SELECT seq FROM events ORDER BY seq LIMIT {n})"
                        ),
                        &w.values,
                    )
                    .await?;
            }
        }
        Ok(deleted)
    }

    async fn execute(&self, query: &str, values: &[SqlValue]) -> Result<u64, StoreError> {
        let done = match &self.backend {
            Backend::Sqlite(pool) => bind_all!(sqlx::query(query), values)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Backend::Postgres(pool) => bind_all!(sqlx::query(query), values)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        };
        done.map_err(sql("deleting old events"))
    }

    /// Refreshes the planner's statistics (SQLite: `PRAGMA optimize`,
    /// which analyses only what changed; PostgreSQL's autovacuum does this
    /// itself). Without them SQLite may scan a day of all namespaces
    /// instead of one namespace's index range.
    pub async fn optimize(&self, at_open: bool) {
        if let Backend::Sqlite(pool) = &self.backend {
            let pragma = if at_open {
                "PRAGMA optimize=0x10002"
            } else {
                "PRAGMA optimize"
            };
            if let Err(error) = sqlx::query(pragma).execute(pool).await {
                warn!(%error, "PRAGMA optimize failed; queries may be slower");
            }
        }
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
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

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let token = PageToken {
            time_us: 1_700_000_000_000_000,
            seq: 42,
        };
        assert_eq!(PageToken::decode(&token.encode()).unwrap(), token);
        assert!(PageToken::decode("nonsense").is_err());
        assert!(PageToken::decode("1.x").is_err());
    }
}
