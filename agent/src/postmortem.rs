//! `oomlens-agent parse`: the OOM kills in a saved kernel log, for
//! post-mortems. Needs no root and no cluster.

use std::io::{BufWriter, Read as _, Write as _};
use std::path::Path;

use anyhow::Context as _;

use crate::event::{NodeContext, event_from_report};
use crate::logtext::reports_from_text;
use crate::output::{Format, line, table_header};

/// What to parse and how to print it.
#[derive(Debug, Clone)]
pub struct ParseRequest<'a> {
    /// The log; None or `-`: standard input.
    pub file: Option<&'a Path>,
    pub format: Format,
    /// Completes syslog timestamps, which show no year.
    pub year: i64,
    /// Node name for the events (default: the host the log shows).
    pub node: Option<String>,
}

/// Parses the log and prints its kills on standard output; counts and
/// hints go to standard error.
pub fn parse(request: &ParseRequest<'_>) -> anyhow::Result<()> {
    let mut raw = Vec::new();
    match request.file {
        None => std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?,
        Some(path) if path == Path::new("-") => std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?,
        Some(path) => {
            let mut file =
                std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            file.read_to_end(&mut raw)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    // Saved logs are not always valid UTF-8 (binary garbage in dmesg).
    let text = String::from_utf8_lossy(&raw);
    let (reports, stats) = reports_from_text(&text, request.year);
    let ctx = NodeContext {
        node: request.node.clone().unwrap_or_default(),
        ..NodeContext::default()
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if request.format == Format::Table && !reports.is_empty() {
        writeln!(out, "{}", table_header())?;
    }
    for (ordinal, report) in reports.iter().enumerate() {
        let event = event_from_report(report, &ctx, ordinal as u64);
        writeln!(out, "{}", line(&event, request.format))?;
    }
    out.flush()?;
    if request.format == Format::Table {
        if reports.is_empty() {
            eprintln!("no OOM kills found ({} lines read)", stats.lines);
        }
        if stats.forged > 0 {
            eprintln!(
                "ignored {} kill-like lines that were not written by the kernel",
                stats.forged
            );
        }
        if stats.partial > 0 {
            eprintln!(
                "{} kills had their report rate-limited by the kernel (marked partial)",
                stats.partial
            );
        }
    }
    Ok(())
}

/// Every kill in a saved log, as events (node: the host the log shows).
pub fn events_from_text(text: &str, year: i64) -> Vec<oomlens_proto::v1::OomEvent> {
    let (reports, _) = reports_from_text(text, year);
    let ctx = NodeContext::default();
    reports
        .iter()
        .enumerate()
        .map(|(ordinal, report)| event_from_report(report, &ctx, ordinal as u64))
        .collect()
}

/// This year, for syslog timestamps.
pub fn current_year() -> i64 {
    let days = oomlens_proto::time::now_unix_ms() / 86_400_000;
    oomlens_proto::time::civil_from_days(i64::try_from(days).unwrap_or(0)).0
}
