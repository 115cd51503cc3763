//! Time as saved logs print it: BSD syslog (`Jun 25 10:05:31`, no year),
//! ISO 8601 (journald, rsyslog, `dmesg --time-format iso`), `dmesg -T`
//! (`Mon Jun 25 10:05:31 2024`) in any locale, OpenWrt's `logread`, and the
//! kernel's seconds since boot. Pure.

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
pub(super) fn month_number(name: &str) -> Option<u32> {
    let name = name.trim_end_matches('.');
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        return name[..digits].parse().ok().filter(|m| (1..=12).contains(m));
    }
    // English names first, without allocating: most logs have them.
    let ascii = |table: &[&str; 12]| {
        table.iter().position(|m| {
            name.len() >= 3
                && name.len() >= m.len()
                && name.is_char_boundary(m.len())
                && name[..m.len()].eq_ignore_ascii_case(m)
        })
    };
    let found = ascii(&MONTHS[0]).or_else(|| {
        let lower = name.to_lowercase();
        MONTHS.iter().find_map(|table| {
            table
                .iter()
                .position(|m| lower == *m || (lower.chars().count() >= 3 && lower.starts_with(m)))
        })
    });
    found.and_then(|i| u32::try_from(i + 1).ok())
}

/// `10:05:31[.123456]` (or `,123456`): hours, minutes, seconds and
/// nanoseconds; a fraction's digits beyond nine are dropped.
fn hms(text: &str) -> Option<(i64, i64, i64, u32)> {
    let mut parts = text.split(':');
    let h = parts.next()?.parse::<i64>().ok()?;
    let m = parts.next()?.parse::<i64>().ok()?;
    let seconds = parts.next()?;
    let (whole, fraction) = seconds.split_once(['.', ',']).unwrap_or((seconds, ""));
    let s = whole.parse::<i64>().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = format!("{:0<9}", &fraction[..fraction.len().min(9)])
        .parse()
        .ok()?;
    (parts.next().is_none() && (0..24).contains(&h) && (0..60).contains(&m) && (0..61).contains(&s))
        .then_some((h, m, s, nanos))
}

fn wall_from(year: i64, month: u32, day: u32, (h, m, s, nanos): (i64, i64, i64, u32)) -> Option<(i64, u32)> {
    // Years outside this range are garbage in a log, and would overflow.
    if !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
        return None;
    }
    let days = oomlens_proto::time::days_from_civil(year, month, day);
    Some((days * 86_400 + h * 3600 + m * 60 + s, nanos))
}

/// `Jun 25 10:05:31[.123456] ` (BSD syslog, journalctl short/precise) or
/// `2024-06-25T10:05:31[.123][Z|+00:00|+0000] ` (ISO). Returns the time
/// (None when the month name is unknown) and the rest.
pub(super) fn syslog_time(line: &str, year: i64) -> Option<(Option<(i64, u32)>, &str)> {
    let (first, rest) = line.split_once(' ')?;
    if first.len() >= 19 && first.as_bytes().get(4) == Some(&b'-') && first.as_bytes().get(10) == Some(&b'T')
    {
        // `dmesg --time-format iso` writes a comma before the fraction.
        let normalised = normalise_offset(&first.replacen(',', ".", 1));
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

/// `12345.678901` seconds since boot.
/// OpenWrt's `logread`: `Fri Aug  7 08:24:06 2026 ` (weekday first, the
/// year after the time).
pub(super) fn logread_time(line: &str) -> Option<((i64, u32), &str)> {
    let mut words = line.split_whitespace();
    let (_weekday, month, day, time, year) = (
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
        words.next()?,
    );
    let wall = wall_from(
        year.parse().ok()?,
        month_number(month)?,
        day.parse().ok()?,
        hms(time)?,
    )?;
    let at = line.find(year)? + year.len();
    Some((wall, line[at..].trim_start()))
}

/// Kibana's `Jun 25, 2021 @ 12:42:13.029`.
pub(super) fn kibana_time(text: &str) -> Option<(i64, u32)> {
    let (date, time) = text.split_once(" @ ")?;
    let (month_day, year) = date.split_once(", ")?;
    let (month, day) = month_day.trim().split_once(' ')?;
    wall_from(
        year.trim().parse().ok()?,
        month_number(month)?,
        day.trim().parse().ok()?,
        hms(time.trim())?,
    )
}

pub(super) fn monotonic_us(inside: &str) -> Option<u64> {
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
pub(super) fn dmesg_t_time(inside: &str) -> Option<(i64, u32)> {
    let parts: Vec<&str> = inside.split_whitespace().collect();
    let [_weekday, month, day, time, year] = parts.as_slice() else {
        return None;
    };
    let month = month_number(month)?;
    let day = day.trim_end_matches('.').parse().ok()?;
    wall_from(year.parse().ok()?, month, day, hms(time)?)
}
