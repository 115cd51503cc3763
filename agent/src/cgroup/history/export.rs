//! A history's summary figures (peak, growth, time near the limit) and
//! the history in the contract's form, as a kill event carries it.

use oomlens_proto::time::timestamp_from_unix_ms;
use oomlens_proto::v1 as pb;
use prost_types::Timestamp;

use super::{Fine, History, UNKNOWN, slope};

fn known(value: u64) -> Option<u64> {
    (value != UNKNOWN).then_some(value)
}

fn known_f32(value: f32) -> Option<f64> {
    (!value.is_nan()).then_some(f64::from(value))
}

/// Summary figures of a history.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub peak_working_set: Option<u64>,
    /// Least-squares slope of the working set over the last minute.
    pub growth_bytes_per_second: Option<f64>,
    pub seconds_above_90pct: Option<f64>,
}

impl History {
    /// Summary of the samples up to `until_ms`.
    pub fn summary(&self, until_ms: u64) -> Summary {
        let fine: Vec<&Fine> = self.window().filter(|f| f.t_ms <= until_ms).collect();
        let first_fine_s = fine.first().map(|f| f.t_ms / 1000);
        let older = self
            .coarse
            .iter()
            .chain(self.building.iter())
            .filter(|b| first_fine_s.is_none_or(|first| u64::from(b.t_s) < first));
        let peak_fine = fine.iter().map(|f| self.working_set(f)).max();
        let peak_coarse = older.clone().map(|b| u64::from(b.ws_max_kib) * 1024).max();
        let peak_working_set = peak_fine.max(peak_coarse);

        let minute: Vec<&&Fine> = fine
            .iter()
            .filter(|f| f.t_ms + self.windows.growth_ms >= until_ms)
            .collect();
        let growth_bytes_per_second = slope(
            minute
                .iter()
                .map(|f| (f.t_ms as f64 / 1000.0, self.working_set(f) as f64)),
        );

        let seconds_above_90pct = self.limit.map(|limit| {
            let threshold = limit as f64 * 0.9;
            let fine_seconds: f64 = fine
                .windows(2)
                .filter(|w| self.working_set(w[0]) as f64 > threshold)
                .map(|w| ((w[1].t_ms - w[0].t_ms) as f64 / 1000.0).min(1.0))
                .sum();
            let coarse_seconds = older
                .filter(|b| {
                    b.limit_kib != u32::MAX && f64::from(b.ws_last_kib) > f64::from(b.limit_kib) * 0.9
                })
                .count() as f64;
            fine_seconds + coarse_seconds
        });
        Summary {
            peak_working_set,
            growth_bytes_per_second,
            seconds_above_90pct,
        }
    }

    /// The history up to `until_ms` in the contract's form.
    pub fn export(&self, cgroup: &str, until_ms: u64, interval_ms: u32) -> pb::MemoryHistory {
        let summary = self.summary(until_ms);
        let samples: Vec<pb::MemorySample> = self
            .window()
            .filter(|f| f.t_ms <= until_ms)
            .map(|f| {
                // The latest full sample at or before this one.
                let at = self.full.partition_point(|full| full.t_ms <= f.t_ms);
                let full = at.checked_sub(1).map(|i| self.full[i]);
                pb::MemorySample {
                    time: Some(timestamp_from_unix_ms(f.t_ms)),
                    working_set_bytes: Some(self.working_set(f)),
                    usage_bytes: Some(f.usage),
                    anon_bytes: full.and_then(|x| known(x.anon)),
                    file_bytes: full.and_then(|x| known(x.file)),
                    shmem_bytes: full.and_then(|x| known(x.shmem)),
                    limit_bytes: full.map_or(self.limit, |x| known(x.limit)),
                    pressure_some_avg10: full.and_then(|x| known_f32(x.pressure_some)),
                    pressure_full_avg10: full.and_then(|x| known_f32(x.pressure_full)),
                    kernel_bytes: full.and_then(|x| known(x.kernel)),
                }
            })
            .collect();
        let first_s = samples.first().and_then(|s| s.time.as_ref()).map(|t| t.seconds);
        let buckets = self
            .coarse
            .iter()
            .chain(self.building.iter())
            .filter(|b| {
                first_s.is_none_or(|first| i64::from(b.t_s) < first) && u64::from(b.t_s) * 1000 <= until_ms
            })
            .map(|b| pb::MemoryBucket {
                time: Some(Timestamp {
                    seconds: i64::from(b.t_s),
                    nanos: 0,
                }),
                working_set_min_bytes: u64::from(b.ws_min_kib) * 1024,
                working_set_max_bytes: u64::from(b.ws_max_kib) * 1024,
                working_set_last_bytes: u64::from(b.ws_last_kib) * 1024,
                usage_last_bytes: Some(u64::from(b.usage_last_kib) * 1024),
                limit_bytes: (b.limit_kib != u32::MAX).then(|| u64::from(b.limit_kib) * 1024),
            })
            .collect();
        pb::MemoryHistory {
            cgroup: cgroup.to_owned(),
            samples,
            buckets,
            peak_working_set_bytes: summary.peak_working_set,
            growth_bytes_per_second: summary.growth_bytes_per_second,
            seconds_above_90pct: summary.seconds_above_90pct,
            limit_bytes: self.limit,
            sample_interval_ms: interval_ms,
            // Packed only on the wire, for a collector that reads it.
            packed: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cgroup::history::tests::full;
    use crate::cgroup::history::{History, Windows};

    #[test]
    fn growth_peak_and_time_above_90pct() {
        let mut history = History::new(Windows::default());
        let base = 1_700_000_000_000u64;
        let limit = 100 << 20;
        history.record_full(base, &full(10 << 20, 1 << 20, Some(limit)));
        // 1 MiB/s for 95 s at 10 Hz.
        for i in 1..=950u64 {
            history.record_usage(base + i * 100, (10 << 20) + i * (1 << 20) / 10);
        }
        let end = base + 95_000;
        let summary = history.summary(end);
        let growth = summary.growth_bytes_per_second.expect("growth");
        assert!((growth - f64::from(1 << 20)).abs() < 1.0, "{growth}");
        // Working set = usage - 1 MiB inactive file.
        assert_eq!(
            summary.peak_working_set,
            Some((10 << 20) + 95 * (1 << 20) - (1 << 20))
        );
        // Above 90 MiB (90% of 100) from 81 MiB of growth on: ~14 s.
        let above = summary.seconds_above_90pct.expect("limit known");
        assert!((above - 14.0).abs() < 0.3, "{above}");
        // The last second's growth, from its two end samples, and the
        // peak usage of a window.
        let short = history.short_growth(1_000).expect("short growth");
        assert!((short - f64::from(1 << 20)).abs() < 1.0, "{short}");
        assert_eq!(
            history.peak_usage(end - 1_000, end),
            Some((10 << 20) + 95 * (1 << 20))
        );
        assert_eq!(history.peak_usage(end + 1, end + 10), None);

        let exported = history.export("/kubepods/x", end, 100);
        // The last minute at full rate, the time before it in buckets.
        assert_eq!(exported.samples.len(), 601);
        assert!(
            exported.buckets.len() >= 34 && exported.buckets.len() <= 36,
            "{}",
            exported.buckets.len()
        );
        assert_eq!(exported.samples.last().and_then(|s| s.limit_bytes), Some(limit));
        assert_eq!(exported.samples.last().and_then(|s| s.anon_bytes), Some(9 << 20));
        // Nothing after the kill time is exported.
        let cut = history.export("/kubepods/x", base + 50_000, 100);
        assert!(
            cut.samples.iter().all(
                |s| s.time.as_ref().expect("t").seconds <= i64::try_from((base + 50_000) / 1000).unwrap()
            )
        );
    }
}
