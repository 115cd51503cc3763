//! `EventService`'s queries: a page of events, one event by (a prefix of)
//! its id, counts by group, and the containers nearest their limits.
//! Subscriptions are in `subscribe`.

use std::time::Instant;

use oomlens_proto::json::JsonEnum as _;
use oomlens_proto::time::timestamp_from_unix_us;
use oomlens_proto::v1::event_service_server::EventService;
use oomlens_proto::v1::{
    GetRequest, GroupBy, OomEvent, QueryRequest, QueryResponse, Scope, SubscribeRequest, SubscribeResponse,
    SummaryGroup, SummaryRequest, SummaryResponse, TopRequest, TopResponse,
};
use tonic::{Request, Response, Status};

use crate::filter::{self, MAX_FILTER_VALUES};
use crate::store::{GroupColumn, PageToken};

use super::{BoxStream, Collector, store_status, subscribe};

/// Status reports older than this are not shown by `Top`.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// `EventService`: queries and subscriptions.
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
        Ok(Response::new(Box::pin(responses)))
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
        let groups = rows
            .into_iter()
            .map(|row| {
                let key = match (by, row.key) {
                    (GroupColumn::Scope, Some(number)) => number
                        .parse::<i32>()
                        .ok()
                        .and_then(|n| Scope::try_from(n).ok())
                        .and_then(Scope::word)
                        .unwrap_or_else(|| "unknown".to_owned()),
                    (_, Some(key)) if !key.is_empty() => key,
                    _ => String::new(),
                };
                SummaryGroup {
                    key,
                    count: count(row.count),
                    silent: count(row.silent),
                    first: Some(timestamp_from_unix_us(row.first_us)),
                    last: Some(timestamp_from_unix_us(row.last_us)),
                }
            })
            .collect();
        Ok(Response::new(SummaryResponse { groups, total }))
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
        let mut containers = self.collector.statuses.live(Instant::now(), |s| {
            s.limit_bytes.is_some_and(|l| l > 0)
                && (request.nodes.is_empty() || request.nodes.contains(&s.node))
                && (request.namespaces.is_empty()
                    || s.pod
                        .as_ref()
                        .and_then(|p| p.namespace.as_ref())
                        .is_some_and(|ns| request.namespaces.contains(ns)))
        });
        containers.sort_by(super::statuses::closest_first);
        containers.truncate(limit);
        Ok(Response::new(TopResponse { containers }))
    }
}

/// A filter too large for one SQL statement is the caller's mistake
/// (`INVALID_ARGUMENT`), said before the store would fail on it
/// (`UNAVAILABLE`, as if the collector were down).
fn check_filter(filter: Option<&oomlens_proto::v1::EventFilter>) -> Result<(), Status> {
    filter::check(filter).map_err(|e| Status::invalid_argument(e.to_string()))
}
