//! A closed burst's reports: one per killed process, each field taken from
//! the line the conventions name (agent/tests/corpus/README.md). The anchor
//! is the `Killed process` line; without one, the summary, then the `Task
//! in` line, then the `Kill process ... or sacrifice child` line. Pure.

use super::lines::MemcgCounter;
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
    let summary = parts.summary.as_ref().map(|(s, _)| s);
    let context = OomReport {
        host: parts.host.clone(),
        trigger: parts.trigger.clone(),
        summary: summary.cloned(),
        task_in: parts
            .task_in
            .as_ref()
            .map(|(task, limit, _)| (task.clone(), limit.clone())),
        choose_prefix: parts.choice.as_ref().map(|c| c.prefix.clone()),
        stats_memcg: parts.stats_memcg.clone(),
        memory: parts.memory,
        memory_swap: parts.memory_swap,
        kmem: parts.kmem,
        tasks: parts.tasks.clone(),
        group_memcg: parts.group.clone(),
        evidence: parts.evidence.clone(),
        ..OomReport::default()
    };
    // Only a kill line with nothing around it is a rate-limited header.
    let alone = parts.trigger.is_none()
        && parts.summary.is_none()
        && parts.task_in.is_none()
        && parts.choice.is_none()
        && parts.memory.is_none();
    let row_of = |pid: Option<i32>| pid.and_then(|pid| parts.tasks.iter().find(|t| t.pid == pid));
    if !parts.kills.is_empty() {
        return parts
            .kills
            .iter()
            .map(|kill| {
                let mut victim = kill.victim.clone();
                if let Some(choice) = parts.choice.as_ref().filter(|c| Some(c.pid) == victim.pid) {
                    victim.oom_score = choice.score;
                }
                if victim.uid.is_none() {
                    victim.uid = summary.filter(|s| s.pid == victim.pid).and_then(|s| s.uid);
                }
                let row = row_of(victim.pid);
                fill_from_row(&mut victim, row);
                OomReport {
                    victim,
                    anchor: Anchor::Kill,
                    kill_prefix: kill.prefix.clone(),
                    kill_stamp: kill.stamp,
                    partial: alone,
                    ..context.clone()
                }
            })
            .collect();
    }
    let (anchor, mut victim, stamp) =
        if let Some((s, stamp)) = parts.summary.as_ref().filter(|(s, _)| s.pid.is_some()) {
            let victim = VictimInfo {
                pid: s.pid,
                comm: s.task.clone(),
                uid: s.uid,
                ..VictimInfo::default()
            };
            (Anchor::Summary, victim, *stamp)
        } else {
            let chosen = parts.choice.as_ref().map(|c| VictimInfo {
                pid: Some(c.pid),
                comm: Some(c.comm.clone()),
                oom_score: c.score,
                ..VictimInfo::default()
            });
            match (&parts.task_in, &parts.choice) {
                (Some((_, _, stamp)), _) => (Anchor::TaskIn, chosen.unwrap_or_default(), *stamp),
                (None, Some(choice)) => (Anchor::Choice, chosen.unwrap_or_default(), choice.stamp),
                (None, None) => return Vec::new(),
            }
        };
    let row = row_of(victim.pid);
    fill_from_row(&mut victim, row);
    vec![OomReport {
        victim,
        anchor,
        kill_stamp: stamp,
        ..context
    }]
}

/// The victim's task table row gives what its kill line did not print.
fn fill_from_row(victim: &mut VictimInfo, row: Option<&TaskInfo>) {
    if let Some(row) = row {
        victim.uid = victim.uid.or(row.uid);
        victim.oom_score_adj = victim.oom_score_adj.or(row.oom_score_adj);
    }
}
