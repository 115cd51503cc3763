//! Saved kernel logs, in the shapes people paste into tickets, as lines for
//! the OOM parser: raw `/dev/kmsg` records, `dmesg` (`[ 123.456789] ...`),
//! `dmesg -r`, `-T` (any locale), `-x`, `--time-format iso`, `journalctl -k`
//! (short, iso, precise, verbose) and syslog files (with or without host),
//! OpenWrt's `logread`, log platforms' exports (columns split by ` | ` or
//! tabs), quoted (`> `), indented, in markdown, numbered. Where the prefix
//! is of no known shape, the kernel's message is found by its own words
//! ([`anchor`]). Pure; [`stream`] reads a whole log with bounded memory.
//!
//! Where a line names its program, only `kernel` lines count as the
//! kernel's: other programs (node-problem-detector, for one) echo kill
//! lines verbatim, and so do Kubernetes events and JSON documents.

mod anchor;
mod clock;
pub mod json;
mod prefix;
pub mod stream;
mod wrap;

use crate::kmsg::record::KERNEL_FACILITY;
use crate::oom::{InputLine, OomReport, ParserStats, Stamp};

pub use stream::{LogReader, ReadItem, ReadStats};

/// Parses a whole saved log: every kill it shows, in log order, and the
/// parser's counters (forged lines, partial kills...). `year` completes
/// syslog timestamps, which have none.
pub fn reports_from_text(text: &str, year: i64) -> (Vec<OomReport>, ParserStats) {
    let mut reader = LogReader::new(text.as_bytes(), year);
    let mut reports = Vec::new();
    while let Some(item) = reader.next_item() {
        if let ReadItem::Report(report) = item {
            reports.push(*report);
        }
    }
    (reports, reader.stats().parser)
}

/// One line of saved log text, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLine<'a> {
    /// The kernel message itself.
    pub message: std::borrow::Cow<'a, str>,
    /// The program the log attributes the line to (`kernel`,
    /// `node-problem-detector`), when the format names one.
    pub program: Option<&'a str>,
    pub host: Option<&'a str>,
    /// Syslog facility, when the format shows it (raw records, `dmesg -r`,
    /// `dmesg -x`).
    pub facility: Option<u8>,
    pub caller: Option<&'a str>,
    pub stamp: Stamp,
    /// Another tool repeating a kernel line (an event, a JSON document).
    pub echo: bool,
    /// The line had a prefix of a known shape (a stamp, a source): a line
    /// without one in a log with them may be the rest of a wrapped line.
    pub prefixed: bool,
    /// The message is a JSON record's value, and what the line says of the
    /// record's source (the reader weighs the lines around it too).
    pub json: Option<json::Provenance>,
}

impl TextLine<'_> {
    /// Whether the line is the kernel's: by program name or facility when
    /// the format shows one, else assumed (plain dmesg shows only kernel
    /// lines).
    pub fn from_kernel(&self) -> bool {
        if self.echo {
            return false;
        }
        if let Some(source) = self.json {
            return source.kernel && !source.echo;
        }
        if let Some(program) = self.program {
            return program == "kernel";
        }
        self.facility.is_none_or(|f| f == KERNEL_FACILITY)
    }

    pub fn as_input(&self) -> InputLine<'_> {
        InputLine {
            text: &self.message,
            from_kernel: self.from_kernel(),
            caller: self.caller,
            host: self.host,
            stamp: self.stamp,
        }
    }
}

/// Splits one line of saved log text. `year` completes syslog timestamps,
/// which have none.
pub fn parse_line(line: &str, year: i64) -> TextLine<'_> {
    let mut out = TextLine {
        message: "".into(),
        program: None,
        host: None,
        facility: None,
        caller: None,
        stamp: Stamp::default(),
        echo: false,
        prefixed: false,
        json: None,
    };
    if let Some(value) = json::message_value(line) {
        let start = if crate::oom::lines::classify(&value).is_some() {
            0
        } else {
            anchor::find(&value).unwrap_or(0)
        };
        out.message = value[start..].trim_end().to_owned().into();
        out.json = Some(json::provenance(line));
        out.prefixed = true;
        return out;
    }
    let mut rest = prefix::strip_decorations(line);
    if let Some(parsed) = prefix::raw_record(rest) {
        return parsed;
    }
    if let Some(columns) = prefix::columns(rest) {
        out.stamp.wall = columns.wall;
        out.program = columns.program;
        out.host = columns.host.and_then(prefix::host);
        out.prefixed = columns.wall.is_some() || columns.program.is_some();
        rest = prefix::strip_decorations(columns.message);
    }
    // journalctl -o verbose prints each field on its own line.
    if let Some(message) = rest.strip_prefix("MESSAGE=") {
        rest = message;
        out.prefixed = true;
    }
    let timed = prefix_time(rest, year)
        .or_else(|| clock::logread_time(rest).map(|(wall, after)| (Some(wall), after)));
    if let Some((wall, after)) = timed {
        let after = prefix::facility_level(after).map_or(after, |(facility, level, after)| {
            out.facility = Some(facility);
            out.stamp.level = Some(level);
            after
        });
        if let Some((host, program, after_program)) = prefix::syslog_source(after) {
            out.stamp.wall = wall.or(out.stamp.wall);
            out.host = host.and_then(prefix::host);
            out.program = Some(program);
            out.prefixed = true;
            rest = after_program;
        } else if wall.is_some() && out.stamp.wall.is_none() {
            // `dmesg --time-format iso`: the time alone.
            out.stamp.wall = wall;
            out.prefixed = true;
            rest = after;
        }
    }
    // `host kernel: ...` without a time (a paste that cut it).
    if timed.is_none()
        && let Some((host, "kernel", after)) = prefix::syslog_source(rest)
    {
        out.host = host.and_then(prefix::host);
        out.program = Some("kernel");
        out.prefixed = true;
        rest = after;
    }
    if let Some((facility, level, after)) = prefix::dmesg_decoded_prefix(rest) {
        out.facility = Some(facility);
        out.stamp.level = Some(level);
        out.prefixed = true;
        rest = after;
    }
    if let Some((prio, after)) = prefix::angle_prio(rest) {
        out.facility = u8::try_from(prio >> 3).ok();
        out.stamp.level = u8::try_from(prio & 7).ok();
        out.prefixed = true;
        rest = after;
    }
    if let Some((stamp, after)) = prefix::bracket_stamp(rest) {
        out.stamp.monotonic_us = stamp.monotonic_us.or(out.stamp.monotonic_us);
        out.stamp.wall = stamp.wall.or(out.stamp.wall);
        out.prefixed = true;
        rest = after;
        // `[ T1234]` / `[  C1]`: printk caller ids.
        if let Some(after) = rest.strip_prefix('[')
            && let Some(close) = after.find(']')
        {
            let inside = after[..close].trim();
            let is_caller = inside.len() > 1
                && matches!(inside.as_bytes()[0], b'T' | b'C')
                && inside[1..].bytes().all(|b| b.is_ascii_digit());
            if is_caller {
                out.caller = Some(inside);
                rest = &after[close + 1..];
            }
        }
        // dmesg pads one space after the stamp.
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
    let rest = rest.trim_end();
    out.message = rest.into();
    if crate::oom::lines::classify(rest).is_none()
        && let Some(at) = anchor::find(rest)
    {
        let before = &rest[..at];
        out.echo = anchor::echoed(before);
        // What stood before may still hold a stamp (`391524.805414] `, a
        // paste that cut the bracket).
        if out.stamp.monotonic_us.is_none()
            && let Some(stamp) = before.trim_end().strip_suffix(']').and_then(|b| {
                let start = b.rfind(['[', ' ']).map_or(0, |i| i + 1);
                clock::monotonic_us(b[start..].trim())
            })
        {
            out.stamp.monotonic_us = Some(stamp);
        }
        out.message = rest[at..].into();
    }
    out
}

/// A syslog or ISO time at the start of a line, and the rest.
fn prefix_time(line: &str, year: i64) -> Option<(Option<(i64, u32)>, &str)> {
    clock::syslog_time(line, year)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
