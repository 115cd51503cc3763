//! Events for people (a table that fits 100 columns) and for scripts (one
//! JSON object per line, in the documented JSON form), and the printer
//! that writes them to standard output.

use std::fmt::Write as _;
use std::io::Write as _;

use oomlens_common::render::{location, printable};
use oomlens_common::units::{human_bytes, truncate};
use oomlens_proto::json::JsonEnum;
use oomlens_proto::v1::{OomEvent, Scope};

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Table,
    /// One JSON object per kill and line, in the documented OomEvent form.
    Json,
}

/// One event in `format`, without a newline.
pub fn line(event: &OomEvent, format: Format) -> String {
    match format {
        Format::Table => table_row(event),
        Format::Json => oomlens_proto::json::event_to_json_line(event),
    }
}

/// Prints events from `events` to standard output until the channel
/// closes (a blocking loop: run it on a blocking thread).
pub fn print(mut events: tokio::sync::mpsc::Receiver<OomEvent>, format: Format) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if format == Format::Table {
        writeln!(out, "{}", table_header())?;
        out.flush()?;
    }
    while let Some(event) = events.blocking_recv() {
        writeln!(out, "{}", line(&event, format))?;
        out.flush()?;
    }
    Ok(())
}

/// Width the table is kept within.
pub const TABLE_WIDTH: usize = oomlens_common::render::WIDTH;

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<19}  {:<16}  {:<22}  {:>8}  {:>8}  {}",
        "TIME", "SCOPE", "VICTIM", "RSS", "LIMIT", "WHERE"
    )
}

/// One event as a table row; strings from the event are escaped
/// ([`printable`]): a command name or cgroup path may hold anything.
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
            printable(v.comm.as_deref().unwrap_or("?")),
            v.pid.map_or("?".to_owned(), |p| p.to_string())
        ),
        None => "-".to_owned(),
    };
    // Saturating: a saved log may hold any number.
    let rss_kb = victim.and_then(|v| {
        Some(
            v.anon_rss_kb?
                .saturating_add(v.file_rss_kb.unwrap_or(0))
                .saturating_add(v.shmem_rss_kb.unwrap_or(0)),
        )
    });
    let limit_kb = event.memcg_usage.as_ref().and_then(|u| u.limit_kb);
    let mut row = format!(
        "{time:<19}  {scope:<16}  {:<22}  {:>8}  {:>8}  {}",
        truncate(&victim_text, 22),
        rss_kb.map_or("-".to_owned(), |kb| human_bytes(kb.saturating_mul(1024))),
        limit_kb.map_or("-".to_owned(), |kb| human_bytes(kb.saturating_mul(1024))),
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
    truncate(&row, TABLE_WIDTH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::{MemcgUsage, Pod, Victim};

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

    /// Command names and cgroup paths once reached the terminal raw.
    #[test]
    fn control_characters_are_escaped_in_rows() {
        let event = OomEvent {
            scope: Scope::OtherCgroup as i32,
            victim: Some(Victim {
                pid: Some(7),
                comm: Some("a\x1b]0;t\x07b".into()),
                anon_rss_kb: Some(u64::MAX),
                file_rss_kb: Some(u64::MAX),
                ..Default::default()
            }),
            oom_memcg: Some("/x\x1b[2J\ny".into()),
            ..Default::default()
        };
        let row = table_row(&event);
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(row.contains("a\\x1b]0;t\\x07b[7]"), "{row}");
        assert!(row.contains("/x\\x1b[2J\\ny"), "{row}");
        // Numbers past u64 once overflowed here (a panic in debug builds).
        assert!(row.contains("16Ei"), "{row}");
    }
}
