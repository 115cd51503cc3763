//! Lines a terminal or mail client wrapped, joined back: a line is held
//! while it may go on (an OOM line missing its end, or stopping inside an
//! anchor's words), and the next physical line is glued on only when that
//! makes a better line. Also the padding a copy leaves where a terminal
//! wrapped. Pure.

use crate::oom::lines::{self, OomLine};

/// A run of spaces this long inside a line is a terminal's padding where
/// a copy joined a wrapped line (it can fall inside a word).
pub(super) const PADDING: &str = "                ";

pub(super) static PADDING_RUN: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PADDING));

/// Could this line go on on the next physical line? An OOM line missing
/// its end, or a line that stops inside an anchor's words.
pub(super) fn may_continue(message: &str, classified: Option<&OomLine<'_>>) -> bool {
    match classified {
        Some(OomLine::Kill(kill)) => !kill_complete(message, kill),
        Some(OomLine::Summary(summary)) => summary.uid.is_none(),
        Some(OomLine::TaskIn { limit_memcg, .. }) => limit_memcg.is_some(),
        Some(OomLine::ChooseVictim(_)) => !message.ends_with("child"),
        Some(_) => false,
        None => {
            let trimmed = message.trim_end();
            [
                "Killed",
                "Killed process",
                "Out of memory:",
                "Memory cgroup out of memory:",
                "Task in",
            ]
            .iter()
            .any(|start| trimmed.ends_with(start))
                || trimmed.starts_with("oom-kill:")
        }
    }
}

/// A kill line that ends where every era's kill line ends.
fn kill_complete(message: &str, kill: &crate::oom::lines::KillLine<'_>) -> bool {
    let message = message.trim_end();
    kill.fields.file_rss_kb.is_some() && (message.ends_with("kB") || kill.fields.oom_score_adj.is_some())
        || kill.fields.oom_score_adj.is_some()
}

/// `pending` continued by `next`, if that makes a better line: an anchor
/// where there was none, or the same kind of line with more of its fields
/// (so prose or a fence after a line cut short is never glued onto it).
pub(super) fn join(pending: &str, next: &str) -> Option<String> {
    let next = next.trim_end();
    if next.is_empty() {
        return None;
    }
    // A terminal cuts at a column, inside a word; a mail client wraps at a
    // space, which the trimmed line no longer shows.
    [format!("{pending}{next}"), format!("{pending} {next}")]
        .into_iter()
        .find(|joined| better(pending, joined, next))
}

fn better(pending: &str, joined: &str, next: &str) -> bool {
    match (lines::classify(pending), lines::classify(joined)) {
        (
            None,
            Some(OomLine::Kill(_) | OomLine::Summary(_) | OomLine::TaskIn { .. } | OomLine::ChooseVictim(_)),
        ) => true,
        (Some(OomLine::Kill(before)), Some(OomLine::Kill(after))) => {
            count_kill(&after.fields) > count_kill(&before.fields)
        }
        (Some(OomLine::Summary(before)), Some(OomLine::Summary(after))) => {
            before.uid.is_none() && after.uid.is_some()
        }
        // A path cut at a fixed width: the rest is one token of a path.
        (Some(OomLine::TaskIn { .. }), Some(OomLine::TaskIn { .. })) => {
            !next.contains(' ') && next.bytes().all(|b| b.is_ascii_graphic())
        }
        (Some(OomLine::ChooseVictim(_)), Some(OomLine::ChooseVictim(_))) => next.ends_with("child"),
        _ => false,
    }
}

fn count_kill(fields: &crate::oom::fields::KillFields) -> usize {
    [
        fields.uid.is_some(),
        fields.total_vm_kb.is_some(),
        fields.anon_rss_kb.is_some(),
        fields.file_rss_kb.is_some(),
        fields.shmem_rss_kb.is_some(),
        fields.pgtables_kb.is_some(),
        fields.oom_score_adj.is_some(),
    ]
    .into_iter()
    .filter(|present| *present)
    .count()
}

/// Runs of padding collapsed to one space.
pub(super) fn collapse_padding(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut spaces = 0;
    for c in raw.chars() {
        if c == ' ' {
            spaces += 1;
            continue;
        }
        if spaces > 0 {
            out.push_str(if spaces >= PADDING.len() {
                " "
            } else {
                &PADDING[..spaces]
            });
            spaces = 0;
        }
        out.push(c);
    }
    out
}
