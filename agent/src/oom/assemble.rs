//! A closed burst's reports: one per killed process, each field taken from
//! the line the conventions name (agent/tests/corpus/README.md). The anchor
//! is the `Killed process` line; without one, the summary, then the `Task
//! in` line, then the `Kill process ... or sacrifice child` line. Pure.

use super::lines::MemcgCounter;
use super::memstat::MemStat;
use super::report::{Anchor, EvidenceLine, OomReport, Stamp, SummaryInfo, TaskInfo, TriggerInfo, VictimInfo};

/// A `Killed process` line's victim.
#[derive(Debug, Clone)]
pub(super) struct Kill {
    pub victim: VictimInfo,
    pub prefix: String,
    pub stamp: Stamp,
}

/// The task a pre-5.1 kernel chose (its child may be the one killed).
#[derive(Debug, Clone)]
pub(super) struct Choice {
    pub pid: i32,
    pub comm: String,
    pub score: Option<i64>,
    pub prefix: String,
    pub stamp: Stamp,
}

/// What a closed burst hands to report assembly.
#[derive(Debug)]
pub(super) struct BurstParts {
    pub host: Option<String>,
    pub trigger: Option<TriggerInfo>,
    pub summary: Option<(SummaryInfo, Stamp)>,
    pub task_in: Option<(String, Option<String>, Stamp)>,
    pub choice: Option<Choice>,
    pub stats_memcg: Option<String>,
    pub memstat: Option<MemStat>,
    pub memory: Option<MemcgCounter>,
    pub memory_swap: Option<MemcgCounter>,
    pub kmem: Option<MemcgCounter>,
    pub tasks: Vec<TaskInfo>,
    pub group: Option<String>,
    pub kills: Vec<Kill>,
    pub evidence: Vec<EvidenceLine>,
}

/// The reports of a burst that reached an anchor.
pub(super) fn reports(parts: BurstParts) -> Vec<OomReport> {
    // Only a kill line with nothing around it is a rate-limited header.
    let alone = parts.trigger.is_none()
        && parts.summary.is_none()
        && parts.task_in.is_none()
        && parts.choice.is_none()
        && parts.memory.is_none();
    let summary_stamp = parts.summary.as_ref().map(|(s, stamp)| (s.pid, *stamp));
    let task_in_stamp = parts.task_in.as_ref().map(|(_, _, stamp)| *stamp);
    let choice = parts.choice.clone();
    let kills = parts.kills;
    let mut context = OomReport {
        host: parts.host,
        trigger: parts.trigger,
        summary: parts.summary.map(|(s, _)| s),
        task_in: parts.task_in.map(|(task, limit, _)| (task, limit)),
        choose_prefix: parts.choice.map(|c| c.prefix),
        stats_memcg: parts.stats_memcg,
        memstat: parts.memstat,
        memory: parts.memory,
        memory_swap: parts.memory_swap,
        kmem: parts.kmem,
        tasks: parts.tasks,
        group_memcg: parts.group,
        evidence: parts.evidence,
        ..OomReport::default()
    };
    if !kills.is_empty() {
        let count = kills.len();
        let mut reports = Vec::with_capacity(count);
        for (at, kill) in kills.into_iter().enumerate() {
            let mut victim = kill.victim;
            if let Some(choice) = choice.as_ref().filter(|c| Some(c.pid) == victim.pid) {
                victim.oom_score = choice.score;
            }
            if victim.uid.is_none() {
                let summary = context.summary.as_ref().filter(|s| s.pid == victim.pid);
                victim.uid = summary.and_then(|s| s.uid);
            }
            fill_from_row(&mut victim, &context.tasks);
            // A group's kills share the report's context; the last one
            // takes it without a copy.
            let shared = if at + 1 == count {
                std::mem::take(&mut context)
            } else {
                context.clone()
            };
            reports.push(OomReport {
                victim,
                anchor: Anchor::Kill,
                kill_prefix: kill.prefix,
                kill_stamp: kill.stamp,
                partial: alone,
                ..shared
            });
        }
        return reports;
    }
    let (anchor, mut victim, stamp) = match (summary_stamp, task_in_stamp, &choice) {
        (Some((Some(_), stamp)), _, _) => {
            let summary = context.summary.as_ref();
            let victim = VictimInfo {
                pid: summary.and_then(|s| s.pid),
                comm: summary.and_then(|s| s.task.clone()),
                uid: summary.and_then(|s| s.uid),
                ..VictimInfo::default()
            };
            (Anchor::Summary, victim, stamp)
        }
        (_, task_in, choice) => {
            let chosen = choice
                .as_ref()
                .map(|c| VictimInfo {
                    pid: Some(c.pid),
                    comm: Some(c.comm.clone()),
                    oom_score: c.score,
                    ..VictimInfo::default()
                })
                .unwrap_or_default();
            match (task_in, choice) {
                (Some(stamp), _) => (Anchor::TaskIn, chosen, stamp),
                (None, Some(choice)) => (Anchor::Choice, chosen, choice.stamp),
                (None, None) => return Vec::new(),
            }
        }
    };
    fill_from_row(&mut victim, &context.tasks);
    vec![OomReport {
        victim,
        anchor,
        kill_stamp: stamp,
        ..context
    }]
}

/// The victim's task table row gives what its kill line did not print.
fn fill_from_row(victim: &mut VictimInfo, tasks: &[TaskInfo]) {
    if victim.uid.is_some() && victim.oom_score_adj.is_some() {
        return;
    }
    let row = victim.pid.and_then(|pid| tasks.iter().find(|t| t.pid == pid));
    if let Some(row) = row {
        victim.uid = victim.uid.or(row.uid);
        victim.oom_score_adj = victim.oom_score_adj.or(row.oom_score_adj);
    }
}
