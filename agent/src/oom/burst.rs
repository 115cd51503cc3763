//! A report in progress: its lines as they arrive, and what they become
//! when it closes (task table rows mapped onto their header, the summary
//! owned). Pure.

use super::assemble::{BurstParts, Choice, Kill};
use super::lines::{MemcgCounter, Summary};
use super::memstat::MemStat;
use super::parser::{InputLine, MAX_EVIDENCE};
use super::report::{EvidenceLine, Stamp, SummaryInfo, TaskInfo, TriggerInfo};

/// The lines of one OOM report gathered so far.
#[derive(Debug, Default)]
pub(super) struct Burst {
    pub(super) caller: Option<String>,
    pub(super) opened_us: Option<u64>,
    pub(super) host: Option<String>,
    pub(super) trigger: Option<TriggerInfo>,
    pub(super) summary: Option<(SummaryInfo, Stamp)>,
    pub(super) task_in: Option<(String, Option<String>, Stamp)>,
    pub(super) choice: Option<Choice>,
    pub(super) stats_memcg: Option<String>,
    pub(super) memstat: MemStat,
    pub(super) memory: Option<MemcgCounter>,
    pub(super) memory_swap: Option<MemcgCounter>,
    pub(super) kmem: Option<MemcgCounter>,
    pub(super) columns: Vec<String>,
    pub(super) tasks: Vec<TaskInfo>,
    pub(super) group: Option<String>,
    pub(super) no_killable: bool,
    pub(super) kills: Vec<Kill>,
    pub(super) last_kill_us: Option<u64>,
    pub(super) evidence: Vec<EvidenceLine>,
}

impl Burst {
    /// A line of `host` may belong here: the same host, or either unknown.
    pub(super) fn compatible(&self, host: Option<&str>) -> bool {
        self.host.is_none() || host.is_none() || self.host.as_deref() == host
    }

    pub(super) fn note(&mut self, line: &InputLine<'_>) {
        if self.host.is_none() {
            self.host = line.host.map(str::to_owned);
        }
        if self.evidence.len() < MAX_EVIDENCE {
            self.evidence.push(EvidenceLine {
                stamp: line.stamp,
                text: line.text.trim_end().to_owned(),
            });
        }
    }

    /// It names a killed process (or the task chosen), so it is a kill.
    pub(super) fn anchored(&self) -> bool {
        !self.kills.is_empty()
            || self.summary.as_ref().is_some_and(|(s, _)| s.pid.is_some())
            || self.task_in.is_some()
            || self.choice.is_some()
    }
}

pub(super) fn burst_parts(burst: Burst) -> BurstParts {
    BurstParts {
        host: burst.host,
        trigger: burst.trigger,
        summary: burst.summary,
        task_in: burst.task_in,
        choice: burst.choice,
        stats_memcg: burst.stats_memcg,
        memstat: (!burst.memstat.is_empty()).then_some(burst.memstat),
        memory: burst.memory,
        memory_swap: burst.memory_swap,
        kmem: burst.kmem,
        tasks: burst.tasks,
        group: burst.group,
        kills: burst.kills,
        evidence: burst.evidence,
    }
}

pub(super) fn owned_summary(summary: Summary<'_>) -> SummaryInfo {
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
/// `rss_anon rss_file rss_shmem` on 6.x, `cpu oom_adj` on 2.6.32).
pub(super) fn task_from_row(columns: &[String], values: &[&str], name: &str) -> TaskInfo {
    let mut task = TaskInfo {
        comm: name.to_owned(),
        ..TaskInfo::default()
    };
    task.pid = values.first().and_then(|v| v.parse().ok()).unwrap_or_default();
    // A row with fewer values than the header has columns (wrapped in a
    // paste) may have lost any of them: then only uid and tgid, first, are
    // trusted.
    // Without a header (a paste that starts below it), the layout every
    // kernel shares: uid first, oom_score_adj last, in a complete row.
    if columns.is_empty() {
        task.uid = values.get(1).and_then(|v| v.parse().ok());
        if values.len() >= 8 {
            task.oom_score_adj = values.last().and_then(|v| v.parse().ok());
        }
        return task;
    }
    let short = values.len() < columns.len();
    for (at, (column, value)) in columns.iter().zip(values.iter().skip(1)).enumerate() {
        if short && at >= 2 {
            break;
        }
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
