//! One kill told in full, for `oomlens show` and the demo.

use std::borrow::Cow;
use std::fmt::Write as _;

use oomlens_proto::v1::{Constraint, ContainerRole, OomEvent, QosClass, Runtime, Scope, Verdict};

use super::escape::{printable, printable_opt};
use super::{Style, chart::memory_chart, layers::layers_chart, prefix, scope_code, utc, word};
use crate::kill_point::through_kill;
use crate::units::{human_bytes, quantity, saturating_u64};

fn describe_scope(event: &OomEvent) -> &'static str {
    match Scope::try_from(event.scope).unwrap_or(Scope::Unknown) {
        Scope::ContainerLimit => "the container reached its own memory limit",
        Scope::PodLimit => "the pod's containers together reached the pod's memory limit",
        Scope::NodeAllocatable => "the node's pods together reached its allocatable memory",
        Scope::NodeOom => "the whole node ran out of memory",
        Scope::Cpuset => "the memory of the allowed NUMA nodes (cpuset) ran out",
        Scope::Mempolicy => "the memory allowed by the process's memory policy ran out",
        Scope::OtherCgroup => "a cgroup outside Kubernetes reached its memory limit",
        Scope::Unknown | Scope::Unspecified => "the kernel's report does not say which limit",
    }
}

/// The kill's facts as (name, value) lines, escaped for a terminal: what
/// `oomlens show` prints under its heading, and the web page's table.
pub fn facts(event: &OomEvent, style: Style) -> Vec<(&'static str, String)> {
    let mut facts: Vec<(&'static str, String)> = Vec::new();
    let scope = word::<Scope>(event.scope);
    facts.push((
        "scope",
        format!(
            "{} ({}): {}",
            style.paint(&scope, scope_code(event.scope)),
            word::<Constraint>(event.constraint),
            describe_scope(event)
        ),
    ));
    if let Some(pod) = &event.pod {
        let mut text = match (&pod.namespace, &pod.name) {
            (Some(ns), Some(name)) => format!("{}/{}", printable(ns), printable(name)),
            _ => format!("uid {}", printable(&pod.uid)),
        };
        let mut extra = Vec::new();
        if pod.qos != 0 {
            extra.push(word::<QosClass>(pod.qos));
        }
        if let Some(owner) = pod.owner.as_ref().filter(|o| !o.name.is_empty()) {
            extra.push(format!("{}/{}", printable(&owner.kind), printable(&owner.name)));
        }
        if let Some(limit) = pod.memory_limit_bytes {
            extra.push(format!("pod limit {}", human_bytes(limit)));
        }
        if !extra.is_empty() {
            let _ = write!(text, " ({})", extra.join(", "));
        }
        facts.push(("pod", text));
    }
    if let Some(c) = &event.container {
        let mut text =
            printable_opt(c.name.as_deref()).unwrap_or_else(|| printable(&prefix(&c.id, 12)).into_owned());
        let mut extra = Vec::new();
        if c.runtime != 0 {
            extra.push(word::<Runtime>(c.runtime));
        }
        if c.role != 0 && c.role != ContainerRole::Main as i32 {
            extra.push(word::<ContainerRole>(c.role));
        }
        if let Some(image) = &c.image {
            extra.push(printable(image).into_owned());
        }
        if let Some(restarts) = c.restart_count {
            extra.push(format!("{restarts} restarts"));
        }
        if let Some(request) = c.memory_request_bytes {
            extra.push(format!("request {}", human_bytes(request)));
        }
        if let Some(limit) = c.memory_limit_bytes {
            extra.push(format!("limit {}", human_bytes(limit)));
        }
        if !extra.is_empty() {
            let _ = write!(text, " ({})", extra.join(", "));
        }
        facts.push(("container", text));
    } else if let Some(unit) = &event.systemd_unit {
        facts.push(("unit", printable(unit).into_owned()));
    }
    if let Some(v) = &event.victim {
        let mut text = format!(
            "{}[{}]",
            printable(v.comm.as_deref().unwrap_or("?")),
            v.pid.map_or("?".to_owned(), |p| p.to_string())
        );
        let kb = |value: Option<u64>| value.map(|kb| human_bytes(kb.saturating_mul(1024)));
        for (name, value) in [
            ("anon-rss", kb(v.anon_rss_kb)),
            ("file-rss", kb(v.file_rss_kb)),
            ("shmem-rss", kb(v.shmem_rss_kb)),
            ("oom_score_adj", v.oom_score_adj.map(|s| s.to_string())),
        ] {
            if let Some(value) = value {
                let _ = write!(text, " {name} {value}");
            }
        }
        match v.main_process {
            Some(true) => text.push_str(", the container's main process"),
            Some(false) => text.push_str(", not the main process"),
            None => {}
        }
        facts.push(("victim", text));
    }
    if let Some(status) = &event.runtime_status {
        facts.push(("kubernetes", runtime_status_text(event, status)));
    }
    if let Some(t) = &event.trigger {
        let mut text = format!(
            "{}[{}]",
            printable(t.comm.as_deref().unwrap_or("?")),
            t.pid.map_or("?".to_owned(), |p| p.to_string())
        );
        if let Some(gfp) = &t.gfp_mask {
            let _ = write!(text, " gfp_mask={}", printable(gfp));
        }
        if let Some(order) = t.order {
            let _ = write!(text, " order={order}");
        }
        facts.push(("trigger", text));
    }
    if let Some(u) = &event.memcg_usage {
        let mut text = format!(
            "usage {} of limit {}",
            u.usage_kb
                .map_or("?".to_owned(), |kb| human_bytes(kb.saturating_mul(1024))),
            u.limit_kb
                .map_or("?".to_owned(), |kb| human_bytes(kb.saturating_mul(1024)))
        );
        if let Some(failcnt) = u.failcnt {
            let _ = write!(text, ", failcnt {failcnt}");
        }
        facts.push(("memcg", text));
    }
    if let Some(memcg) = &event.oom_memcg {
        facts.push(("oom memcg", printable(memcg).into_owned()));
    }
    if let Some(text) = event.breakdown.as_ref().and_then(breakdown_text) {
        facts.push(("charged", text));
    }
    if !event.limited_containers.is_empty() {
        let shares: Vec<String> = event
            .limited_containers
            .iter()
            .take(8)
            .map(|c| {
                let name = c.name.as_deref().map_or_else(
                    || c.container_id.chars().take(12).collect(),
                    |n| printable(n).into_owned(),
                );
                let bytes = c.working_set_bytes.map_or("?".to_owned(), human_bytes);
                let victim = if Some(c.cgroup.as_str()) == event.task_memcg.as_deref() {
                    " (victim)"
                } else {
                    ""
                };
                format!("{name} {bytes}{victim}")
            })
            .collect();
        let more = event.limited_containers.len().saturating_sub(8);
        let mut text = shares.join(", ");
        if more > 0 {
            let _ = write!(text, ", and {more} more");
        }
        // The agent's last samples, up to 100 ms before the kill.
        text.push_str(" at the last sample");
        facts.push(("held by", text));
    }
    if !event.memory_volumes.is_empty() {
        let volumes: Vec<String> = event
            .memory_volumes
            .iter()
            .map(|v| {
                let mut text = format!("{} (memory)", printable(&v.name));
                if let Some(used) = v.used_bytes {
                    let _ = write!(text, " {}", human_bytes(used));
                    if let Some(size) = v.size_bytes {
                        let _ = write!(text, " of {}", human_bytes(size));
                    }
                }
                text
            })
            .collect();
        facts.push(("volumes", volumes.join(", ")));
    }
    let mut flags = Vec::new();
    if event.silent == Some(true) {
        flags.push("silent (the container survived: Kubernetes shows no OOMKilled)");
    }
    if event.partial {
        flags.push("partial (the kernel rate-limited its report)");
    }
    if event.group_kill {
        flags.push("group kill (memory.oom.group)");
    }
    if !flags.is_empty() {
        facts.push(("flags", flags.join("; ")));
    }
    if let Some(node_memory) = &event.node_memory
        && let (Some(available), Some(total)) = (node_memory.mem_available_bytes, node_memory.mem_total_bytes)
    {
        facts.push((
            "node",
            format!(
                "MemAvailable {} of {}",
                human_bytes(available),
                human_bytes(total)
            ),
        ));
    }
    facts
}

/// What the limited cgroup was charged for, largest first, with where the
/// numbers come from.
fn breakdown_text(b: &oomlens_proto::v1::MemoryBreakdown) -> Option<String> {
    use oomlens_proto::v1::BreakdownSource;

    let mut parts: Vec<(&str, u64)> = [
        ("anon", b.anon_bytes),
        ("page cache", b.page_cache_bytes),
        ("shmem/tmpfs", b.shmem_bytes),
        ("kernel", b.kernel_bytes),
    ]
    .into_iter()
    .filter_map(|(name, bytes)| Some((name, bytes?)))
    .collect();
    if parts.is_empty() {
        return None;
    }
    parts.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    // Page cache the kernel could not drop in time.
    let unwritten: u64 = [b.dirty_bytes, b.writeback_bytes].into_iter().flatten().sum();
    let mut text = parts
        .iter()
        .map(|(name, bytes)| match *name {
            "page cache" if unwritten > 0 => format!(
                "{name} {} ({} dirty or under writeback)",
                human_bytes(*bytes),
                human_bytes(unwritten)
            ),
            _ => format!("{name} {}", human_bytes(*bytes)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(swap) = b.swap_bytes.filter(|s| *s > 0) {
        let _ = write!(text, ", swap {}", human_bytes(swap));
    }
    text.push_str(match BreakdownSource::try_from(b.source) {
        Ok(BreakdownSource::KernelReport) => "; from the kernel's report",
        Ok(BreakdownSource::LastSample) => "; from the last sample before the kill",
        _ => "",
    });
    Some(text)
}

/// Everything about one kill, for `oomlens show`. Every string from the
/// event is escaped ([`printable`]).
pub fn show_event(event: &OomEvent, style: Style) -> String {
    let mut out = String::new();
    let node = printable(event.node.as_deref().unwrap_or("?"));
    let _ = writeln!(
        out,
        "{} {} on {node} at {} UTC",
        style.bold("OOM kill"),
        printable(&event.id),
        utc(event.time.as_ref(), true)
    );
    for (name, value) in facts(event, style) {
        let _ = writeln!(out, "  {name:<10} {value}");
    }
    if let Some(history) = event
        .history
        .as_ref()
        .filter(|h| !h.samples.is_empty() || !h.buckets.is_empty())
    {
        let _ = writeln!(out);
        let mut heading = format!("Working set before the kill ({} samples", history.samples.len());
        if let Some(peak) = history.peak_working_set_bytes {
            let _ = write!(heading, ", peak {}", human_bytes(peak));
        }
        if let Some(growth) = history.growth_bytes_per_second {
            let _ = write!(
                heading,
                ", {}{}/s over the last minute",
                if growth < 0.0 { "-" } else { "+" },
                human_bytes(saturating_u64(growth.abs()))
            );
        }
        // The kernel's figure ends the curve: a climb between two samples
        // shows.
        let history = through_kill(event, history);
        if let Cow::Owned(extended) = &history
            && let Some(at_kill) = extended.samples.last().and_then(|s| s.working_set_bytes)
        {
            let _ = write!(
                heading,
                "; {} at the kill, from the kernel's report",
                human_bytes(at_kill)
            );
        }
        heading.push_str("):");
        let _ = writeln!(out, "{}", style.bold(&heading));
        for line in memory_chart(&history, 72, 10) {
            let _ = writeln!(out, "  {line}");
        }
    }
    // The limited cgroup's layers: its own history for a pod-level kill.
    let limited = event
        .oom_memcg_history
        .as_ref()
        .filter(|h| Some(h.cgroup.as_str()) == event.oom_memcg.as_deref())
        .or(event.history.as_ref())
        .map(|h| through_kill(event, h));
    if let Some(layers) = limited.as_deref().and_then(|h| layers_chart(h, 72, 8)) {
        let _ = writeln!(out);
        let ends_at_kill = matches!(limited, Some(Cow::Owned(_)));
        let _ = writeln!(
            out,
            "{}",
            style.bold(if ends_at_kill {
                "What the memory held before the kill (the last column and the legend: the kernel's report at the kill):"
            } else {
                "What the memory held before the kill:"
            })
        );
        for line in layers {
            let _ = writeln!(out, "  {line}");
        }
    }
    if let Some(analysis) = &event.analysis {
        let _ = writeln!(out);
        let verdict = word::<Verdict>(analysis.verdict);
        let _ = writeln!(
            out,
            "{} {}: {}",
            style.bold("Verdict:"),
            style.paint(&verdict, "33"),
            // The collector writes the reasoning, from the event's strings.
            printable(&analysis.reasoning)
        );
        if let Some(mismatch) = &analysis.status_reasoning {
            let _ = writeln!(
                out,
                "{} {}",
                style.bold("Kubernetes shows:"),
                style.paint(&printable(mismatch), "35")
            );
        }
        if let Some(limit) = analysis.recommended_limit_bytes {
            let _ = writeln!(
                out,
                "{} {}: {}",
                style.bold("Recommended limit:"),
                style.paint(&quantity(limit), "32"),
                printable(analysis.recommendation_reasoning.as_deref().unwrap_or(""))
            );
        }
    }
    if !event.kernel_lines.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", style.bold("Kernel log:"));
        for line in &event.kernel_lines {
            let stamp = line.monotonic_us.map_or_else(String::new, |us| {
                format!("[{:>5}.{:06}] ", us / 1_000_000, us % 1_000_000)
            });
            let _ = writeln!(out, "  {stamp}{}", printable(&line.text));
        }
    }
    out
}

/// What the runtime (and so the pod's status) said of the container after
/// the kill: `exited: OOMKilled, exit 137, restart count 3 (0.4 s after the
/// kill)`.
pub(super) fn runtime_status_text(event: &OomEvent, status: &oomlens_proto::v1::RuntimeStatus) -> String {
    use oomlens_proto::v1::ContainerState;
    let mut text = match ContainerState::try_from(status.state).unwrap_or(ContainerState::Unspecified) {
        ContainerState::Exited => {
            let mut text = format!(
                "exited: {}",
                printable(status.reason.as_deref().unwrap_or("no reason given"))
            );
            if let Some(code) = status.exit_code {
                let _ = write!(text, ", exit {code}");
            }
            text
        }
        ContainerState::Running => "running: no restart, no terminated status".to_owned(),
        ContainerState::Created => "created, not started".to_owned(),
        ContainerState::Gone => "gone: the runtime no longer knew the container".to_owned(),
        ContainerState::Unspecified => "state unknown".to_owned(),
    };
    if let Some(restarts) = status.restart_count {
        let _ = write!(text, ", restart count {restarts}");
    }
    let after = status
        .observed
        .as_ref()
        .zip(event.time.as_ref())
        .map(|(seen, kill)| {
            oomlens_proto::time::unix_ms(seen) as f64 / 1000.0
                - oomlens_proto::time::unix_ms(kill) as f64 / 1000.0
        });
    if let Some(after) = after.filter(|a| a.is_finite() && *a >= 0.0) {
        let _ = write!(text, " ({after:.1} s after the kill)");
    }
    if !status.settled {
        text.push_str("; still being watched");
    }
    text
}
