//! Retention: deleting events past their age, then the oldest while the
//! store is over its size budget.

use std::time::Duration;

use crate::filter::{SqlValue, SqlWhere};

use super::{Backend, Store, StoreError, now_us, sql};

impl Store {
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
            Backend::Sqlite(pools) => bind_all!(sqlx::query(query), values)
                .execute(&pools.write)
                .await
                .map(|r| r.rows_affected()),
            Backend::Postgres(pool) => bind_all!(sqlx::query(query), values)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        };
        let deleted = done.map_err(sql("deleting old events"))?;
        self.committed();
        Ok(deleted)
    }
}
