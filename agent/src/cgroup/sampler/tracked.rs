//! One followed cgroup: its entry and the sampling step the tick runs for
//! it when it is due.

use std::time::{Duration, Instant};

use oomlens_proto::v1 as pb;
use tracing::debug;

use super::SamplerConfig;
use super::evidence::keep_time;
use super::metrics::{ReadFailed, SampleKind, SamplerMetrics};
use super::report::warning_due;
use super::schedule::{Kind, SLACK, Schedule, due_at, effective_limit, is_hot};
use crate::cgroup::history::History;
use crate::cgroup::reader::{Limits, MemcgReader, ReadError};
use crate::pods::CgroupIdentity;
use crate::telemetry::Happening as _;

/// What a sample leaves for the tick to pass on.
#[derive(Debug, Default)]
pub(super) struct Sampled {
    /// The processes of a cgroup hot after a full sample.
    pub(super) hot_pids: Option<Vec<u32>>,
    pub(super) warning: Option<pb::MemoryWarning>,
}

/// A followed cgroup. `repr(C)` keeps the declared order: what every
/// sample touches comes first and shares a few cache lines; what only
/// kills and requests read comes after it.
#[derive(Debug)]
#[repr(C)]
pub(super) struct Tracked {
    pub(super) kind: Kind,
    pub(super) hot: bool,
    pub(super) last_fast: Option<Instant>,
    pub(super) last_full: Option<Instant>,
    pub(super) reader: Option<MemcgReader>,
    pub(super) history: History,
    /// Limits as last read, and when.
    pub(super) limits: Limits,
    pub(super) last_limits: Option<Instant>,
    pub(super) followed_since: Instant,
    /// Tightest limit among the tracked ancestors (a pod's limit bounds its
    /// unlimited containers), refreshed once a second.
    pub(super) ancestor_limit: Option<u64>,
    pub(super) oom_kill: Option<u64>,
    pub(super) last_warning: Option<Instant>,
    /// Past the warning rules at its latest full sample.
    pub(super) near_limit: bool,
    pub(super) removed_at: Option<Instant>,
    pub(super) path: String,
    pub(super) identity: CgroupIdentity,
    /// Times (Unix ms) the OOM-kill counter was seen to step.
    pub(super) oom_steps: Vec<u64>,
    /// Times (monotonic µs) the kernel notified an OOM here.
    pub(super) oom_notices: Vec<u64>,
}

impl Tracked {
    /// A cgroup followed from `now` on, due at once.
    pub(super) fn new(
        path: String,
        identity: CgroupIdentity,
        reader: MemcgReader,
        history: History,
        now: Instant,
    ) -> Self {
        Self {
            kind: Kind::of(identity.level),
            hot: false,
            last_fast: None,
            last_full: None,
            reader: Some(reader),
            history,
            limits: Limits::default(),
            last_limits: None,
            followed_since: now,
            ancestor_limit: None,
            oom_kill: None,
            last_warning: None,
            near_limit: false,
            removed_at: None,
            path,
            identity,
            oom_steps: Vec::new(),
            oom_notices: Vec::new(),
        }
    }

    /// When this cgroup's next sample is due (None: removed).
    pub(super) fn next_due(&self, schedule: &Schedule, now: Instant) -> Option<Instant> {
        self.reader.as_ref()?;
        let (full_every, usage_every) = schedule.intervals(self.kind, self.hot);
        let full = due_at(self.last_full, full_every, SLACK, now);
        Some(usage_every.map_or(full, |every| full.min(due_at(self.last_fast, every, SLACK, now))))
    }

    /// Marks the cgroup removed: no more samples; its history is kept for
    /// the grace period.
    pub(super) fn mark_removed(&mut self, now: Instant, metrics: &SamplerMetrics) {
        if self.removed_at.is_none() {
            self.removed_at = Some(now);
            self.reader = None;
            metrics.vanished.inc();
        }
    }

    /// Reads what of this cgroup is due at `now` (Unix ms `t_ms`) and
    /// records it: limits when due, a full or a usage sample, a step of the
    /// OOM-kill counter; then judges whether the cgroup is hot. Counts its
    /// reads in `metrics`. It runs for every due cgroup on every tick: it
    /// reads into the sampler's buffer, and a hot cgroup's process list and
    /// a warning are all it allocates.
    pub(super) fn sample(
        &mut self,
        config: &SamplerConfig,
        buf: &mut [u8],
        metrics: &SamplerMetrics,
        now: Instant,
        t_ms: u64,
    ) -> Sampled {
        let schedule = &config.schedule;
        let mut sampled = Sampled::default();
        let Some(reader) = &self.reader else {
            return sampled;
        };
        let (full_every, usage_every) = schedule.intervals(self.kind, self.hot);
        let due = |last: Option<Instant>, every: Duration| now >= due_at(last, every, SLACK, now);
        let full_due = due(self.last_full, full_every);
        let usage_due = usage_every.is_some_and(|every| due(self.last_fast, every));
        if !full_due && !usage_due {
            return sampled;
        }
        let result = if full_due {
            // A runtime writes a new container's limit just after
            // creating its cgroup, which the sampler may have read
            // first: limits are read with every full sample during the
            // first limits interval.
            let young = now.duration_since(self.followed_since) < schedule.limits;
            let limits = if self.hot || young || due(self.last_limits, schedule.limits) {
                reader.read_limits(buf).inspect(|&limits| {
                    metrics.limit_reads.inc();
                    self.limits = limits;
                    self.last_limits = Some(now);
                })
            } else {
                Ok(self.limits)
            };
            limits
                .and_then(|limits| reader.read_full(buf, limits))
                .map(|sample| {
                    self.history.record_full(t_ms, &sample);
                    Some(sample)
                })
        } else {
            reader.read_usage(buf).map(|usage| {
                self.history.record_usage(t_ms, usage);
                None
            })
        };
        match result {
            Ok(Some(sample)) => {
                metrics.sampled(SampleKind::Full);
                self.last_full = Some(now);
                self.last_fast = Some(now);
                if let Some(count) = sample.counters.oom_kill {
                    if self.oom_kill.is_some_and(|before| count > before) {
                        keep_time(&mut self.oom_steps, t_ms);
                    }
                    self.oom_kill = Some(count);
                }
                let growth = self.history.recent_growth(10_000);
                let effective_limit = effective_limit(sample.limit, self.ancestor_limit);
                self.hot = is_hot(schedule, sample.working_set, effective_limit, growth);
                // The processes of a cgroup near its limit: a kill there
                // may come without a cgroup path (rate-limited report).
                if self.hot {
                    match reader.read_procs() {
                        Ok(pids) => sampled.hot_pids = Some(pids),
                        Err(ReadError::Vanished(_)) => {}
                        Err(error) => debug!(%error, "cgroup.procs not read"),
                    }
                }
                let (warning, near_limit) =
                    warning_due(config, self, now, t_ms, sample.working_set, effective_limit);
                self.near_limit = near_limit;
                sampled.warning = warning;
                if sampled.warning.is_some() {
                    self.last_warning = Some(now);
                }
            }
            Ok(None) => {
                metrics.sampled(SampleKind::Usage);
                self.last_fast = Some(now);
                // A container can climb from rest to its limit between
                // two full samples: turning hot on a usage sample gets
                // it full samples (and its process list) in time.
                if !self.hot
                    && let Some((_, working_set, _)) = self.history.latest()
                {
                    let limit = effective_limit(self.history.limit(), self.ancestor_limit);
                    // Over the last second, or two usage intervals
                    // for levels sampled once a second.
                    let window = usage_every.map_or(1_000, |every| {
                        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                        every_ms.saturating_mul(2).max(1_000)
                    });
                    let growth = self.history.short_growth(window);
                    self.hot = is_hot(schedule, working_set, limit, growth);
                }
            }
            Err(ReadError::Vanished(_)) => self.mark_removed(now, metrics),
            Err(error) => {
                ReadFailed {
                    error: &error,
                    what: "cgroup read failed",
                }
                .emit(metrics);
                // Tried again on schedule, not on every tick.
                if full_due {
                    self.last_full = Some(now);
                }
                self.last_fast = Some(now);
            }
        }
        sampled
    }
}
