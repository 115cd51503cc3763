//! The sampler task: follows every selected memory cgroup, samples it on an
//! adaptive schedule, keeps its history (also for a grace period after the
//! cgroup is removed), raises pre-OOM warnings, and answers the event
//! assembler's requests for frozen histories.
//!
//! It owns all its state and never waits on the rest of the agent:
//! warnings leave through `try_send` (drops are counted) and requests are
//! answered on oneshot channels.
//!
//! [`Sampler`] owns all of it: the followed cgroups' `Tracked` entries (a
//! dense `Vec`, their next-due times in a `Vec` beside it, a path index),
//! the inotify watches, the OOM notifier, the node reader, the processes
//! seen in hot cgroups, the read buffer and the [`SamplerStats`]. Each
//! module adds one job to it:
//! - `watch`: which cgroups are followed. Inotify events and periodic
//!   rescans add entries and mark them removed; expired ones are dropped.
//! - `tracked`: the `Tracked` entry and `Tracked::sample`, one due
//!   cgroup's reads, history records, OOM-counter steps and hotness, which
//!   [`Sampler::tick`] runs for every due entry.
//! - `schedule`: the pure rules behind it: [`Schedule`], the intervals of
//!   each kind of cgroup, `due_at`, `is_hot`, `effective_limit`.
//! - `evidence`: what places a kill whose report lacks a cgroup or a
//!   limit: `PidPlaces`, the kernel's OOM notices and counter steps (kept
//!   in each entry), and the queries over them.
//! - `report`: [`WarningRules`] and the warnings, container statuses and
//!   [`Snapshot`]s built from the histories.
//! - `handle`: the rest of the agent's side: a [`SamplerHandle`] sends
//!   [`Request`]s, which [`Sampler::run`] answers between ticks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::inotify::{InitFlags, Inotify, WatchDescriptor};
use oomlens_proto::v1 as pb;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::discovery::{MemoryRoot, Selection};
use super::history::{History, Windows};
use super::node::NodeReader;
use super::notify::OomNotifier;
use super::path::ancestors;
use super::reader::READ_BUFFER;
use crate::telemetry::Readiness;

mod evidence;
mod handle;
mod metrics;
mod prefetch;
mod report;
mod schedule;
mod tracked;
mod watch;

use evidence::PidPlaces;
pub use evidence::{CounterStep, OomNotice};
pub use handle::{Request, SamplerHandle, Snapshot};
pub use metrics::SamplerMetrics;
use metrics::{Outcome, SampleKind};
pub use report::{Projection, Trend, WarningRules};
pub use schedule::Schedule;
use tracked::Tracked;

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub root: MemoryRoot,
    pub proc_root: PathBuf,
    pub selection: Selection,
    pub schedule: Schedule,
    /// Full rescan of the tree, as a safety net behind inotify.
    pub rescan: Duration,
    /// How long a removed cgroup's history is kept.
    pub grace: Duration,
    pub windows: Windows,
    pub warnings: WarningRules,
    pub node_name: String,
    /// Told of each OOM notification, so the kernel log reader reads the
    /// kill early ([`crate::kmsg::hurry`]).
    pub kmsg_hurry: Option<crate::kmsg::KmsgHurry>,
}

impl SamplerConfig {
    /// The default schedule, windows and warning rules for a memory
    /// controller found by [`super::detect`]; Kubernetes cgroups only.
    pub fn new(root: MemoryRoot, proc_root: PathBuf, node_name: String) -> Self {
        Self {
            root,
            proc_root,
            selection: Selection { include_other: false },
            schedule: Schedule::default(),
            rescan: Duration::from_secs(10),
            grace: Duration::from_secs(120),
            windows: Windows::default(),
            warnings: WarningRules::default(),
            node_name,
            kmsg_hurry: None,
        }
    }
}

/// The sampler's counts so far (its [`SamplerMetrics`], and what only
/// tests and benchmarks read).
#[derive(Debug, Clone, Copy, Default)]
pub struct SamplerStats {
    /// Cgroups followed now.
    pub tracked: u64,
    /// Removed cgroups whose history is still kept.
    pub in_grace: u64,
    pub fast_samples: u64,
    pub full_samples: u64,
    /// Reads of a cgroup's limits (with a full sample, when due).
    pub limit_reads: u64,
    /// Nanoseconds spent in sampling passes (reads, parsing, history).
    pub sampling_ns: u64,
    pub vanished: u64,
    pub read_errors: u64,
    pub warnings: u64,
    pub warnings_dropped: u64,
    pub rescans: u64,
    pub inotify_events: u64,
    /// Heap held by histories.
    pub history_bytes: u64,
}

#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    /// Followed cgroups, dense: each tick walks them all, and a vector
    /// keeps that walk cache-friendly.
    tracked: Vec<Tracked>,
    /// When each of `tracked` is next due (None: removed). Apart from the
    /// large `Tracked` entries so that a tick skipping most cgroups reads
    /// a few cache lines, not one or more per cgroup.
    next_due: Vec<Option<Instant>>,
    /// The positions due this tick (kept to reuse its allocation).
    due: Vec<usize>,
    /// Path -> position in `tracked`.
    index: HashMap<String, usize>,
    /// The position of each entry's nearest followed ancestor, found again
    /// only when entries come or go (`parents_stale`): the limits of
    /// ancestors are refreshed every second, and hashing every entry's
    /// ancestors' paths then took a few percent of the sampler's time.
    parents: Vec<Option<usize>>,
    parents_stale: bool,
    inotify: Option<Inotify>,
    watches: HashMap<WatchDescriptor, PathBuf>,
    notifier: Option<OomNotifier>,
    node: NodeReader,
    node_view: Option<pb::NodeMemory>,
    last_node: Option<Instant>,
    last_rescan: Option<Instant>,
    warnings: mpsc::Sender<pb::MemoryWarning>,
    pid_places: PidPlaces,
    buf: Box<[u8]>,
    metrics: SamplerMetrics,
    rescans: u64,
    inotify_events: u64,
    /// Told once the first pass over the tree is done.
    readiness: Option<Arc<Readiness>>,
}

impl Sampler {
    /// Counts into `metrics` (registered by the caller), and tells
    /// `readiness` once the tree has been scanned. Before the first tick.
    pub fn with_metrics(mut self, metrics: SamplerMetrics, readiness: Arc<Readiness>) -> Self {
        readiness.set_sampler_enabled();
        self.metrics = metrics;
        self.readiness = Some(readiness);
        self
    }

    pub fn new(config: SamplerConfig, warnings: mpsc::Sender<pb::MemoryWarning>) -> Self {
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(inotify) => Some(inotify),
            Err(errno) => {
                warn!(%errno, "inotify unavailable: new cgroups are found by periodic rescans only");
                None
            }
        };
        let notifier = match OomNotifier::start(config.root.version, config.kmsg_hurry.clone()) {
            Ok(notifier) => Some(notifier),
            Err(error) => {
                warn!(%error, "no kernel OOM notifications: kills without a cgroup path are matched by counters only");
                None
            }
        };
        Self {
            notifier,
            node: NodeReader::new(config.proc_root.clone()),
            config,
            tracked: Vec::new(),
            next_due: Vec::new(),
            due: Vec::new(),
            index: HashMap::new(),
            parents: Vec::new(),
            parents_stale: false,
            inotify,
            watches: HashMap::new(),
            node_view: None,
            last_node: None,
            last_rescan: None,
            warnings,
            pid_places: PidPlaces::default(),
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            metrics: SamplerMetrics::default(),
            rescans: 0,
            inotify_events: 0,
            readiness: None,
        }
    }

    pub fn stats(&self) -> SamplerStats {
        let metrics = &self.metrics;
        let tracked = self.tracked.iter().filter(|t| t.removed_at.is_none()).count() as u64;
        SamplerStats {
            tracked,
            in_grace: self.tracked.len() as u64 - tracked,
            fast_samples: metrics.samples(SampleKind::Usage),
            full_samples: metrics.samples(SampleKind::Full),
            limit_reads: metrics.limit_reads.get(),
            // Whole nanoseconds of a sum of pass durations.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            sampling_ns: (metrics.sampling_seconds.get() * 1e9) as u64,
            vanished: metrics.vanished.get(),
            read_errors: metrics.read_errors.get(),
            warnings: metrics.warnings(Outcome::Sent),
            warnings_dropped: metrics.warnings(Outcome::Dropped),
            rescans: self.rescans,
            inotify_events: self.inotify_events,
            history_bytes: self.tracked.iter().map(|t| t.history.heap_bytes() as u64).sum(),
        }
    }

    /// The histories of every followed cgroup, to fill for memory
    /// measurements (the sampler benchmark's 15 minutes of history).
    #[doc(hidden)]
    pub fn histories_mut(&mut self) -> impl Iterator<Item = &mut History> {
        self.tracked.iter_mut().map(|t| &mut t.history)
    }

    /// Paths followed now (not removed), sorted.
    pub fn tracked_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .tracked
            .iter()
            .filter(|t| t.removed_at.is_none())
            .map(|t| t.path.clone())
            .collect();
        paths.sort();
        paths
    }

    /// One pass of the schedule: reads whatever is due.
    pub fn tick(&mut self, now: Instant) {
        self.drain_inotify(now);
        self.collect_notices();
        if self
            .last_rescan
            .is_none_or(|t| now.duration_since(t) >= self.config.rescan)
        {
            self.rescan(now);
        }
        let t_ms = oomlens_proto::time::now_unix_ms();
        let mut warnings = Vec::new();
        let started = Instant::now();
        self.due.clear();
        self.due.extend(
            self.next_due
                .iter()
                .enumerate()
                .filter(|(_, at)| at.is_some_and(|at| at <= now))
                .map(|(i, _)| i),
        );
        for (k, &i) in self.due.iter().enumerate() {
            // Two entries ahead: the entry itself; one ahead (its entry
            // loaded by now): the newest slot of its history.
            if let Some(&ahead) = self.due.get(k + 2) {
                prefetch::prefetch(&self.tracked[ahead], prefetch::ENTRY_BYTES);
            }
            if let Some(slot) = self
                .due
                .get(k + 1)
                .and_then(|&next| self.tracked[next].history.newest_slot())
            {
                // The newest sample and the free slot after it.
                prefetch::prefetch(slot, 2 * size_of_val(slot));
            }
            let tracked = &mut self.tracked[i];
            let sampled = tracked.sample(&self.config, &mut self.buf, &self.metrics, now, t_ms);
            self.next_due[i] = tracked.next_due(&self.config.schedule, now);
            if let Some(pids) = sampled.hot_pids {
                self.pid_places.remember(pids, &tracked.path, t_ms);
            }
            warnings.extend(sampled.warning);
        }
        let pass = started.elapsed().as_secs_f64();
        self.metrics.sampling_seconds.inc_by(pass);
        self.metrics.pass_seconds.observe(pass);
        for warning in warnings {
            self.metrics.warning(match self.warnings.try_send(warning) {
                Ok(()) => Outcome::Sent,
                Err(_) => Outcome::Dropped,
            });
        }
        if self
            .last_node
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.once_a_second(now, t_ms);
        }
    }

    /// What need not run on every tick: the node's view, dropping expired
    /// histories and old process places, the ancestors' limits, the gauges.
    fn once_a_second(&mut self, now: Instant, t_ms: u64) {
        self.node_view = Some(self.node.read(t_ms));
        self.last_node = Some(now);
        self.forget_expired(now);
        self.pid_places.forget_old(t_ms);
        self.refresh_ancestor_limits();
        let stats = self.stats();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.tracked.set(gauge(stats.tracked));
        self.metrics.in_grace.set(gauge(stats.in_grace));
        self.metrics.history_bytes.set(gauge(stats.history_bytes));
        let near = self
            .tracked
            .iter()
            .filter(|t| t.removed_at.is_none() && t.near_limit)
            .count();
        self.metrics
            .near_limit
            .set(i64::try_from(near).unwrap_or(i64::MAX));
        if let Some(readiness) = &self.readiness {
            readiness.set_sampler_ready();
        }
    }

    /// Sets each cgroup's `ancestor_limit`, the tightest limit among its
    /// followed ancestors (those in grace included): up its chain of
    /// nearest followed ancestors, which passes each of them once.
    fn refresh_ancestor_limits(&mut self) {
        // The length check guards the indexing below, should an entry
        // ever come or go without marking the parents stale.
        if self.parents_stale || self.parents.len() != self.tracked.len() {
            self.parents = self
                .tracked
                .iter()
                .map(|t| ancestors(&t.path).find_map(|path| self.index.get(path).copied()))
                .collect();
            self.parents_stale = false;
        }
        for i in 0..self.tracked.len() {
            let mut tightest: Option<u64> = None;
            let mut ancestor = self.parents[i];
            while let Some(at) = ancestor {
                if let Some(limit) = self.tracked[at].history.limit() {
                    tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
                }
                ancestor = self.parents[at];
            }
            self.tracked[i].ancestor_limit = tightest;
        }
    }

    /// Runs the schedule until `shutdown`, answering requests in between.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        info!(root = %self.config.root.path.display(), mode = %self.config.root.mode, "sampling cgroup memory");
        let step = self.config.schedule.hot.min(self.config.schedule.fast);
        let mut ticker = tokio::time::interval(step);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(Instant::now()),
                Some(request) = requests.recv() => self.answer(request),
                () = &mut shutdown => break,
            }
        }
        info!(stats = ?self.stats(), "sampler stopped");
    }

    /// A handle and the request queue for [`Sampler::run`].
    pub fn channel() -> (SamplerHandle, mpsc::Receiver<Request>) {
        let (requests, receiver) = mpsc::channel(64);
        (SamplerHandle { requests }, receiver)
    }
}
