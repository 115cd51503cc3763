//! What the `oomlens` command prints: tables that fit 100 columns, the
//! full story of one kill with a chart of its memory history, summaries
//! and the live top list. Pure functions of the data (golden-tested);
//! colour only when asked (the binary asks on a terminal).

use std::fmt::Write as _;
use std::time::Duration;

use oomlens_proto::json::JsonEnum;
use oomlens_proto::v1::{
    Constraint, Container, ContainerMemoryStatus, ContainerRole, MemoryHistory, OomEvent, Pod, QosClass,
    Runtime, Scope, SummaryGroup, Verdict,
};

/// Width every table is kept within.
pub const WIDTH: usize = 100;

/// `33554432` -> `32Mi`; one decimal below 10 units.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "Ki", "Mi", "Gi", "Ti"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A Kubernetes quantity, exact: `1280Mi`, `2Gi`, `1536Ki`.
pub fn quantity(bytes: u64) -> String {
    const KI: u64 = 1024;
    for (unit, size) in [
        ("Ti", KI.pow(4)),
        ("Gi", KI.pow(3)),
        ("Mi", KI.pow(2)),
        ("Ki", KI),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `30s`, `15m`, `6h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 6h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// Terminal colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub const PLAIN: Style = Style { color: false };

    fn paint(self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn bold(self, text: &str) -> String {
        self.paint(text, "1")
    }
}

fn word<E: JsonEnum>(value: i32) -> String {
    E::try_from(value)
        .ok()
        .and_then(JsonEnum::word)
        .unwrap_or_else(|| "-".to_owned())
}

fn scope_code(scope: i32) -> &'static str {
    match Scope::try_from(scope) {
        Ok(Scope::NodeOom | Scope::NodeAllocatable) => "31",
        Ok(Scope::ContainerLimit | Scope::PodLimit) => "33",
        _ => "36",
    }
}

fn utc(t: Option<&prost_types::Timestamp>, millis: bool) -> String {
    match t {
        Some(t) => {
            let text = oomlens_proto::time::format_rfc3339(
                t.seconds,
                if millis { t.nanos.max(0) as u32 } else { 0 },
            );
            let text = text.trim_end_matches('Z').replace('T', " ");
            if millis {
                // Keep milliseconds only.
                match text.split_once('.') {
                    Some((whole, frac)) => format!("{whole}.{:0<3.3}", frac),
                    None => format!("{text}.000"),
                }
            } else {
                text
            }
        }
        None => "-".to_owned(),
    }
}

/// `namespace/pod container`, or short ids where the names are unknown.
fn pod_place(pod: &Pod, container: Option<&Container>) -> String {
    let pod_text = match (&pod.namespace, &pod.name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => format!("pod {}", &pod.uid[..pod.uid.len().min(8)]),
    };
    match container {
        Some(c) => format!(
            "{pod_text} {}",
            c.name
                .clone()
                .unwrap_or_else(|| c.id[..c.id.len().min(12)].to_owned())
        ),
        None => pod_text,
    }
}

/// Where the kill happened, most specific first.
pub fn location(event: &OomEvent) -> String {
    if let Some(pod) = &event.pod {
        return pod_place(pod, event.container.as_ref());
    }
    if let Some(unit) = &event.systemd_unit {
        return unit.clone();
    }
    if let Some(id) = &event.docker_id {
        return format!("docker {}", &id[..id.len().min(12)]);
    }
    event
        .task_memcg
        .clone()
        .or_else(|| event.oom_memcg.clone())
        .unwrap_or_else(|| "-".to_owned())
}

fn limit_of(event: &OomEvent) -> Option<u64> {
    event
        .memcg_usage
        .as_ref()
        .and_then(|u| u.limit_kb.map(|kb| kb * 1024))
        .or_else(|| event.history.as_ref().and_then(|h| h.limit_bytes))
}

pub fn events_header() -> String {
    format!(
        "{:<8}  {:<19}  {:<16}  {:<17}  {:>6}  {}",
        "ID", "TIME (UTC)", "SCOPE", "VERDICT", "LIMIT", "WHERE"
    )
}

pub fn event_row(event: &OomEvent, style: Style) -> String {
    let scope = word::<Scope>(event.scope);
    let verdict = event
        .analysis
        .as_ref()
        .map_or_else(|| "-".to_owned(), |a| word::<Verdict>(a.verdict));
    let mut place = location(event);
    for (flag, on) in [
        ("silent", event.silent == Some(true)),
        ("partial", event.partial),
        ("group", event.group_kill),
    ] {
        if on {
            let _ = write!(place, " [{flag}]");
        }
    }
    let fixed = 8 + 2 + 19 + 2 + 16 + 2 + 17 + 2 + 6 + 2;
    // An id prefix, as `show` takes it (ids are 32 hex digits).
    let id: String = event.id.chars().take(8).collect();
    format!(
        "{id:<8}  {:<19}  {}  {:<17}  {:>6}  {}",
        utc(event.time.as_ref(), false),
        style.paint(&format!("{scope:<16}"), scope_code(event.scope)),
        truncate(&verdict, 17),
        limit_of(event).map_or("-".to_owned(), human_bytes),
        truncate(&place, WIDTH - fixed),
    )
}

/// A chart of the working set before the kill: `rows` lines of `width`
/// columns, time left to right, with the limit marked.
pub fn memory_chart(history: &MemoryHistory, width: usize, rows: usize) -> Vec<String> {
    let seconds = |t: &prost_types::Timestamp| t.seconds as f64 + f64::from(t.nanos) / 1e9;
    let mut points: Vec<(f64, u64)> = history
        .buckets
        .iter()
        .filter_map(|b| Some((seconds(b.time.as_ref()?), b.working_set_max_bytes)))
        .collect();
    let first_sample = history.samples.iter().find_map(|s| s.time.as_ref().map(seconds));
    if let Some(first) = first_sample {
        points.retain(|p| p.0 < first);
    }
    points.extend(
        history
            .samples
            .iter()
            .filter_map(|s| Some((seconds(s.time.as_ref()?), s.working_set_bytes?))),
    );
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return vec!["(no memory samples before the kill)".to_owned()];
    };
    let (t0, t1) = (first.0, last.0);
    let peak = points.iter().map(|p| p.1).max().unwrap_or(0);
    let limit = history.limit_bytes.filter(|l| *l > 0);
    let top = limit.unwrap_or(peak).max(peak).max(1);
    // Highest working set per column (a column with no sample repeats the
    // previous one: memory did not vanish between samples).
    let mut columns: Vec<Option<u64>> = vec![None; width];
    for (t, ws) in &points {
        let x = if t1 > t0 {
            (((t - t0) / (t1 - t0)) * (width - 1) as f64).round() as usize
        } else {
            width - 1
        };
        let slot = &mut columns[x.min(width - 1)];
        *slot = Some(slot.map_or(*ws, |v| v.max(*ws)));
    }
    let mut previous = None;
    for column in &mut columns {
        match column {
            Some(v) => previous = Some(*v),
            None => *column = previous,
        }
    }
    let limit_row = limit.map(|l| ((l as f64 / top as f64) * rows as f64).ceil() as usize);
    let label_width = 7;
    let mut lines = Vec::with_capacity(rows + 2);
    for row in (1..=rows).rev() {
        let threshold = top as f64 * (row as f64 - 0.5) / rows as f64;
        let label = if row == rows {
            human_bytes(top)
        } else if Some(row) == limit_row && limit != Some(top) {
            human_bytes(limit.unwrap_or(0))
        } else {
            String::new()
        };
        let mut line = format!("{label:>label_width$} ┤");
        for value in &columns {
            let filled = value.is_some_and(|v| v as f64 >= threshold);
            line.push(match (filled, Some(row) == limit_row) {
                (true, _) => '█',
                (false, true) => '-',
                (false, false) => ' ',
            });
        }
        if Some(row) == limit_row {
            line.push_str(" limit");
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.push(format!("{:>label_width$} └{}", "0", "─".repeat(width)));
    let span = format!("-{:.0}s", t1 - t0);
    lines.push(format!(
        "{:>label_width$}  {span}{}kill",
        "",
        " ".repeat(width.saturating_sub(span.len() + 4))
    ));
    lines
}

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

/// Everything about one kill, for `oomlens show`.
pub fn show_event(event: &OomEvent, style: Style) -> String {
    let mut out = String::new();
    let node = event.node.as_deref().unwrap_or("?");
    let _ = writeln!(
        out,
        "{} {} on {node} at {} UTC",
        style.bold("OOM kill"),
        event.id,
        utc(event.time.as_ref(), true)
    );
    let field = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(out, "  {name:<10} {value}");
    };
    let scope = word::<Scope>(event.scope);
    field(
        &mut out,
        "scope",
        format!(
            "{} ({}): {}",
            style.paint(&scope, scope_code(event.scope)),
            word::<Constraint>(event.constraint),
            describe_scope(event)
        ),
    );
    if let Some(pod) = &event.pod {
        let mut text = match (&pod.namespace, &pod.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            _ => format!("uid {}", pod.uid),
        };
        let mut extra = Vec::new();
        if pod.qos != 0 {
            extra.push(word::<QosClass>(pod.qos));
        }
        if let Some(owner) = pod.owner.as_ref().filter(|o| !o.name.is_empty()) {
            extra.push(format!("{}/{}", owner.kind, owner.name));
        }
        if let Some(limit) = pod.memory_limit_bytes {
            extra.push(format!("pod limit {}", human_bytes(limit)));
        }
        if !extra.is_empty() {
            let _ = write!(text, " ({})", extra.join(", "));
        }
        field(&mut out, "pod", text);
    }
    if let Some(c) = &event.container {
        let mut text = c
            .name
            .clone()
            .unwrap_or_else(|| c.id[..c.id.len().min(12)].to_owned());
        let mut extra = Vec::new();
        if c.runtime != 0 {
            extra.push(word::<Runtime>(c.runtime));
        }
        if c.role != 0 && c.role != ContainerRole::Main as i32 {
            extra.push(word::<ContainerRole>(c.role));
        }
        if let Some(image) = &c.image {
            extra.push(image.clone());
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
        field(&mut out, "container", text);
    } else if let Some(unit) = &event.systemd_unit {
        field(&mut out, "unit", unit.clone());
    }
    if let Some(v) = &event.victim {
        let mut text = format!(
            "{}[{}]",
            v.comm.as_deref().unwrap_or("?"),
            v.pid.map_or("?".to_owned(), |p| p.to_string())
        );
        let kb = |value: Option<u64>| value.map(|kb| human_bytes(kb * 1024));
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
        field(&mut out, "victim", text);
    }
    if let Some(t) = &event.trigger {
        let mut text = format!(
            "{}[{}]",
            t.comm.as_deref().unwrap_or("?"),
            t.pid.map_or("?".to_owned(), |p| p.to_string())
        );
        if let Some(gfp) = &t.gfp_mask {
            let _ = write!(text, " gfp_mask={gfp}");
        }
        if let Some(order) = t.order {
            let _ = write!(text, " order={order}");
        }
        field(&mut out, "trigger", text);
    }
    if let Some(u) = &event.memcg_usage {
        let mut text = format!(
            "usage {} of limit {}",
            u.usage_kb.map_or("?".to_owned(), |kb| human_bytes(kb * 1024)),
            u.limit_kb.map_or("?".to_owned(), |kb| human_bytes(kb * 1024))
        );
        if let Some(failcnt) = u.failcnt {
            let _ = write!(text, ", failcnt {failcnt}");
        }
        field(&mut out, "memcg", text);
    }
    if let Some(memcg) = &event.oom_memcg {
        field(&mut out, "oom memcg", memcg.clone());
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
        field(&mut out, "flags", flags.join("; "));
    }
    if let Some(node_memory) = &event.node_memory
        && let (Some(available), Some(total)) = (node_memory.mem_available_bytes, node_memory.mem_total_bytes)
    {
        field(
            &mut out,
            "node",
            format!(
                "MemAvailable {} of {}",
                human_bytes(available),
                human_bytes(total)
            ),
        );
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
                human_bytes(growth.abs() as u64)
            );
        }
        heading.push_str("):");
        let _ = writeln!(out, "{}", style.bold(&heading));
        for line in memory_chart(history, 72, 10) {
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
            analysis.reasoning
        );
        if let Some(limit) = analysis.recommended_limit_bytes {
            let _ = writeln!(
                out,
                "{} {}: {}",
                style.bold("Recommended limit:"),
                style.paint(&quantity(limit), "32"),
                analysis.recommendation_reasoning.as_deref().unwrap_or("")
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
            let _ = writeln!(out, "  {stamp}{}", line.text);
        }
    }
    out
}

pub fn summary_header(by: &str) -> String {
    format!(
        "{:<42}  {:>7}  {:>6}  {:<16}  {}",
        by.to_ascii_uppercase(),
        "KILLS",
        "SILENT",
        "FIRST (UTC)",
        "LAST (UTC)"
    )
}

pub fn summary_row(group: &SummaryGroup) -> String {
    let minute = |t: Option<&prost_types::Timestamp>| {
        let text = utc(t, false);
        text.get(..16).unwrap_or(&text).to_owned()
    };
    let key = if group.key.is_empty() {
        "(none)"
    } else {
        &group.key
    };
    format!(
        "{:<42}  {:>7}  {:>6}  {:<16}  {}",
        truncate(key, 42),
        group.count,
        group.silent,
        minute(group.first.as_ref()),
        minute(group.last.as_ref())
    )
}

pub fn top_header() -> String {
    format!(
        "{:<44}  {:>8}  {:>7}  {:>5}  {:>9}  {:>10}",
        "WHERE", "WORKSET", "LIMIT", "USE", "GROWTH/S", "TO LIMIT"
    )
}

pub fn top_row(status: &ContainerMemoryStatus, style: Style) -> String {
    let place = match &status.pod {
        Some(pod) => pod_place(pod, status.container.as_ref()),
        None => status.cgroup.clone(),
    };
    let place = format!("{} {}", status.node, place);
    let limit = status.limit_bytes.unwrap_or(0);
    let used = if limit > 0 {
        status.working_set_bytes as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let used_text = format!("{used:>4.0}%");
    let used_text = if used >= 90.0 {
        style.paint(&used_text, "31")
    } else {
        used_text
    };
    let growth = if status.growth_bytes_per_second.abs() < 1.0 {
        "0".to_owned()
    } else {
        format!(
            "{}{}",
            if status.growth_bytes_per_second < 0.0 {
                "-"
            } else {
                "+"
            },
            human_bytes(status.growth_bytes_per_second.abs() as u64)
        )
    };
    let to_limit = match status.seconds_to_limit {
        Some(s) if s < 60.0 => format!("{s:.0}s"),
        Some(s) if s < 3600.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
        None => "-".to_owned(),
    };
    format!(
        "{:<44}  {:>8}  {:>7}  {used_text}  {:>9}  {:>10}",
        truncate(&place, 44),
        human_bytes(status.working_set_bytes),
        human_bytes(limit),
        growth,
        to_limit
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_quantities() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(33_554_432), "32Mi");
        assert_eq!(human_bytes(1_610_612_736), "1.5Gi");
        assert_eq!(quantity(1280 * 1024 * 1024), "1280Mi");
        assert_eq!(quantity(2 * 1024 * 1024 * 1024), "2Gi");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn durations_people_type() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("1y").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn colour_codes_do_not_shift_columns() {
        let event = OomEvent {
            id: "0123456789abcdef".into(),
            scope: Scope::NodeOom as i32,
            ..OomEvent::default()
        };
        let plain = event_row(&event, Style::PLAIN);
        let coloured = event_row(&event, Style { color: true });
        assert!(coloured.contains("\x1b[31m"));
        let stripped = coloured.replace("\x1b[31m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        assert!(plain.chars().count() <= WIDTH);
    }
}
