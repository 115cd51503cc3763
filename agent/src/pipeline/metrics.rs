//! What the pipeline counts, and the happenings that count it (each also
//! writes its log line).

use std::fmt::Write as _;

use oomlens_proto::json::JsonEnum;
use oomlens_proto::v1::{OomEvent, Scope};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use super::attribute::Placement;
use super::container_kills::ContainerKills;
use crate::telemetry::Happening;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    /// `Scope` as its JSON word (8 values).
    pub scope: String,
    /// The pod's namespace; empty when unknown (identity from the path
    /// only). Bounded by the cluster's namespaces.
    pub namespace: String,
}

impl EncodeLabelValue for Placement {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.word())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementLabels {
    pub by: Placement,
}

/// A kill's way through the agent, stage by stage.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum KillStage {
    /// From the kernel's timestamp on the kill line to the report taken
    /// (the reader's wake-up and the parser).
    read,
    /// Finding the cgroup and the limit that was hit.
    place,
    /// History, names, owners and volumes.
    enrich,
    /// Written to the spool and synced.
    spool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: KillStage,
}

/// Seconds per stage: fine around the few milliseconds a kill takes,
/// up to 2.5 s.
pub(crate) const STAGE_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1,
    0.25, 0.5, 2.5,
];

/// Seconds per stage ([`STAGE_BUCKETS`]).
#[derive(Debug, Clone)]
pub struct StageSeconds(Family<StageLabels, Histogram, fn() -> Histogram>);

impl Default for StageSeconds {
    fn default() -> Self {
        Self(Family::new_with_constructor(|| Histogram::new(STAGE_BUCKETS)))
    }
}

/// The pipeline's counters. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct PipelineMetrics {
    kills: Family<KillLabels, Counter>,
    stage_seconds: StageSeconds,
    container_kills: ContainerKills,
    partial_kills: Counter,
    placements: Family<PlacementLabels, Counter>,
    forged_lines: Counter,
    missed_kills: Gauge,
    printer_dropped: Counter,
    state_unwritable: Gauge,
    unspooled: Gauge,
    unspooled_dropped: Counter,
    log_clock_offset: Gauge<f64, std::sync::atomic::AtomicU64>,
    log_clock_probe_failures: Counter,
}

impl PipelineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "oom_kills",
            "OOM kills reported, by scope and namespace",
            self.kills.clone(),
        );
        self.container_kills.register(registry);
        registry.register(
            "oom_kills_partial",
            "OOM kills whose report the kernel rate-limited (no cgroup path in the log)",
            self.partial_kills.clone(),
        );
        registry.register(
            "kill_placements",
            "How each reported kill's cgroup was found (report, proc, process_list, notice, counter, unplaced)",
            self.placements.clone(),
        );
        registry.register(
            "kmsg_forged_lines",
            "Kill-like kernel log lines not written by the kernel (ignored)",
            self.forged_lines.clone(),
        );
        registry.register(
            "missed_kills",
            "OOM kills /proc/vmstat counted that the kernel log did not show",
            self.missed_kills.clone(),
        );
        registry.register(
            "state_unwritable",
            "1 while the state directory takes no writes (cursor, spool): kills are then only logged and printed",
            self.state_unwritable.clone(),
        );
        registry.register(
            "unspooled_events",
            "Kills the spool did not take (state directory full or unwritable), kept in memory and offered again",
            self.unspooled.clone(),
        );
        registry.register(
            "unspooled_events_dropped",
            "Kills dropped from memory while the spool took no writes (a restart reads them again from the kernel log)",
            self.unspooled_dropped.clone(),
        );
        registry.register(
            "kill_stage_seconds",
            "Time each kill spent in each stage of the agent (read: kernel timestamp to report; place; enrich; spool)",
            self.stage_seconds.0.clone(),
        );
        registry.register(
            "printed_events_dropped",
            "Events not printed on standard output because it did not keep up (still spooled and logged)",
            self.printer_dropped.clone(),
        );
        registry.register(
            "kernel_log_clock_offset_seconds",
            "The kernel log's clock minus CLOCK_MONOTONIC, as last measured (0: not measured); kill times are corrected by it",
            self.log_clock_offset.clone(),
        );
        registry.register(
            "kernel_log_clock_probe_failures",
            "Hourly measurements of the kernel log's clock that failed (the last offset is kept)",
            self.log_clock_probe_failures.clone(),
        );
    }

    /// The kernel log clock's offset in use, in seconds.
    pub fn log_clock_offset_seconds(&self) -> f64 {
        self.log_clock_offset.get()
    }

    pub(super) fn set_log_clock_offset(&self, offset_us: i64) {
        self.log_clock_offset.set(offset_us as f64 / 1e6);
    }

    /// Records that a kill spent `seconds` in `stage`.
    pub(super) fn stage(&self, stage: KillStage, seconds: f64) {
        self.stage_seconds
            .0
            .get_or_create(&StageLabels { stage })
            .observe(seconds.max(0.0));
    }

    /// Kills counted so far with this scope word and namespace.
    pub fn kills(&self, scope: &str, namespace: &str) -> u64 {
        self.kills
            .get_or_create(&KillLabels {
                scope: scope.to_owned(),
                namespace: namespace.to_owned(),
            })
            .get()
    }

    /// The per-container kill counter (its series are pruned by the app).
    pub fn container_kills(&self) -> &ContainerKills {
        &self.container_kills
    }

    pub(super) fn set_unspooled(&self, kept: usize) {
        self.unspooled.set(i64::try_from(kept).unwrap_or(i64::MAX));
    }

    pub(super) fn unspooled_dropped(&self) {
        self.unspooled_dropped.inc();
    }
}

/// The kernel log's clock measured again against `CLOCK_MONOTONIC`.
#[derive(Debug)]
pub struct LogClockMeasured {
    pub before_us: i64,
    pub outcome: Result<i64, crate::clock::ClockProbeError>,
}

impl Happening for LogClockMeasured {
    type Metrics = PipelineMetrics;
    fn emit(self, metrics: &PipelineMetrics) {
        match self.outcome {
            Ok(offset_us) => {
                metrics.set_log_clock_offset(offset_us);
                debug!(
                    offset_us,
                    drift_us = offset_us - self.before_us,
                    "kernel log clock measured again"
                );
            }
            Err(error) => {
                metrics.log_clock_probe_failures.inc();
                warn!(%error, offset_us = self.before_us, "cannot measure the kernel log clock again; keeping the last offset");
            }
        }
    }
}

/// A kill leaves the pipeline: counted by scope, namespace and how it was
/// placed, and logged with what an SRE needs to find it.
#[derive(Debug)]
pub struct KillReported<'a> {
    pub event: &'a OomEvent,
    pub placement: Placement,
}

impl Happening for KillReported<'_> {
    type Metrics = PipelineMetrics;
    fn emit(self, metrics: &PipelineMetrics) {
        let event = self.event;
        let scope = Scope::try_from(event.scope)
            .ok()
            .and_then(JsonEnum::word)
            .unwrap_or_default();
        let namespace = event
            .pod
            .as_ref()
            .and_then(|p| p.namespace.clone())
            .unwrap_or_default();
        let victim = event.victim.as_ref();
        info!(
            id = %event.id,
            scope = %scope,
            pid = victim.and_then(|v| v.pid),
            comm = victim.and_then(|v| v.comm.as_deref()).unwrap_or("?"),
            oom_memcg = event.oom_memcg.as_deref().unwrap_or("?"),
            task_memcg = event.task_memcg.as_deref().unwrap_or("?"),
            placed_by = self.placement.word(),
            partial = event.partial,
            "OOM kill"
        );
        if self.placement == Placement::Unplaced {
            warn!(id = %event.id, "kill without a cgroup path: no evidence placed it without a guess");
        }
        metrics
            .container_kills
            .record(event, &scope, std::time::Instant::now());
        metrics
            .kills
            .get_or_create(&KillLabels { scope, namespace })
            .inc();
        metrics
            .placements
            .get_or_create(&PlacementLabels { by: self.placement })
            .inc();
        if event.partial {
            metrics.partial_kills.inc();
        }
    }
}

/// A kill-like line that the kernel did not write (someone writes to
/// `/dev/kmsg`): ignored.
#[derive(Debug)]
pub struct ForgedLines(pub u64);

impl Happening for ForgedLines {
    type Metrics = PipelineMetrics;
    fn emit(self, metrics: &PipelineMetrics) {
        if self.0 > 0 {
            warn!(
                lines = self.0,
                "ignored kill-like kernel log lines not written by the kernel"
            );
            metrics.forged_lines.inc_by(self.0);
        }
    }
}

/// `/proc/vmstat` counted kills that the log did not show (in total).
#[derive(Debug)]
pub struct KillsMissed {
    pub total: u64,
    pub new: bool,
}

impl Happening for KillsMissed {
    type Metrics = PipelineMetrics;
    fn emit(self, metrics: &PipelineMetrics) {
        if self.new {
            warn!(
                missed = self.total,
                "the kernel counted OOM kills that its log did not show"
            );
        }
        metrics
            .missed_kills
            .set(i64::try_from(self.total).unwrap_or(i64::MAX));
    }
}

/// The state directory stopped taking writes (said once, until it does
/// again), or took one again.
#[derive(Debug)]
pub struct StateWrites<'a> {
    pub writable: bool,
    /// What failed (or worked again), and why.
    pub what: &'a str,
    pub error: Option<String>,
}

impl Happening for StateWrites<'_> {
    type Metrics = PipelineMetrics;
    fn emit(self, metrics: &PipelineMetrics) {
        if self.writable {
            info!(what = self.what, "the state directory takes writes again: ready");
        } else {
            tracing::error!(
                what = self.what,
                error = %self.error.unwrap_or_default(),
                "the state directory takes no writes: kills are logged, printed and kept in memory until it does; not ready until then"
            );
        }
        metrics.state_unwritable.set(i64::from(!self.writable));
    }
}

/// Standard output did not keep up: an event was not printed.
#[derive(Debug)]
pub struct PrintDropped<'a>(pub &'a str);

impl Happening for PrintDropped<'_> {
    type Metrics = PipelineMetrics;
    fn emit(self, metrics: &PipelineMetrics) {
        debug!(id = %self.0, "standard output is not keeping up; event not printed");
        metrics.printer_dropped.inc();
    }
}
