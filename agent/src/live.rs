//! The live pipeline: `/dev/kmsg` -> OOM parser -> events, with a resume
//! cursor, overrun and forgery accounting and vmstat reconciliation.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use oomlens_proto::v1::OomEvent;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cgroup::SamplerHandle;
use crate::event::{NodeContext, attribute, event_from_report};
use crate::kmsg::{Cursor, KmsgError, KmsgItem, KmsgReader, ReaderStats, StartAt};
use crate::oom::{Parser, ParserStats};
use crate::pods::path::is_below;
use crate::reconcile::{Reconciler, read_vmstat_oom_kill};
use crate::telemetry::{AgentMetrics, KmsgSync};

/// Where finished events go: the durable spool (written before the kernel
/// log cursor moves past the kill) and/or a channel (printing, tests).
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    pub spool: Option<crate::ship::SharedSpool>,
    pub channel: Option<mpsc::Sender<OomEvent>>,
}

impl From<mpsc::Sender<OomEvent>> for EventSink {
    fn from(channel: mpsc::Sender<OomEvent>) -> Self {
        Self {
            spool: None,
            channel: Some(channel),
        }
    }
}

/// Where the live pipeline reads and keeps its state.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub kmsg_path: PathBuf,
    pub proc_root: PathBuf,
    /// Holds `kmsg.cursor`; None: no resume across restarts.
    pub state_dir: Option<PathBuf>,
    pub node: NodeContext,
    /// Where to start without a cursor of this boot.
    pub start_without_cursor: StartAt,
    /// After this long without a record, finished kills are reported
    /// without waiting for the next record.
    pub idle_flush: Duration,
    /// The cgroup sampler, for memory histories and the node view; None:
    /// events carry the kernel's report only.
    pub sampler: Option<SamplerHandle>,
    /// Where the pipeline's counters go.
    pub metrics: std::sync::Arc<AgentMetrics>,
    /// The container runtime, for names and silent kills; None: identity
    /// from cgroup paths only.
    pub cri: Option<crate::pods::cri::CriHandle>,
    /// The Kubernetes API, for owners, requests and limits, and roles.
    pub kube: Option<std::sync::Arc<crate::pods::kube::KubeEnricher>>,
}

/// How long an event waits for the container runtime's (or the
/// Kubernetes API's) answer.
const CRI_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an event waits for the sampler's snapshot before it goes out
/// without one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(250);

/// A kill without a cgroup path (rate-limited report) waits this long, so
/// the sampler's full samples (every second, every 50 ms near a limit) have
/// seen the OOM counter that stepped with it.
const ATTRIBUTION_WAIT: Duration = Duration::from_millis(1300);

/// A kill waiting for attribution.
#[derive(Debug)]
struct Deferred {
    due: tokio::time::Instant,
    event: OomEvent,
    seq: Option<u64>,
}

/// What the pipeline counted, for metrics and the shutdown log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveStats {
    pub reader: ReaderStats,
    pub parser: ParserStats,
    pub events: u64,
    /// Kills `/proc/vmstat` counted that the log never showed.
    pub missed_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Kmsg(#[from] KmsgError),
    #[error("the event consumer went away")]
    SinkClosed,
}

/// Microseconds on the kernel's monotonic clock, the one printk stamps
/// records with.
pub fn monotonic_us() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
}

/// Wall-clock microseconds at boot, to convert kernel timestamps.
pub fn boot_wall_us() -> Option<i64> {
    let real = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
    let real_us = real.tv_sec() * 1_000_000 + real.tv_nsec() / 1000;
    Some(real_us - monotonic_us() as i64)
}

struct Pipeline {
    config: LiveConfig,
    parser: Parser,
    reconciler: Option<Reconciler>,
    sink: EventSink,
    cursor_path: Option<PathBuf>,
    saved_seq: Option<u64>,
    last_seq: Option<u64>,
    events: u64,
    deferred: std::collections::VecDeque<Deferred>,
    /// OOM-counter steps (Unix ms) already matched to a kill.
    claimed_steps: std::collections::HashSet<(String, u64)>,
    /// Kernel OOM notices (monotonic µs) already matched to a kill.
    claimed_notices: std::collections::HashSet<(String, u64)>,
    /// Kills placed by their report, /proc or the sampler's process list:
    /// (victim's cgroup, kernel monotonic µs, Unix ms).
    placed: std::collections::VecDeque<(String, u64, u64)>,
    metrics_sync: KmsgSync,
    /// The reader's counters as of the last record.
    reader_stats: ReaderStats,
}

impl Pipeline {
    async fn emit_ready(&mut self) -> Result<(), LiveError> {
        while let Some(report) = self.parser.next_report() {
            if let (Some(reconciler), Some(us)) = (self.reconciler.as_mut(), report.kill_stamp.monotonic_us) {
                reconciler.kill_seen(us);
            }
            let mut event = event_from_report(&report, &self.config.node, self.events);
            info!(
                id = %event.id,
                seq = report.kill_stamp.seq,
                pid = report.victim.pid,
                comm = %report.victim.comm,
                oom_memcg = report.oom_memcg().unwrap_or("?"),
                partial = report.partial,
                "OOM kill"
            );
            if event.task_memcg.is_none() {
                // A bare kill line: the victim is dying right now, and its
                // /proc entry usually still names its cgroup.
                if let Some(path) = report
                    .victim
                    .pid
                    .try_into()
                    .ok()
                    .and_then(|pid| memory_cgroup_of(&self.config.proc_root, pid))
                {
                    info!(id = %event.id, cgroup = %path, "attributed a kill without cgroup path by the victim's /proc entry");
                    attribute(&mut event, None, Some(&path));
                }
            }
            if event.task_memcg.is_none()
                && let (Some(sampler), Ok(pid)) = (&self.config.sampler, u32::try_from(report.victim.pid))
            {
                // Gone from /proc: the sampler lists the processes of
                // cgroups near their limit, where memcg kills happen.
                let since = event_time_ms(&event).saturating_sub(PID_LOOKBACK_MS);
                if let Some(path) = sampler.cgroup_of_pid(pid, since).await {
                    info!(id = %event.id, cgroup = %path, "attributed a kill without cgroup path by the sampler's process list");
                    attribute(&mut event, None, Some(&path));
                }
            }
            self.find_limit(&mut event).await;
            // The OOM notices and counter steps of a placed kill are its
            // own: a kill placed later by them must not take them.
            if let (Some(path), Some(us)) = (
                event.task_memcg.clone(),
                event.kernel.as_ref().and_then(|k| k.monotonic_us),
            ) {
                self.placed.push_back((path, us, event_time_ms(&event)));
                while self.placed.len() > 256 {
                    self.placed.pop_front();
                }
            }
            if self.config.sampler.is_some() && event.task_memcg.is_none() {
                let due = tokio::time::Instant::now() + ATTRIBUTION_WAIT;
                self.deferred.push_back(Deferred {
                    due,
                    event,
                    seq: report.kill_stamp.seq,
                });
                continue;
            }
            self.send(event).await?;
        }
        Ok(())
    }

    async fn send(&mut self, mut event: OomEvent) -> Result<(), LiveError> {
        if let Some(sampler) = &self.config.sampler {
            attach_snapshot(sampler, &mut event).await;
        }
        if let (Some(cri), Some(id)) = (&self.config.cri, event.container.as_ref().map(|c| c.id.clone())) {
            match tokio::time::timeout(CRI_TIMEOUT, cri.resolve(&id)).await {
                Ok(Some(resolved)) => crate::event::apply_runtime(&mut event, &resolved),
                Ok(None) => debug!(id = %event.id, container = %id, "container unknown to the runtime"),
                Err(_) => warn!(id = %event.id, "the container runtime did not answer in time"),
            }
        }
        if let Some(kube) = &self.config.kube
            && tokio::time::timeout(CRI_TIMEOUT, kube.enrich(&mut event))
                .await
                .is_err()
        {
            warn!(id = %event.id, "the Kubernetes API did not answer in time");
        }
        // Counters agree with the events as they go out.
        self.config.metrics.kill(&event);
        self.sync_metrics();
        if let Some(spool) = &self.sink.spool {
            self.spool_event(spool.clone(), &event).await;
        }
        if let Some(channel) = &self.sink.channel {
            channel.send(event).await.map_err(|_| LiveError::SinkClosed)?;
        }
        self.events += 1;
        Ok(())
    }

    /// Writes to the spool, retrying a failing disk a few times: the cursor
    /// moves past the kill once this returns.
    async fn spool_event(&self, spool: crate::ship::SharedSpool, event: &OomEvent) {
        for attempt in 1..=3 {
            match spool.append(event.clone()).await {
                Ok(_) => {
                    self.config.metrics.sync_spool(spool.stats());
                    return;
                }
                Err(error) if attempt < 3 => {
                    warn!(%error, id = %event.id, attempt, "cannot spool an event; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    self.config.metrics.spool_write_errors.inc();
                    tracing::error!(%error, id = %event.id, "event not spooled: it is printed but will not reach the collector");
                }
            }
        }
    }

    /// Attributes and sends the deferred kills that are due (all of them
    /// when `all`, at shutdown).
    async fn release_deferred(&mut self, all: bool) -> Result<(), LiveError> {
        let now = tokio::time::Instant::now();
        while self.deferred.front().is_some_and(|d| all || d.due <= now) {
            let Some(Deferred { mut event, .. }) = self.deferred.pop_front() else {
                break;
            };
            if let Some(sampler) = &self.config.sampler {
                self.attribute_deferred(sampler.clone(), &mut event).await;
            }
            self.send(event).await?;
        }
        Ok(())
    }

    /// Places a kill whose report had no cgroup path: by the kernel's OOM
    /// notification at that moment if there was one, else by an
    /// unambiguous OOM-counter step, else not at all.
    async fn attribute_deferred(&mut self, sampler: SamplerHandle, event: &mut OomEvent) {
        if let Some(kill_us) = event.kernel.as_ref().and_then(|k| k.monotonic_us) {
            let notices = sampler
                .oom_notices(kill_us.saturating_sub(2_000_000), kill_us + 50_000)
                .await;
            // Claims older than any window can match no kill any more.
            self.claimed_notices.retain(|(_, t)| t + 10_000_000 > kill_us);
            let notices: Vec<(String, u64)> = notices
                .into_iter()
                .filter(|(path, t)| {
                    !self.owned_by_placed_kill(path, |(_, us, _)| t.abs_diff(*us) <= PLACED_NOTICE_US)
                })
                .collect();
            if let Some(group) = match_notice(&notices, kill_us, &self.claimed_notices) {
                let (oom, task) = group.places();
                info!(id = %event.id, oom_memcg = ?oom, task_memcg = ?task, "placed a kill without cgroup path by the kernel's OOM notification");
                attribute(event, oom.as_deref(), task.as_deref());
                self.claimed_notices.extend(group.notices);
                return;
            }
        }
        let kill_ms = event_time_ms(event);
        let steps = sampler
            .oom_steps(kill_ms.saturating_sub(STEP_BEFORE_MS), kill_ms + STEP_AFTER_MS)
            .await;
        self.claimed_steps.retain(|(_, t)| t + 10_000 > kill_ms);
        let steps: Vec<(String, u64)> = steps
            .into_iter()
            .filter(|(path, t)| {
                !self.owned_by_placed_kill(path, |(_, _, ms)| {
                    (ms.saturating_sub(STEP_BEFORE_MS)..=ms + STEP_AFTER_MS).contains(t)
                })
            })
            .collect();
        match match_step(&steps, &self.claimed_steps) {
            Some(step) => {
                info!(id = %event.id, cgroup = %step.0, "attributed a kill without cgroup path by its OOM counter");
                attribute(event, None, Some(&step.0));
                self.claimed_steps.insert(step);
                self.find_limit(event).await;
            }
            None => {
                warn!(id = %event.id, steps = steps.len(), "could not attribute a kill without cgroup path")
            }
        }
    }

    /// A memcg kill placed by its victim's cgroup alone: which limit was
    /// hit (the container's or the pod's decides the scope), from the
    /// sampled usage just before the kill.
    async fn find_limit(&self, event: &mut OomEvent) {
        let (Some(sampler), Some(task)) = (&self.config.sampler, event.task_memcg.clone()) else {
            return;
        };
        if event.oom_memcg.is_some() || event.constraint != oomlens_proto::v1::Constraint::Memcg as i32 {
            return;
        }
        if let Some(limited) = sampler.limited_cgroup(task, event_time_ms(event)).await {
            attribute(event, Some(&limited), None);
        }
    }

    /// Whether a notice or step at `path` belongs to a kill already placed
    /// there (or below, for an ancestor's notice) that `near` matches.
    fn owned_by_placed_kill(&self, path: &str, near: impl Fn(&(String, u64, u64)) -> bool) -> bool {
        self.placed
            .iter()
            .any(|placed| (placed.0 == path || is_below(&placed.0, path)) && near(placed))
    }

    /// The cursor may advance to the last record read, except past the
    /// start of a report still in progress.
    fn save_cursor(&mut self) {
        let Some(path) = &self.cursor_path else { return };
        let Some(last) = self.last_seq else { return };
        // Kills still waiting for attribution hold the cursor back too.
        let pending = self.deferred.iter().filter_map(|d| d.seq);
        let safe = self
            .parser
            .oldest_open_seq()
            .into_iter()
            .chain(pending)
            .map(|seq| seq.saturating_sub(1))
            .fold(last, u64::min);
        if self.saved_seq == Some(safe) {
            return;
        }
        let cursor = Cursor {
            boot_id: self.config.node.boot_id.clone(),
            seq: safe,
        };
        match cursor.save(path) {
            Ok(()) => self.saved_seq = Some(safe),
            Err(error) => warn!(%error, "kmsg cursor not saved; a restart may report kills twice"),
        }
    }

    fn sync_metrics(&mut self) {
        let missed = self.reconciler.as_ref().map_or(0, Reconciler::missed);
        let metrics = std::sync::Arc::clone(&self.config.metrics);
        self.metrics_sync
            .sync(&metrics, self.reader_stats, self.parser.stats(), missed);
    }

    fn tick(&mut self) {
        match read_vmstat_oom_kill(&self.config.proc_root) {
            Ok(Some(value)) => {
                let now = monotonic_us();
                let reconciler = self.reconciler.get_or_insert_with(|| Reconciler::new(now, value));
                let before = reconciler.missed();
                reconciler.counter(now, value);
                if reconciler.missed() > before {
                    warn!(
                        missed = reconciler.missed(),
                        "the kernel counted OOM kills that its log did not show"
                    );
                }
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "cannot read vmstat"),
        }
        self.save_cursor();
    }
}

/// Sleeps until the first deferred kill is due; forever when none is.
async fn sleep_until_due(deferred: &std::collections::VecDeque<Deferred>) {
    match deferred.front() {
        Some(first) => tokio::time::sleep_until(first.due).await,
        None => std::future::pending().await,
    }
}

fn event_time_ms(event: &OomEvent) -> u64 {
    event
        .time
        .as_ref()
        .map_or_else(crate::cgroup::sampler::now_ms, |t| {
            t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000
        })
}

/// A rate-limited kill's pid is looked up among processes seen in hot
/// cgroups this long before the kill.
const PID_LOOKBACK_MS: u64 = 5_000;

/// An OOM's notices come this close to its kill line: the ones of a placed
/// kill are its own.
const PLACED_NOTICE_US: u64 = 20_000;

/// A counter step is seen at the first full sample after the kill: within
/// the hot interval for a cgroup at its limit, a second otherwise. The
/// window allows for clock skew before and slow samples after.
const STEP_BEFORE_MS: u64 = 200;
const STEP_AFTER_MS: u64 = 2_000;

/// The step that belongs to a kill: the only unclaimed leaf-most one in
/// the window (on cgroup v2 the ancestors' counters step with the victim's
/// cgroup). A step is seen at the next full sample, up to a second after
/// its kill, so with several candidates the order tells nothing: then no
/// attribution, rather than a guess.
fn match_step(
    steps: &[(String, u64)],
    claimed: &std::collections::HashSet<(String, u64)>,
) -> Option<(String, u64)> {
    let free: Vec<&(String, u64)> = steps.iter().filter(|s| !claimed.contains(*s)).collect();
    let mut leaves = free.iter().filter(|(path, t)| {
        !free
            .iter()
            .any(|(other, u)| is_below(other, path) && u.abs_diff(*t) <= 100)
    });
    let only = leaves.next()?;
    leaves.next().is_none().then(|| (*only).clone())
}

/// The notices of one OOM: the limited cgroup and its descendants, notified
/// at the same moment.
#[derive(Debug, PartialEq, Eq)]
struct NoticeGroup {
    notices: Vec<(String, u64)>,
}

impl NoticeGroup {
    /// (limited cgroup, victim's cgroup): the shallowest notified cgroup if
    /// it is an ancestor of all the others, and the only leaf if there is
    /// one (several leaves: the victim could be in any of them).
    fn places(&self) -> (Option<String>, Option<String>) {
        let mut paths: Vec<&str> = self.notices.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        let shallowest = paths.iter().min_by_key(|p| p.matches('/').count()).copied();
        let oom = shallowest.filter(|top| paths.iter().all(|p| p == top || is_below(p, top)));
        let mut leaves = paths
            .iter()
            .filter(|p| !paths.iter().any(|other| is_below(other, p)));
        let task = match (leaves.next(), leaves.next()) {
            (Some(only), None) => Some((*only).to_owned()),
            _ => None,
        };
        (oom.map(str::to_owned), task)
    }
}

/// Notices of one OOM arrive within this of each other.
const NOTICE_GROUP_US: u64 = 2_000;
/// A kernel OOM notification: (cgroup, monotonic µs).
type Notice = (String, u64);

/// Two unrelated OOMs this close make a kill's notice ambiguous.
const NOTICE_AMBIGUITY_US: u64 = 20_000;
/// A notice precedes its kill line; this allows for the two clocks.
const NOTICE_AFTER_KILL_US: u64 = 10_000;

/// The OOM notification of a kill: the latest unclaimed notice at (or just
/// before) the kill's kernel time, with the notices of the same OOM.
fn match_notice(
    notices: &[(String, u64)],
    kill_us: u64,
    claimed: &std::collections::HashSet<(String, u64)>,
) -> Option<NoticeGroup> {
    let free: Vec<&(String, u64)> = notices
        .iter()
        .filter(|n| !claimed.contains(*n) && n.1 <= kill_us + NOTICE_AFTER_KILL_US)
        .collect();
    let latest = free.iter().map(|n| n.1).max()?;
    let (notices, others): (Vec<&Notice>, Vec<&Notice>) =
        free.into_iter().partition(|n| latest - n.1 <= NOTICE_GROUP_US);
    // Another cgroup's OOM this close (a storm): which one this kill
    // belongs to is a guess, and no answer is better than a wrong one.
    let related = |path: &str| {
        notices
            .iter()
            .any(|(p, _)| p == path || is_below(p, path) || is_below(path, p))
    };
    let (same_oom, rivals): (Vec<&Notice>, Vec<&Notice>) = others
        .into_iter()
        .filter(|(_, t)| latest - t <= NOTICE_AMBIGUITY_US)
        .partition(|(path, _)| related(path));
    if !rivals.is_empty() {
        return None;
    }
    // The kernel's retries of the same OOM belong to this kill too.
    Some(NoticeGroup {
        notices: notices.into_iter().chain(same_oom).cloned().collect(),
    })
}

/// The memory cgroup of a live (or dying) process, from
/// `/proc/PID/cgroup`: the `memory` line on v1, the unified line on v2.
/// None for `/`: an exiting process is moved to the root cgroup, so `/`
/// says nothing about where it was killed. None for a path outside the
/// agent's own cgroup namespace (`/..`, an agent in a container with a
/// private cgroup namespace): the kernel log's paths are absolute.
pub fn memory_cgroup_of(proc_root: &std::path::Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    parse_proc_cgroup(&text).filter(|path| path != "/" && !path.starts_with("/.."))
}

fn parse_proc_cgroup(text: &str) -> Option<String> {
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if controllers.is_empty() {
            unified = Some(path.to_owned());
        }
    }
    unified
}

/// Attaches the memory history of the victim's cgroup (and of the limited
/// cgroup when it is another level) up to the kill, and the node view.
async fn attach_snapshot(sampler: &SamplerHandle, event: &mut OomEvent) {
    let until_ms = event
        .time
        .as_ref()
        .map_or_else(crate::cgroup::sampler::now_ms, |t| {
            t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000
        });
    let request = sampler.snapshot(event.task_memcg.clone(), event.oom_memcg.clone(), until_ms);
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, request).await {
        Ok(Some(snapshot)) => {
            event.history = snapshot.victim;
            event.oom_memcg_history = snapshot.oom_memcg;
            event.node_memory = snapshot.node;
        }
        Ok(None) => warn!(id = %event.id, "the sampler is gone; event sent without history"),
        Err(_) => warn!(id = %event.id, "the sampler did not answer in time; event sent without history"),
    }
}

/// Runs until `shutdown` completes (then reports what is finished, saves
/// the cursor and returns) or the kernel log cannot be read.
pub async fn run(
    config: LiveConfig,
    sink: impl Into<EventSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<LiveStats, LiveError> {
    let sink = sink.into();
    let cursor_path = config.state_dir.as_ref().map(|dir| dir.join("kmsg.cursor"));
    let cursor = match cursor_path.as_deref().map(Cursor::load) {
        Some(Ok(cursor)) => cursor,
        Some(Err(error)) => {
            warn!(%error, "starting without a resume cursor");
            None
        }
        None => None,
    };
    let start = Cursor::start_for(cursor.as_ref(), &config.node.boot_id, config.start_without_cursor);
    info!(path = %config.kmsg_path.display(), ?start, boot_id = %config.node.boot_id, "reading the kernel log");
    let mut reader = KmsgReader::open(&config.kmsg_path, start)?;
    config.metrics.set_kmsg_ready();
    let mut pipeline = Pipeline {
        reconciler: None,
        parser: Parser::new(),
        sink,
        cursor_path,
        saved_seq: None,
        last_seq: None,
        events: 0,
        deferred: std::collections::VecDeque::new(),
        claimed_steps: std::collections::HashSet::new(),
        claimed_notices: std::collections::HashSet::new(),
        placed: std::collections::VecDeque::new(),
        metrics_sync: KmsgSync::default(),
        reader_stats: ReaderStats::default(),
        config,
    };
    pipeline.tick();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let idle = tokio::time::sleep(pipeline.config.idle_flush);
        tokio::select! {
            item = reader.next() => match item? {
                KmsgItem::Record(record) => {
                    pipeline.parser.push(&record.input_line());
                    pipeline.last_seq = Some(record.seq);
                    pipeline.reader_stats = reader.stats();
                    pipeline.emit_ready().await?;
                }
                KmsgItem::Gap { lost, after_seq } => {
                    warn!(lost, after_seq, "kernel log overrun: records were overwritten before they were read");
                }
                KmsgItem::Malformed(error) => warn!(%error, "skipping a kernel log record"),
            },
            () = idle, if pipeline.parser.has_open_reports() => {
                pipeline.parser.flush_killed();
                pipeline.emit_ready().await?;
                pipeline.save_cursor();
            }
            () = sleep_until_due(&pipeline.deferred) => {
                pipeline.release_deferred(false).await?;
                pipeline.save_cursor();
            }
            _ = ticker.tick() => {
                pipeline.tick();
                pipeline.reader_stats = reader.stats();
                pipeline.sync_metrics();
            }
            () = &mut shutdown => break,
        }
    }
    pipeline.parser.flush_killed();
    pipeline.emit_ready().await?;
    pipeline.release_deferred(true).await?;
    pipeline.reader_stats = reader.stats();
    pipeline.sync_metrics();
    pipeline.save_cursor();
    let stats = LiveStats {
        reader: reader.stats(),
        parser: pipeline.parser.stats(),
        events: pipeline.events,
        missed_kills: pipeline.reconciler.as_ref().map_or(0, Reconciler::missed),
    };
    info!(?stats, "stopped reading the kernel log");
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unambiguous_step_is_matched() {
        let mut claimed = std::collections::HashSet::new();
        // v2: the pod's counter steps with its container's.
        let one = vec![
            ("/kubepods/pod1".to_owned(), 1_050),
            ("/kubepods/pod1/c1".to_owned(), 1_050),
        ];
        assert_eq!(
            match_step(&one, &claimed),
            Some(("/kubepods/pod1/c1".to_owned(), 1_050))
        );
        // Two containers stepped in the window: no guess.
        let two = vec![
            ("/kubepods/pod1/c1".to_owned(), 1_050),
            ("/kubepods/pod2/c2".to_owned(), 1_100),
        ];
        assert_eq!(match_step(&two, &claimed), None);
        // Once one of them is claimed by its own kill, the other is clear.
        claimed.insert(("/kubepods/pod1/c1".to_owned(), 1_050));
        assert_eq!(
            match_step(&two, &claimed),
            Some(("/kubepods/pod2/c2".to_owned(), 1_100))
        );
    }

    #[test]
    fn notices_place_the_limit_and_the_victim() {
        let claimed = std::collections::HashSet::new();
        // A container-limit OOM: only the container is notified.
        let container = vec![("/kubepods/pod1/c1".to_owned(), 5_000_000)];
        let group = match_notice(&container, 5_000_300, &claimed).expect("a notice");
        assert_eq!(
            group.places(),
            (
                Some("/kubepods/pod1/c1".to_owned()),
                Some("/kubepods/pod1/c1".to_owned())
            )
        );
        // A pod-limit OOM of a pod with two containers: the pod is the
        // limit, the victim could be in either container.
        let pod = vec![
            ("/kubepods/pod2".to_owned(), 7_000_000),
            ("/kubepods/pod2/a".to_owned(), 7_000_010),
            ("/kubepods/pod2/b".to_owned(), 7_000_020),
        ];
        let group = match_notice(&pod, 7_000_500, &claimed).expect("notices");
        assert_eq!(group.places(), (Some("/kubepods/pod2".to_owned()), None));
        // In a storm each kill takes the latest notice before it.
        let storm = vec![
            ("/k/p/c1".to_owned(), 1_000_000),
            ("/k/p/c2".to_owned(), 1_020_000),
        ];
        let first = match_notice(&storm, 1_000_200, &claimed).expect("c1");
        assert_eq!(first.places().1.as_deref(), Some("/k/p/c1"));
        let mut claimed = claimed;
        claimed.extend(first.notices);
        let second = match_notice(&storm, 1_020_150, &claimed).expect("c2");
        assert_eq!(second.places().1.as_deref(), Some("/k/p/c2"));
        // Nothing before the kill: no match.
        assert_eq!(
            match_notice(&storm, 900_000, &std::collections::HashSet::new()),
            None
        );
        // Two containers' OOMs 5 ms apart: either could be this kill's.
        let tight = vec![
            ("/k/p/c1".to_owned(), 1_000_000),
            ("/k/p/c2".to_owned(), 1_005_000),
        ];
        assert_eq!(
            match_notice(&tight, 1_005_200, &std::collections::HashSet::new()),
            None
        );
        // Repeated notices of one OOM (the kernel retries while the victim
        // exits) are no rival.
        let repeated = vec![
            ("/k/p/c1".to_owned(), 1_000_000),
            ("/k/p/c1".to_owned(), 1_004_000),
        ];
        let group = match_notice(&repeated, 1_004_100, &std::collections::HashSet::new()).expect("c1");
        assert_eq!(group.places().1.as_deref(), Some("/k/p/c1"));
        assert_eq!(group.notices.len(), 2, "both claimed with the kill");
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:pids:/kubepods/x\n7:memory:/kubepods/burstable/pod1/c1\n0::/system.slice/containerd.service\n";
        assert_eq!(
            parse_proc_cgroup(v1).as_deref(),
            Some("/kubepods/burstable/pod1/c1")
        );
        let v2 = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope\n";
        assert_eq!(
            parse_proc_cgroup(v2).as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope")
        );
        assert_eq!(parse_proc_cgroup("garbage"), None);
    }
}
