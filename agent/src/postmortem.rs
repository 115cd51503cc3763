//! `oomlens-agent parse`: the OOM kills in a saved kernel log, for
//! post-mortems. Needs no root and no cluster. Reads its input as a stream
//! (any size, bounded memory), prints each kill as it is found with the
//! lines it was read from, and says on standard error what it read, what
//! looked like an OOM report but made no kill, and why.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;
use oomlens_common::render::printable;
use oomlens_proto::v1::OomEvent;

use crate::event::{NodeContext, event_from_report};
use crate::logtext::{LogReader, ReadItem, ReadStats};
use crate::oom::{Unused, UnusedLine};
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
    /// Also list each OOM-looking line that made no kill, and why.
    pub explain: bool,
}

/// What a parse found, for the summary and the exit code.
#[derive(Debug, Clone, Default)]
pub struct ParseSummary {
    pub kills: u64,
    pub stats: ReadStats,
    /// OOM-looking lines that made no kill, by reason.
    pub unused: BTreeMap<Unused, u64>,
}

/// Parses the log and prints its kills on standard output; the summary
/// and hints go to standard error.
pub fn parse(request: &ParseRequest<'_>) -> anyhow::Result<ParseSummary> {
    let input: Box<dyn BufRead> = match request.file {
        None => Box::new(BufReader::new(std::io::stdin())),
        Some(path) if path == Path::new("-") => Box::new(BufReader::new(std::io::stdin())),
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    let summary = parse_stream(input, request, &mut out, &mut err)?;
    out.flush()?;
    explain_summary(&summary, &mut err)?;
    Ok(summary)
}

/// The whole parse, on any input and outputs (tests pass buffers).
pub fn parse_stream(
    input: impl BufRead,
    request: &ParseRequest<'_>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<ParseSummary> {
    let mut reader = if request.explain {
        LogReader::explaining(input, request.year)
    } else {
        LogReader::new(input, request.year)
    };
    let ctx = NodeContext {
        node: request.node.clone().unwrap_or_default(),
        ..NodeContext::default()
    };
    let mut summary = ParseSummary::default();
    while let Some(item) = reader.next_item() {
        match item {
            ReadItem::Report(report) => {
                let event = event_from_report(&report, &ctx, summary.kills);
                if summary.kills == 0 && request.format == Format::Table {
                    writeln!(out, "{}", table_header())?;
                }
                summary.kills += 1;
                writeln!(out, "{}", line(&event, request.format))?;
                if request.format == Format::Table {
                    write_evidence(out, &event)?;
                }
                // Each kill as soon as it is known: `tail -f | parse -`.
                out.flush()?;
            }
            ReadItem::Unused(unused) => {
                if request.explain {
                    write_unused(err, &unused)?;
                }
            }
        }
    }
    summary.stats = reader.stats();
    for (why, count) in reader.unused_counts() {
        summary.unused.insert(why, count);
    }
    Ok(summary)
}

/// The lines a kill was read from, under its row.
fn write_evidence(out: &mut impl Write, event: &OomEvent) -> std::io::Result<()> {
    for kernel_line in &event.kernel_lines {
        match kernel_line.input_line {
            Some(number) => writeln!(out, "    line {number}: {}", printable(&kernel_line.text))?,
            None => writeln!(out, "    {}", printable(&kernel_line.text))?,
        }
    }
    Ok(())
}

fn write_unused(err: &mut impl Write, unused: &UnusedLine) -> std::io::Result<()> {
    let place = unused
        .stamp
        .line
        .map_or_else(String::new, |n| format!("line {n}: "));
    writeln!(
        err,
        "{place}not used ({}): {}",
        unused.why.describe(),
        printable(&unused.text)
    )
}

/// What was read, and why nothing was found when nothing was.
fn explain_summary(summary: &ParseSummary, err: &mut impl Write) -> std::io::Result<()> {
    let stats = &summary.stats;
    let unused: u64 = summary.unused.values().sum();
    write!(
        err,
        "{} lines read, {} OOM kill{} found",
        stats.lines,
        summary.kills,
        if summary.kills == 1 { "" } else { "s" }
    )?;
    if unused > 0 {
        let reasons: Vec<String> = summary
            .unused
            .iter()
            .map(|(why, n)| format!("{n} {}", why.label()))
            .collect();
        write!(
            err,
            "; {unused} OOM-looking line{} not used: {}",
            if unused == 1 { "" } else { "s" },
            reasons.join("; ")
        )?;
    }
    writeln!(err)?;
    if stats.newest_first {
        writeln!(err, "the log was newest first: read in the kernel's order")?;
    }
    if stats.cut_lines > 0 {
        writeln!(
            err,
            "{} line{} longer than {} KiB were cut",
            stats.cut_lines,
            if stats.cut_lines == 1 { "" } else { "s" },
            crate::logtext::stream::MAX_LINE / 1024
        )?;
    }
    if stats.parser.partial > 0 {
        writeln!(
            err,
            "{} kill{} had only the kill line (the kernel rate-limited the report, or the log was filtered): marked partial",
            stats.parser.partial,
            if stats.parser.partial == 1 { "" } else { "s" }
        )?;
    }
    if summary.kills > 0 {
        return Ok(());
    }
    let count = |why| summary.unused.get(&why).copied().unwrap_or(0);
    if count(Unused::NotKernel) > 0 {
        writeln!(
            err,
            "the kill lines in this log were written by another program (an event, a monitoring tool's echo), not the kernel: they are not counted twice"
        )?;
    }
    if stats.user_space_killer_lines > 0 {
        writeln!(
            err,
            "this log shows a user-space OOM killer (systemd-oomd, earlyoom, ...): its kills are signals it sent, not the kernel's OOM kills"
        )?;
    }
    if count(Unused::NoKill) + count(Unused::Fragment) + count(Unused::AfterKill) > 0 {
        writeln!(
            err,
            "the log has parts of OOM reports but no line that names a kill (`Killed process`, `oom-kill:`, `Task in`, `Kill process`): was it filtered (grep) or cut? --explain lists the lines"
        )?;
    } else if count(Unused::NotKernel) == 0 && stats.user_space_killer_lines == 0 {
        writeln!(
            err,
            "no line of the kernel's OOM killer in it (`invoked oom-killer`, `Killed process`, `oom-kill:`)"
        )?;
    }
    Ok(())
}

/// Every kill in a saved log, as events (node: the host the log shows).
pub fn events_from_text(text: &str, year: i64) -> Vec<OomEvent> {
    let mut reader = LogReader::new(text.as_bytes(), year);
    let ctx = NodeContext::default();
    let mut events = Vec::new();
    while let Some(item) = reader.next_item() {
        if let ReadItem::Report(report) = item {
            events.push(event_from_report(&report, &ctx, events.len() as u64));
        }
    }
    events
}

/// This year, for syslog timestamps.
pub fn current_year() -> i64 {
    let days = oomlens_proto::time::now_unix_ms() / 86_400_000;
    oomlens_proto::time::civil_from_days(i64::try_from(days).unwrap_or(0)).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, format: Format, explain: bool) -> (ParseSummary, String, String) {
        let request = ParseRequest {
            file: None,
            format,
            year: 2024,
            node: None,
            explain,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = parse_stream(text.as_bytes(), &request, &mut out, &mut err).expect("parse");
        explain_summary(&summary, &mut err).expect("summary");
        (
            summary,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    const KILL: &str = "[  514.68] Memory cgroup out of memory: Killed process 15617 (python3) total-vm:11892kB, anon-rss:4292kB, file-rss:3428kB, shmem-rss:0kB";

    #[test]
    fn each_kill_shows_the_lines_it_was_read_from() {
        let text = format!("[  514.60] eth0: link up\n{KILL}\n");
        let (summary, out, err) = run(&text, Format::Table, false);
        assert_eq!(summary.kills, 1);
        assert!(out.contains("python3[15617]"), "{out}");
        assert!(
            out.contains("    line 2: Memory cgroup out of memory: Killed process 15617"),
            "{out}"
        );
        assert!(err.starts_with("2 lines read, 1 OOM kill found"), "{err}");
        let (_, json, _) = run(&text, Format::Json, false);
        let event: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
        assert_eq!(event["kernel_lines"][0]["input_line"], 2);
    }

    /// A saved log is anyone's text: its lines once reached the terminal
    /// with their escape sequences.
    #[test]
    fn control_characters_in_the_log_are_escaped_in_the_table() {
        let kill = "[  514.68] Memory cgroup out of memory: Killed process 15617 (py\x1b]0;x\x07thon) total-vm:11892kB, anon-rss:4292kB, file-rss:3428kB, shmem-rss:0kB\x1b[2J";
        let grepped = "[ 1.0] ja\x1bva invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0\n[ 1.1] Memory cgroup stats for /x\x1b[2J:\n";
        let (summary, out, _) = run(&format!("{kill}\n"), Format::Table, false);
        assert_eq!(summary.kills, 1, "{out}");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("py\\x1b]0;x\\x07thon[15"), "{out}");
        assert!(out.contains("shmem-rss:0kB\\x1b[2J"), "{out}");
        let (_, _, err) = run(grepped, Format::Table, true);
        assert!(!err.contains('\x1b'), "{err:?}");
        assert!(err.contains("/x\\x1b[2J"), "{err}");
        // JSON stays JSON: serde escapes the same characters.
        let (_, json, _) = run(&format!("{kill}\n"), Format::Json, false);
        assert!(json.contains("\\u001b[2J") && !json.contains('\x1b'), "{json}");
    }

    #[test]
    fn a_log_with_no_kill_says_why() {
        let (_, out, err) = run(
            "Jun 25 10:05:31 node-a sshd[7]: Accepted key\n",
            Format::Table,
            false,
        );
        assert!(out.is_empty());
        assert!(err.contains("no line of the kernel's OOM killer"), "{err}");
        let grepped = "[ 1.0] java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0\n[ 1.1] Memory cgroup stats for /x:\n";
        let (_, _, err) = run(grepped, Format::Table, true);
        assert!(
            err.contains("line 1: not used (part of a report with no kill line"),
            "{err}"
        );
        assert!(err.contains("was it filtered (grep) or cut?"), "{err}");
        let echoed = format!(
            "Jun 25 10:05:31 node-a node-problem-detector[812]: {}\n",
            &KILL[11..]
        );
        let (summary, _, err) = run(&echoed, Format::Table, false);
        assert_eq!(summary.kills, 0);
        assert!(err.contains("written by another program"), "{err}");
        let oomd = "Jun 25 10:05:31 node-a systemd-oomd[612]: Killed /user.slice/user-1000.slice/session-2.scope due to memory pressure\n";
        let (_, _, err) = run(oomd, Format::Table, false);
        assert!(err.contains("user-space OOM killer"), "{err}");
    }

    #[test]
    fn any_input_size_costs_bounded_memory() {
        // A line of 10 MB (no newline for a long while), NUL bytes as from
        // /dev/zero, then a kill: the line is cut, the kill still found.
        let mut text = String::with_capacity(11 << 20);
        text.push_str(&"x".repeat(10 << 20));
        text.push('\n');
        text.push_str(&"\0".repeat(1 << 20));
        text.push('\n');
        text.push_str(KILL);
        text.push('\n');
        let (summary, _, err) = run(&text, Format::Json, false);
        assert_eq!(summary.kills, 1);
        assert_eq!(summary.stats.cut_lines, 2);
        assert!(err.contains("2 lines longer than 64 KiB were cut"), "{err}");
    }
}
