//! The agent's own metrics and health endpoints: `/metrics` (Prometheus
//! text format), `/healthz` (the process serves), `/readyz` (the kernel log
//! is being read, and the sampler has scanned the cgroup tree if enabled).
//!
//! Components keep their own plain counters; [`AgentMetrics`] is synced
//! from them (by delta, so the exported counters only ever grow). Labels
//! are enums or bounded sets: scope (8 values), sample kind, outcome.
//! Names and meanings are documented in docs/metrics.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use oomlens_common::ingest::{IngestResult, ResultLabels};
use oomlens_proto::json::JsonEnum;
use oomlens_proto::v1::{OomEvent, Scope};
use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::info;

use crate::cgroup::SamplerStats;
use crate::kmsg::ReaderStats;
use crate::oom::ParserStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    /// `Scope` as its JSON word (8 values).
    pub scope: String,
    /// The pod's namespace; empty when unknown (identity from the path
    /// only). Bounded by the cluster's namespaces.
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SampleKind {
    Usage,
    Full,
}

/// Label values are lowercase words, as Prometheus convention has them.
impl EncodeLabelValue for SampleKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Usage => "usage",
            Self::Full => "full",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SampleLabels {
    pub kind: SampleKind,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum IdentitySource {
    Cri,
    KubernetesApi,
}

impl EncodeLabelValue for IdentitySource {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Cri => "cri",
            Self::KubernetesApi => "kubernetes_api",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: IdentitySource,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Dropped,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Sent => "sent",
            Self::Dropped => "dropped",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

/// Why a send to the collector failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SendError {
    /// No connection (refused, unreachable, TLS handshake).
    Connect,
    /// Connected, but the ingest stream was refused (auth, unavailable).
    Refused,
    /// An open ingest stream broke or was closed by the collector.
    Stream,
}

impl EncodeLabelValue for SendError {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Connect => "connect",
            Self::Refused => "refused",
            Self::Stream => "stream",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendErrorLabels {
    pub reason: SendError,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    pub kills: Family<KillLabels, Counter>,
    pub partial_kills: Counter,
    pub kmsg_records: Counter,
    pub kmsg_lost: Counter,
    pub kmsg_overruns: Counter,
    pub kmsg_malformed: Counter,
    pub forged_lines: Counter,
    pub missed_kills: Gauge,
    pub cgroups_tracked: Gauge,
    pub cgroups_in_grace: Gauge,
    pub samples: Family<SampleLabels, Counter>,
    pub sampling_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub sample_pass_seconds: Histogram,
    pub cgroup_read_errors: Counter,
    pub cgroups_vanished: Counter,
    pub warnings: Family<OutcomeLabels, Counter>,
    pub history_bytes: Gauge,
    /// 1 for each identity source in use (cgroup paths are always used).
    pub identity_sources: Family<SourceLabels, Gauge>,
    /// Events acknowledged by the collector, by result (the collector's own labels).
    pub shipped_events: Family<ResultLabels, Counter>,
    /// 1 while an ingest stream to the collector is open.
    pub collector_connected: Gauge,
    pub send_errors: Family<SendErrorLabels, Counter>,
    /// Warnings and status reports not sent (collector away or slow).
    pub side_dropped: Counter,
    pub spool_events: Gauge,
    pub spool_bytes: Gauge,
    pub spool_dropped: Counter,
    pub spool_thinned: Counter,
    pub spool_corrupt: Counter,
    pub spool_write_errors: Counter,
    spool_before: std::sync::Mutex<crate::ship::SpoolStats>,
    kmsg_ready: AtomicBool,
    sampler_ready: AtomicBool,
    sampler_enabled: AtomicBool,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oomlens_agent");
        let metrics = Self {
            kills: Family::default(),
            partial_kills: Counter::default(),
            kmsg_records: Counter::default(),
            kmsg_lost: Counter::default(),
            kmsg_overruns: Counter::default(),
            kmsg_malformed: Counter::default(),
            forged_lines: Counter::default(),
            missed_kills: Gauge::default(),
            cgroups_tracked: Gauge::default(),
            cgroups_in_grace: Gauge::default(),
            samples: Family::default(),
            sampling_seconds: Counter::default(),
            sample_pass_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            cgroup_read_errors: Counter::default(),
            cgroups_vanished: Counter::default(),
            warnings: Family::default(),
            history_bytes: Gauge::default(),
            identity_sources: Family::default(),
            shipped_events: Family::default(),
            collector_connected: Gauge::default(),
            send_errors: Family::default(),
            side_dropped: Counter::default(),
            spool_events: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_dropped: Counter::default(),
            spool_thinned: Counter::default(),
            spool_corrupt: Counter::default(),
            spool_write_errors: Counter::default(),
            spool_before: std::sync::Mutex::default(),
            kmsg_ready: AtomicBool::new(false),
            sampler_ready: AtomicBool::new(false),
            sampler_enabled: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "oom_kills",
            "OOM kills reported, by scope and namespace",
            metrics.kills.clone(),
        );
        registry.register(
            "oom_kills_partial",
            "OOM kills whose report the kernel rate-limited (no cgroup path in the log)",
            metrics.partial_kills.clone(),
        );
        registry.register(
            "kmsg_records",
            "Kernel log records read",
            metrics.kmsg_records.clone(),
        );
        registry.register(
            "kmsg_lost_records",
            "Kernel log records overwritten before they were read",
            metrics.kmsg_lost.clone(),
        );
        registry.register(
            "kmsg_overruns",
            "Kernel log ring overruns noticed (EPIPE)",
            metrics.kmsg_overruns.clone(),
        );
        registry.register(
            "kmsg_malformed_records",
            "Kernel log records that could not be parsed",
            metrics.kmsg_malformed.clone(),
        );
        registry.register(
            "kmsg_forged_lines",
            "Kill-like kernel log lines not written by the kernel (ignored)",
            metrics.forged_lines.clone(),
        );
        registry.register(
            "missed_kills",
            "OOM kills /proc/vmstat counted that the kernel log did not show",
            metrics.missed_kills.clone(),
        );
        registry.register(
            "cgroups_tracked",
            "Memory cgroups being sampled",
            metrics.cgroups_tracked.clone(),
        );
        registry.register(
            "cgroups_in_grace",
            "Removed cgroups whose history is kept for late kill records",
            metrics.cgroups_in_grace.clone(),
        );
        registry.register(
            "samples",
            "Cgroup memory samples taken, by kind",
            metrics.samples.clone(),
        );
        registry.register(
            "sampling_seconds",
            "Time spent sampling cgroups",
            metrics.sampling_seconds.clone(),
        );
        registry.register(
            "sample_pass_seconds",
            "Duration of one sampling pass over all due cgroups",
            metrics.sample_pass_seconds.clone(),
        );
        registry.register(
            "cgroup_read_errors",
            "Cgroup file reads that failed",
            metrics.cgroup_read_errors.clone(),
        );
        registry.register(
            "cgroups_vanished",
            "Followed cgroups that were removed",
            metrics.cgroups_vanished.clone(),
        );
        registry.register(
            "memory_warnings",
            "Pre-OOM warnings, sent or dropped",
            metrics.warnings.clone(),
        );
        registry.register(
            "history_bytes",
            "Memory held by cgroup histories",
            metrics.history_bytes.clone(),
        );
        registry.register(
            "shipped_events",
            "Events the collector acknowledged, by result",
            metrics.shipped_events.clone(),
        );
        registry.register(
            "collector_connected",
            "1 while the ingest stream to the collector is open",
            metrics.collector_connected.clone(),
        );
        registry.register(
            "send_errors",
            "Failed attempts to reach or stream to the collector, by reason",
            metrics.send_errors.clone(),
        );
        registry.register(
            "side_items_dropped",
            "Warnings and status reports not sent (collector away or slow)",
            metrics.side_dropped.clone(),
        );
        registry.register(
            "spool_events",
            "Events waiting in the spool",
            metrics.spool_events.clone(),
        );
        registry.register(
            "spool_bytes",
            "Size of the spooled events",
            metrics.spool_bytes.clone(),
        );
        registry.register(
            "spool_dropped_events",
            "Events dropped unsent because the spool was full",
            metrics.spool_dropped.clone(),
        );
        registry.register(
            "spool_thinned_events",
            "Spooled events whose history was thinned to make room",
            metrics.spool_thinned.clone(),
        );
        registry.register(
            "spool_corrupt_files",
            "Spool files that could not be read back (moved to corrupt/)",
            metrics.spool_corrupt.clone(),
        );
        registry.register(
            "spool_write_errors",
            "Events that could not be written to the spool (not delivered)",
            metrics.spool_write_errors.clone(),
        );
        Self { registry, ..metrics }
    }

    pub fn send_error(&self, reason: SendError) {
        self.send_errors.get_or_create(&SendErrorLabels { reason }).inc();
    }

    pub fn shipped(&self, result: IngestResult) {
        self.shipped_events.get_or_create(&ResultLabels { result }).inc();
    }

    /// Syncs the spool's counters, by delta.
    pub fn sync_spool(&self, stats: crate::ship::SpoolStats) {
        let mut before = self
            .spool_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        grow(&self.spool_dropped, stats.dropped, before.dropped);
        grow(&self.spool_thinned, stats.thinned, before.thinned);
        grow(&self.spool_corrupt, stats.corrupt, before.corrupt);
        self.spool_events.set(stats.events as i64);
        self.spool_bytes.set(stats.bytes as i64);
        *before = stats;
    }

    /// Counts one reported kill.
    pub fn kill(&self, event: &OomEvent) {
        let scope = Scope::try_from(event.scope)
            .ok()
            .and_then(JsonEnum::word)
            .unwrap_or_default();
        let namespace = event
            .pod
            .as_ref()
            .and_then(|p| p.namespace.clone())
            .unwrap_or_default();
        self.kills.get_or_create(&KillLabels { scope, namespace }).inc();
        if event.partial {
            self.partial_kills.inc();
        }
    }

    pub fn set_kmsg_ready(&self) {
        self.kmsg_ready.store(true, Ordering::Relaxed);
    }

    pub fn set_sampler_enabled(&self) {
        self.sampler_enabled.store(true, Ordering::Relaxed);
    }

    pub fn set_sampler_ready(&self) {
        self.sampler_ready.store(true, Ordering::Relaxed);
    }

    /// Ready: reading the kernel log, and the sampler (if on) has scanned.
    pub fn ready(&self) -> bool {
        self.kmsg_ready.load(Ordering::Relaxed)
            && (!self.sampler_enabled.load(Ordering::Relaxed) || self.sampler_ready.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn grow(counter: &Counter, now: u64, before: u64) {
    if now > before {
        counter.inc_by(now - before);
    }
}

/// Syncs the kernel-log counters from the components' own, by delta.
#[derive(Debug, Default)]
pub struct KmsgSync {
    reader: ReaderStats,
    parser: ParserStats,
}

impl KmsgSync {
    pub fn sync(&mut self, metrics: &AgentMetrics, reader: ReaderStats, parser: ParserStats, missed: u64) {
        grow(&metrics.kmsg_records, reader.records, self.reader.records);
        grow(&metrics.kmsg_lost, reader.lost, self.reader.lost);
        grow(&metrics.kmsg_overruns, reader.overruns, self.reader.overruns);
        grow(&metrics.kmsg_malformed, reader.malformed, self.reader.malformed);
        grow(&metrics.forged_lines, parser.forged, self.parser.forged);
        metrics.missed_kills.set(missed as i64);
        self.reader = reader;
        self.parser = parser;
    }
}

/// Syncs the sampler's counters, by delta.
#[derive(Debug, Default)]
pub struct SamplerSync {
    before: SamplerStats,
}

impl SamplerSync {
    pub fn sync(&mut self, metrics: &AgentMetrics, stats: SamplerStats) {
        let b = self.before;
        grow(
            &metrics.samples.get_or_create(&SampleLabels {
                kind: SampleKind::Usage,
            }),
            stats.fast_samples,
            b.fast_samples,
        );
        grow(
            &metrics.samples.get_or_create(&SampleLabels {
                kind: SampleKind::Full,
            }),
            stats.full_samples,
            b.full_samples,
        );
        if stats.sampling_ns > b.sampling_ns {
            metrics
                .sampling_seconds
                .inc_by((stats.sampling_ns - b.sampling_ns) as f64 / 1e9);
        }
        grow(&metrics.cgroup_read_errors, stats.read_errors, b.read_errors);
        grow(&metrics.cgroups_vanished, stats.vanished, b.vanished);
        grow(
            &metrics.warnings.get_or_create(&OutcomeLabels {
                outcome: Outcome::Sent,
            }),
            stats.warnings,
            b.warnings,
        );
        grow(
            &metrics.warnings.get_or_create(&OutcomeLabels {
                outcome: Outcome::Dropped,
            }),
            stats.warnings_dropped,
            b.warnings_dropped,
        );
        metrics.cgroups_tracked.set(stats.tracked as i64);
        metrics.cgroups_in_grace.set(stats.in_grace as i64);
        metrics.history_bytes.set(stats.history_bytes as i64);
        self.before = stats;
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let for_metrics = Arc::clone(&metrics);
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&for_metrics);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    if metrics.ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for metrics: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::Pod;

    #[test]
    fn kills_are_counted_by_scope_and_namespace() {
        let metrics = AgentMetrics::new();
        let event = OomEvent {
            scope: Scope::PodLimit as i32,
            pod: Some(Pod {
                namespace: Some("shop".into()),
                ..Pod::default()
            }),
            partial: true,
            ..OomEvent::default()
        };
        metrics.kill(&event);
        metrics.kill(&event);
        let mut sync = KmsgSync::default();
        sync.sync(
            &metrics,
            ReaderStats {
                records: 10,
                lost: 3,
                ..ReaderStats::default()
            },
            ParserStats::default(),
            2,
        );
        sync.sync(
            &metrics,
            ReaderStats {
                records: 15,
                lost: 3,
                ..ReaderStats::default()
            },
            ParserStats::default(),
            2,
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"oomlens_agent_oom_kills_total{scope="pod_limit",namespace="shop"} 2"#),
            "{text}"
        );
        assert!(text.contains("oomlens_agent_oom_kills_partial_total 2"), "{text}");
        assert!(text.contains("oomlens_agent_kmsg_records_total 15"), "{text}");
        assert!(text.contains("oomlens_agent_kmsg_lost_records_total 3"), "{text}");
        assert!(text.contains("oomlens_agent_missed_kills 2"), "{text}");
    }

    #[test]
    fn readiness_needs_the_log_and_the_sampler_when_enabled() {
        let metrics = AgentMetrics::new();
        assert!(!metrics.ready());
        metrics.set_kmsg_ready();
        assert!(metrics.ready());
        metrics.set_sampler_enabled();
        assert!(!metrics.ready());
        metrics.set_sampler_ready();
        assert!(metrics.ready());
    }
}
