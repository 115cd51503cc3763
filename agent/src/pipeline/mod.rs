//! The live pipeline: kernel log records in, enriched OOM events out.
//!
//! ```text
//! records (a Stream: /dev/kmsg, or fixtures in tests)
//!   -> oom::Parser                      one report per killed process
//!   -> event::event_from_report         the event, placed by its report's paths
//!   -> attribute::Attributor            kills without a path: /proc, the sampler's evidence
//!   -> enrich::Enrichers                history, runtime names, Kubernetes owners
//!   -> EventSink                        spool (durable), then printer and channel
//! ```
//!
//! One task owns all of it. The cursor (the last record fully handled)
//! never moves past a report still open or a kill still waiting to be
//! placed, and moves past a kill only once it is spooled: a restart replays
//! exactly what was not delivered. [`run`] reads `/dev/kmsg`; [`run_on`]
//! takes any stream of records, so the whole pipeline runs in component
//! tests without root (with tokio's paused clock for its waits).

pub mod attribute;
pub mod container_kills;
mod enrich;
pub mod log_clock;
pub mod metrics;
pub mod oom_group;
pub mod runtime_watch;
mod state;

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use oomlens_proto::v1::OomEvent;
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::attribute::{ATTRIBUTION_WAIT, Attributor, PID_LOOKBACK_MS, Placement};
pub use self::enrich::Enrichers;
use self::log_clock::LogClockWatch;
use self::metrics::{
    ForgedLines, KillReported, KillsMissed, LogClockMeasured, PipelineMetrics, PrintDropped,
};
use self::state::StateDir;
use crate::cgroup::OomNotice;
use crate::event::{NodeContext, attribute, event_from_report};
use crate::kmsg::{Cursor, KmsgError, KmsgItem, KmsgReader, LineJoiner, ReaderMetrics, ReaderStats, StartAt};
use crate::oom::{OomReport, Parser, ParserStats};
use crate::telemetry::{Happening as _, Readiness};
use crate::vmstat::{Reconciler, read_vmstat_oom_kill};

/// Where finished events go: the durable spool (written before the kernel
/// log cursor moves past the kill), then the outputs.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    pub spool: Option<crate::ship::SharedSpool>,
    /// A consumer that must see every event (tests, the demo): the
    /// pipeline waits for room.
    pub channel: Option<mpsc::Sender<OomEvent>>,
    /// Best-effort output (the terminal): never waited for, so a stuck
    /// stdout cannot stall reading the kernel log; an event that finds it
    /// full is not printed (it is still spooled and logged), and counted.
    pub printer: Option<mpsc::Sender<OomEvent>>,
    /// Asks the runtime what it reports for each killed container, and
    /// spools that as a revision of the kill.
    pub runtime_watch: Option<runtime_watch::RuntimeWatcher>,
}

impl From<mpsc::Sender<OomEvent>> for EventSink {
    fn from(channel: mpsc::Sender<OomEvent>) -> Self {
        Self {
            channel: Some(channel),
            ..Self::default()
        }
    }
}

/// Where the pipeline reads and keeps its state, and who it reports to.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub kmsg_path: PathBuf,
    pub proc_root: PathBuf,
    /// Holds `kmsg.cursor`; None: no resume across restarts.
    pub state_dir: Option<PathBuf>,
    pub node: NodeContext,
    /// How often the kernel log clock's offset in `node` is measured again
    /// on `kmsg_path` (None: kept as given; [`log_clock::REMEASURE_EVERY`]
    /// in the agent).
    pub log_clock_every: Option<Duration>,
    /// Wakes the reader early after an OOM notification (the sampler's
    /// notifier tells it): [`crate::kmsg::hurry`].
    pub kmsg_hurry: Option<crate::kmsg::KmsgHurry>,
    /// Where to start without a cursor of this boot.
    pub start_without_cursor: StartAt,
    /// After this long without a record, finished kills are reported
    /// without waiting for the next record.
    pub idle_flush: Duration,
    /// Whether a kill may be followed by its `memory.oom.group`: kills
    /// that cannot are reported at their kill line, without the pause.
    pub oom_groups: oom_group::OomGroups,
    /// Memory history, runtime names, Kubernetes owners; each optional.
    /// The sampler also places kills whose report named no cgroup.
    pub enrichers: Enrichers,
    pub metrics: PipelineMetrics,
    pub reader_metrics: ReaderMetrics,
    pub readiness: Arc<Readiness>,
}

impl PipelineConfig {
    /// Reads `kmsg_path` from its end (without a cursor), with `/proc`
    /// under `proc_root`; no state, no enrichment.
    pub fn new(kmsg_path: PathBuf, proc_root: PathBuf, node: NodeContext) -> Self {
        Self {
            kmsg_path,
            proc_root,
            state_dir: None,
            node,
            log_clock_every: None,
            kmsg_hurry: None,
            start_without_cursor: StartAt::End,
            idle_flush: Duration::from_millis(20),
            oom_groups: oom_group::OomGroups::Unknown,
            enrichers: Enrichers::default(),
            metrics: PipelineMetrics::default(),
            reader_metrics: ReaderMetrics::default(),
            readiness: Arc::default(),
        }
    }
}

/// What the pipeline counted, for the shutdown log and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipelineStats {
    pub reader: ReaderStats,
    pub parser: ParserStats,
    pub events: u64,
    /// Kills `/proc/vmstat` counted that the log never showed.
    pub missed_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Kmsg(#[from] KmsgError),
    #[error("the event consumer went away")]
    SinkClosed,
}

/// A kill waiting for the sampler's evidence (see [`attribute`]).
#[derive(Debug)]
struct Waiting {
    due: tokio::time::Instant,
    event: OomEvent,
    /// Its report's first record.
    seq: Option<u64>,
}

struct Pipeline {
    config: PipelineConfig,
    joiner: LineJoiner,
    parser: Parser,
    forged_seen: u64,
    vmstat: Option<Reconciler>,
    sink: EventSink,
    state: StateDir,
    events: u64,
    waiting: VecDeque<Waiting>,
    attributor: Attributor,
    log_clock: Option<LogClockWatch>,
}

/// Unix milliseconds of a kill (now, when its time is unknown).
pub(crate) fn event_time_ms(event: &OomEvent) -> u64 {
    event
        .time
        .as_ref()
        .map_or_else(oomlens_proto::time::now_unix_ms, oomlens_proto::time::unix_ms)
}

impl Pipeline {
    /// A record to the parser, once the line it is part of is whole.
    fn record(&mut self, record: crate::kmsg::Record) {
        self.state.last_seq = Some(record.seq);
        for line in self.joiner.push(record) {
            self.push(&line.input_line());
        }
        // A kill no group can follow is whole at its kill line.
        let groups = &self.config.oom_groups;
        self.parser
            .flush_complete_kills(|task, oom| groups.may_follow(task, oom) == Some(false));
    }

    /// After a pause: a line left open is as whole as it gets, and kills
    /// reported need not wait for the next record.
    fn flush(&mut self) {
        if let Some(line) = self.joiner.flush() {
            self.push(&line.input_line());
        }
        self.parser.flush_killed();
    }

    fn push(&mut self, line: &crate::oom::InputLine<'_>) {
        self.parser.push(line);
        let forged = self.parser.stats().forged;
        ForgedLines(forged - self.forged_seen).emit(&self.config.metrics);
        self.forged_seen = forged;
    }

    /// Places, enriches and sends every finished report; kills that need
    /// the sampler's evidence wait.
    async fn take_reports(&mut self) -> Result<(), PipelineError> {
        while let Some(report) = self.parser.next_report() {
            if let Some(us) = report.kill_stamp.monotonic_us {
                let offset = self.config.node.log_clock_offset_us;
                if let Some(vmstat) = self.vmstat.as_mut() {
                    vmstat.kill_seen(us.saturating_add_signed(-offset));
                }
                // Only a kill read live: the kernel's clock is this boot's.
                let now = crate::clock::monotonic_us().saturating_add_signed(offset);
                if now >= us && now - us < 60_000_000 {
                    let read = (now - us) as f64 / 1e6;
                    self.config.metrics.stage(metrics::KillStage::read, read);
                }
            }
            let first_seq = report.first_seq();
            let placing = std::time::Instant::now();
            let mut event = event_from_report(&report, &self.config.node, self.events);
            let placement = self.place_at_once(&report, &mut event).await;
            self.find_limit(&mut event).await;
            self.config
                .metrics
                .stage(metrics::KillStage::place, placing.elapsed().as_secs_f64());
            if let (Some(path), Some(us)) = (
                &event.task_memcg,
                event.kernel.as_ref().and_then(|k| k.monotonic_us),
            ) {
                self.attributor.placed(path, us, event_time_ms(&event));
            }
            match placement {
                Some(placement) => self.send(event, placement, first_seq).await?,
                None if self.config.enrichers.sampler.is_some() => self.waiting.push_back(Waiting {
                    due: tokio::time::Instant::now() + ATTRIBUTION_WAIT,
                    event,
                    seq: first_seq,
                }),
                None => self.send(event, Placement::Unplaced, first_seq).await?,
            }
        }
        Ok(())
    }

    /// reported → Placed(Report | Proc | ProcessList), or None: waiting.
    async fn place_at_once(&self, report: &OomReport, event: &mut OomEvent) -> Option<Placement> {
        if event.task_memcg.is_some() {
            return Some(Placement::Report);
        }
        let pid = u32::try_from(report.victim.pid?).ok()?;
        // A bare kill line: the victim is dying right now, and its /proc
        // entry usually still names its cgroup.
        if let Some(path) = crate::procfs::memory_cgroup_of(&self.config.proc_root, pid) {
            attribute(event, None, Some(&path));
            return Some(Placement::Proc);
        }
        // Gone from /proc: the sampler lists the processes of cgroups near
        // their limit, where memcg kills happen.
        let sampler = self.config.enrichers.sampler.as_ref()?;
        let since = event_time_ms(event).saturating_sub(PID_LOOKBACK_MS);
        let path = sampler.cgroup_of_pid(pid, since).await?;
        attribute(event, None, Some(&path));
        Some(Placement::ProcessList)
    }

    /// A memcg kill placed by its victim's cgroup alone: which limit was
    /// hit (the container's or the pod's decides the scope), from the
    /// sampled usage just before the kill.
    async fn find_limit(&self, event: &mut OomEvent) {
        let (Some(sampler), Some(task)) = (&self.config.enrichers.sampler, event.task_memcg.clone()) else {
            return;
        };
        if event.oom_memcg.is_some() || event.constraint != oomlens_proto::v1::Constraint::Memcg as i32 {
            return;
        }
        if let Some(limited) = sampler.limited_cgroup(task, event_time_ms(event)).await {
            attribute(event, Some(&limited), None);
        }
    }

    /// Waiting → Placed(Notice | Counter) or Unplaced, for the kills that
    /// are due (all of them when `all`, at shutdown).
    async fn release_waiting(&mut self, all: bool) -> Result<(), PipelineError> {
        let now = tokio::time::Instant::now();
        while self.waiting.front().is_some_and(|w| all || w.due <= now) {
            let Some(Waiting { mut event, seq, .. }) = self.waiting.pop_front() else {
                break;
            };
            let placement = self.place_by_evidence(&mut event).await;
            self.send(event, placement, seq).await?;
        }
        Ok(())
    }

    async fn place_by_evidence(&mut self, event: &mut OomEvent) -> Placement {
        let Some(sampler) = self.config.enrichers.sampler.clone() else {
            return Placement::Unplaced;
        };
        if let Some(kill_us) = event.kernel.as_ref().and_then(|k| k.monotonic_us) {
            // Notices are timed on CLOCK_MONOTONIC, kill stamps on the
            // kernel log's clock: the window and the notices are moved
            // between the two (they drift apart by more than the
            // matching's 10 ms within a day or two of uptime).
            let offset = self.config.node.log_clock_offset_us;
            let (from, to) = Attributor::notice_window(kill_us);
            let notices = sampler
                .oom_notices(
                    from.saturating_add_signed(-offset),
                    to.saturating_add_signed(-offset),
                )
                .await
                .into_iter()
                .map(|notice| OomNotice {
                    at_us: notice.at_us.saturating_add_signed(offset),
                    ..notice
                })
                .collect();
            if let Some(place) = self.attributor.place_by_notices(kill_us, notices) {
                attribute(event, place.oom_memcg.as_deref(), place.task_memcg.as_deref());
                return Placement::Notice;
            }
        }
        let kill_ms = event_time_ms(event);
        let (from, to) = Attributor::step_window(kill_ms);
        let steps = sampler.oom_steps(from, to).await;
        match self.attributor.place_by_steps(kill_ms, steps) {
            Ok(cgroup) => {
                attribute(event, None, Some(&cgroup));
                self.find_limit(event).await;
                Placement::Counter
            }
            Err(candidates) => {
                info!(id = %event.id, candidates, "no unambiguous OOM counter step for a kill without cgroup path");
                Placement::Unplaced
            }
        }
    }

    /// Enriches, counts, spools, prints and passes on a kill whose report
    /// starts at record `first_seq`.
    async fn send(
        &mut self,
        mut event: OomEvent,
        placement: Placement,
        first_seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        let enriching = std::time::Instant::now();
        self.config.enrichers.enrich(&mut event).await;
        self.config
            .metrics
            .stage(metrics::KillStage::enrich, enriching.elapsed().as_secs_f64());
        KillReported {
            event: &event,
            placement,
        }
        .emit(&self.config.metrics);
        if let Some(spool) = &self.sink.spool {
            let metrics = &self.config.metrics;
            let spooling = std::time::Instant::now();
            self.state
                .spool(spool, &event, first_seq, metrics, &self.config.readiness)
                .await;
            metrics.stage(metrics::KillStage::spool, spooling.elapsed().as_secs_f64());
        }
        if let Some(watcher) = &self.sink.runtime_watch {
            watcher.watch(&event);
        }
        if let Some(printer) = &self.sink.printer
            && printer.try_send(event.clone()).is_err()
        {
            PrintDropped(&event.id).emit(&self.config.metrics);
        }
        if let Some(channel) = &self.sink.channel {
            channel.send(event).await.map_err(|_| PipelineError::SinkClosed)?;
        }
        self.events += 1;
        Ok(())
    }

    /// The cursor may advance to the last record read, except past the
    /// start of a report still in progress or a kill still waiting.
    fn save_cursor(&mut self) {
        let waiting = self.waiting.iter().filter_map(|w| w.seq);
        let open = self
            .parser
            .oldest_open_seq()
            .into_iter()
            .chain(self.joiner.open_seq())
            .chain(waiting);
        let config = &self.config;
        self.state
            .save_cursor(&config.node.boot_id, open, &config.metrics, &config.readiness);
    }

    /// Once a second: the vmstat cross-check, kills kept from the spool
    /// offered again, the log clock measured again when due, the cursor
    /// saved.
    async fn tick(&mut self) {
        let measured = match self.log_clock.as_mut() {
            Some(watch) => watch.poll().await,
            None => None,
        };
        if let Some(outcome) = measured {
            let node = &mut self.config.node;
            let before_us = node.log_clock_offset_us;
            if let Ok(offset) = outcome {
                node.log_clock_offset_us = offset;
                // The wall clock may have been stepped since, too.
                node.boot_wall_us = crate::clock::boot_wall_us(offset).or(node.boot_wall_us);
            }
            LogClockMeasured { before_us, outcome }.emit(&self.config.metrics);
        }
        if let Some(spool) = &self.sink.spool {
            self.state
                .offer_kept(spool, &self.config.metrics, &self.config.readiness)
                .await;
        }
        match read_vmstat_oom_kill(&self.config.proc_root) {
            Ok(Some(value)) => {
                let now = crate::clock::monotonic_us();
                let vmstat = self.vmstat.get_or_insert_with(|| Reconciler::new(now, value));
                let before = vmstat.missed();
                vmstat.counter(now, value);
                KillsMissed {
                    total: vmstat.missed(),
                    new: vmstat.missed() > before,
                }
                .emit(&self.config.metrics);
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "cannot read vmstat"),
        }
        self.save_cursor();
    }
}

/// Sleeps until the first waiting kill is due; forever when none is.
async fn sleep_until_due(waiting: &VecDeque<Waiting>) {
    match waiting.front() {
        Some(first) => tokio::time::sleep_until(first.due).await,
        None => std::future::pending().await,
    }
}

/// Reads the kernel log at `config.kmsg_path` (from the saved cursor of
/// this boot, else `config.start_without_cursor`) until `shutdown`
/// completes, then reports what is finished, saves the cursor and returns.
pub async fn run(
    config: PipelineConfig,
    sink: impl Into<EventSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<PipelineStats, PipelineError> {
    let cursor = match config
        .state_dir
        .as_deref()
        .map(|dir| Cursor::load(&dir.join(CURSOR_FILE)))
    {
        Some(Ok(cursor)) => cursor,
        Some(Err(error)) => {
            warn!(%error, "starting without a resume cursor");
            None
        }
        None => None,
    };
    let start = Cursor::start_for(cursor.as_ref(), &config.node.boot_id, config.start_without_cursor);
    info!(path = %config.kmsg_path.display(), ?start, boot_id = %config.node.boot_id, "reading the kernel log");
    let mut reader = KmsgReader::open_with(&config.kmsg_path, start, config.reader_metrics.clone())?;
    if let Some(hurry) = config.kmsg_hurry.clone() {
        reader = reader.hurried_by(hurry);
    }
    config.readiness.set_kmsg_ready();
    // The position we start from is saved at once: a restart after a
    // quiet spell resumes here, and a kill made while the agent was down
    // is still read (without a cursor, a restart would start at the end).
    let from = reader.last_seq();
    run_from(config, reader.into_stream(), from, sink, shutdown).await
}

/// The cursor's file in the state directory.
pub const CURSOR_FILE: &str = "kmsg.cursor";

/// Runs the pipeline on `records` until `shutdown` completes (a stream
/// that ends just stops yielding records) or a read fails.
pub async fn run_on(
    config: PipelineConfig,
    records: impl Stream<Item = Result<KmsgItem, KmsgError>>,
    sink: impl Into<EventSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<PipelineStats, PipelineError> {
    run_from(config, records, None, sink, shutdown).await
}

/// [`run_on`] for records that follow `from` (the sequence number the
/// stream starts after, saved as the cursor at once).
async fn run_from(
    config: PipelineConfig,
    records: impl Stream<Item = Result<KmsgItem, KmsgError>>,
    from: Option<u64>,
    sink: impl Into<EventSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<PipelineStats, PipelineError> {
    let mut pipeline = Pipeline {
        joiner: LineJoiner::default(),
        parser: Parser::new(),
        forged_seen: 0,
        vmstat: None,
        sink: sink.into(),
        state: StateDir::new(config.state_dir.as_ref().map(|dir| dir.join(CURSOR_FILE)), from),
        events: 0,
        waiting: VecDeque::new(),
        attributor: Attributor::default(),
        log_clock: config
            .log_clock_every
            .map(|every| LogClockWatch::new(config.kmsg_path.clone(), every)),
        config,
    };
    pipeline
        .config
        .metrics
        .set_log_clock_offset(pipeline.config.node.log_clock_offset_us);
    pipeline.tick().await;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut records = std::pin::pin!(records);
    let mut records_open = true;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let idle = tokio::time::sleep(pipeline.config.idle_flush);
        tokio::select! {
            item = records.next(), if records_open => match item.transpose()? {
                Some(KmsgItem::Record(record)) => {
                    pipeline.record(record);
                    pipeline.take_reports().await?;
                }
                // The reader logged and counted these.
                Some(KmsgItem::Gap { .. } | KmsgItem::Malformed(_)) => {}
                None => records_open = false,
            },
            () = idle, if pipeline.parser.has_open_reports() || pipeline.joiner.open_seq().is_some() => {
                pipeline.flush();
                pipeline.take_reports().await?;
                pipeline.save_cursor();
            }
            () = sleep_until_due(&pipeline.waiting) => {
                pipeline.release_waiting(false).await?;
                pipeline.save_cursor();
            }
            _ = ticker.tick() => pipeline.tick().await,
            () = &mut shutdown => break,
        }
    }
    pipeline.flush();
    pipeline.take_reports().await?;
    pipeline.release_waiting(true).await?;
    pipeline.tick().await;
    let unspooled = pipeline.state.unspooled_ids();
    if !unspooled.is_empty() {
        tracing::error!(
            ?unspooled,
            "stopping with kills the spool did not take; the cursor stays before them, so the next start reads them again"
        );
    }
    let stats = PipelineStats {
        reader: pipeline.config.reader_metrics.stats(),
        parser: pipeline.parser.stats(),
        events: pipeline.events,
        missed_kills: pipeline.vmstat.as_ref().map_or(0, Reconciler::missed),
    };
    info!(?stats, "stopped reading the kernel log");
    Ok(stats)
}
