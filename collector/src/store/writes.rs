//! Writing events: batched, idempotent inserts in one transaction, and
//! the PostgreSQL notification that wakes other replicas' subscribers.

use oomlens_proto::v1::OomEvent;
use prost::Message as _;

use crate::filter::{EventColumns, SqlValue, SqlWhere};

use super::{Backend, INSERT_LOCK, Store, StoreError, now_us, sql};

/// The channel PostgreSQL replicas hear new events on.
pub const NOTIFY_CHANNEL: &str = "oomlens_events";

/// Events per INSERT statement (13 parameters each, far below both
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
}
