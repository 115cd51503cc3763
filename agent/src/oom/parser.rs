//! The OOM report state machine: kernel lines in, one [`OomReport`] per
//! killed process out. Pure: no I/O, no clock; time comes from the lines.
//!
//! A report is a burst of lines that starts at `invoked oom-killer` and ends
//! at `Killed process` (plus, for `memory.oom.group`, the kills of the rest
//! of the group). A burst is closed, and its kills reported, when the same
//! CPU/task starts another one, when a line stamped more than
//! [`KILL_SETTLE_US`] after its kill arrives, or when the caller flushes
//! (the reader does after a short idle; text input at its end). Lines are
//! routed to bursts by the printk caller id when the kernel provides one, so
//! reports interleaved by two CPUs stay apart; without it, by the pid named
//! on the summary and kill lines.

use std::collections::VecDeque;

use super::lines::{self, CounterKind, KillLine, MemcgCounter, OomLine, Summary, TriggerLine};

/// After its kill line, a burst waits this long (kernel time) for the rest
/// of a group kill before it is reported.
pub const KILL_SETTLE_US: u64 = 1_000_000;
/// A burst whose kill line never came is given up after this long.
pub const ABANDON_US: u64 = 30_000_000;
/// At most this many reports in progress at once (one per CPU in practice).
const MAX_OPEN_BURSTS: usize = 16;
/// Evidence lines kept per report besides the kill lines.
const MAX_EVIDENCE: usize = 64;
/// Task table rows kept per report.
const MAX_TASKS: usize = 4096;

/// When and where a line was logged; each field only when the source has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Kernel record sequence number (`/dev/kmsg`, raw record dumps).
    pub seq: Option<u64>,
    /// Kernel timestamp, microseconds since boot.
    pub monotonic_us: Option<u64>,
    /// Wall-clock time as the log shows it: Unix seconds and nanoseconds.
    pub wall: Option<(i64, u32)>,
    /// Syslog level.
    pub level: Option<u8>,
}

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

/// A kernel line kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceLine {
    pub stamp: Stamp,
    pub text: String,
}

/// What the kernel was constrained by, after applying the traps of real
/// logs (see [`OomReport::constraint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportConstraint {
    Memcg,
    Global,
    Cpuset,
    MemoryPolicy,
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerInfo {
    pub pid: Option<i32>,
    pub comm: String,
    pub gfp_mask: Option<String>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryInfo {
    pub constraint: Option<String>,
    pub nodemask: Option<String>,
    pub cpuset: Option<String>,
    pub mems_allowed: Option<String>,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub global_oom: bool,
    pub task: Option<String>,
    pub pid: Option<i32>,
    pub uid: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VictimInfo {
    pub pid: i32,
    pub comm: String,
    pub uid: Option<u32>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i32>,
    /// Badness score from pre-5.1 `Kill process ... score N` lines.
    pub oom_score: Option<i64>,
}

/// One task table row. Sizes as printed (pages, except `pgtables_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskInfo {
    pub pid: i32,
    pub uid: Option<u32>,
    pub tgid: Option<i32>,
    pub total_vm_pages: Option<u64>,
    pub rss_pages: Option<u64>,
    pub pgtables_bytes: Option<u64>,
    pub swapents: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub comm: String,
}

/// One killed process and everything the kernel said about its kill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OomReport {
    pub victim: VictimInfo,
    /// Text before `Killed process` (the kill's stated reason).
    pub kill_prefix: String,
    /// The `Killed process` line's stamp: its seq identifies the kill.
    pub kill_stamp: Stamp,
    pub host: Option<String>,
    pub trigger: Option<TriggerInfo>,
    pub summary: Option<SummaryInfo>,
    /// Pre-4.19 `Task in A killed as a result of limit of B`: (A, B).
    pub task_in: Option<(String, String)>,
    /// Pre-5.1 `... Kill process N (comm) score N or sacrifice child`
    /// prefix, which carries the reason on those kernels.
    pub choose_prefix: Option<String>,
    /// `Memory cgroup stats for X:` (cgroup v1 prints the OOM memcg).
    pub stats_memcg: Option<String>,
    pub memory: Option<MemcgCounter>,
    pub memory_swap: Option<MemcgCounter>,
    pub kmem: Option<MemcgCounter>,
    pub tasks: Vec<TaskInfo>,
    /// The cgroup of a `memory.oom.group` kill this was part of.
    pub group_memcg: Option<String>,
    /// The kernel rate-limited the header: no trigger, paths or task table.
    pub partial: bool,
    pub evidence: Vec<EvidenceLine>,
}

impl OomReport {
    /// The constraint, resolving traps seen in real logs: some kernels print
    /// `CONSTRAINT_NONE` for memcg kills, so the memcg kill text, an
    /// `oom_memcg` below the root or a `Task in` line win over it.
    pub fn constraint(&self) -> ReportConstraint {
        let memcg_evidence = self.victim_kill_says_memcg()
            || self
                .summary
                .as_ref()
                .and_then(|s| s.oom_memcg.as_deref())
                .is_some_and(|m| m != "/")
            || self.task_in.is_some()
            || self.memory.is_some();
        match self.summary.as_ref().and_then(|s| s.constraint.as_deref()) {
            Some("CONSTRAINT_MEMCG") => ReportConstraint::Memcg,
            Some("CONSTRAINT_CPUSET") => ReportConstraint::Cpuset,
            Some("CONSTRAINT_MEMORY_POLICY") => ReportConstraint::MemoryPolicy,
            _ if memcg_evidence => ReportConstraint::Memcg,
            Some("CONSTRAINT_NONE") => ReportConstraint::Global,
            _ if self.kill_prefix.starts_with("Out of memory")
                || self
                    .choose_prefix
                    .as_deref()
                    .is_some_and(|p| p.starts_with("Out of memory")) =>
            {
                ReportConstraint::Global
            }
            _ => ReportConstraint::Unknown,
        }
    }

    fn victim_kill_says_memcg(&self) -> bool {
        self.kill_prefix.starts_with("Memory cgroup out of memory")
            || self
                .choose_prefix
                .as_deref()
                .is_some_and(|p| p.starts_with("Memory cgroup out of memory"))
    }

    /// The memcg whose limit was hit; `/` for a global OOM.
    pub fn oom_memcg(&self) -> Option<&str> {
        let from_summary = self.summary.as_ref().and_then(|s| s.oom_memcg.as_deref());
        from_summary
            .or(self.task_in.as_ref().map(|(_, limit)| limit.as_str()))
            .or(self.stats_memcg.as_deref())
            .or(match self.constraint() {
                ReportConstraint::Global => Some("/"),
                _ => None,
            })
    }

    /// The victim's memcg.
    pub fn task_memcg(&self) -> Option<&str> {
        let from_summary = self.summary.as_ref().and_then(|s| s.task_memcg.as_deref());
        from_summary.or(self.task_in.as_ref().map(|(task, _)| task.as_str()))
    }
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
    /// Reports started (`invoked oom-killer`) that never reached a kill.
    pub abandoned: u64,
    /// `Out of memory and no killable processes`.
    pub no_killable: u64,
    /// A victim printed twice in one report (group kills), reported once.
    pub duplicate_kills: u64,
}

#[derive(Debug, Default)]
struct Burst {
    caller: Option<String>,
    opened_us: Option<u64>,
    host: Option<String>,
    trigger: Option<TriggerInfo>,
    summary: Option<SummaryInfo>,
    task_in: Option<(String, String)>,
    choose: Option<(i32, Option<i64>, String)>,
    stats_memcg: Option<String>,
    memory: Option<MemcgCounter>,
    memory_swap: Option<MemcgCounter>,
    kmem: Option<MemcgCounter>,
    columns: Vec<String>,
    tasks: Vec<TaskInfo>,
    group: Option<String>,
    no_killable: bool,
    kills: Vec<(VictimInfo, String, Stamp)>,
    last_kill_us: Option<u64>,
    evidence: Vec<EvidenceLine>,
}

impl Burst {
    fn note(&mut self, line: &InputLine<'_>) {
        if self.evidence.len() < MAX_EVIDENCE {
            self.evidence.push(EvidenceLine {
                stamp: line.stamp,
                text: line.text.trim_end().to_owned(),
            });
        }
    }
}

/// The OOM report state machine. Feed it lines with [`Parser::push`], take
/// reports with [`Parser::next_report`].
#[derive(Debug, Default)]
pub struct Parser {
    bursts: Vec<Burst>,
    ready: VecDeque<OomReport>,
    stats: ParserStats,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
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

    /// Offers one line.
    pub fn push(&mut self, line: &InputLine<'_>) {
        self.stats.lines += 1;
        if self.bursts.is_empty() && !lines::may_start_report(line.text) {
            return;
        }
        let classified = lines::classify(line.text);
        if let Some(now) = line.stamp.monotonic_us {
            self.age_out(now);
        }
        let Some(kind) = classified else { return };
        if !line.from_kernel {
            if matches!(
                kind,
                OomLine::Trigger(_) | OomLine::Summary(_) | OomLine::Kill(_) | OomLine::ChooseVictim { .. }
            ) {
                self.stats.forged += 1;
            }
            return;
        }
        match kind {
            OomLine::Trigger(trigger) => self.open(line, trigger),
            OomLine::Kill(kill) => self.kill(line, kill),
            OomLine::Reaped { .. } => {}
            other => {
                if let Some(index) = self.route(line.caller) {
                    self.absorb(index, line, other);
                }
            }
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

    /// End of input: reports everything that reached a kill and counts the
    /// rest as abandoned.
    pub fn finish(&mut self) {
        while !self.bursts.is_empty() {
            self.close(0);
        }
    }

    fn open(&mut self, line: &InputLine<'_>, trigger: TriggerLine<'_>) {
        // A new report from the same printer ends its previous one; without
        // caller ids, a new report ends every report that already killed.
        let mut index = 0;
        while index < self.bursts.len() {
            let burst = &self.bursts[index];
            let same_printer = line.caller.is_some() && burst.caller.as_deref() == line.caller;
            if same_printer || (line.caller.is_none() && !burst.kills.is_empty()) {
                self.close(index);
            } else {
                index += 1;
            }
        }
        if self.bursts.len() >= MAX_OPEN_BURSTS {
            self.close(0);
        }
        let mut burst = Burst {
            caller: line.caller.map(str::to_owned),
            opened_us: line.stamp.monotonic_us,
            host: line.host.map(str::to_owned),
            trigger: Some(TriggerInfo {
                pid: None,
                comm: trigger.comm.to_owned(),
                gfp_mask: trigger.gfp_mask.map(str::to_owned),
                order: trigger.order,
                oom_score_adj: trigger.oom_score_adj,
            }),
            ..Burst::default()
        };
        burst.note(line);
        self.bursts.push(burst);
    }

    /// The burst a non-kill line belongs to: its printer's, else the newest.
    fn route(&self, caller: Option<&str>) -> Option<usize> {
        match caller {
            Some(caller) => self
                .bursts
                .iter()
                .rposition(|b| b.caller.as_deref() == Some(caller)),
            None => self.bursts.len().checked_sub(1),
        }
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
            OomLine::TaskIn {
                task_memcg,
                limit_memcg,
            } => {
                burst.task_in = Some((task_memcg.to_owned(), limit_memcg.to_owned()));
            }
            OomLine::StatsFor { memcg } => {
                if burst.stats_memcg.is_none() {
                    burst.stats_memcg = Some(memcg.to_owned());
                }
            }
            OomLine::TasksHeader(columns) => {
                burst.columns = columns.into_iter().map(str::to_owned).collect();
            }
            OomLine::TaskRow { values, name } => {
                if !burst.columns.is_empty() && burst.tasks.len() < MAX_TASKS {
                    burst.tasks.push(task_from_row(&burst.columns, &values, name));
                }
                return;
            }
            OomLine::Summary(summary) => burst.summary = Some(owned_summary(summary)),
            OomLine::ChooseVictim { pid, comm: _, score } => {
                let prefix = line.text.split("Kill process ").next().unwrap_or_default();
                burst.choose = Some((pid, score, prefix.trim_end().trim_end_matches(':').to_owned()));
            }
            OomLine::GroupKill { memcg } => burst.group = Some(memcg.to_owned()),
            OomLine::NoKillable => {
                burst.no_killable = true;
                burst.note(line);
                if burst.kills.is_empty() {
                    self.stats.no_killable += 1;
                    self.bursts.remove(index);
                }
                return;
            }
            OomLine::Trigger(_) | OomLine::Kill(_) | OomLine::Reaped { .. } => return,
        }
        burst.note(line);
    }

    fn kill(&mut self, line: &InputLine<'_>, kill: KillLine<'_>) {
        let target = match line.caller {
            Some(caller) => self
                .bursts
                .iter()
                .rposition(|b| b.caller.as_deref() == Some(caller)),
            None => self
                .bursts
                .iter()
                .rposition(|b| b.kills.is_empty() && b.summary.as_ref().and_then(|s| s.pid) == Some(kill.pid))
                .or_else(|| self.bursts.iter().rposition(|b| b.kills.is_empty()))
                .or_else(|| self.bursts.iter().rposition(|b| b.group.is_some())),
        };
        let victim = VictimInfo {
            pid: kill.pid,
            comm: kill.comm.to_owned(),
            uid: kill.uid,
            total_vm_kb: kill.total_vm_kb,
            anon_rss_kb: kill.anon_rss_kb,
            file_rss_kb: kill.file_rss_kb,
            shmem_rss_kb: kill.shmem_rss_kb,
            pgtables_kb: kill.pgtables_kb,
            oom_score_adj: kill.oom_score_adj,
            oom_score: None,
        };
        // A burst that already killed takes more kills only as a group kill.
        let target = target.filter(|&i| self.bursts[i].kills.is_empty() || self.bursts[i].group.is_some());
        let Some(index) = target else {
            // Rate-limited header: the kill line alone.
            if let Some(index) = line
                .caller
                .and_then(|c| self.bursts.iter().position(|b| b.caller.as_deref() == Some(c)))
            {
                self.close(index);
            }
            self.stats.partial += 1;
            self.emit(OomReport {
                victim,
                kill_prefix: kill.prefix.to_owned(),
                kill_stamp: line.stamp,
                host: line.host.map(str::to_owned),
                partial: true,
                evidence: vec![EvidenceLine {
                    stamp: line.stamp,
                    text: line.text.trim_end().to_owned(),
                }],
                ..OomReport::default()
            });
            return;
        };
        let burst = &mut self.bursts[index];
        if burst.kills.iter().any(|(v, _, _)| v.pid == victim.pid) {
            self.stats.duplicate_kills += 1;
            return;
        }
        burst.kills.push((victim, kill.prefix.to_owned(), line.stamp));
        burst.last_kill_us = line.stamp.monotonic_us;
        // Kill lines are always kept as evidence.
        burst.evidence.push(EvidenceLine {
            stamp: line.stamp,
            text: line.text.trim_end().to_owned(),
        });
    }

    fn age_out(&mut self, now_us: u64) {
        let mut index = 0;
        while index < self.bursts.len() {
            let burst = &self.bursts[index];
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
        if burst.kills.is_empty() {
            if !burst.no_killable {
                self.stats.abandoned += 1;
            }
            return;
        }
        let choose = burst.choose.clone();
        let mut context = OomReport {
            host: burst.host,
            trigger: burst.trigger,
            summary: burst.summary,
            task_in: burst.task_in,
            choose_prefix: choose.as_ref().map(|(_, _, prefix)| prefix.clone()),
            stats_memcg: burst.stats_memcg,
            memory: burst.memory,
            memory_swap: burst.memory_swap,
            kmem: burst.kmem,
            tasks: burst.tasks,
            group_memcg: burst.group,
            partial: false,
            evidence: burst.evidence,
            ..OomReport::default()
        };
        let count = burst.kills.len();
        for (index, (mut victim, prefix, stamp)) in burst.kills.into_iter().enumerate() {
            if let Some((pid, score, _)) = &choose
                && *pid == victim.pid
            {
                victim.oom_score = *score;
            }
            // Each kill of a group shares the report's context; the last
            // one takes it without a copy.
            let mut report = if index + 1 == count {
                std::mem::take(&mut context)
            } else {
                context.clone()
            };
            report.victim = victim;
            report.kill_prefix = prefix;
            report.kill_stamp = stamp;
            self.emit(report);
        }
    }

    fn emit(&mut self, report: OomReport) {
        self.stats.reports += 1;
        self.ready.push_back(report);
    }
}

fn owned_summary(summary: Summary<'_>) -> SummaryInfo {
    let owned = |v: Option<&str>| v.map(str::to_owned);
    SummaryInfo {
        constraint: owned(summary.constraint),
        nodemask: owned(summary.nodemask),
        cpuset: owned(summary.cpuset),
        mems_allowed: summary.mems_allowed,
        oom_memcg: owned(summary.oom_memcg),
        task_memcg: owned(summary.task_memcg),
        global_oom: summary.global_oom,
        task: owned(summary.task),
        pid: summary.pid,
        uid: summary.uid,
    }
}

/// Maps a task table row onto the header's columns (which differ between
/// kernel versions: `nr_ptes nr_pmds` on 4.x, `pgtables_bytes` on 4.19+,
/// `rss_anon rss_file rss_shmem` on 6.x).
fn task_from_row(columns: &[String], values: &[&str], name: &str) -> TaskInfo {
    let mut task = TaskInfo {
        comm: name.to_owned(),
        ..TaskInfo::default()
    };
    task.pid = values.first().and_then(|v| v.parse().ok()).unwrap_or_default();
    for (column, value) in columns.iter().zip(values.iter().skip(1)) {
        match column.as_str() {
            "uid" => task.uid = value.parse().ok(),
            "tgid" => task.tgid = value.parse().ok(),
            "total_vm" => task.total_vm_pages = value.parse().ok(),
            "rss" => task.rss_pages = value.parse().ok(),
            "pgtables_bytes" => task.pgtables_bytes = value.parse().ok(),
            "swapents" => task.swapents = value.parse().ok(),
            "oom_score_adj" => task.oom_score_adj = value.parse().ok(),
            _ => {}
        }
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Real report lines, as building blocks for random sequences.
    const FRAGMENTS: &[&str] = &[
        "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "CPU: 0 UID: 0 PID: 2061 Comm: tail Not tainted 6.18.44 #1",
        "memory: usage 32768kB, limit 32768kB, failcnt 19",
        "memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0",
        "Task in /kubepods/pod1/abc killed as a result of limit of /kubepods/pod1",
        "Memory cgroup stats for /oomlens:",
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[   2061]     0  2061     8869     8524   118784        0             0 tail",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid=2061,uid=0",
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=x,pid=1,uid=0",
        "Memory cgroup out of memory: Kill process 2061 (tail) score 1000 or sacrifice child",
        "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0",
        "Out of memory: Killed process 7 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB",
        "Killed process 9 (y), UID 5, total-vm:1kB, anon-rss:1kB, file-rss:0kB",
        "Tasks in /a are going to be killed due to memory.oom.group set",
        "Out of memory and no killable processes...",
        "oom_reaper: reaped process 2061 (tail), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        " dump_stack_lvl+0x57/0x80",
    ];

    fn line_strategy() -> impl Strategy<Value = (String, bool, Option<u8>, Option<u64>)> {
        let text = prop_oneof![
            4 => proptest::sample::select(FRAGMENTS).prop_map(str::to_owned),
            // Real fragments cut or extended at random: truncated kernel lines.
            2 => (proptest::sample::select(FRAGMENTS), 0usize..200, "\\PC{0,12}").prop_map(|(f, cut, tail)| {
                let cut = f.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(f.len());
                format!("{}{tail}", &f[..cut])
            }),
            1 => "\\PC{0,120}",
        ];
        (
            text,
            any::<bool>(),
            proptest::option::of(0u8..3),
            proptest::option::of(0u64..5_000_000),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        #[test]
        fn no_line_sequence_panics_and_reports_need_kill_lines(lines in proptest::collection::vec(line_strategy(), 0..80)) {
            let mut parser = Parser::new();
            let callers = ["T1", "T2", "C0"];
            let mut kill_lines = 0u64;
            let mut reports = 0u64;
            for (seq, (text, from_kernel, caller, ts)) in lines.iter().enumerate() {
                if *from_kernel && matches!(lines::classify(text), Some(lines::OomLine::Kill(_))) {
                    kill_lines += 1;
                }
                parser.push(&InputLine {
                    text,
                    from_kernel: *from_kernel,
                    caller: caller.map(|c| callers[usize::from(c)]),
                    host: None,
                    stamp: Stamp { seq: Some(seq as u64), monotonic_us: *ts, wall: None, level: None },
                });
                while parser.next_report().is_some() {
                    reports += 1;
                }
            }
            parser.finish();
            while parser.next_report().is_some() {
                reports += 1;
            }
            prop_assert!(!parser.has_open_reports());
            // Every report comes from one kernel kill line (duplicates in a
            // group are dropped, never invented).
            prop_assert!(reports <= kill_lines, "{reports} reports from {kill_lines} kill lines");
            prop_assert_eq!(reports + parser.stats().duplicate_kills, kill_lines);
        }

        #[test]
        fn classify_never_panics(text in "\\PC{0,200}") {
            let _ = lines::classify(&text);
            let _ = lines::may_start_report(&text);
        }
    }

    #[test]
    fn a_report_waits_for_its_group_then_settles_on_time() {
        let mut parser = Parser::new();
        let at = |us: u64, text: &'static str| InputLine {
            text,
            from_kernel: true,
            caller: None,
            host: None,
            stamp: Stamp {
                seq: Some(us),
                monotonic_us: Some(us),
                wall: None,
                level: None,
            },
        };
        parser.push(&at(10, FRAGMENTS[0]));
        parser.push(&at(20, FRAGMENTS[12]));
        assert!(parser.next_report().is_none(), "held for a possible group kill");
        assert_eq!(parser.oldest_open_seq(), Some(10));
        parser.push(&at(20 + KILL_SETTLE_US + 1, "eth0: link up"));
        let report = parser.next_report().expect("settled");
        assert_eq!(report.victim.pid, 2061);
        assert_eq!(parser.oldest_open_seq(), None);
        // A report that never reaches a kill is abandoned after a while.
        parser.push(&at(5_000_000, FRAGMENTS[0]));
        parser.push(&at(5_000_000 + ABANDON_US + 1, "eth0: link up"));
        assert_eq!(parser.stats().abandoned, 1);
        assert!(!parser.has_open_reports());
    }
}
