//! One killed process and everything the kernel said about its kill, and
//! the rules that turn a report's lines into its fields (which line each
//! field comes from: agent/tests/corpus/README.md). Pure.

use super::fields::redacted;
use super::lines::{MemcgCounter, says_global, says_memcg};

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
    /// Line number (from 1) in a saved log.
    pub line: Option<u64>,
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
    /// Nothing in the report says: a bare kill line (pre-5.1 kernels print
    /// the reason on the line before it). Reported as a global kill, the
    /// documented default, unless other evidence places it in a memcg.
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

/// The killed process, each field from the line the conventions name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VictimInfo {
    pub pid: Option<i32>,
    pub comm: Option<String>,
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

/// The line a report's kill was found by, strongest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Anchor {
    /// `Killed process`.
    #[default]
    Kill,
    /// The `oom-kill:` summary (its kill line was cut or filtered out).
    Summary,
    /// `Task in X killed as a result of limit of Y`.
    TaskIn,
    /// `Kill process N ... or sacrifice child`.
    Choice,
}

/// One killed process and everything the kernel said about its kill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OomReport {
    pub victim: VictimInfo,
    pub anchor: Anchor,
    /// Text before `Killed process` (the kill's stated reason).
    pub kill_prefix: String,
    /// The anchor line's stamp: its seq identifies the kill.
    pub kill_stamp: Stamp,
    pub host: Option<String>,
    pub trigger: Option<TriggerInfo>,
    pub summary: Option<SummaryInfo>,
    /// Pre-4.19 `Task in A killed as a result of limit of B`: (A, B); B is
    /// None when its piece was not logged.
    pub task_in: Option<(String, Option<String>)>,
    /// Pre-5.1 `... Kill process N (comm) score N or sacrifice child`
    /// prefix, which carries the reason on those kernels.
    pub choose_prefix: Option<String>,
    /// `Memory cgroup stats for X:` (cgroup v1 prints the OOM memcg).
    pub stats_memcg: Option<String>,
    /// The stats dump that follows it (cgroup v2, and v1 on every kernel).
    pub memstat: Option<super::memstat::MemStat>,
    pub memory: Option<MemcgCounter>,
    pub memory_swap: Option<MemcgCounter>,
    pub kmem: Option<MemcgCounter>,
    pub tasks: Vec<TaskInfo>,
    /// The cgroup of a `memory.oom.group` kill this was part of.
    pub group_memcg: Option<String>,
    /// The kernel rate-limited the header (or a filter removed it): the
    /// kill line alone, no paths or task table.
    pub partial: bool,
    pub evidence: Vec<EvidenceLine>,
}

/// A path as the log shows it, if it is one: not redacted, not `host`.
fn path(value: Option<&str>) -> Option<&str> {
    value.filter(|v| v.starts_with('/') && !redacted(v))
}

impl OomReport {
    /// The sequence number of the report's first record (its kill line's
    /// when no earlier line is known): reading again from there gives the
    /// whole report.
    pub fn first_seq(&self) -> Option<u64> {
        self.evidence
            .first()
            .and_then(|line| line.stamp.seq)
            .or(self.kill_stamp.seq)
    }

    /// The constraint, resolving traps seen in real logs: some kernels print
    /// `CONSTRAINT_NONE` for memcg kills, so the memcg kill text, an
    /// `oom_memcg` below the root or a `Task in` line win over it; a vendor
    /// kernel names `host` as the limit of a whole-node OOM.
    pub fn constraint(&self) -> ReportConstraint {
        let summary = self.summary.as_ref();
        let task_in_limit = self.task_in.as_ref().and_then(|(_, limit)| limit.as_deref());
        let memcg_evidence = says_memcg(&self.kill_prefix)
            || self.choose_prefix.as_deref().is_some_and(says_memcg)
            || summary
                .and_then(|s| s.oom_memcg.as_deref())
                .is_some_and(|m| m != "/")
            || task_in_limit.is_some_and(|l| l.starts_with('/') && l != "/")
            || (self.task_in.is_some() && task_in_limit.is_none())
            || self.memory.is_some();
        let global_evidence = says_global(&self.kill_prefix)
            || self.choose_prefix.as_deref().is_some_and(says_global)
            || task_in_limit == Some("host")
            || summary.is_some_and(|s| s.global_oom);
        match summary.and_then(|s| s.constraint.as_deref()) {
            Some("CONSTRAINT_MEMCG") => ReportConstraint::Memcg,
            Some("CONSTRAINT_CPUSET") => ReportConstraint::Cpuset,
            Some("CONSTRAINT_MEMORY_POLICY") => ReportConstraint::MemoryPolicy,
            _ if memcg_evidence => ReportConstraint::Memcg,
            Some("CONSTRAINT_NONE") => ReportConstraint::Global,
            _ if global_evidence => ReportConstraint::Global,
            _ => ReportConstraint::Unknown,
        }
    }

    /// The memcg whose limit was hit: the summary's `oom_memcg`, else the
    /// `Task in` line's limit. None for a global OOM and wherever the log
    /// does not show it (never the `Memory cgroup stats for` line, which
    /// names every level the kernel dumps).
    pub fn oom_memcg(&self) -> Option<&str> {
        if matches!(
            self.constraint(),
            ReportConstraint::Global | ReportConstraint::Unknown
        ) {
            return None;
        }
        match self.summary.as_ref() {
            Some(summary) if summary.oom_memcg.is_some() => path(summary.oom_memcg.as_deref()),
            _ => path(self.task_in.as_ref().and_then(|(_, limit)| limit.as_deref())),
        }
    }

    /// The victim's memcg: a `memory.oom.group` member's group (the
    /// summary names the first victim's cgroup only), else the summary's
    /// `task_memcg`, else the `Task in` line's task.
    pub fn task_memcg(&self) -> Option<&str> {
        let summary = self.summary.as_ref();
        if let Some(group) = self.group_memcg.as_deref()
            && summary.is_none_or(|s| s.pid != self.victim.pid || s.task_memcg.is_none())
        {
            return path(Some(group));
        }
        match summary.and_then(|s| s.task_memcg.as_deref()) {
            Some(task) => path(Some(task)),
            None => path(self.task_in.as_ref().map(|(task, _)| task.as_str())),
        }
    }
}
