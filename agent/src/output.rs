//! Events for people (a table that fits 100 columns) and for scripts (one
//! JSON object per line, in the documented JSON form).

use std::fmt::Write as _;

use oomlens_proto::json::JsonEnum;
use oomlens_proto::v1::{OomEvent, Scope};

/// Width the table is kept within.
pub const TABLE_WIDTH: usize = 100;

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<19}  {:<16}  {:<22}  {:>8}  {:>8}  {}",
        "TIME", "SCOPE", "VICTIM", "RSS", "LIMIT", "WHERE"
    )
}

/// One event as a table row.
pub fn table_row(event: &OomEvent) -> String {
    let time = match (&event.time, &event.kernel) {
        (Some(t), _) => {
            let text = oomlens_proto::time::format_rfc3339(t.seconds, 0);
            text.trim_end_matches('Z').replace('T', " ")
        }
        (None, Some(k)) if k.monotonic_us.is_some() => {
            let us = k.monotonic_us.unwrap_or_default();
            format!("+{}.{:06}s", us / 1_000_000, us % 1_000_000)
        }
        _ => "-".to_owned(),
    };
    let scope = Scope::try_from(event.scope)
        .ok()
        .and_then(JsonEnum::word)
        .unwrap_or_else(|| "-".to_owned());
    let victim = event.victim.as_ref();
    let victim_text = match victim {
        Some(v) => format!(
            "{}[{}]",
            v.comm.as_deref().unwrap_or("?"),
            v.pid.map_or("?".to_owned(), |p| p.to_string())
        ),
        None => "-".to_owned(),
    };
    let rss_kb =
        victim.and_then(|v| Some(v.anon_rss_kb? + v.file_rss_kb.unwrap_or(0) + v.shmem_rss_kb.unwrap_or(0)));
    let limit_kb = event.memcg_usage.as_ref().and_then(|u| u.limit_kb);
    let mut row = format!(
        "{time:<19}  {scope:<16}  {:<22}  {:>8}  {:>8}  {}",
        truncate(&victim_text, 22),
        rss_kb.map_or("-".to_owned(), |kb| human_bytes(kb * 1024)),
        limit_kb.map_or("-".to_owned(), |kb| human_bytes(kb * 1024)),
        location(event),
    );
    for (flag, on) in [
        ("partial", event.partial),
        ("group", event.group_kill),
        ("silent", event.silent == Some(true)),
    ] {
        if on {
            let _ = write!(row, " [{flag}]");
        }
    }
    truncate(&row, TABLE_WIDTH).into_owned()
}

/// Where the kill happened, most specific first.
fn location(event: &OomEvent) -> String {
    if let Some(pod) = &event.pod {
        let pod_text = match (&pod.namespace, &pod.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            _ => format!("pod {}", &pod.uid[..pod.uid.len().min(8)]),
        };
        return match &event.container {
            Some(c) => format!(
                "{pod_text} {}",
                c.name
                    .clone()
                    .unwrap_or_else(|| c.id[..c.id.len().min(12)].to_owned())
            ),
            None => pod_text,
        };
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

fn truncate(text: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= width {
        return text.into();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out.into()
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::{MemcgUsage, Pod, Victim};

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(33_554_432), "32Mi");
        assert_eq!(human_bytes(1_610_612_736), "1.5Gi");
    }

    #[test]
    fn rows_fit_and_show_unknowns_as_dashes() {
        let event = OomEvent {
            scope: Scope::PodLimit as i32,
            victim: Some(Victim {
                pid: Some(7),
                comm: Some("a-very-long-command-name-indeed".into()),
                anon_rss_kb: Some(1024),
                ..Default::default()
            }),
            memcg_usage: Some(MemcgUsage {
                limit_kb: Some(32768),
                ..Default::default()
            }),
            pod: Some(Pod {
                uid: "8a1b7c6d-1111".into(),
                namespace: Some("shop".into()),
                name: Some("x".repeat(200)),
                ..Default::default()
            }),
            partial: true,
            ..Default::default()
        };
        let row = table_row(&event);
        assert!(row.chars().count() <= TABLE_WIDTH, "{row}");
        assert!(row.starts_with("-                    pod_limit"), "{row}");
        assert!(
            row.contains("1Mi") && row.contains("32Mi") && row.contains("shop/xxx"),
            "{row}"
        );
        assert!(table_header().len() <= TABLE_WIDTH);
    }
}
