//! Time without a date library: Unix-time conversions to and from the
//! contract's `Timestamp` (one set, for agent and collector), RFC 3339 for
//! the JSON form, and civil dates for parsing saved kernel logs.

use prost_types::Timestamp;

/// Unix milliseconds now (0 on a clock set before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A timestamp from Unix milliseconds.
pub fn timestamp_from_unix_ms(ms: u64) -> Timestamp {
    timestamp_from_unix_us(i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// A timestamp from Unix microseconds (negative: before 1970).
pub fn timestamp_from_unix_us(us: i64) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        // Below 10^6 µs, so below 10^9 ns: fits an i32.
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Unix microseconds of a timestamp, saturating.
pub fn unix_us(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos) / 1000)
}

/// Unix milliseconds of a timestamp; 0 before 1970.
pub fn unix_ms(t: &Timestamp) -> u64 {
    u64::try_from(unix_us(t) / 1000).unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Howard Hinnant's algorithm: shift the year to start in March so the
    // leap day is the last day of the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
// The algorithm keeps the day in 1..=31 and the month in 1..=12: the casts
// to u32 are exact.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats seconds and nanoseconds since the Unix epoch as RFC 3339 UTC,
/// with as many fractional digits as needed (none, 3, 6 or 9).
pub fn format_rfc3339(seconds: i64, nanos: u32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let fraction = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}Z")
}

/// Parses an RFC 3339 timestamp (`2024-06-25T10:05:31.123Z`, or with a
/// `+hh:mm` offset) into seconds and nanoseconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Digits past the ninth (below a nanosecond) are ignored.
        let mut scale = 100_000_000;
        for b in fraction.bytes().take(digits.min(9)) {
            nanos += u32::from(b - b'0') * scale;
            scale /= 10;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = rest.get(1..)?;
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return None;
            }
            let h: i64 = offset[..2].parse().ok()?;
            let m: i64 = offset[3..].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    // Both are checked above to be small and positive.
    let days = days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unix_time_conversions() {
        let t = timestamp_from_unix_ms(1_719_309_931_123);
        assert_eq!((t.seconds, t.nanos), (1_719_309_931, 123_000_000));
        assert_eq!(unix_ms(&t), 1_719_309_931_123);
        assert_eq!(unix_us(&t), 1_719_309_931_123_000);
        let before_1970 = timestamp_from_unix_us(-1);
        assert_eq!((before_1970.seconds, before_1970.nanos), (-1, 999_999_000));
        assert_eq!(unix_us(&before_1970), -1);
        assert_eq!(unix_ms(&before_1970), 0);
        assert!(now_unix_ms() > 1_700_000_000_000);
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_899), (2024, 6, 25));
        assert_eq!(format_rfc3339(1_719_309_931, 0), "2024-06-25T10:05:31Z");
        assert_eq!(
            format_rfc3339(1_719_309_931, 123_456_000),
            "2024-06-25T10:05:31.123456Z"
        );
        assert_eq!(
            parse_rfc3339("2024-06-25T12:05:31.5+02:00"),
            Some((1_719_309_931, 500_000_000))
        );
        assert_eq!(parse_rfc3339("2024-13-25T10:05:31Z"), None);
        assert_eq!(parse_rfc3339("2024-06-25T10:05:31"), None);
        assert_eq!(parse_rfc3339("2024-06-25T10:05:31.Z"), None);
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(seconds in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let text = format_rfc3339(seconds, nanos);
            prop_assert_eq!(parse_rfc3339(&text), Some((seconds, nanos)));
        }

        #[test]
        fn rfc3339_parser_never_panics(text in "\\PC{0,40}") {
            let _ = parse_rfc3339(&text);
        }
    }
}
