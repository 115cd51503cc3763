//! Saved kernel logs, in the shapes people paste into tickets, as lines for
//! the OOM parser: raw `/dev/kmsg` records, `dmesg` (`[ 123.456789] ...`),
//! `dmesg -r` (`<4>[...]`), `dmesg -T` (`[Mon Jun 25 10:05:31 2024]`, any
//! locale), `dmesg -x` (`kern  :err   : ...`), `journalctl -k` and syslog
//! (`Jun 25 10:05:31 host kernel: ...`, ISO timestamps too), with or without
//! host names, quoted (`> `) or indented. Pure: no I/O.
//!
//! Where a line names its program, only `kernel` lines count as the
//! kernel's: other programs (node-problem-detector, for one) echo kill
//! lines verbatim.

use crate::kmsg::record::{KERNEL_FACILITY, parse_record};
use crate::oom::{InputLine, OomReport, Parser, ParserStats, Stamp};

/// Parses a whole saved log: every kill it shows, oldest first, and the
/// parser's counters (forged lines, partial kills...). `year` completes
/// syslog timestamps, which have none.
pub fn reports_from_text(text: &str, year: i64) -> (Vec<OomReport>, ParserStats) {
    let mut parser = Parser::new();
    let mut reports = Vec::new();
    for line in text.lines() {
        let line = parse_line(line, year);
        parser.push(&line.as_input());
        reports.extend(std::iter::from_fn(|| parser.next_report()));
    }
    parser.finish();
    reports.extend(std::iter::from_fn(|| parser.next_report()));
    (reports, parser.stats())
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
}

impl TextLine<'_> {
    /// Whether the line is the kernel's: by program name or facility when
    /// the format shows one, else assumed (plain dmesg shows only kernel
    /// lines).
    pub fn from_kernel(&self) -> bool {
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
    let mut rest = unquote(line);
    let mut out = TextLine {
        message: "".into(),
        program: None,
        host: None,
        facility: None,
        caller: None,
        stamp: Stamp::default(),
    };

    if let Some(parsed) = raw_record(rest) {
        return parsed;
    }
    if let Some((wall, after)) = syslog_time(rest, year)
        && let Some((host, program, after_program)) = syslog_source(after)
    {
        out.stamp.wall = wall;
        out.host = host;
        out.program = Some(program);
        rest = after_program;
    }
    if let Some((facility, level, after)) = dmesg_decoded_prefix(rest) {
        out.facility = Some(facility);
        out.stamp.level = Some(level);
        rest = after;
    }
    if let Some((prio, after)) = angle_prio(rest) {
        out.facility = u8::try_from(prio >> 3).ok();
        out.stamp.level = Some((prio & 7) as u8);
        rest = after;
    }
    if let Some(after) = rest.strip_prefix('[')
        && let Some(close) = after.find(']')
    {
        let inside = after[..close].trim();
        if let Some(us) = monotonic_us(inside) {
            out.stamp.monotonic_us = Some(us);
            rest = &after[close + 1..];
        } else if let Some(wall) = dmesg_t_time(inside) {
            out.stamp.wall = Some(wall);
            rest = &after[close + 1..];
        }
    }
    if out.stamp.monotonic_us.is_some() || out.stamp.wall.is_some() {
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
    out.message = rest.trim_end().into();
    out
}

/// Strips indentation and e-mail/markdown quote markers.
fn unquote(line: &str) -> &str {
    let mut rest = line.trim_start();
    while let Some(after) = rest.strip_prefix('>') {
        rest = after.trim_start();
    }
    rest
}

/// `PRIO,SEQ,TS,FLAGS;MESSAGE`: a record as read from `/dev/kmsg`.
fn raw_record(line: &str) -> Option<TextLine<'_>> {
    let semicolon = line.find(';')?;
    let header = &line[..semicolon];
    let mut fields = header.split(',');
    let numeric = |f: Option<&str>| f.is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if !(numeric(fields.next()) && numeric(fields.next()) && numeric(fields.next())) {
        return None;
    }
    let record = parse_record(line.as_bytes()).ok()?;
    let caller_start = header.find("caller=").map(|at| at + 7);
    Some(TextLine {
        message: record.message.trim_end().to_owned().into(),
        program: None,
        host: None,
        facility: Some(record.facility),
        caller: caller_start
            .map(|start| &header[start..])
            .map(|c| c.split(',').next().unwrap_or(c)),
        stamp: Stamp {
            seq: Some(record.seq),
            monotonic_us: Some(record.timestamp_us),
            wall: None,
            level: Some(record.level),
        },
    })
}

/// Month names and abbreviations in the locales dmesg and syslog print;
/// index 0 is January.
const MONTHS: &[[&str; 12]] = &[
    [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    // German
    [
        "jan", "feb", "mär", "apr", "mai", "jun", "jul", "aug", "sep", "okt", "nov", "dez",
    ],
    // French
    [
        "janv", "févr", "mars", "avril", "mai", "juin", "juil", "août", "sept", "oct", "nov", "déc",
    ],
    // Spanish
    [
        "ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic",
    ],
    // Italian
    [
        "gen", "feb", "mar", "apr", "mag", "giu", "lug", "ago", "set", "ott", "nov", "dic",
    ],
    // Portuguese
    [
        "jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez",
    ],
    // Dutch
    [
        "jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec",
    ],
    // Polish
    [
        "sty", "lut", "mar", "kwi", "maj", "cze", "lip", "sie", "wrz", "paź", "lis", "gru",
    ],
    // Russian
    [
        "янв", "фев", "мар", "апр", "май", "июн", "июл", "авг", "сен", "окт", "ноя", "дек",
    ],
    // Swedish / Norwegian / Danish
    [
        "jan", "feb", "mar", "apr", "maj", "jun", "jul", "aug", "sep", "okt", "nov", "dec",
    ],
];

/// The month (1..=12) of a name in any known locale; numeric months
/// (`6月`, `06`) too.
#[allow(clippy::cast_possible_truncation)] // rewritten in #14
fn month_number(name: &str) -> Option<u32> {
    let name = name.trim_end_matches('.').to_lowercase();
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() {
        return digits.parse().ok().filter(|m| (1..=12).contains(m));
    }
    MONTHS.iter().find_map(|table| {
        table
            .iter()
            .position(|m| name == *m || (name.chars().count() >= 3 && name.starts_with(m)))
            .map(|i| i as u32 + 1)
    })
}

fn hms(text: &str) -> Option<(i64, i64, f64)> {
    let mut parts = text.split(':');
    let h = parts.next()?.parse::<i64>().ok()?;
    let m = parts.next()?.parse::<i64>().ok()?;
    let s = parts.next()?.parse::<f64>().ok()?;
    (parts.next().is_none() && h < 24 && m < 60 && (0.0..61.0).contains(&s)).then_some((h, m, s))
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rewritten in #14
fn wall_from(year: i64, month: u32, day: u32, (h, m, s): (i64, i64, f64)) -> Option<(i64, u32)> {
    // Years outside this range are garbage in a log, and would overflow.
    if !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
        return None;
    }
    let days = oomlens_proto::time::days_from_civil(year, month, day);
    let whole = s.trunc() as i64;
    let nanos = ((s - s.trunc()) * 1e9).round() as u32;
    Some((days * 86_400 + h * 3600 + m * 60 + whole, nanos.min(999_999_999)))
}

/// `Jun 25 10:05:31[.123456] ` (BSD syslog, journalctl short/precise) or
/// `2024-06-25T10:05:31[.123][Z|+00:00|+0000] ` (ISO). Returns the time
/// (None when the month name is unknown) and the rest.
fn syslog_time(line: &str, year: i64) -> Option<(Option<(i64, u32)>, &str)> {
    let (first, rest) = line.split_once(' ')?;
    if first.len() >= 19 && first.as_bytes().get(4) == Some(&b'-') && first.as_bytes().get(10) == Some(&b'T')
    {
        let normalised = normalise_offset(first);
        let (seconds, nanos) = oomlens_proto::time::parse_rfc3339(&normalised)?;
        return Some((Some((seconds, nanos)), rest));
    }
    if !first.chars().next()?.is_alphabetic() {
        return None;
    }
    let rest = rest.trim_start();
    let (day, rest) = rest.split_once(' ')?;
    let day: u32 = day.parse().ok()?;
    let (time, rest) = rest.split_once(' ')?;
    let time = hms(time)?;
    let wall = month_number(first).and_then(|month| wall_from(year, month, day, time));
    Some((wall, rest))
}

/// journalctl's `short-iso` prints `+0000`; RFC 3339 wants `+00:00`.
fn normalise_offset(text: &str) -> String {
    let bytes = text.as_bytes();
    let n = bytes.len();
    if n > 5 && matches!(bytes[n - 5], b'+' | b'-') && bytes[n - 4..].iter().all(u8::is_ascii_digit) {
        format!("{}:{}", &text[..n - 2], &text[n - 2..])
    } else {
        text.to_owned()
    }
}

/// `host program[pid]: rest` or `program: rest`.
fn syslog_source(rest: &str) -> Option<(Option<&str>, &str, &str)> {
    let (first, after_first) = rest.split_once(' ').unwrap_or((rest, ""));
    if let Some(program) = program_name(first) {
        return Some((None, program, after_first));
    }
    let (second, after_second) = after_first.split_once(' ').unwrap_or((after_first, ""));
    let program = program_name(second)?;
    Some((Some(first), program, after_second))
}

/// `kernel:` -> `kernel`; `node-problem-detector[812]:` ->
/// `node-problem-detector`.
fn program_name(token: &str) -> Option<&str> {
    let name = token.strip_suffix(':')?;
    let name = match name.find('[') {
        Some(open) if name.ends_with(']') => &name[..open],
        Some(_) => return None,
        None => name,
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'@'));
    valid.then_some(name)
}

const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
];
const LEVELS: &[&str] = &["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"];

/// `dmesg -x`: `kern  :err   : message`.
#[allow(clippy::cast_possible_truncation)] // rewritten in #14
fn dmesg_decoded_prefix(line: &str) -> Option<(u8, u8, &str)> {
    let (facility, rest) = line.split_once(':')?;
    let facility = facility.trim_end();
    let facility = FACILITIES.iter().position(|f| *f == facility).or_else(|| {
        facility
            .strip_prefix("local")?
            .parse::<usize>()
            .ok()
            .filter(|n| *n < 8)
            .map(|n| 16 + n)
    })?;
    let (level, rest) = rest.split_once(':')?;
    let level = LEVELS.iter().position(|l| *l == level.trim_end())?;
    Some((
        facility as u8,
        level as u8,
        rest.strip_prefix(' ').unwrap_or(rest),
    ))
}

/// `dmesg -r`: `<4>message`.
fn angle_prio(line: &str) -> Option<(u32, &str)> {
    let after = line.strip_prefix('<')?;
    let close = after.find('>')?;
    let prio = after[..close].parse().ok()?;
    Some((prio, &after[close + 1..]))
}

/// `12345.678901` seconds since boot.
fn monotonic_us(inside: &str) -> Option<u64> {
    let (secs, frac) = inside.split_once('.')?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: u64 = format!("{frac:0<6}")[..6].parse().ok()?;
    secs.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros)
}

/// `dmesg -T`: `Mon Jun 25 10:05:31 2024` with localized day and month
/// names (`strftime("%a %b %e %H:%M:%S %Y")`).
fn dmesg_t_time(inside: &str) -> Option<(i64, u32)> {
    let parts: Vec<&str> = inside.split_whitespace().collect();
    let [_weekday, month, day, time, year] = parts.as_slice() else {
        return None;
    };
    let month = month_number(month)?;
    let day = day.trim_end_matches('.').parse().ok()?;
    wall_from(year.parse().ok()?, month, day, hms(time)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: &str = "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB";

    #[test]
    fn every_shape_yields_the_message() {
        let shapes = [
            format!("3,447,10837389275,-;{KILL}"),
            format!("[10837.389275] {KILL}"),
            format!("<3>[10837.389275] {KILL}"),
            format!("[Mon Jun 25 10:05:31 2024] {KILL}"),
            format!("[Di Jun 25 10:05:31 2024] {KILL}"),
            format!("kern  :err   : [10837.389275] {KILL}"),
            format!("kern  :err   : {KILL}"),
            format!("Jun 25 10:05:31 node-a kernel: {KILL}"),
            format!("Jun 25 10:05:31 kernel: {KILL}"),
            format!("Jun 25 10:05:31 node-a kernel: [10837.389275] {KILL}"),
            format!("2024-06-25T10:05:31.389275+0000 node-a kernel: {KILL}"),
            format!("2024-06-25T10:05:31.389275+00:00 node-a kernel: {KILL}"),
            format!("> [10837.389275] {KILL}"),
            format!(">> > Jun 25 10:05:31 node-a kernel: {KILL}"),
            format!("    [10837.389275] {KILL}"),
            format!("[10837.389275][ T2061] {KILL}"),
            KILL.to_owned(),
        ];
        for shape in &shapes {
            let line = parse_line(shape, 2024);
            assert_eq!(line.message, KILL, "{shape}");
            assert!(line.from_kernel(), "{shape}");
        }
    }

    #[test]
    fn stamps_hosts_and_programs() {
        let raw = parse_line("3,447,10837389275,-,caller=T2061;x", 2024);
        assert_eq!(
            (raw.stamp.seq, raw.stamp.monotonic_us, raw.stamp.level, raw.caller),
            (Some(447), Some(10_837_389_275), Some(3), Some("T2061"))
        );
        let dmesg = parse_line("<4>[   12.5] x", 2024);
        assert_eq!(
            (dmesg.stamp.monotonic_us, dmesg.stamp.level, dmesg.facility),
            (Some(12_500_000), Some(4), Some(0))
        );
        let t = parse_line("[Mon Jun 25 10:05:31 2024] x", 1999);
        assert_eq!(t.stamp.wall, Some((1_719_309_931, 0)));
        let fr = parse_line("[mar. juin 25 10:05:31 2024] x", 1999);
        assert_eq!(fr.stamp.wall, Some((1_719_309_931, 0)));
        let ru = parse_line("[Вт июн 25 10:05:31 2024] x", 1999);
        assert_eq!(ru.stamp.wall, Some((1_719_309_931, 0)));
        let absurd_year = parse_line("[Thu Dec  7 00:05:14 20555555555555517] x", 1999);
        assert_eq!(absurd_year.stamp.wall, None);
        let unknown_month = parse_line("[Xx Qqq 25 10:05:31 2024] x", 1999);
        assert_eq!(
            (unknown_month.stamp.wall, unknown_month.message.as_ref()),
            (None, "[Xx Qqq 25 10:05:31 2024] x")
        );
        let syslog = parse_line("Jun 25 10:05:31.250 node-a kernel: x", 2024);
        assert_eq!(
            (syslog.host, syslog.program, syslog.stamp.wall),
            (Some("node-a"), Some("kernel"), Some((1_719_309_931, 250_000_000)))
        );
        let iso = parse_line("2024-06-25T12:05:31+0200 node-a kernel: x", 2024);
        assert_eq!(iso.stamp.wall, Some((1_719_309_931, 0)));
    }

    #[test]
    fn other_programs_and_facilities_are_not_the_kernel() {
        let npd_text = format!("Jun 25 10:05:31 node-a node-problem-detector[812]: {KILL}");
        let npd = parse_line(&npd_text, 2024);
        assert_eq!(npd.program, Some("node-problem-detector"));
        assert!(!npd.from_kernel());
        let user_text = format!("11,9,5,-;{KILL}");
        let user = parse_line(&user_text, 2024);
        assert!(!user.from_kernel());
        let daemon_text = format!("daemon:err   : {KILL}");
        let daemon = parse_line(&daemon_text, 2024);
        assert!(!daemon.from_kernel());
        let forged_text = format!("<11>[1.0] {KILL}");
        let forged = parse_line(&forged_text, 2024);
        assert!(!forged.from_kernel());
    }

    #[test]
    fn task_table_rows_keep_their_brackets() {
        let row = parse_line("[10837.389235] [   2061]     0  2061     8869 tail", 2024);
        assert_eq!(row.message, "[   2061]     0  2061     8869 tail");
        let header = parse_line(
            "[Thu Dec  7 00:05:15 2017] [ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
            2024,
        );
        assert_eq!(
            header.message,
            "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"
        );
    }
}
