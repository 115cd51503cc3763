//! Reading events back: by id, filtered pages newest first, backfill by
//! sequence number, totals and grouped summaries.

use oomlens_proto::v1::EventFilter;
use prost::Message as _;
use sqlx::Row as _;
use tracing::warn;

use crate::filter::{EventColumns, SqlValue, SqlWhere, to_sql};

use super::{Backend, Histories, Store, StoreError, StoredEvent, sql};

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

/// Encoded bytes of events one read returns, at most (one larger event
/// alone is still returned): pages and backfill end early beyond it, so a
/// response stays far below the gRPC message limit and memory is bounded.
pub const READ_BUDGET: usize = 4 << 20;

fn decode_row(seq: i64, body: &[u8], histories: Histories) -> Option<StoredEvent> {
    match super::body::decode_as(body, histories) {
        Ok(event) => Some(StoredEvent { seq, event }),
        Err(source) => {
            // One bad row must not hide the others.
            warn!(error = %StoreError::Corrupt { seq, source }, "skipping a stored event");
            None
        }
    }
}

/// A page of events in stored order.
#[derive(Debug, Default)]
pub struct SeqPage {
    pub events: Vec<StoredEvent>,
    /// There may be more after this seq (the last row read).
    pub more_after: Option<i64>,
}

/// Events read, and whether the read stopped at its byte budget before
/// the rows ran out.
pub(super) struct Read {
    pub(super) events: Vec<StoredEvent>,
    pub(super) cut: bool,
    /// Rows read (decoded or not), and the seq of the last one.
    pub(super) rows: usize,
    pub(super) last_seq: Option<i64>,
}

impl Store {
    /// Rows of `(seq, body)`, streamed and decoded one by one until their
    /// bodies pass `budget` bytes.
    async fn fetch_events(
        &self,
        query: &str,
        values: &[SqlValue],
        budget: usize,
    ) -> Result<Read, StoreError> {
        self.fetch_events_as(query, values, budget, Histories::Unpacked)
            .await
    }

    async fn fetch_events_as(
        &self,
        query: &str,
        values: &[SqlValue],
        budget: usize,
        histories: Histories,
    ) -> Result<Read, StoreError> {
        use futures_util::TryStreamExt as _;
        let mut read = Read {
            events: Vec::new(),
            cut: false,
            rows: 0,
            last_seq: None,
        };
        let mut bytes = 0usize;
        // Counted as returned (protobuf), not as stored: the budget bounds
        // what a read holds, and a stored body is a fraction of its event
        // unpacked. Read as stored, histories stay packed, and so are
        // counted; a plain subscriber's catch-up encodes them one by one.
        let mut take = |(seq, body): (i64, Vec<u8>)| {
            let event = decode_row(seq, &body, histories);
            let size = event.as_ref().map_or(body.len(), |e| e.event.encoded_len());
            if bytes > 0 && bytes + size > budget {
                read.cut = true;
                return false;
            }
            bytes += size;
            read.rows += 1;
            read.last_seq = Some(seq);
            read.events.extend(event);
            true
        };
        match &self.backend {
            Backend::Sqlite(pools) => {
                let mut rows =
                    bind_all!(sqlx::query_as::<_, (i64, Vec<u8>)>(query), values).fetch(&pools.read);
                while let Some(row) = rows.try_next().await.map_err(sql("reading events"))? {
                    if !take(row) {
                        break;
                    }
                }
            }
            Backend::Postgres(pool) => {
                let mut rows = bind_all!(sqlx::query_as::<_, (i64, Vec<u8>)>(query), values).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(sql("reading events"))? {
                    if !take(row) {
                        break;
                    }
                }
            }
        }
        Ok(read)
    }

    /// One event by id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let mut w = SqlWhere::new();
        let mark = w.bind(self.style(), SqlValue::Text(id.to_owned()));
        let query = format!("SELECT seq, body FROM events WHERE id = {mark}");
        Ok(self
            .fetch_events(&query, &w.values, READ_BUDGET)
            .await?
            .events
            .into_iter()
            .next())
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
        Ok(self.fetch_events(&query, &w.values, READ_BUDGET).await?.events)
    }

    /// Events matching `filter`, newest first, `page_size` at a time (fewer
    /// when their bytes pass [`READ_BUDGET`]); returns the token of the
    /// next page when there may be one.
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
        let read = self.fetch_events(&query, &w.values, READ_BUDGET).await?;
        let full = read.rows == page_size as usize;
        let next = (full || read.cut)
            .then(|| read.events.last())
            .flatten()
            .map(|last| PageToken {
                time_us: crate::filter::event_time_us(&last.event),
                seq: last.seq,
            });
        Ok((read.events, next))
    }

    /// Events stored after `seq` that match `filter`, oldest first, at most
    /// `limit` (fewer when their bytes pass [`READ_BUDGET`]), their
    /// histories as `histories` says: subscription backfill, the replica
    /// relay, outbound destinations.
    pub async fn after_seq(
        &self,
        seq: i64,
        filter: Option<&EventFilter>,
        limit: u32,
        histories: Histories,
    ) -> Result<SeqPage, StoreError> {
        let style = self.style();
        let mut w = to_sql(filter, style);
        let mark = w.bind(style, SqlValue::Int(seq));
        w.clauses.push(format!("seq > {mark}"));
        let wanted = w.bind(style, SqlValue::Int(i64::from(limit)));
        let query = format!(
            "SELECT seq, body FROM events{} ORDER BY seq LIMIT {wanted}",
            w.sql()
        );
        let read = self
            .fetch_events_as(&query, &w.values, READ_BUDGET, histories)
            .await?;
        let more = read.cut || read.rows == limit as usize;
        Ok(SeqPage {
            events: read.events,
            more_after: read.last_seq.filter(|_| more),
        })
    }

    /// Fills the `verdict` column of events stored before it existed, from
    /// their bodies, a page at a time; the number filled. Run in the
    /// background after start: until it is done, a verdict filter misses
    /// those events.
    pub async fn backfill_verdicts(&self) -> Result<u64, StoreError> {
        let style = self.style();
        let mut after = 0i64;
        let mut filled = 0u64;
        loop {
            let mut w = SqlWhere::new();
            let mark = w.bind(style, SqlValue::Int(after));
            let query = format!(
                "SELECT seq, body FROM events WHERE verdict IS NULL AND seq > {mark} ORDER BY seq LIMIT 500"
            );
            let read = self.fetch_events(&query, &w.values, READ_BUDGET).await?;
            // Past undecodable rows too (they keep NULL and match no verdict).
            let Some(last) = read.last_seq else {
                return Ok(filled);
            };
            after = last;
            if read.events.is_empty() {
                continue;
            }
            // One statement a page: one commit, not one per event.
            let mut u = SqlWhere::new();
            let mut cases = String::new();
            let mut seqs = Vec::with_capacity(read.events.len());
            for stored in &read.events {
                let seq = u.bind(style, SqlValue::Int(stored.seq));
                let verdict = u.bind(style, SqlValue::Int(EventColumns::of(&stored.event).verdict));
                cases.push_str(&format!(" WHEN {seq} THEN {verdict}"));
                seqs.push(stored.seq);
            }
            let list: Vec<String> = seqs
                .into_iter()
                .map(|seq| u.bind(style, SqlValue::Int(seq)))
                .collect();
            let update = format!(
                "UPDATE events SET verdict = CASE seq{cases} END WHERE seq IN ({})",
                list.join(", ")
            );
            match &self.backend {
                Backend::Sqlite(pools) => bind_all!(sqlx::query(&update), &u.values)
                    .execute(&pools.write)
                    .await
                    .map(drop),
                Backend::Postgres(pool) => bind_all!(sqlx::query(&update), &u.values)
                    .execute(pool)
                    .await
                    .map(drop),
            }
            .map_err(sql("filling in verdicts"))?;
            self.committed();
            filled += read.events.len() as u64;
        }
    }

    /// The highest stored sequence number (0 when empty).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let query = "SELECT COALESCE(MAX(seq), 0) FROM events";
        let seq: i64 = match &self.backend {
            Backend::Sqlite(pools) => sqlx::query_scalar(query).fetch_one(&pools.read).await,
            Backend::Postgres(pool) => sqlx::query_scalar(query).fetch_one(pool).await,
        }
        .map_err(sql("reading the last sequence number"))?;
        Ok(seq)
    }

    /// Number of stored events and their encoded size.
    pub async fn totals(&self) -> Result<(i64, i64), StoreError> {
        let query = "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM events";
        match &self.backend {
            Backend::Sqlite(pools) => sqlx::query_as(query).fetch_one(&pools.read).await,
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
            Backend::Sqlite(pools) => rows!(&pools.read),
            Backend::Postgres(pool) => rows!(pool),
        })
    }
}

/// Kills of one group in one interval of a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRow {
    pub key: Option<String>,
    /// The interval's number from the timeline's start.
    pub bucket: i64,
    pub count: i64,
}

impl Store {
    /// Counts grouped by `by` and by interval of `bucket_us` from
    /// `start_us` (kills before it are not counted).
    pub async fn summary_timeline(
        &self,
        filter: Option<&EventFilter>,
        by: GroupColumn,
        start_us: i64,
        bucket_us: i64,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let mut w = to_sql(filter, self.style());
        let bucket_us = bucket_us.max(1);
        // Integers of ours, written into the statement: placeholders here
        // would come before the filter's in the text but after them in the
        // values, which SQLite's `?` cannot have.
        w.clauses.push(format!("time_us >= {start_us}"));
        let key = by.sql();
        // Integer division on both backends: the interval's number.
        let query = format!(
            "SELECT {key} AS k, CAST((time_us - {start_us}) / {bucket_us} AS BIGINT) AS b, COUNT(*) AS n \
             FROM events{} GROUP BY 1, 2",
            w.sql()
        );
        macro_rules! rows {
            ($pool:expr) => {
                bind_all!(sqlx::query(&query), &w.values)
                    .fetch_all($pool)
                    .await
                    .map_err(sql("summarising events over time"))?
                    .into_iter()
                    .map(|row| BucketRow {
                        key: row.get("k"),
                        bucket: row.get("b"),
                        count: row.get("n"),
                    })
                    .collect()
            };
        }
        Ok(match &self.backend {
            Backend::Sqlite(pools) => rows!(&pools.read),
            Backend::Postgres(pool) => rows!(pool),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn analysed(n: u64, verdict: Option<oomlens_proto::v1::Verdict>) -> oomlens_proto::v1::OomEvent {
        oomlens_proto::v1::OomEvent {
            id: format!("{n:032x}"),
            node: Some("n".into()),
            analysis: verdict.map(|v| oomlens_proto::v1::Analysis {
                verdict: v as i32,
                ..Default::default()
            }),
            ..oomlens_proto::v1::OomEvent::default()
        }
    }

    #[tokio::test]
    async fn verdicts_of_events_stored_before_the_column_are_filled_in() {
        use oomlens_proto::v1::Verdict;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("e.db").display().to_string())
            .await
            .unwrap();
        let events = [
            analysed(1, Some(Verdict::Spike)),
            analysed(2, Some(Verdict::TmpfsFull)),
            analysed(3, None),
            analysed(4, Some(Verdict::Spike)),
        ];
        store.insert_batch(&events).await.unwrap();
        let spikes = EventFilter {
            verdicts: vec![Verdict::Spike as i32],
            ..EventFilter::default()
        };
        let count = |store: &Store| {
            let store = store.clone();
            let spikes = spikes.clone();
            async move { store.query(Some(&spikes), 100, None).await.unwrap().0.len() }
        };
        assert_eq!(count(&store).await, 2, "new events carry their verdict");
        // As if stored by a collector before the column existed.
        let Backend::Sqlite(pools) = &store.backend else {
            unreachable!()
        };
        sqlx::query("UPDATE events SET verdict = NULL")
            .execute(&pools.write)
            .await
            .unwrap();
        assert_eq!(count(&store).await, 0);
        assert_eq!(store.backfill_verdicts().await.unwrap(), 4);
        assert_eq!(count(&store).await, 2);
        assert_eq!(
            store.backfill_verdicts().await.unwrap(),
            0,
            "nothing left to fill"
        );
        store.close().await;
    }
}
