//! `EventService`'s queries: a page of events, one event by (a prefix of)
//! its id, counts by group, and the containers nearest their limits.
//! Subscriptions are in `subscribe`.

use std::time::Instant;

use futures_util::TryStreamExt as _;
use oomlens_proto::json::JsonEnum as _;
use oomlens_proto::time::timestamp_from_unix_us;
use oomlens_proto::v1::event_service_server::EventService;
use oomlens_proto::v1::{
    ContainerMemoryStatus, GetRequest, GroupBy, OomEvent, QueryRequest, QueryResponse, Scope,
    SubscribeRequest, SubscribeResponse, SummaryGroup, SummaryRequest, SummaryResponse, TopRequest,
    TopResponse,
};
use tonic::{Request, Response, Status};

use crate::filter::{self, MAX_FILTER_VALUES};
use crate::store::{GroupColumn, PageToken};

use super::outbox::Outgoing;
use super::{BoxStream, Collector, store_status, subscribe};

/// Status reports older than this are not shown by `Top`.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// `EventService`: queries and subscriptions (over gRPC, `Subscribe` is
/// served by [`super::EventRoutes`], which sends responses pre-encoded;
/// the HTTP stream calls it here).
#[derive(Debug, Clone)]
pub struct Events {
    collector: Collector,
}

impl Events {
    pub fn new(collector: Collector) -> Self {
        Self { collector }
    }
}

#[tonic::async_trait]
impl EventService for Events {
    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        check_filter(request.filter.as_ref())?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let token = match request.page_token.as_str() {
            "" => None,
            text => Some(PageToken::decode(text).map_err(store_status)?),
        };
        let (events, next) = self
            .collector
            .store
            .query(request.filter.as_ref(), page_size, token)
            .await
            .map_err(store_status)?;
        self.collector.metrics.query_done(started.elapsed());
        Ok(Response::new(QueryResponse {
            events: events.into_iter().map(|e| e.event).collect(),
            next_page_token: next.map(PageToken::encode).unwrap_or_default(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<OomEvent>, Status> {
        let id = request.into_inner().id;
        if let Some(stored) = self.collector.store.get(&id).await.map_err(store_status)? {
            return Ok(Response::new(stored.event));
        }
        if id.len() < 4 {
            return Err(Status::invalid_argument(format!(
                "{id:?}: give at least 4 characters of the id"
            )));
        }
        let mut found = self
            .collector
            .store
            .by_id_prefix(&id, 2)
            .await
            .map_err(store_status)?;
        match found.len() {
            1 => Ok(Response::new(found.remove(0).event)),
            0 => Err(Status::not_found(format!("no event with id {id}"))),
            _ => Err(Status::invalid_argument(format!(
                "{id} matches several events: give more of the id"
            ))),
        }
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        check_filter(request.filter.as_ref())?;
        let responses = subscribe::start(&self.collector, request).await?;
        Ok(Response::new(Box::pin(responses.map_ok(Outgoing::into_response))))
    }

    async fn summary(&self, request: Request<SummaryRequest>) -> Result<Response<SummaryResponse>, Status> {
        let request = request.into_inner();
        check_filter(request.filter.as_ref())?;
        let by = match GroupBy::try_from(request.group_by).unwrap_or(GroupBy::Unspecified) {
            GroupBy::Unspecified | GroupBy::Scope => GroupColumn::Scope,
            GroupBy::Namespace => GroupColumn::Namespace,
            GroupBy::Node => GroupColumn::Node,
            GroupBy::Workload => GroupColumn::Workload,
        };
        let rows = self
            .collector
            .store
            .summary(request.filter.as_ref(), by)
            .await
            .map_err(store_status)?;
        // Counts from SQL are never negative.
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let total = rows.iter().map(|r| count(r.count)).sum();
        let group_key = |key: Option<String>| match (by, key) {
            (GroupColumn::Scope, Some(number)) => number
                .parse::<i32>()
                .ok()
                .and_then(|n| Scope::try_from(n).ok())
                .and_then(Scope::word)
                .unwrap_or_else(|| "unknown".to_owned()),
            (_, Some(key)) if !key.is_empty() => key,
            _ => String::new(),
        };
        let earliest = rows.iter().map(|r| r.first_us).min();
        let mut groups: Vec<SummaryGroup> = rows
            .into_iter()
            .map(|row| SummaryGroup {
                key: group_key(row.key),
                count: count(row.count),
                silent: count(row.silent),
                first: Some(timestamp_from_unix_us(row.first_us)),
                last: Some(timestamp_from_unix_us(row.last_us)),
                timeline: Vec::new(),
            })
            .collect();
        let mut response = SummaryResponse {
            total,
            ..SummaryResponse::default()
        };
        let filter = request.filter.as_ref();
        let since = filter
            .and_then(|f| f.since.as_ref())
            .map(crate::filter::timestamp_us);
        if request.bucket_seconds > 0
            && let Some(start_us) = since.or(earliest)
        {
            let end_us = filter
                .and_then(|f| f.until.as_ref())
                .map_or_else(crate::store::now_us, crate::filter::timestamp_us);
            let (bucket_s, buckets) = timeline_shape(start_us, end_us, request.bucket_seconds);
            let bucket_us = i64::from(bucket_s) * 1_000_000;
            let cells = self
                .collector
                .store
                .summary_timeline(filter, by, start_us, bucket_us)
                .await
                .map_err(store_status)?;
            for group in &mut groups {
                group.timeline = vec![0; buckets];
            }
            for cell in cells {
                let key = group_key(cell.key);
                let (Some(group), Ok(at)) = (
                    groups.iter_mut().find(|g| g.key == key),
                    usize::try_from(cell.bucket),
                ) else {
                    continue;
                };
                if let Some(slot) = group.timeline.get_mut(at) {
                    *slot += count(cell.count);
                }
            }
            response.timeline_start = Some(timestamp_from_unix_us(start_us));
            response.bucket_seconds = bucket_s;
        }
        response.groups = groups;
        Ok(Response::new(response))
    }

    async fn top(&self, request: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        let request = request.into_inner();
        let values = request.nodes.len() + request.namespaces.len();
        if values > MAX_FILTER_VALUES {
            return Err(Status::invalid_argument(
                filter::FilterTooLarge { values }.to_string(),
            ));
        }
        let limit = match request.limit {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let wanted = |s: &ContainerMemoryStatus| {
            s.limit_bytes.is_some_and(|l| l > 0)
                && (request.nodes.is_empty() || request.nodes.contains(&s.node))
                && (request.namespaces.is_empty()
                    || s.pod
                        .as_ref()
                        .and_then(|p| p.namespace.as_ref())
                        .is_some_and(|ns| request.namespaces.contains(ns)))
        };
        let now = Instant::now();
        let Some(fleet) = &self.collector.fleet else {
            let containers = self.collector.statuses.top(now, wanted, limit);
            return Ok(Response::new(TopResponse { containers }));
        };
        // On PostgreSQL, the agents the other replicas serve too; each
        // node's containers from whichever view of it is newer.
        let local_newest = self.collector.statuses.newest_by_node(now);
        let (shared, stale_here) = fleet
            .top(
                &local_newest,
                |node| request.nodes.is_empty() || request.nodes.iter().any(|n| n == node),
                |namespace| {
                    request.namespaces.is_empty()
                        || namespace.is_some_and(|ns| request.namespaces.iter().any(|n| n == ns))
                },
                limit,
            )
            .await;
        let local = self
            .collector
            .statuses
            .top(now, |s| wanted(s) && !stale_here.contains(&s.node), limit);
        let containers = super::statuses::first_by(
            local.into_iter().chain(shared).collect(),
            limit,
            super::statuses::closest_first,
        );
        Ok(Response::new(TopResponse { containers }))
    }
}

/// A filter too large for one SQL statement is the caller's mistake
/// (`INVALID_ARGUMENT`), said before the store would fail on it
/// (`UNAVAILABLE`, as if the collector were down).
pub(super) fn check_filter(filter: Option<&oomlens_proto::v1::EventFilter>) -> Result<(), Status> {
    filter::check(filter).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Intervals a timeline has at most.
pub(super) const MAX_TIMELINE_BUCKETS: u64 = 200;

/// The interval length (seconds, at least the one asked for) and the
/// number of intervals from `start_us` to `end_us`: at most
/// [`MAX_TIMELINE_BUCKETS`], at least one.
pub(super) fn timeline_shape(start_us: i64, end_us: i64, asked_seconds: u32) -> (u32, usize) {
    let span_s = u64::try_from(end_us.saturating_sub(start_us))
        .unwrap_or(0)
        .div_ceil(1_000_000)
        .max(1);
    let widest = span_s.div_ceil(MAX_TIMELINE_BUCKETS);
    let bucket_s = u64::from(asked_seconds).max(widest).max(1);
    let buckets = span_s.div_ceil(bucket_s).max(1);
    (
        u32::try_from(bucket_s).unwrap_or(u32::MAX),
        usize::try_from(buckets).unwrap_or(1),
    )
}

#[cfg(test)]
mod timeline_tests {
    use super::*;

    #[test]
    fn a_timeline_has_at_most_200_intervals_of_at_least_the_asked_length() {
        let hour = 3_600_000_000i64;
        assert_eq!(timeline_shape(0, hour, 60), (60, 60));
        assert_eq!(timeline_shape(0, 24 * hour, 60), (432, 200));
        assert_eq!(timeline_shape(0, hour + 1, 60), (60, 61));
        assert_eq!(timeline_shape(0, 0, 60), (60, 1));
        assert_eq!(timeline_shape(10, 5, 0), (1, 1));
    }
}
