//! The collector's own metrics (`/metrics`, Prometheus text) and health
//! endpoints. Label values are enums. Documented in docs/metrics.md.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;

pub use oomlens_common::ingest::{IngestResult, ResultLabels};

/// Why an ingest message was refused (the stream ends with its status).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Refused {
    /// Not a well-formed request: INVALID_ARGUMENT.
    Malformed,
    /// Over the size limit: RESOURCE_EXHAUSTED.
    TooLarge,
}

impl EncodeLabelValue for Refused {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Refused,
}

#[derive(Debug)]
pub struct CollectorMetrics {
    registry: Registry,
    events: Family<ResultLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    warnings: Counter,
    batch_size: Histogram,
    store_errors: Counter,
    /// 0 from a failed store write until a probe write commits: what
    /// `/readyz` answers.
    store_writable: Gauge,
    agents: Gauge,
    subscribers: Gauge,
    subscriber_lagged: Counter,
    subscribers_dropped: Counter,
    subscriber_events: Counter,
    subscriber_encodings: Counter,
    statuses: Gauge,
    statuses_dropped: Counter,
    query_seconds: Histogram,
    retention_deleted: Counter,
    stored_events: Gauge,
    stored_bytes: Gauge,
    webhooks: crate::webhook::WebhookMetrics,
    kube_events: crate::kube_events::KubeEventMetrics,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CollectorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oomlens_collector");
        let events = Family::<ResultLabels, Counter>::default();
        registry.register("events", "Events received from agents, by result", events.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ingest_refused",
            "Ingest messages that could not be read, by reason (their stream ended with its status)",
            refused.clone(),
        );
        let warnings = Counter::default();
        registry.register(
            "warnings",
            "Memory warnings received from agents",
            warnings.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_batch_size",
            "Events per store transaction",
            batch_size.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store transactions that failed (events resent by agents)",
            store_errors.clone(),
        );
        let store_writable = Gauge::default();
        // Open before this is made (see `serve`): writable until a write fails.
        store_writable.set(1);
        registry.register(
            "store_writable",
            "0 from a failed store write until a probe write commits (not ready), 1 otherwise",
            store_writable.clone(),
        );
        let agents = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents with an open ingest stream",
            agents.clone(),
        );
        let subscribers = Gauge::default();
        registry.register("subscribers", "Open subscription streams", subscribers.clone());
        let subscriber_lagged = Counter::default();
        registry.register(
            "subscriber_lagged",
            "Times a subscriber fell behind and was caught up from the store",
            subscriber_lagged.clone(),
        );
        let subscriber_events = Counter::default();
        registry.register(
            "subscriber_events",
            "Events sent to gRPC subscribers",
            subscriber_events.clone(),
        );
        let subscriber_encodings = Counter::default();
        registry.register(
            "subscriber_event_encodings",
            "Events encoded for gRPC subscribers: once for all those sent a live event, once per subscriber for events caught up from the store",
            subscriber_encodings.clone(),
        );
        let subscribers_dropped = Counter::default();
        registry.register(
            "subscribers_dropped",
            "Subscribers dropped for taking no response within the patience (they resume from their cursor)",
            subscribers_dropped.clone(),
        );
        let statuses = Gauge::default();
        registry.register(
            "container_statuses",
            "Live containers on the status board (for Top)",
            statuses.clone(),
        );
        let statuses_dropped = Counter::default();
        registry.register(
            "container_statuses_dropped",
            "Statuses of new containers not kept because the status board was full",
            statuses_dropped.clone(),
        );
        let query_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "query_duration_seconds",
            "Query latency in the store",
            query_seconds.clone(),
        );
        let retention_deleted = Counter::default();
        registry.register(
            "retention_deleted",
            "Events deleted by retention",
            retention_deleted.clone(),
        );
        let stored_events = Gauge::default();
        registry.register("stored_events", "Events in the store", stored_events.clone());
        let stored_bytes = Gauge::default();
        registry.register(
            "stored_bytes",
            "Encoded size of the stored events",
            stored_bytes.clone(),
        );
        let webhooks = crate::webhook::WebhookMetrics::register(&mut registry);
        let kube_events = crate::kube_events::KubeEventMetrics::register(&mut registry);
        Self {
            registry,
            events,
            refused,
            warnings,
            batch_size,
            store_errors,
            store_writable,
            agents,
            subscribers,
            subscriber_lagged,
            subscriber_events,
            subscriber_encodings,
            subscribers_dropped,
            statuses,
            statuses_dropped,
            query_seconds,
            retention_deleted,
            stored_events,
            stored_bytes,
            webhooks,
            kube_events,
        }
    }

    /// The webhook sinks' metrics.
    pub fn webhooks(&self) -> &crate::webhook::WebhookMetrics {
        &self.webhooks
    }

    pub fn kube_events(&self) -> &crate::kube_events::KubeEventMetrics {
        &self.kube_events
    }

    pub fn ingested(&self, result: IngestResult) {
        self.events.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn ingested_count(&self, result: IngestResult) -> u64 {
        self.events.get_or_create(&ResultLabels { result }).get()
    }

    pub fn refused(&self, reason: Refused) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn warning(&self) {
        self.warnings.inc();
    }

    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Records whether the store can write; true when that changed.
    pub fn set_store_writable(&self, writable: bool) -> bool {
        self.store_writable.set(i64::from(writable)) != i64::from(writable)
    }

    pub fn store_writable(&self) -> bool {
        self.store_writable.get() == 1
    }

    pub fn agent_connected(&self, delta: i64) {
        self.agents.inc_by(delta);
    }

    pub fn subscribers(&self, delta: i64) {
        self.subscribers.inc_by(delta);
    }

    pub fn subscriber_count(&self) -> i64 {
        self.subscribers.get()
    }

    pub fn subscriber_dropped(&self) {
        self.subscribers_dropped.inc();
    }

    pub fn statuses(&self, live: usize) {
        self.statuses.set(i64::try_from(live).unwrap_or(i64::MAX));
    }

    pub fn status_dropped(&self) {
        self.statuses_dropped.inc();
    }

    /// An event sent to a gRPC subscriber; `encoded` when it had to be
    /// encoded for it (the first subscriber of a live event).
    pub fn subscriber_event(&self, encoded: bool) {
        self.subscriber_events.inc();
        if encoded {
            self.subscriber_encodings.inc();
        }
    }

    pub fn subscriber_lagged(&self) {
        self.subscriber_lagged.inc();
    }

    pub fn query_done(&self, took: Duration) {
        self.query_seconds.observe(took.as_secs_f64());
    }

    pub fn retention(&self, deleted: u64, stored: i64, bytes: i64) {
        self.retention_deleted.inc_by(deleted);
        self.stored_events.set(stored);
        self.stored_bytes.set(bytes);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            let _ = writeln!(text, "# metrics encoding failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_labelled_words() {
        let metrics = CollectorMetrics::new();
        metrics.ingested(IngestResult::Stored);
        metrics.ingested(IngestResult::Duplicate);
        let text = metrics.encode();
        assert!(
            text.contains("oomlens_collector_events_total{result=\"stored\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("oomlens_collector_events_total{result=\"duplicate\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn writability_changes_are_reported_once() {
        let metrics = CollectorMetrics::new();
        assert!(metrics.store_writable(), "writable once open");
        assert!(metrics.set_store_writable(false), "a change");
        assert!(!metrics.set_store_writable(false), "no change");
        assert!(metrics.encode().contains("oomlens_collector_store_writable 0"));
        assert!(metrics.set_store_writable(true));
        assert!(metrics.store_writable());
    }
}
