//! The schema, per backend, and the migrations that create it: each runs
//! once, recorded in `schema_migrations`, inside one transaction.

use crate::filter::{SqlValue, SqlWhere};

use super::{Backend, INSERT_LOCK, Store, StoreError, now_us, sql};

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    // One row the writer rewrites while the store cannot write, to tell
    // when it can again (`Store::probe_write`).
    (
        2,
        "CREATE TABLE store_probe (
        id INTEGER PRIMARY KEY,
        checked_us INTEGER NOT NULL,
        pad BLOB NOT NULL
    );",
    ), // Where each of the collector's own readers (webhook sinks) is.
    (
        3,
        "CREATE TABLE reader_cursors (
        reader TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        updated_us INTEGER NOT NULL
    );",
    ),
    // The verdict, to filter on; NULL for events stored before, until
    // `Store::backfill_verdicts` reads it from their bodies.
    (4, "ALTER TABLE events ADD COLUMN verdict INTEGER;"),
    // Later revisions of a kill replace the stored one (`Store::insert_batch`).
    (
        5,
        "ALTER TABLE events ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;",
    ),
];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    // EXTERNAL: stored out of line and uncompressed, so a probe needs as
    // many bytes on disk as it writes.
    (
        2,
        "CREATE TABLE store_probe (
        id BIGINT PRIMARY KEY,
        checked_us BIGINT NOT NULL,
        pad BYTEA NOT NULL
    );
    ALTER TABLE store_probe ALTER COLUMN pad SET STORAGE EXTERNAL;",
    ),
    (
        3,
        "CREATE TABLE reader_cursors (
        reader TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_us BIGINT NOT NULL
    );",
    ),
    (4, "ALTER TABLE events ADD COLUMN verdict BIGINT;"),
    (
        5,
        "ALTER TABLE events ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;",
    ),
    // Each node's latest status report, for `Top` from any replica
    // (store::fleet); SQLite has one collector and no such table.
    (
        6,
        "CREATE TABLE node_statuses (
        node TEXT PRIMARY KEY,
        reported_at TIMESTAMPTZ NOT NULL,
        report BYTEA NOT NULL
    );",
    ),
];

impl Store {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
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
            Backend::Sqlite(pools) => {
                let mut tx = pools.write.begin().await.map_err(sql("starting the migration"))?;
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
}
