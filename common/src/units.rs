//! Sizes and durations as people read and type them: `32Mi`, exact
//! Kubernetes quantities, `30m`.

use std::time::Duration;

/// `33554432` -> `32Mi`; one decimal below 10 units. Up to `Ei`, so that
/// any `u64` (16Ei at most) fits a table's six columns.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
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

/// `45 s`, `12 min`, `5.4 h`, `3.0 d`: a projected time, as precise as
/// it deserves to be.
pub fn human_seconds(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_owned();
    }
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 2.0 * 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 2.0 * 86_400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86_400.0)
    }
}

/// `value` rounded toward zero, saturating: negative and NaN give 0, past
/// `u64::MAX` gives `u64::MAX`. For sizes and rates computed in f64.
// f64 has no `TryFrom` into integers; `as` does exactly this, and a byte
// fraction is not worth showing.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn saturating_u64(value: f64) -> u64 {
    value as u64
}

/// A Kubernetes quantity, exact: `1280Mi`, `2Gi`, `1536Ki`.
pub fn quantity(bytes: u64) -> String {
    const KI: u64 = 1024;
    for (unit, size) in [
        ("Ti", KI.pow(4)),
        ("Gi", KI.pow(3)),
        ("Mi", KI.pow(2)),
        ("Ki", KI),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `30s`, `15m`, `6h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 6h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    // Checked, not saturating: an overflow is a typo, not "forever".
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_quantities() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(33_554_432), "32Mi");
        assert_eq!(human_bytes(1_610_612_736), "1.5Gi");
        assert_eq!(human_bytes(u64::MAX), "16Ei");
        assert_eq!(human_bytes(3 << 50), "3Pi");
        assert_eq!(quantity(1280 * 1024 * 1024), "1280Mi");
        assert_eq!(quantity(2 * 1024 * 1024 * 1024), "2Gi");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn durations_people_type() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("1y").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
        assert!(
            parse_duration("30000000000000000w")
                .unwrap_err()
                .contains("too long")
        );
    }
}
