//! What shipping counts: the spool's contents and losses
//! ([`SpoolMetrics`], kept by the spool itself) and the sender's
//! connection and acknowledgements ([`SenderMetrics`]).

use std::fmt::Write as _;

use oomlens_common::ingest::{IngestResult, ResultLabels};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::error;

use crate::telemetry::Happening;

/// The spool's gauges and counters. Clones share the counts; an
/// unregistered set still counts (for [`super::Spool::stats`]).
#[derive(Debug, Clone, Default)]
pub struct SpoolMetrics {
    pub(super) events: Gauge,
    pub(super) bytes: Gauge,
    pub(super) dropped: Counter,
    pub(super) thinned: Counter,
    pub(super) corrupt: Counter,
    pub(super) rejected: Counter,
    pub(super) write_errors: Counter,
    pub(super) writes_skipped: Counter,
}

impl SpoolMetrics {
    /// Events waiting in the spool now.
    pub fn waiting_events(&self) -> u64 {
        u64::try_from(self.events.get()).unwrap_or(0)
    }

    /// Spool writes skipped because the collector stored the event first.
    pub fn writes_skipped(&self) -> u64 {
        self.writes_skipped.get()
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register("spool_events", "Events waiting in the spool", self.events.clone());
        registry.register("spool_bytes", "Size of the spooled events", self.bytes.clone());
        registry.register(
            "spool_dropped_events",
            "Events dropped unsent because the spool was full",
            self.dropped.clone(),
        );
        registry.register(
            "spool_thinned_events",
            "Spooled events whose history was thinned to make room",
            self.thinned.clone(),
        );
        registry.register(
            "spool_corrupt_files",
            "Spool files that could not be read back (moved to corrupt/)",
            self.corrupt.clone(),
        );
        registry.register(
            "spool_rejected_events",
            "Events the collector rejected (kept in spool/rejected, never resent)",
            self.rejected.clone(),
        );
        registry.register(
            "spool_write_errors",
            "Events that could not be written to the spool (not delivered)",
            self.write_errors.clone(),
        );
        registry.register(
            "spool_writes_skipped",
            "Spool writes skipped because the collector had stored the event before its write began",
            self.writes_skipped.clone(),
        );
    }
}

/// An event could not be written to the spool after its retries: it is
/// printed and logged, and the caller decides what next (the pipeline
/// keeps it and offers it again).
#[derive(Debug)]
pub(super) struct SpoolWriteFailed<'a> {
    pub id: &'a str,
    pub error: &'a super::SpoolError,
}

impl Happening for SpoolWriteFailed<'_> {
    type Metrics = SpoolMetrics;
    fn emit(self, metrics: &SpoolMetrics) {
        error!(error = %self.error, id = %self.id, "event not spooled (the collector may have it already: it was offered as its write started)");
        metrics.write_errors.inc();
    }
}

/// Why a send to the collector failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SendFailure {
    /// No connection (refused, unreachable, TLS handshake).
    Connect,
    /// Connected, but the ingest stream was refused (auth, unavailable).
    Refused,
    /// An open ingest stream broke or was closed by the collector.
    Stream,
}

impl EncodeLabelValue for SendFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Connect => "connect",
            Self::Refused => "refused",
            Self::Stream => "stream",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendFailureLabels {
    pub reason: SendFailure,
}

/// Seconds from sending an event to its acknowledgement (the collector's
/// durable store included), in the kill stages' buckets.
#[derive(Debug, Clone)]
pub struct DeliverySeconds(pub(super) Histogram);

impl Default for DeliverySeconds {
    fn default() -> Self {
        Self(Histogram::new(crate::pipeline::metrics::STAGE_BUCKETS))
    }
}

/// The sender's counters. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct SenderMetrics {
    shipped: Family<ResultLabels, Counter>,
    pub(super) connected: Gauge,
    send_errors: Family<SendFailureLabels, Counter>,
    pub(super) side_dropped: Counter,
    pub(super) delivery_seconds: DeliverySeconds,
    pub(super) sent_early: Counter,
}

impl SenderMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shipped_events",
            "Events the collector acknowledged, by result",
            self.shipped.clone(),
        );
        registry.register(
            "delivery_seconds",
            "Time from sending an event to the collector's acknowledgement (stored durably)",
            self.delivery_seconds.0.clone(),
        );
        registry.register(
            "collector_connected",
            "1 while the ingest stream to the collector is open",
            self.connected.clone(),
        );
        registry.register(
            "send_errors",
            "Failed attempts to reach or stream to the collector, by reason",
            self.send_errors.clone(),
        );
        registry.register(
            "side_items_dropped",
            "Warnings and status reports not sent (collector away or slow)",
            self.side_dropped.clone(),
        );
        registry.register(
            "events_sent_early",
            "Events sent to the collector while their spool write was still running",
            self.sent_early.clone(),
        );
    }

    /// Events sent while being spooled, so far.
    pub fn sent_early(&self) -> u64 {
        self.sent_early.get()
    }

    pub(super) fn send_failed(&self, reason: SendFailure) {
        self.send_errors
            .get_or_create(&SendFailureLabels { reason })
            .inc();
    }

    pub(super) fn shipped(&self, result: IngestResult) {
        self.shipped.get_or_create(&ResultLabels { result }).inc();
    }

    /// Failed sends so far for `reason`.
    pub fn send_failures(&self, reason: SendFailure) -> u64 {
        self.send_errors
            .get_or_create(&SendFailureLabels { reason })
            .get()
    }
}
