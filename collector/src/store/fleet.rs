//! What PostgreSQL replicas share besides events: each node's latest
//! status report, so that `Top` from any replica covers the whole fleet,
//! and a channel that carries warnings to every replica's subscribers.
//! SQLite has one collector: nothing to share, and these do nothing.

use std::time::Duration;

use super::{Backend, Store, StoreError, sql};

/// The NOTIFY channel warnings travel on between replicas.
pub const WARNINGS_CHANNEL: &str = "oomlens_warnings";

/// The largest NOTIFY payload PostgreSQL takes (8000 bytes) less room for
/// the sender's name.
pub const MAX_NOTIFY_PAYLOAD: usize = 7_900;

impl Store {
    /// Replaces each node's shared status report (encoded
    /// `ContainerStatusReport`) with `reports`, stamped with the database's
    /// clock; at most one report per node.
    pub async fn share_statuses(&self, reports: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(());
        };
        if reports.is_empty() {
            return Ok(());
        }
        let (nodes, bodies): (Vec<String>, Vec<Vec<u8>>) = reports.into_iter().unzip();
        sqlx::query(
            "INSERT INTO node_statuses (node, reported_at, report) \
             SELECT node, now(), report FROM UNNEST($1::text[], $2::bytea[]) AS shared(node, report) \
             ON CONFLICT (node) DO UPDATE SET reported_at = excluded.reported_at, report = excluded.report",
        )
        .bind(nodes)
        .bind(bodies)
        .execute(pool)
        .await
        .map_err(sql("sharing status reports"))?;
        Ok(())
    }

    /// The nodes whose shared reports are at most `within` old (by the
    /// database's clock), newest first, at most `max_nodes`, each with
    /// when it was written (microseconds since the epoch): enough to tell
    /// which reports changed since the last read without reading them.
    pub async fn shared_report_times(
        &self,
        within: Duration,
        max_nodes: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(Vec::new());
        };
        sqlx::query_as(
            "SELECT node, CAST(EXTRACT(EPOCH FROM reported_at) * 1000000 AS BIGINT) FROM node_statuses \
             WHERE reported_at > now() - make_interval(secs => $1) \
             ORDER BY reported_at DESC LIMIT $2",
        )
        .bind(within.as_secs_f64())
        .bind(i64::try_from(max_nodes).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(sql("reading when status reports were shared"))
    }

    /// The shared reports of `nodes`: node, when written (as in
    /// [`Store::shared_report_times`]) and the encoded report.
    pub async fn shared_reports(&self, nodes: &[String]) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(Vec::new());
        };
        sqlx::query_as(
            "SELECT node, CAST(EXTRACT(EPOCH FROM reported_at) * 1000000 AS BIGINT), report \
             FROM node_statuses WHERE node = ANY($1)",
        )
        .bind(nodes)
        .fetch_all(pool)
        .await
        .map_err(sql("reading shared status reports"))
    }

    /// Deletes the reports of nodes not heard from for `older_than`; how
    /// many went.
    pub async fn forget_shared_statuses(&self, older_than: Duration) -> Result<u64, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(0);
        };
        let done =
            sqlx::query("DELETE FROM node_statuses WHERE reported_at < now() - make_interval(secs => $1)")
                .bind(older_than.as_secs_f64())
                .execute(pool)
                .await
                .map_err(sql("forgetting old status reports"))?;
        Ok(done.rows_affected())
    }

    /// Sends `payload` to every replica listening on [`WARNINGS_CHANNEL`].
    pub async fn notify_warning(&self, payload: &str) -> Result<(), StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WARNINGS_CHANNEL)
            .bind(payload)
            .execute(pool)
            .await
            .map_err(sql("relaying a warning"))?;
        Ok(())
    }
}
