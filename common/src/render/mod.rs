//! What the `oomlens` command (and the agent's own output) prints: tables
//! that fit 100 columns, the full story of one kill with a chart of its
//! memory history ([`show`], [`chart`]), summaries and the live top list.
//! Pure functions of the data (golden-tested); colour only when asked (the
//! binaries ask on a terminal).

use std::borrow::Cow;
use std::fmt::Write as _;

use oomlens_proto::json::JsonEnum;
use oomlens_proto::v1::{
    Container, ContainerMemoryStatus, MemoryWarning, OomEvent, Pod, Scope, SummaryGroup, Verdict,
};

use crate::units::{human_bytes, saturating_u64, truncate};

mod chart;
mod escape;
mod layers;
mod show;

pub use chart::memory_chart;
pub use escape::printable;
pub use layers::{LAYER_NAMES, layers_chart, sample_layers};
pub use show::{facts, show_event};

use escape::printable_opt;

/// Width every table is kept within.
pub const WIDTH: usize = 100;

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
                if millis {
                    u32::try_from(t.nanos).unwrap_or(0)
                } else {
                    0
                },
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

/// The first `n` characters (ids are shown shortened; any id is cut on a
/// character boundary).
fn prefix(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// `namespace/pod container`, or short ids where the names are unknown;
/// escaped for a terminal.
fn pod_place(pod: &Pod, container: Option<&Container>) -> String {
    let pod_text = match (&pod.namespace, &pod.name) {
        (Some(ns), Some(name)) => format!("{}/{}", printable(ns), printable(name)),
        _ => format!("pod {}", printable(&prefix(&pod.uid, 8))),
    };
    match container {
        Some(c) => format!(
            "{pod_text} {}",
            printable_opt(c.name.as_deref()).unwrap_or_else(|| printable(&prefix(&c.id, 12)).into_owned())
        ),
        None => pod_text,
    }
}

/// Where the kill happened, most specific first; escaped for a terminal.
pub fn location(event: &OomEvent) -> String {
    if let Some(pod) = &event.pod {
        return pod_place(pod, event.container.as_ref());
    }
    if let Some(unit) = &event.systemd_unit {
        return printable(unit).into_owned();
    }
    if let Some(id) = &event.docker_id {
        return format!("docker {}", printable(&prefix(id, 12)));
    }
    printable_opt(event.task_memcg.as_deref().or(event.oom_memcg.as_deref()))
        .unwrap_or_else(|| "-".to_owned())
}

fn limit_of(event: &OomEvent) -> Option<u64> {
    event
        .memcg_usage
        .as_ref()
        .and_then(|u| u.limit_kb.map(|kb| kb.saturating_mul(1024)))
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
    // An id prefix, as `show` takes it (ids are 32 hex digits, unless an
    // agent sent something else).
    let id = prefix(&printable(&event.id), 8);
    format!(
        "{id:<8}  {:<19}  {}  {:<17}  {:>6}  {}",
        utc(event.time.as_ref(), false),
        style.paint(&format!("{scope:<16}"), scope_code(event.scope)),
        truncate(&verdict, 17),
        limit_of(event).map_or("-".to_owned(), human_bytes),
        truncate(&place, WIDTH - fixed),
    )
}

/// A later revision of a kill already shown, for `oomlens watch`: what
/// the runtime (so Kubernetes) reported, and how that compares.
pub fn update_line(event: &OomEvent) -> String {
    let short = event.id.get(..8).unwrap_or(&event.id);
    let mut line = format!("update {}: kubernetes ", printable(short));
    match &event.runtime_status {
        Some(status) => line.push_str(&show::runtime_status_text(event, status)),
        None => line.push_str("no report"),
    }
    if let Some(mismatch) = event
        .analysis
        .as_ref()
        .and_then(|a| a.status_reasoning.as_deref())
    {
        line.push_str(" — ");
        line.push_str(&printable(mismatch));
    }
    line
}

/// A live warning, for `oomlens watch --warnings`.
pub fn warning_line(warning: &MemoryWarning) -> String {
    let growth = crate::units::saturating_u64(warning.growth_bytes_per_second);
    // The trend it rests on: a climb per second over the last minute, a
    // leak per minute over the slow window.
    let trend = match warning.trend_seconds {
        0 => String::new(),
        s if s <= 60 => format!(" (+{}/s over the last {s} s)", human_bytes(growth)),
        s => format!(
            " (+{}/min, steady over the last {})",
            human_bytes(growth.saturating_mul(60)),
            crate::units::human_seconds(f64::from(s))
        ),
    };
    format!(
        "warning: {} {} at {} of {} limit, {} to the limit{trend}",
        printable(&warning.node),
        printable(&warning.cgroup),
        human_bytes(warning.working_set_bytes),
        human_bytes(warning.limit_bytes),
        warning
            .seconds_to_limit
            .map_or_else(|| "?".to_owned(), crate::units::human_seconds)
    )
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
        Cow::Borrowed("(none)")
    } else {
        printable(&group.key)
    };
    format!(
        "{:<42}  {:>7}  {:>6}  {:<16}  {}",
        truncate(&key, 42),
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
        None => printable(&status.cgroup).into_owned(),
    };
    let place = format!("{} {}", printable(&status.node), place);
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
            human_bytes(saturating_u64(status.growth_bytes_per_second.abs()))
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
