//! Where each anchor line goes: the burst in progress it completes (a
//! summary joins the kill line of its pid, before or after it; a `Task in`
//! or selection line the report still lacking one), else a burst of its
//! own. Pure.

use super::assemble::{Choice, Kill};
use super::burst::{Burst, owned_summary};
use super::lines::{ChooseLine, KillLine, Summary};
use super::parser::{InputLine, Parser, Unused};
use super::report::{EvidenceLine, VictimInfo};

impl Parser {
    pub(super) fn summary(&mut self, line: &InputLine<'_>, summary: Summary<'_>) {
        // The summary of a burst in progress, or of a kill line printed
        // (or pasted) before it.
        // A vendor kernel may print both a `Task in` line and the summary:
        // the same report when they name the same cgroups.
        let same_cgroups = |b: &Burst| {
            b.task_in.as_ref().is_none_or(|(task, limit, _)| {
                summary.task_memcg == Some(task.as_str())
                    || limit.as_deref().is_some_and(|l| summary.oom_memcg == Some(l))
            })
        };
        let index = self
            .find(line, |b| {
                b.summary.is_none()
                    && same_cgroups(b)
                    && (b.kills.is_empty() || b.kills.iter().any(|k| k.victim.pid == summary.pid))
            })
            .unwrap_or_else(|| self.open(line, Burst::default()));
        self.adopt_orphans(index);
        let burst = &mut self.bursts[index];
        burst.summary = Some((owned_summary(summary), line.stamp));
        burst.note(line);
    }

    pub(super) fn task_in(&mut self, line: &InputLine<'_>, task: &str, limit: Option<&str>) {
        let index = self
            .find(line, |b| {
                b.task_in.is_none() && b.kills.is_empty() && b.choice.is_none()
            })
            .unwrap_or_else(|| self.open(line, Burst::default()));
        self.adopt_orphans(index);
        let burst = &mut self.bursts[index];
        burst.task_in = Some((task.to_owned(), limit.map(str::to_owned), line.stamp));
        burst.note(line);
    }

    pub(super) fn choose(&mut self, line: &InputLine<'_>, choice: ChooseLine<'_>) {
        let index = self
            .find(line, |b| b.choice.is_none() && b.kills.is_empty())
            .unwrap_or_else(|| self.open(line, Burst::default()));
        self.adopt_orphans(index);
        let burst = &mut self.bursts[index];
        burst.choice = Some(Choice {
            pid: choice.pid,
            comm: choice.comm.to_owned(),
            score: choice.score,
            prefix: choice.prefix.to_owned(),
            stamp: line.stamp,
        });
        burst.note(line);
    }

    pub(super) fn kill(&mut self, line: &InputLine<'_>, kill: KillLine<'_>) {
        let victim = VictimInfo {
            pid: Some(kill.pid),
            comm: Some(kill.comm.to_owned()),
            uid: kill.fields.uid,
            total_vm_kb: kill.fields.total_vm_kb,
            anon_rss_kb: kill.fields.anon_rss_kb,
            file_rss_kb: kill.fields.file_rss_kb,
            shmem_rss_kb: kill.fields.shmem_rss_kb,
            pgtables_kb: kill.fields.pgtables_kb,
            oom_score_adj: kill.fields.oom_score_adj,
            oom_score: None,
        };
        let summary_pid = |b: &Burst| b.summary.as_ref().and_then(|(s, _)| s.pid);
        let target = match line.caller {
            Some(_) => self.route(line),
            None => self
                .find(line, |b| b.kills.is_empty() && summary_pid(b) == Some(kill.pid))
                .or_else(|| self.find(line, |b| b.kills.is_empty()))
                .or_else(|| self.find(line, |b| b.group.is_some())),
        }
        // A burst that already killed takes more kills only as a group kill.
        .filter(|&i| self.bursts[i].kills.is_empty() || self.bursts[i].group.is_some());
        let index = match target {
            Some(index) => index,
            // The kill line alone (a rate-limited header, or a filtered
            // log): a burst of its own, which a summary may still join.
            None => self.open(line, Burst::default()),
        };
        self.adopt_orphans(index);
        let burst = &mut self.bursts[index];
        if burst.host.is_none() {
            burst.host = line.host.map(str::to_owned);
        }
        if burst.kills.iter().any(|k| k.victim.pid == victim.pid) {
            self.stats.duplicate_kills += 1;
            self.unused(line.stamp, line.text, Unused::Duplicate);
            return;
        }
        burst.kills.push(Kill {
            victim,
            prefix: kill.prefix.to_owned(),
            stamp: line.stamp,
        });
        burst.last_kill_us = line.stamp.monotonic_us;
        // Kill lines are always kept as evidence.
        burst.evidence.push(EvidenceLine {
            stamp: line.stamp,
            text: line.text.trim_end().to_owned(),
        });
    }
}
