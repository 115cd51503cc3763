//! The vmstat cross-check: how many OOM kills the kernel log missed.
//! `/proc/vmstat`'s `oom_kill` counts every kill, the log parser counts the
//! ones it saw.
//!
//! The two move at slightly different moments (the counter steps before
//! the kill line is read), so a counter reading is only compared once
//! [`SETTLE_US`] have passed, against the kills logged up to the reading.

use std::collections::VecDeque;
use std::path::Path;

/// Time a counter reading waits before it is compared.
pub const SETTLE_US: u64 = 2_000_000;

/// Reads `oom_kill` from a `/proc/vmstat` text. None when the kernel has
/// no such counter (before 4.13).
pub fn parse_vmstat_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads `<proc_root>/vmstat`'s `oom_kill`.
pub fn read_vmstat_oom_kill(proc_root: &Path) -> std::io::Result<Option<u64>> {
    Ok(parse_vmstat_oom_kill(&std::fs::read_to_string(
        proc_root.join("vmstat"),
    )?))
}

/// Pure reconciliation state. Times are kernel monotonic microseconds.
#[derive(Debug)]
pub struct Reconciler {
    baseline: u64,
    /// Kernel timestamps of kills seen since the baseline, oldest first.
    kills: VecDeque<u64>,
    /// Counter readings not yet settled: (time, value).
    pending: VecDeque<(u64, u64)>,
    missed: u64,
    since_us: u64,
}

impl Reconciler {
    /// Starts from a counter reading taken at `now_us`.
    pub fn new(now_us: u64, counter: u64) -> Self {
        Self {
            baseline: counter,
            kills: VecDeque::new(),
            pending: VecDeque::new(),
            missed: 0,
            since_us: now_us,
        }
    }

    /// A kill the log showed, by its kernel timestamp. Kills from before
    /// the baseline (replayed after a restart) are not counted.
    pub fn kill_seen(&mut self, kernel_us: u64) {
        if kernel_us >= self.since_us {
            let at = self.kills.partition_point(|&t| t <= kernel_us);
            self.kills.insert(at, kernel_us);
        }
    }

    /// A counter reading at `now_us`; settles older readings.
    pub fn counter(&mut self, now_us: u64, value: u64) {
        self.pending.push_back((now_us, value));
        while let Some(&(at, value)) = self.pending.front() {
            if now_us.saturating_sub(at) < SETTLE_US {
                break;
            }
            self.pending.pop_front();
            let counted = value.saturating_sub(self.baseline);
            let seen = self.kills.partition_point(|&t| t <= at) as u64;
            self.missed = self.missed.max(counted.saturating_sub(seen));
        }
    }

    /// Kills the kernel counted that the log never showed, so far.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmstat() {
        assert_eq!(
            parse_vmstat_oom_kill("nr_free_pages 5\noom_kill 12\nfoo 1\n"),
            Some(12)
        );
        assert_eq!(parse_vmstat_oom_kill("nr_free_pages 5\n"), None);
    }

    #[test]
    fn a_kill_counted_before_its_line_is_read_is_not_missed() {
        let mut r = Reconciler::new(0, 10);
        r.counter(1_000_000, 11); // counter stepped; line not read yet
        r.counter(2_000_000, 11);
        r.kill_seen(900_000);
        r.counter(3_100_000, 11); // settles the reading at 1 s
        assert_eq!(r.missed(), 0);
    }

    #[test]
    fn kills_without_lines_are_missed_and_old_kills_ignored() {
        let mut r = Reconciler::new(5_000_000, 3);
        r.kill_seen(1_000_000); // replayed from before the agent started
        r.kill_seen(5_500_000);
        r.counter(6_000_000, 6); // three kills, one logged
        r.counter(8_500_000, 6);
        assert_eq!(r.missed(), 2);
    }
}
