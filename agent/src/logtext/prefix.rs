//! The prefixes saved logs put before the kernel's message, and the marks
//! people add when they paste them: raw `/dev/kmsg` records, syslog and
//! journald sources (`host program[pid]:`), `dmesg -x` and `dmesg -r`
//! levels, columns of log platforms' exports, markdown and mail quoting,
//! line numbers, klog wrappers. Pure.

use crate::kmsg::record::parse_record;
use crate::oom::Stamp;

use super::TextLine;

/// Strips what people add around a pasted line: indentation, mail and
/// markdown quote markers (`>`), list bullets, backticks and bold marks,
/// surrounding quotes, a table's leading pipe, a leading line number, a
/// shell prompt, and the klog prefix minikube writes before dmesg lines
/// (`I0601 23:23:10.446437   13604 utils.go:240] > `).
pub(super) fn strip_decorations(line: &str) -> &str {
    let mut rest = line.trim();
    loop {
        let before = rest.len();
        for mark in [
            "```", "`", "**", "> ", ">", "| ", "- ", "* ", "+ ", "$ ", "# ", "\"",
        ] {
            if let Some(after) = rest.strip_prefix(mark) {
                // A lone `-`/`*` bullet needs its space; a quote or fence
                // does not.
                rest = after.trim_start();
            }
        }
        for mark in ["```", "`", "**", "\"", " |"] {
            if let Some(before_mark) = rest.strip_suffix(mark) {
                rest = before_mark.trim_end();
            }
        }
        if let Some(after) = klog_prefix(rest).or_else(|| line_number(rest)) {
            rest = after;
        }
        if rest.len() == before {
            return rest;
        }
    }
}

/// `I0601 23:23:10.446437   13604 utils.go:240] `: Kubernetes' klog.
fn klog_prefix(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    if bytes.len() < 6
        || !matches!(bytes[0], b'I' | b'W' | b'E' | b'F')
        || !bytes[1..5].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let close = line.find("] ")?;
    let inside = &line[5..close];
    inside.contains(".go:").then(|| line[close + 2..].trim_start())
}

/// `  12 [57539.949044] ...`: a line number added by an editor or `cat -n`.
fn line_number(line: &str) -> Option<&str> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    let after = &line[digits..];
    (digits > 0 && digits < 8 && (after.starts_with(" [") || after.starts_with("\t[")))
        .then(|| after.trim_start())
}

/// `PRIO,SEQ,TS,FLAGS;MESSAGE`: a record as read from `/dev/kmsg`.
pub(super) fn raw_record(line: &str) -> Option<TextLine<'_>> {
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
            line: None,
        },
        echo: false,
        prefixed: true,
        json: None,
    })
}

/// `host program[pid]: rest` or `program: rest`.
pub(super) fn syslog_source(rest: &str) -> Option<(Option<&str>, &str, &str)> {
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
pub(super) fn program_name(token: &str) -> Option<&str> {
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
pub(super) fn dmesg_decoded_prefix(line: &str) -> Option<(u8, u8, &str)> {
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
        u8::try_from(facility).ok()?,
        u8::try_from(level).ok()?,
        rest.strip_prefix(' ').unwrap_or(rest),
    ))
}

/// `dmesg -r`: `<4>message`.
pub(super) fn angle_prio(line: &str) -> Option<(u32, &str)> {
    let after = line.strip_prefix('<')?;
    let close = after.find('>')?;
    let prio = after[..close].parse().ok()?;
    Some((prio, &after[close + 1..]))
}

/// OpenWrt's `kern.err kernel: ...`: facility and level before the program.
pub(super) fn facility_level(line: &str) -> Option<(u8, u8, &str)> {
    let (word, rest) = line.split_once(' ')?;
    let (facility, level) = word.split_once('.')?;
    let facility = FACILITIES.iter().position(|f| *f == facility)?;
    let level = LEVELS
        .iter()
        .position(|l| *l == level || (*l == "warn" && level == "warning"))?;
    Some((
        u8::try_from(facility).ok()?,
        u8::try_from(level).ok()?,
        rest.trim_start(),
    ))
}

/// Words that name a program, facility or level in a log platform's
/// columns, never a host.
const NOT_HOSTS: &[&str] = &[
    "kernel", "kern", "syslog", "journal", "user", "daemon", "stdout", "stderr", "emerg", "alert", "crit",
    "err", "error", "warn", "warning", "notice", "info", "debug",
];

/// A row of a log platform's export (Kibana, Loki, Elastic): columns split
/// by ` | ` or tabs. Returns the time, program and host columns it found,
/// and the last column (the message).
pub(super) fn columns(line: &str) -> Option<Columns<'_>> {
    let separator = if line.contains('\t') { "\t" } else { " | " };
    if !line.contains(separator) {
        return None;
    }
    let cells: Vec<&str> = line
        .split(separator)
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let (message, others) = cells.split_last()?;
    if others.is_empty() {
        return None;
    }
    let mut found = Columns {
        message,
        ..Columns::default()
    };
    let mut hosts = Vec::new();
    for cell in others {
        let time = super::clock::kibana_time(cell).or_else(|| oomlens_proto::time::parse_rfc3339(cell));
        if let Some(wall) = time {
            found.wall = Some(wall);
        } else if *cell == "kernel" {
            found.program = Some(cell);
        } else if let Some((program, _)) = cell.strip_suffix(']').and_then(|c| c.split_once('[')) {
            found.program = Some(program);
        } else if is_host_like(cell) {
            hosts.push(*cell);
        }
    }
    if let [host] = hosts.as_slice() {
        found.host = Some(host);
    }
    Some(found)
}

/// What a row of columns said.
#[derive(Debug, Default)]
pub(super) struct Columns<'a> {
    pub message: &'a str,
    pub wall: Option<(i64, u32)>,
    pub program: Option<&'a str>,
    pub host: Option<&'a str>,
}

fn is_host_like(cell: &str) -> bool {
    !cell.is_empty()
        && cell.len() <= 253
        && cell.bytes().any(|b| b.is_ascii_alphabetic())
        && cell
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !NOT_HOSTS.contains(&cell)
        && !cell.chars().all(|c| c == '-')
}

/// A host name as a log prints it, or None for a blank (`...`, `<node>`).
pub(super) fn host(name: &str) -> Option<&str> {
    (!crate::oom::fields::redacted(name) && name.bytes().any(|b| b.is_ascii_alphanumeric())).then_some(name)
}

/// A stamp from the start of a dmesg-style bracket (`[12.5]`, `[Mon Jun
/// 25 ...]`, the relative `[  +0.000036]` which is no stamp), and the rest.
pub(super) fn bracket_stamp(line: &str) -> Option<(Stamp, &str)> {
    let after = line.strip_prefix('[')?;
    let close = after.find(']')?;
    let inside = after[..close].trim();
    let mut stamp = Stamp::default();
    if let Some(us) = super::clock::monotonic_us(inside) {
        stamp.monotonic_us = Some(us);
    } else if let Some(wall) = super::clock::dmesg_t_time(inside) {
        stamp.wall = Some(wall);
    } else if !(inside.starts_with('+') && super::clock::monotonic_us(&inside[1..]).is_some()) {
        return None;
    }
    Some((stamp, &after[close + 1..]))
}
