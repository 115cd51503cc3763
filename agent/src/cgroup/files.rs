//! Pure parsers for the memory files of cgroup v1 and v2 and the node's
//! `/proc` memory files. No I/O: each takes the file's text.

use std::fmt;

/// A file's text could not be understood. Carries the file name and the
/// offending text for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: &'static str,
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: String = self.text.chars().take(80).collect();
        write!(f, "cannot parse {}: {:?}", self.file, text)
    }
}

fn error(file: &'static str, text: &str) -> ParseError {
    ParseError {
        file,
        text: text.to_owned(),
    }
}

/// v1 reports "no limit" as the largest page-aligned value
/// (9223372036854771712 on 4 KiB pages); anything this large is no limit.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// A single number (`memory.current`, `memory.usage_in_bytes`,
/// `memory.failcnt`, `memory.peak`).
pub fn parse_u64(file: &'static str, text: &str) -> Result<u64, ParseError> {
    parse_decimal(text.trim_ascii()).ok_or_else(|| error(file, text))
}

/// A decimal number of ASCII digits that fits a u64: all the kernel prints
/// where these are read (`str::parse` would also take a leading `+`).
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |value, byte| {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `cgroup.procs`: one pid per line (v1 and v2 alike).
pub fn parse_pids(text: &str) -> Result<Vec<u32>, ParseError> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.trim().parse().map_err(|_| error("cgroup.procs", text)))
        .collect()
}

/// A limit: `max` (v2) or a huge value (v1) mean unlimited (None).
pub fn parse_limit(file: &'static str, text: &str) -> Result<Option<u64>, ParseError> {
    match text.trim() {
        "max" => Ok(None),
        value => {
            let bytes: u64 = value.parse().map_err(|_| error(file, text))?;
            Ok((bytes < V1_UNLIMITED_FLOOR).then_some(bytes))
        }
    }
}

/// The fields of `memory.stat` that oomlens uses, in bytes. v1 has both
/// local and `total_*` (hierarchical) fields; the hierarchical ones are
/// used, since a pod's cgroup holds its containers' memory in children.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub anon: Option<u64>,
    pub file: Option<u64>,
    pub shmem: Option<u64>,
    pub active_file: Option<u64>,
    pub inactive_file: Option<u64>,
    /// v2 `kernel` (or `kernel_stack + slab` on older v2); v1 has no
    /// equivalent in memory.stat.
    pub kernel: Option<u64>,
}

/// Parses v2 `memory.stat`.
pub fn parse_stat_v2(text: &str) -> Result<MemoryStat, ParseError> {
    let mut stat = MemoryStat::default();
    let mut kernel_parts = (None::<u64>, None::<u64>);
    for item in key_values("memory.stat", text) {
        let (key, value) = item?;
        match key {
            "anon" => stat.anon = Some(value),
            "file" => stat.file = Some(value),
            "shmem" => stat.shmem = Some(value),
            "active_file" => stat.active_file = Some(value),
            "inactive_file" => stat.inactive_file = Some(value),
            "kernel" => stat.kernel = Some(value),
            "kernel_stack" => kernel_parts.0 = Some(value),
            "slab" => kernel_parts.1 = Some(value),
            _ => {}
        }
    }
    if stat.kernel.is_none()
        && let (Some(stack), Some(slab)) = kernel_parts
    {
        stat.kernel = Some(stack + slab);
    }
    Ok(stat)
}

/// Parses v1 `memory.stat`, preferring the hierarchical `total_*` fields.
pub fn parse_stat_v1(text: &str) -> Result<MemoryStat, ParseError> {
    let mut local = MemoryStat::default();
    let mut total = MemoryStat::default();
    for item in key_values("memory.stat", text) {
        let (key, value) = item?;
        let (stat, key) = match key.strip_prefix("total_") {
            Some(key) => (&mut total, key),
            None => (&mut local, key),
        };
        match key {
            "rss" => stat.anon = Some(value),
            "cache" => stat.file = Some(value),
            "shmem" => stat.shmem = Some(value),
            "active_file" => stat.active_file = Some(value),
            "inactive_file" => stat.inactive_file = Some(value),
            _ => {}
        }
    }
    Ok(MemoryStat {
        anon: total.anon.or(local.anon),
        file: total.file.or(local.file),
        shmem: total.shmem.or(local.shmem),
        active_file: total.active_file.or(local.active_file),
        inactive_file: total.inactive_file.or(local.inactive_file),
        kernel: None,
    })
}

/// OOM counters: v2 `memory.events` (`oom`, `oom_kill`, `max`, `high`,
/// `oom_group_kill`) or v1 `memory.oom_control` (`oom_kill`, `under_oom`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OomCounters {
    /// Processes killed by the OOM killer in this cgroup (and, on v2,
    /// below it).
    pub oom_kill: Option<u64>,
    /// Times the cgroup hit its limit and the OOM killer was about to run.
    pub oom: Option<u64>,
    /// v2: times usage went over `memory.max` / `memory.high`.
    pub max: Option<u64>,
    pub high: Option<u64>,
    pub oom_group_kill: Option<u64>,
    /// v1: the cgroup is under OOM right now (its OOM killer disabled).
    pub under_oom: Option<bool>,
}

pub fn parse_events_v2(text: &str) -> Result<OomCounters, ParseError> {
    let mut counters = OomCounters::default();
    for item in key_values("memory.events", text) {
        let (key, value) = item?;
        match key {
            "oom_kill" => counters.oom_kill = Some(value),
            "oom" => counters.oom = Some(value),
            "max" => counters.max = Some(value),
            "high" => counters.high = Some(value),
            "oom_group_kill" => counters.oom_group_kill = Some(value),
            _ => {}
        }
    }
    Ok(counters)
}

pub fn parse_oom_control_v1(text: &str) -> Result<OomCounters, ParseError> {
    let mut counters = OomCounters::default();
    for item in key_values("memory.oom_control", text) {
        let (key, value) = item?;
        match key {
            "oom_kill" => counters.oom_kill = Some(value),
            "under_oom" => counters.under_oom = Some(value != 0),
            _ => {}
        }
    }
    Ok(counters)
}

/// Pressure stall information (`memory.pressure`, `/proc/pressure/memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some_avg10: f64,
    pub some_avg60: f64,
    pub full_avg10: f64,
    pub full_avg60: f64,
    /// Total stall time, microseconds.
    pub some_total_us: u64,
    pub full_total_us: u64,
}

pub fn parse_pressure(file: &'static str, text: &str) -> Result<Pressure, ParseError> {
    let mut pressure = Pressure::default();
    let mut seen_some = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let kind = fields.next().ok_or_else(|| error(file, text))?;
        let (avg10, avg60, total) = match kind {
            "some" => {
                seen_some = true;
                (
                    &mut pressure.some_avg10,
                    &mut pressure.some_avg60,
                    &mut pressure.some_total_us,
                )
            }
            "full" => (
                &mut pressure.full_avg10,
                &mut pressure.full_avg60,
                &mut pressure.full_total_us,
            ),
            _ => return Err(error(file, text)),
        };
        for field in fields {
            let (key, value) = field.split_once('=').ok_or_else(|| error(file, text))?;
            match key {
                "avg10" => *avg10 = value.parse().map_err(|_| error(file, text))?,
                "avg60" => *avg60 = value.parse().map_err(|_| error(file, text))?,
                "total" => *total = value.parse().map_err(|_| error(file, text))?,
                _ => {}
            }
        }
    }
    if !seen_some {
        return Err(error(file, text));
    }
    Ok(pressure)
}

/// `/proc/meminfo`'s MemTotal and MemAvailable, in bytes.
pub fn parse_meminfo(text: &str) -> Result<(u64, u64), ParseError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(available)) => Ok((total, available)),
        _ => Err(error("/proc/meminfo", text)),
    }
}

/// Working set as the kubelet and cAdvisor compute it: usage minus
/// inactive file pages, never below zero.
pub fn working_set(usage: u64, inactive_file: Option<u64>) -> u64 {
    usage.saturating_sub(inactive_file.unwrap_or(0))
}

/// `key value` lines, each checked as it is read; blank lines are skipped.
/// No list is built and only ASCII rules apply: v1 `memory.stat` has 40
/// lines and is parsed with every full sample of every container, and
/// `str::lines`, `trim` and `split_once` were most of that cost.
fn key_values<'a>(
    file: &'static str,
    text: &'a str,
) -> impl Iterator<Item = Result<(&'a str, u64), ParseError>> + 'a {
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            // Cut at ASCII bytes, so every slice is on a char boundary.
            let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
            let line = rest[..end].trim_ascii();
            rest = rest.get(end + 1..).unwrap_or("");
            if line.is_empty() {
                continue;
            }
            let pair = memchr::memchr(b' ', line.as_bytes()).and_then(|space| {
                let value = parse_decimal(line[space + 1..].trim_ascii())?;
                Some((&line[..space], value))
            });
            return Some(pair.ok_or_else(|| error(file, text)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit("memory.max", "max\n"), Ok(None));
        assert_eq!(parse_limit("memory.max", "33554432\n"), Ok(Some(33_554_432)));
        assert_eq!(
            parse_limit("memory.limit_in_bytes", "9223372036854771712\n"),
            Ok(None)
        );
        let err = parse_limit("memory.max", "lots").expect_err("bad");
        assert_eq!(err.to_string(), "cannot parse memory.max: \"lots\"");
    }

    #[test]
    fn stat_v1_prefers_hierarchical_totals() {
        // From this machine's kernel (6.18, cgroup v1).
        let text = "cache 0\nrss 33415168\nshmem 0\ninactive_file 0\nactive_file 0\n\
                    hierarchical_memory_limit 33554432\ntotal_cache 4096\ntotal_rss 33419264\n\
                    total_shmem 0\ntotal_inactive_file 4096\ntotal_active_file 0\n";
        let stat = parse_stat_v1(text).expect("valid");
        assert_eq!(stat.anon, Some(33_419_264));
        assert_eq!(stat.file, Some(4096));
        assert_eq!(stat.inactive_file, Some(4096));
    }

    #[test]
    fn stat_v2_and_older_kernel_fields() {
        let text = "anon 1000\nfile 2000\nkernel 300\nkernel_stack 16384\nshmem 5\nactive_file 1500\ninactive_file 500\nslab 1\n";
        let stat = parse_stat_v2(text).expect("valid");
        assert_eq!(
            (stat.anon, stat.file, stat.kernel, stat.inactive_file),
            (Some(1000), Some(2000), Some(300), Some(500))
        );
        let old = parse_stat_v2("anon 1\nkernel_stack 10\nslab 20\n").expect("valid");
        assert_eq!(old.kernel, Some(30));
    }

    #[test]
    fn events_and_oom_control() {
        let events =
            parse_events_v2("low 0\nhigh 12\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\n").expect("valid");
        assert_eq!(
            (events.oom_kill, events.oom, events.max, events.high),
            (Some(1), Some(2), Some(40), Some(12))
        );
        let control = parse_oom_control_v1("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").expect("valid");
        assert_eq!((control.oom_kill, control.under_oom), (Some(3), Some(false)));
    }

    #[test]
    fn pressure_and_meminfo() {
        let p = parse_pressure(
            "memory.pressure",
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=19832\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=14152\n",
        )
        .expect("valid");
        assert_eq!((p.some_avg10, p.full_avg10, p.some_total_us), (1.5, 0.75, 19_832));
        assert!(parse_pressure("memory.pressure", "garbage").is_err());
        let (total, available) =
            parse_meminfo("MemTotal:       24684084 kB\nMemFree: 1 kB\nMemAvailable:   23589612 kB\n")
                .expect("valid");
        assert_eq!((total, available), (24_684_084 * 1024, 23_589_612 * 1024));
    }

    #[test]
    fn working_set_never_negative() {
        assert_eq!(working_set(100, Some(30)), 70);
        assert_eq!(working_set(100, Some(300)), 0);
        assert_eq!(working_set(100, None), 100);
    }

    proptest! {
        #[test]
        fn no_text_panics(text in "\\PC{0,200}") {
            let _ = parse_stat_v1(&text);
            let _ = parse_stat_v2(&text);
            let _ = parse_events_v2(&text);
            let _ = parse_pressure("memory.pressure", &text);
            let _ = parse_meminfo(&text);
            let _ = parse_limit("memory.max", &text);
        }
    }

    /// What `key_values` did before it was made cheap, kept as its
    /// reference.
    fn reference_key_values(text: &str) -> Result<Vec<(&str, u64)>, ()> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (key, value) = line.trim().split_once(' ').ok_or(())?;
                value.trim().parse().map(|v| (key, v)).map_err(|_| ())
            })
            .collect()
    }

    proptest! {
        #[test]
        fn key_values_agree_with_the_reference(
            lines in prop::collection::vec(
                "[a-z_]{1,14}( {1,2}[0-9]{1,21}| x| -1| [0-9]{1,4}\\.5|)[ \t\r]?|[ \t]{0,2}",
                0..45,
            )
        ) {
            let text = lines.join("\n");
            let fast: Result<Vec<_>, ()> = key_values("memory.stat", &text)
                .map(|item| item.map_err(|_| ()))
                .collect();
            prop_assert_eq!(fast, reference_key_values(&text), "{:?}", text);
        }
    }

    #[test]
    fn decimals_and_their_errors() {
        assert_eq!(parse_u64("memory.current", "8192\n"), Ok(8192));
        assert_eq!(parse_u64("memory.current", "18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "\n", "18446744073709551616", "-1", "12a", "1 2", "0x10"] {
            assert!(parse_u64("memory.current", bad).is_err(), "{bad:?}");
        }
        let err = parse_stat_v1("total_rss 12\ntotal_cache\n").expect_err("no value");
        assert_eq!(
            err.to_string(),
            "cannot parse memory.stat: \"total_rss 12\\ntotal_cache\\n\""
        );
    }

    #[test]
    fn pids_of_a_cgroup() {
        assert_eq!(parse_pids("1203\n1215\n"), Ok(vec![1203, 1215]));
        assert_eq!(parse_pids(""), Ok(vec![]));
        assert!(parse_pids("12\nx\n").is_err());
    }
}
