//! What the sampler counts, counted where it happens: the sampling step
//! counts its reads, discovery the cgroups that vanish, the tick its passes
//! and warnings. [`super::SamplerStats`] is read back from these.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::cgroup::reader::ReadError;
use crate::telemetry::Happening;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(super) enum SampleKind {
    Usage,
    Full,
}

impl EncodeLabelValue for SampleKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Usage => "usage",
            Self::Full => "full",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SampleLabels {
    kind: SampleKind,
}

/// Whether a warning reached its consumer.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(super) enum Outcome {
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
struct OutcomeLabels {
    outcome: Outcome,
}

/// The sampler's metrics. Clones share the counts; an unregistered set
/// still counts (for [`super::Sampler::stats`]).
#[derive(Debug, Clone)]
pub struct SamplerMetrics {
    usage_samples: Counter,
    full_samples: Counter,
    samples: Family<SampleLabels, Counter>,
    pub(super) limit_reads: Counter,
    pub(super) sampling_seconds: Counter<f64, AtomicU64>,
    pub(super) pass_seconds: Histogram,
    pub(super) read_errors: Counter,
    pub(super) vanished: Counter,
    warnings: Family<OutcomeLabels, Counter>,
    pub(super) tracked: Gauge,
    pub(super) in_grace: Gauge,
    pub(super) history_bytes: Gauge,
    pub(super) near_limit: Gauge,
}

impl Default for SamplerMetrics {
    fn default() -> Self {
        let samples = Family::<SampleLabels, Counter>::default();
        // The two series are fixed: take them once, so a sample counts
        // without a label lookup.
        let usage_samples = samples
            .get_or_create(&SampleLabels {
                kind: SampleKind::Usage,
            })
            .clone();
        let full_samples = samples
            .get_or_create(&SampleLabels {
                kind: SampleKind::Full,
            })
            .clone();
        Self {
            usage_samples,
            full_samples,
            samples,
            limit_reads: Counter::default(),
            sampling_seconds: Counter::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            read_errors: Counter::default(),
            vanished: Counter::default(),
            warnings: Family::default(),
            tracked: Gauge::default(),
            in_grace: Gauge::default(),
            history_bytes: Gauge::default(),
            near_limit: Gauge::default(),
        }
    }
}

impl SamplerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "samples",
            "Cgroup memory samples taken, by kind",
            self.samples.clone(),
        );
        registry.register(
            "cgroup_limit_reads",
            "Reads of a cgroup's limits (with a full sample, when due)",
            self.limit_reads.clone(),
        );
        registry.register(
            "sampling_seconds",
            "Time spent sampling cgroups",
            self.sampling_seconds.clone(),
        );
        registry.register(
            "sample_pass_seconds",
            "Duration of one sampling pass over all due cgroups",
            self.pass_seconds.clone(),
        );
        registry.register(
            "cgroup_read_errors",
            "Cgroup file reads that failed",
            self.read_errors.clone(),
        );
        registry.register(
            "cgroups_vanished",
            "Followed cgroups that were removed",
            self.vanished.clone(),
        );
        registry.register(
            "memory_warnings",
            "Pre-OOM warnings, sent or dropped",
            self.warnings.clone(),
        );
        registry.register(
            "cgroups_tracked",
            "Memory cgroups being sampled",
            self.tracked.clone(),
        );
        registry.register(
            "cgroups_in_grace",
            "Removed cgroups whose history is kept for late kill records",
            self.in_grace.clone(),
        );
        registry.register(
            "history_bytes",
            "Memory held by cgroup histories",
            self.history_bytes.clone(),
        );
        registry.register(
            "containers_near_limit",
            "Containers past the pre-OOM warning rules at their latest full sample \
             (at least half their limit and projected to reach it soon)",
            self.near_limit.clone(),
        );
    }

    pub(super) fn sampled(&self, kind: SampleKind) {
        match kind {
            SampleKind::Usage => self.usage_samples.inc(),
            SampleKind::Full => self.full_samples.inc(),
        };
    }

    pub(super) fn samples(&self, kind: SampleKind) -> u64 {
        match kind {
            SampleKind::Usage => self.usage_samples.get(),
            SampleKind::Full => self.full_samples.get(),
        }
    }

    pub(super) fn warning(&self, outcome: Outcome) {
        self.warnings.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(super) fn warnings(&self, outcome: Outcome) -> u64 {
        self.warnings.get_or_create(&OutcomeLabels { outcome }).get()
    }
}

/// A cgroup file could not be read (other than the cgroup being removed):
/// tried again on schedule.
#[derive(Debug)]
pub(super) struct ReadFailed<'a> {
    pub error: &'a ReadError,
    pub what: &'static str,
}

impl Happening for ReadFailed<'_> {
    type Metrics = SamplerMetrics;
    fn emit(self, metrics: &SamplerMetrics) {
        warn!(error = %self.error, "{}", self.what);
        metrics.read_errors.inc();
    }
}
