//! Writing events: batched, idempotent inserts in one transaction, and
//! the PostgreSQL notification that wakes other replicas' subscribers.
//!
//! Every write transaction runs on a connection of its own
//! ([`WriteConnection`]) that goes back to the pool only after its COMMIT
//! succeeded. After any failure it is rolled back and closed: a failed
//! statement or COMMIT can leave the database's idea of the transaction
//! and sqlx's apart (SQLite rolls back by itself on a full disk, or keeps
//! the transaction open after a failed COMMIT), and sqlx then runs the
//! next "transaction" on that connection as a SAVEPOINT inside one that
//! never ends: its "commits" store nothing durable and every other writer
//! gets `database is locked`.

use std::time::Duration;

use futures_util::TryFutureExt as _;
use futures_util::future::BoxFuture;
use oomlens_proto::v1::OomEvent;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire as _, Database, Pool};
use tracing::debug;

use crate::filter::{EventColumns, SqlValue, SqlWhere};

use super::{Backend, INSERT_LOCK, Store, StoreError, now_us, sql};

/// The channel PostgreSQL replicas hear new events on.
pub const NOTIFY_CHANNEL: &str = "oomlens_events";

/// Events per INSERT statement (15 parameters each, far below both
/// backends' parameter limits).
const INSERT_CHUNK: usize = 64;

/// What happened to one inserted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Newly stored with this sequence number.
    Stored(i64),
    /// Already stored (a resend): nothing changed.
    Duplicate,
}

impl Store {
    /// Stores `events` in one transaction (one disk sync for the batch).
    /// A later revision of a stored kill replaces it, under a new sequence
    /// number (readers and streams see it again); an equal or older one is
    /// a duplicate. Of one id twice in the batch, the highest revision is
    /// stored and the others are duplicates.
    pub async fn insert_batch(&self, events: &[OomEvent]) -> Result<Vec<Inserted>, StoreError> {
        let received = now_us();
        let style = self.style();
        let mut newest: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let slot = newest.entry(event.id.as_str()).or_insert(i);
            if event.revision > events[*slot].revision {
                *slot = i;
            }
        }
        let kept: Vec<&OomEvent> = events
            .iter()
            .enumerate()
            .filter(|(i, e)| newest.get(e.id.as_str()) == Some(i))
            .map(|(_, e)| e)
            .collect();
        let mut statements = Vec::new();
        // Revisions first take the place of what they revise.
        for event in kept.iter().filter(|e| e.revision > 0) {
            let mut w = SqlWhere::new();
            let id = w.bind(style, SqlValue::Text(event.id.clone()));
            let revision = w.bind(style, SqlValue::Int(i64::from(event.revision)));
            statements.push((
                format!("DELETE FROM events WHERE id = {id} AND revision < {revision} RETURNING id, seq"),
                w.values,
            ));
        }
        let deletes = statements.len();
        // Multi-row statements: one round trip per chunk, not per event.
        for chunk in kept.chunks(INSERT_CHUNK) {
            let mut w = SqlWhere::new();
            let mut rows = Vec::with_capacity(chunk.len());
            for event in chunk {
                let c = EventColumns::of(event);
                let body = super::body::encode(event);
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
                    SqlValue::Int(c.verdict),
                    SqlValue::Int(i64::try_from(body.len()).unwrap_or(i64::MAX)),
                    SqlValue::Bytes(body),
                    SqlValue::Int(i64::from(event.revision)),
                ]
                .into_iter()
                .map(|v| w.bind(style, v))
                .collect();
                rows.push(format!("({})", marks.join(", ")));
            }
            let query = format!(
                "INSERT INTO events (id, time_us, received_us, node, namespace, pod, container, \
                 workload, scope, constraint_kind, silent, verdict, bytes, body, revision) VALUES {} \
                 ON CONFLICT (id) DO NOTHING RETURNING id, seq",
                rows.join(", ")
            );
            statements.push((query, w.values));
        }
        let mut stored: Vec<(String, i64)> = Vec::with_capacity(events.len());
        // The statements, on either backend's transaction.
        macro_rules! insert_all {
            ($tx:expr) => {
                for (i, (query, values)) in statements.into_iter().enumerate() {
                    let rows: Vec<(String, i64)> = bind_owned!(sqlx::query_as(&query), values)
                        .fetch_all(&mut *$tx)
                        .await
                        .map_err(sql("inserting events"))?;
                    // What a revision replaced is not stored anew.
                    if i >= deletes {
                        stored.extend(rows);
                    }
                }
            };
        }
        match &self.backend {
            Backend::Sqlite(pools) => {
                let _gate = pools.checkpointer.writing().await;
                let mut conn = WriteConnection::acquire(&pools.write).await?;
                let done = async {
                    let mut tx = conn.begin().await.map_err(sql("starting an insert"))?;
                    insert_all!(tx);
                    tx.commit().await.map_err(sql("committing an insert"))
                }
                .await;
                conn.finish(done).await?;
                self.committed();
            }
            Backend::Postgres(pool) => {
                let mut conn = WriteConnection::acquire(pool).await?;
                let done = async {
                    let mut tx = conn.begin().await.map_err(sql("starting an insert"))?;
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
                    tx.commit().await.map_err(sql("committing an insert"))
                }
                .await;
                conn.finish(done).await?;
            }
        }
        // Returned rows are in no promised order: match them by id. Of an
        // id twice in one batch only the kept copy can be stored.
        let by_id: std::collections::HashMap<String, i64> = stored.into_iter().collect();
        Ok(events
            .iter()
            .enumerate()
            .map(|(i, event)| match by_id.get(&event.id) {
                Some(&seq) if newest.get(event.id.as_str()) == Some(&i) => Inserted::Stored(seq),
                _ => Inserted::Duplicate,
            })
            .collect())
    }
}

impl Store {
    /// Whether a write of `bytes` commits now: rewrites the one row of
    /// `store_probe` in a transaction of its own, as an insert would.
    pub async fn probe_write(&self, bytes: usize) -> Result<(), StoreError> {
        let pad = vec![0u8; bytes];
        let now = now_us();
        macro_rules! probe {
            ($pool:expr, $statement:expr) => {{
                let mut conn = WriteConnection::acquire($pool).await?;
                let done = async {
                    let mut tx = conn.begin().await.map_err(sql("starting a probe write"))?;
                    sqlx::query($statement)
                        .bind(now)
                        .bind(pad)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("writing the probe row"))?;
                    tx.commit().await.map_err(sql("committing the probe write"))
                }
                .await;
                conn.finish(done).await
            }};
        }
        let probed = match &self.backend {
            Backend::Sqlite(pools) => probe!(
                &pools.write,
                "INSERT INTO store_probe (id, checked_us, pad) VALUES (1, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET checked_us = excluded.checked_us, pad = excluded.pad"
            ),
            Backend::Postgres(pool) => probe!(
                pool,
                "INSERT INTO store_probe (id, checked_us, pad) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET checked_us = excluded.checked_us, pad = excluded.pad"
            ),
        };
        if probed.is_ok() {
            self.committed();
        }
        probed
    }
}

/// How long the cleanup of a failed write may take (a ROLLBACK, then a
/// close) before the connection is simply dropped.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(2);

/// A pooled connection for one write transaction. It returns to the pool
/// only through [`WriteConnection::finish`] with a committed transaction;
/// otherwise (an error, or the future dropped half-way) it is closed, so
/// that no connection in an unknown transaction state is ever reused.
pub(super) struct WriteConnection<DB: Database> {
    conn: Option<PoolConnection<DB>>,
    committed: bool,
}

/// Ends whatever transaction the database itself still has open on a
/// connection about to be closed after a failed write, outside sqlx's
/// bookkeeping (which is what may be wrong).
pub(super) trait EndTransaction {
    fn end_transaction(&mut self) -> BoxFuture<'_, Result<(), sqlx::Error>>;
}

impl EndTransaction for sqlx::SqliteConnection {
    /// SQLite keeps a transaction open after some failed COMMITs.
    fn end_transaction(&mut self) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(sqlx::Executor::execute(self, "ROLLBACK").map_ok(|_| ()))
    }
}

impl EndTransaction for sqlx::PgConnection {
    /// Nothing: PostgreSQL ends the transaction on a failed COMMIT, and
    /// the server rolls back any other when the session closes (a ROLLBACK
    /// here would only log "there is no transaction in progress").
    fn end_transaction(&mut self) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<DB: Database> WriteConnection<DB>
where
    DB::Connection: EndTransaction,
{
    pub(super) async fn acquire(pool: &Pool<DB>) -> Result<Self, StoreError> {
        let conn = pool.acquire().await.map_err(sql("connecting for a write"))?;
        Ok(Self {
            conn: Some(conn),
            committed: false,
        })
    }

    /// A transaction on this connection.
    pub(super) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, DB>, sqlx::Error> {
        match self.conn.as_mut() {
            Some(conn) => conn.begin().await,
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// After the transaction: a committed one returns the connection to
    /// the pool. After a failure the database may still be inside the
    /// transaction whatever sqlx thinks: it is ended explicitly
    /// ([`EndTransaction`]) and the connection closed, which ends any
    /// transaction on either backend; both steps are best effort.
    pub(super) async fn finish<T>(mut self, done: Result<T, StoreError>) -> Result<T, StoreError> {
        if done.is_ok() {
            self.committed = true;
            return done;
        }
        if let Some(mut conn) = self.conn.take() {
            // Closed even if this cleanup is itself cut short.
            conn.close_on_drop();
            match tokio::time::timeout(CLEANUP_DEADLINE, conn.end_transaction()).await {
                Ok(Ok(())) => debug!("the failed write's transaction ended"),
                // Usually "no transaction is active": the database or
                // sqlx's queued rollback already ended it.
                Ok(Err(error)) => debug!(%error, "ending the failed write's transaction"),
                Err(_) => debug!("ending the failed write's transaction timed out"),
            }
            match tokio::time::timeout(CLEANUP_DEADLINE, conn.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => debug!(%error, "closing the failed write's connection"),
                Err(_) => debug!("closing the failed write's connection timed out"),
            }
        }
        done
    }
}

impl<DB: Database> Drop for WriteConnection<DB> {
    fn drop(&mut self) {
        // Not finished with a commit (the write's future was dropped
        // half-way): its state is unknown, so it is closed, not reused.
        if let Some(conn) = self.conn.as_mut()
            && !self.committed
        {
            conn.close_on_drop();
        }
    }
}
