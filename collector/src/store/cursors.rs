//! Durable positions of the collector's own readers (the webhook sinks):
//! the last `seq` each has handled, so a restart resumes rather than
//! skips or repeats; and, on PostgreSQL, a session advisory lock per
//! reader, so that one replica at a time delivers to each sink.

use sqlx::Connection as _;

use super::{Backend, Store, StoreError, now_us, sql};

/// Advisory lock keys of readers start here (the insert and migration
/// locks are `INSERT_LOCK` and the next key).
const READER_LOCKS: i64 = 0x0072_6561_6465_7200;

/// The right to act as a reader, held until dropped. On PostgreSQL a
/// session advisory lock on a connection of its own (taken out of the
/// pool, so the lock never goes back into it); on SQLite, which one
/// collector uses alone, always held.
#[derive(Debug)]
pub struct Leadership {
    connection: Option<sqlx::PgConnection>,
}

impl Leadership {
    /// Whether the lock is still held: the connection that holds it
    /// answers (a broken one has lost it to the server).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.connection {
            None => true,
            Some(connection) => connection.ping().await.is_ok(),
        }
    }
}

/// A stable lock key for a reader's name (FNV-1a, folded into the
/// readers' range).
fn lock_key(reader: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in reader.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    READER_LOCKS + i64::try_from(hash >> 40).unwrap_or(0)
}

impl Store {
    /// The last seq `reader` handled; None for a reader never seen.
    pub async fn reader_cursor(&self, reader: &str) -> Result<Option<i64>, StoreError> {
        let query = match self.backend {
            Backend::Sqlite(_) => "SELECT seq FROM reader_cursors WHERE reader = ?",
            Backend::Postgres(_) => "SELECT seq FROM reader_cursors WHERE reader = $1",
        };
        match &self.backend {
            Backend::Sqlite(pools) => {
                sqlx::query_scalar(query)
                    .bind(reader)
                    .fetch_optional(&pools.read)
                    .await
            }
            Backend::Postgres(pool) => sqlx::query_scalar(query).bind(reader).fetch_optional(pool).await,
        }
        .map_err(sql("reading a reader's cursor"))
    }

    /// Records that `reader` has handled everything up to `seq`.
    pub async fn set_reader_cursor(&self, reader: &str, seq: i64) -> Result<(), StoreError> {
        self.write_reader_cursor(
            reader,
            seq,
            "DO UPDATE SET seq = excluded.seq, updated_us = excluded.updated_us",
        )
        .await
        .map_err(sql("saving a reader's cursor"))
    }

    /// Sets `reader`'s cursor to `seq` unless it has one.
    pub async fn init_reader_cursor(&self, reader: &str, seq: i64) -> Result<(), StoreError> {
        self.write_reader_cursor(reader, seq, "DO NOTHING")
            .await
            .map_err(sql("starting a reader's cursor"))
    }

    /// Inserts `reader`'s cursor, doing `on_conflict` when it has one.
    async fn write_reader_cursor(
        &self,
        reader: &str,
        seq: i64,
        on_conflict: &str,
    ) -> Result<(), sqlx::Error> {
        let values = match self.backend {
            Backend::Sqlite(_) => "?, ?, ?",
            Backend::Postgres(_) => "$1, $2, $3",
        };
        let query = format!(
            "INSERT INTO reader_cursors (reader, seq, updated_us) VALUES ({values}) ON CONFLICT (reader) {on_conflict}"
        );
        let now = now_us();
        match &self.backend {
            Backend::Sqlite(pools) => sqlx::query(&query)
                .bind(reader)
                .bind(seq)
                .bind(now)
                .execute(&pools.write)
                .await
                .map(|_| self.committed()),
            Backend::Postgres(pool) => sqlx::query(&query)
                .bind(reader)
                .bind(seq)
                .bind(now)
                .execute(pool)
                .await
                .map(drop),
        }
    }

    /// Takes the lead for `reader` if no other replica holds it; None when
    /// one does.
    pub async fn try_lead(&self, reader: &str) -> Result<Option<Leadership>, StoreError> {
        let pool = match &self.backend {
            Backend::Sqlite(_) => return Ok(Some(Leadership { connection: None })),
            Backend::Postgres(pool) => pool,
        };
        let mut connection = pool
            .acquire()
            .await
            .map_err(sql("connecting for a reader's lock"))?
            .detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(reader))
            .fetch_one(&mut connection)
            .await
            .map_err(sql("taking a reader's lock"))?;
        if taken {
            Ok(Some(Leadership {
                connection: Some(connection),
            }))
        } else {
            // Closing the connection is all the cleanup there is.
            let _ = connection.close().await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_stay_in_the_readers_range() {
        for name in ["", "webhook https://a.example/x", "webhook http://b:8080/"] {
            let key = lock_key(name);
            assert!(
                (READER_LOCKS..READER_LOCKS + (1 << 24)).contains(&key),
                "{name}: {key:x}"
            );
        }
        assert_ne!(lock_key("webhook a"), lock_key("webhook b"));
    }

    #[tokio::test]
    async fn a_reader_resumes_from_its_saved_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db").display().to_string();
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.reader_cursor("webhook a").await.unwrap(), None);
        store.init_reader_cursor("webhook a", 3).await.unwrap();
        store.init_reader_cursor("webhook a", 5).await.unwrap();
        assert_eq!(store.reader_cursor("webhook a").await.unwrap(), Some(3));
        store.set_reader_cursor("webhook a", 7).await.unwrap();
        store.set_reader_cursor("webhook a", 9).await.unwrap();
        store.set_reader_cursor("webhook b", 1).await.unwrap();
        store.close().await;
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.reader_cursor("webhook a").await.unwrap(), Some(9));
        assert_eq!(store.reader_cursor("webhook b").await.unwrap(), Some(1));
        assert!(
            store
                .try_lead("webhook a")
                .await
                .unwrap()
                .unwrap()
                .still_held()
                .await
        );
        store.close().await;
    }
}
