//! The OOM report state machine: kernel lines in, one [`OomReport`] per
//! killed process out. Pure: no I/O, no clock; time comes from the lines.
//!
//! A report is a burst of lines: usually `invoked oom-killer` ... `Killed
//! process` (plus, for `memory.oom.group`, the kills of the rest of the
//! group). Logs people paste have lost parts of it, so any anchor opens a
//! burst too: a summary line (`oom-kill:...`, with its kill line joined by
//! pid, before or after it), a `Task in` line, a `Kill process ... or
//! sacrifice child` line, or a kill line alone (rate-limited header). A
//! burst is closed, and its kills reported, when its printer starts another
//! one, when a line stamped more than [`KILL_SETTLE_US`] after its kill
//! arrives, or when the caller flushes (the live reader after a short idle;
//! text input at its end). A burst that never reached an anchor is no
//! kill. Lines are routed to bursts by the printk caller id when the kernel
//! provides one, so reports interleaved by two CPUs stay apart; without
//! it, by the pid named on the summary and kill lines.

use std::collections::VecDeque;

use super::burst::{Burst, burst_parts, task_from_row};
use super::lines::{self, CounterKind, OomLine, TriggerLine};
use super::report::{OomReport, Stamp, TaskInfo, TriggerInfo};
pub use super::unused::{Unused, UnusedLine};

/// After its kill line, a burst waits this long (kernel time) for the rest
/// of a group kill before it is reported.
pub const KILL_SETTLE_US: u64 = 1_000_000;
/// A burst whose kill line never came is given up after this long.
pub const ABANDON_US: u64 = 30_000_000;
/// At most this many reports in progress at once (one per CPU in practice).
const MAX_OPEN_BURSTS: usize = 16;
/// Evidence lines kept per report besides the kill lines.
pub(super) const MAX_EVIDENCE: usize = 64;
/// Task table rows kept per report.
const MAX_TASKS: usize = 4096;
/// Notes on unused lines kept until taken (with `explain` on).
const MAX_NOTES: usize = 4096;

/// One line offered to the parser.
#[derive(Debug, Clone, Copy)]
pub struct InputLine<'a> {
    pub text: &'a str,
    /// Whether the kernel wrote it. Lines from anyone else are never taken
    /// as OOM reports; those that look like one are counted as forged.
    pub from_kernel: bool,
    /// printk caller (`T123` task or `C1` CPU), when known.
    pub caller: Option<&'a str>,
    /// Host name, when the log names it (syslog, journal).
    pub host: Option<&'a str>,
    pub stamp: Stamp,
}

/// Counters the parser keeps about its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    pub lines: u64,
    /// Lines that look like an OOM report but were not written by the
    /// kernel: somebody is forging kill records.
    pub forged: u64,
    pub reports: u64,
    /// Kills whose header the kernel rate-limited.
    pub partial: u64,
    /// Reports started that never reached an anchor.
    pub abandoned: u64,
    /// `Out of memory and no killable processes`.
    pub no_killable: u64,
    /// A victim printed twice in one report (group kills), reported once.
    pub duplicate_kills: u64,
    /// OOM-looking lines that made no report (all reasons).
    pub unused: u64,
}

/// The OOM report state machine. Feed it lines with [`Parser::push`], take
/// reports with [`Parser::next_report`].
#[derive(Debug, Default)]
pub struct Parser {
    pub(super) bursts: Vec<Burst>,
    pub(super) ready: VecDeque<OomReport>,
    pub(super) stats: ParserStats,
    /// Keep the text of unused lines (for `parse --explain`).
    pub(super) explain: bool,
    pub(super) notes: VecDeque<UnusedLine>,
    /// A task table read while no report was open (a paste that starts in
    /// the middle of one): the next report opened by its anchor adopts it.
    pub(super) orphan_columns: Vec<String>,
    pub(super) orphan_tasks: Vec<TaskInfo>,
    /// Unused lines by reason (in [`Unused::ALL`]'s order).
    pub(super) unused_by: [u64; 6],
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that also keeps each unused OOM-looking line, for
    /// [`Parser::next_unused`].
    pub fn explaining() -> Self {
        Self {
            explain: true,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Whether a report is in progress (the reader flushes after an idle
    /// pause only then).
    pub fn has_open_reports(&self) -> bool {
        !self.bursts.is_empty()
    }

    /// Sequence number of the first line of the oldest report still in
    /// progress: a resume cursor must stay before it, so a restart re-reads
    /// the whole report.
    pub fn oldest_open_seq(&self) -> Option<u64> {
        self.bursts
            .iter()
            .filter_map(|b| b.evidence.first()?.stamp.seq)
            .min()
    }

    /// The next finished report, oldest first.
    pub fn next_report(&mut self) -> Option<OomReport> {
        self.ready.pop_front()
    }

    /// The next unused OOM-looking line (kept only when explaining).
    pub fn next_unused(&mut self) -> Option<UnusedLine> {
        self.notes.pop_front()
    }

    /// Unused OOM-looking lines so far, by reason.
    pub fn unused_counts(&self) -> impl Iterator<Item = (Unused, u64)> + '_ {
        Unused::ALL
            .into_iter()
            .zip(self.unused_by)
            .filter(|(_, count)| *count > 0)
    }

    pub(super) fn unused(&mut self, stamp: Stamp, text: &str, why: Unused) {
        self.stats.unused += 1;
        if let Some(at) = Unused::ALL.iter().position(|u| *u == why) {
            self.unused_by[at] += 1;
        }
        if self.explain && self.notes.len() < MAX_NOTES {
            self.notes.push_back(UnusedLine {
                stamp,
                text: text.trim_end().to_owned(),
                why,
            });
        }
    }

    /// Offers one line (a record with embedded newlines, as cgroup v2's
    /// stats dump is in `/dev/kmsg`, is offered line by line, as dmesg
    /// shows it).
    pub fn push(&mut self, line: &InputLine<'_>) {
        let text = line.text.trim_end();
        if !text.contains('\n') {
            return self.push_line(line);
        }
        for part in text.split('\n').filter(|part| !part.trim().is_empty()) {
            self.push_line(&InputLine { text: part, ..*line });
        }
    }

    fn push_line(&mut self, line: &InputLine<'_>) {
        self.stats.lines += 1;
        if self.bursts.is_empty() && !lines::may_start_report(line.text) {
            return;
        }
        let classified = lines::classify(line.text);
        if let Some(now) = line.stamp.monotonic_us {
            self.age_out(now, line.host);
        }
        let Some(kind) = classified else { return };
        if !line.from_kernel {
            if matches!(
                kind,
                OomLine::Trigger(_)
                    | OomLine::Summary(_)
                    | OomLine::Kill(_)
                    | OomLine::ChooseVictim(_)
                    | OomLine::TaskIn { .. }
            ) {
                self.stats.forged += 1;
                self.unused(line.stamp, line.text, Unused::NotKernel);
            }
            return;
        }
        match kind {
            OomLine::Trigger(trigger) => self.open_trigger(line, trigger),
            OomLine::Kill(kill) => self.kill(line, kill),
            OomLine::Summary(summary) => self.summary(line, summary),
            OomLine::ChooseVictim(choice) => self.choose(line, choice),
            OomLine::TaskIn {
                task_memcg,
                limit_memcg,
            } => self.task_in(line, task_memcg, limit_memcg),
            OomLine::Reaped { .. } => self.unused(line.stamp, line.text, Unused::AfterKill),
            OomLine::TasksHeader(columns) if self.table_is_orphan(line) => {
                self.orphan_columns = columns.into_iter().map(str::to_owned).collect();
                self.orphan_tasks.clear();
            }
            OomLine::TaskRow { values, name } if self.table_is_orphan(line) => {
                if self.orphan_tasks.len() < MAX_TASKS {
                    self.orphan_tasks
                        .push(task_from_row(&self.orphan_columns, &values, name));
                }
                self.unused(line.stamp, line.text, Unused::Fragment);
            }
            other => match self.route(line) {
                Some(index) => self.absorb(index, line, other),
                None => {
                    let why = match other {
                        OomLine::NoKillable => Unused::NoKillable,
                        _ => Unused::Fragment,
                    };
                    if why == Unused::NoKillable {
                        self.stats.no_killable += 1;
                    }
                    self.unused(line.stamp, line.text, why);
                }
            },
        }
    }

    /// Reports every burst that has reached its kill; bursts still waiting
    /// for their kill line stay open. The live reader calls this after a
    /// short idle pause so a kill is not held back waiting for the next
    /// record.
    pub fn flush_killed(&mut self) {
        let mut index = 0;
        while index < self.bursts.len() {
            if self.bursts[index].kills.is_empty() {
                index += 1;
            } else {
                self.close(index);
            }
        }
    }

    /// Reports every burst that has reached its kill when `complete` says
    /// no `memory.oom.group` kill can follow it, given its task's and its
    /// limited cgroup from the `oom-kill:` summary (both None without
    /// one). The live reader calls this after each record: the kernel
    /// prints the victim's kill before the group's line, so only a host's
    /// cgroups can tell whether more is coming.
    pub fn flush_complete_kills(&mut self, complete: impl Fn(Option<&str>, Option<&str>) -> bool) {
        let mut index = 0;
        while index < self.bursts.len() {
            let burst = &self.bursts[index];
            let summary = burst.summary.as_ref().map(|(s, _)| s);
            let whole = !burst.kills.is_empty()
                && burst.group.is_none()
                && complete(
                    summary.and_then(|s| s.task_memcg.as_deref()),
                    summary.and_then(|s| s.oom_memcg.as_deref()),
                );
            if whole {
                self.close(index);
            } else {
                index += 1;
            }
        }
    }

    /// End of input: reports everything that reached an anchor and counts
    /// the rest as abandoned.
    pub fn finish(&mut self) {
        while !self.bursts.is_empty() {
            self.close(0);
        }
    }

    /// Opens a burst for `line`. A new report from the same printer ends
    /// its previous one; without caller ids, a new report ends every report
    /// that already has its anchor.
    pub(super) fn open(&mut self, line: &InputLine<'_>, burst: Burst) -> usize {
        let mut index = 0;
        while index < self.bursts.len() {
            let open = &self.bursts[index];
            let same_printer = line.caller.is_some() && open.caller.as_deref() == line.caller;
            if open.compatible(line.host) && (same_printer || (line.caller.is_none() && open.anchored())) {
                self.close(index);
            } else {
                index += 1;
            }
        }
        if self.bursts.len() >= MAX_OPEN_BURSTS {
            self.close(0);
        }
        self.bursts.push(Burst {
            caller: line.caller.map(str::to_owned),
            opened_us: line.stamp.monotonic_us,
            host: line.host.map(str::to_owned),
            ..burst
        });
        self.bursts.len() - 1
    }

    /// A task table line with no report to go to (none open, or the open
    /// one already killed: the table is the next report's).
    fn table_is_orphan(&self, line: &InputLine<'_>) -> bool {
        self.route(line)
            .is_none_or(|i| !self.bursts[i].kills.is_empty() && self.bursts[i].group.is_none())
    }

    /// A burst opened by an anchor (a header was filtered out or cut) takes
    /// the task table read just before it.
    pub(super) fn adopt_orphans(&mut self, index: usize) {
        let burst = &mut self.bursts[index];
        if burst.tasks.is_empty() && burst.trigger.is_none() {
            burst.tasks = std::mem::take(&mut self.orphan_tasks);
            burst.columns = std::mem::take(&mut self.orphan_columns);
        }
    }

    fn open_trigger(&mut self, line: &InputLine<'_>, trigger: TriggerLine<'_>) {
        self.orphan_tasks.clear();
        self.orphan_columns.clear();
        let burst = Burst {
            trigger: Some(TriggerInfo {
                pid: None,
                comm: trigger.comm.to_owned(),
                gfp_mask: trigger.gfp_mask.map(str::to_owned),
                order: trigger.order,
                oom_score_adj: trigger.oom_score_adj,
            }),
            ..Burst::default()
        };
        let index = self.open(line, burst);
        self.bursts[index].note(line);
    }

    /// The newest burst of this printer (any, without caller ids) and
    /// host that `fits`.
    pub(super) fn find(&self, line: &InputLine<'_>, fits: impl Fn(&Burst) -> bool) -> Option<usize> {
        self.bursts.iter().rposition(|b| {
            (line.caller.is_none() || b.caller.as_deref() == line.caller)
                && b.compatible(line.host)
                && fits(b)
        })
    }

    /// The burst a non-anchor line belongs to: its printer's, else the
    /// newest, of its host.
    pub(super) fn route(&self, line: &InputLine<'_>) -> Option<usize> {
        self.find(line, |_| true)
    }

    fn absorb(&mut self, index: usize, line: &InputLine<'_>, kind: OomLine<'_>) {
        let burst = &mut self.bursts[index];
        match kind {
            OomLine::CpuInfo { pid, comm } => match burst.trigger.as_mut() {
                Some(trigger) if trigger.pid.is_none() && trigger.comm.starts_with(comm) => {
                    trigger.pid = Some(pid);
                }
                _ => return,
            },
            OomLine::MemcgCounter(counter) => {
                let slot = match counter.kind {
                    CounterKind::Memory => &mut burst.memory,
                    CounterKind::MemorySwap | CounterKind::Swap => &mut burst.memory_swap,
                    CounterKind::Kmem => &mut burst.kmem,
                };
                if slot.is_some() {
                    return;
                }
                *slot = Some(counter);
            }
            OomLine::LimitOf { limit_memcg } => match burst.task_in.as_mut() {
                Some((_, limit @ None, _)) => *limit = Some(limit_memcg.to_owned()),
                _ => return,
            },
            OomLine::StatsFor { memcg, inline } => {
                if burst.stats_memcg.is_none() {
                    burst.stats_memcg = Some(memcg.to_owned());
                }
                if let Some(pairs) = inline {
                    burst.memstat.add_inline(pairs);
                }
            }
            OomLine::Stat { key, value } => {
                // Only the dump after `Memory cgroup stats for`, before the
                // task table; not noted as evidence (dozens of lines).
                if burst.stats_memcg.is_some() && burst.columns.is_empty() {
                    burst.memstat.add(key, value);
                }
                return;
            }
            OomLine::TasksHeader(columns) => {
                burst.columns = columns.into_iter().map(str::to_owned).collect();
            }
            OomLine::TaskRow { values, name } => {
                if burst.tasks.len() < MAX_TASKS {
                    burst.tasks.push(task_from_row(&burst.columns, &values, name));
                }
                return;
            }
            OomLine::GroupKill { memcg } => burst.group = Some(memcg.to_owned()),
            OomLine::NoKillable => {
                burst.no_killable = true;
                burst.note(line);
                if burst.kills.is_empty() {
                    self.stats.no_killable += 1;
                    let burst = self.bursts.remove(index);
                    self.unused(line.stamp, line.text, Unused::NoKillable);
                    for line in burst.evidence.iter().filter(|l| l.stamp != line.stamp) {
                        self.unused(line.stamp, &line.text, Unused::NoKill);
                    }
                }
                return;
            }
            OomLine::Trigger(_)
            | OomLine::Kill(_)
            | OomLine::Reaped { .. }
            | OomLine::Summary(_)
            | OomLine::ChooseVictim(_)
            | OomLine::TaskIn { .. } => return,
        }
        burst.note(line);
    }

    /// Closes the bursts of `host` whose time has passed (another host's
    /// clock says nothing about them).
    fn age_out(&mut self, now_us: u64, host: Option<&str>) {
        let mut index = 0;
        while index < self.bursts.len() {
            let burst = &self.bursts[index];
            if !burst.compatible(host) {
                index += 1;
                continue;
            }
            let settled = burst
                .last_kill_us
                .is_some_and(|t| now_us.saturating_sub(t) > KILL_SETTLE_US);
            let stale = burst.kills.is_empty()
                && burst
                    .opened_us
                    .is_some_and(|t| now_us.saturating_sub(t) > ABANDON_US);
            if settled || stale {
                self.close(index);
            } else {
                index += 1;
            }
        }
    }

    fn close(&mut self, index: usize) {
        let burst = self.bursts.remove(index);
        if !burst.anchored() {
            if !burst.no_killable {
                self.stats.abandoned += 1;
            }
            for line in &burst.evidence {
                self.unused(line.stamp, &line.text, Unused::NoKill);
            }
            return;
        }
        for report in super::assemble::reports(burst_parts(burst)) {
            if report.partial {
                self.stats.partial += 1;
            }
            self.stats.reports += 1;
            self.ready.push_back(report);
        }
    }
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
