//! The memory history of one cgroup: the last minute at full rate and the
//! last 15 minutes in 1-second buckets, kept compact (about 25 KiB per
//! container at the default schedule) because one agent holds hundreds.
//!
//! Times are Unix milliseconds. The working set of a usage-only sample is
//! computed with the inactive-file size of the latest full sample.

use std::collections::VecDeque;

use oomlens_proto::time::timestamp_from_unix_ms;
use oomlens_proto::v1 as pb;
use prost_types::Timestamp;

use super::reader::FullSample;

/// Window lengths.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Full-rate samples kept.
    pub fine_ms: u64,
    /// 1-second buckets kept.
    pub coarse_s: u32,
    /// Growth is the working-set slope over this window before the kill.
    pub growth_ms: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            fine_ms: 60_000,
            coarse_s: 15 * 60,
            growth_ms: 60_000,
        }
    }
}

/// A full-rate sample. The working set is not stored: it is usage minus
/// the inactive file size of the latest full sample at or before it.
#[derive(Debug, Clone, Copy)]
struct Fine {
    t_ms: u64,
    usage: u64,
}

/// `u64::MAX` / NaN stand for "not known" below: `Option` would double
/// these fields' size, and one agent keeps thousands of them.
const UNKNOWN: u64 = u64::MAX;

fn known(value: u64) -> Option<u64> {
    (value != UNKNOWN).then_some(value)
}

/// A PSI average as stored: f32 takes half the room.
#[allow(clippy::cast_possible_truncation)] // 0..=100 with two decimals: f32 keeps them
fn compact_pressure(avg10: f64) -> f32 {
    avg10 as f32
}

fn known_f32(value: f32) -> Option<f64> {
    (!value.is_nan()).then_some(f64::from(value))
}

/// Details only a full sample has.
#[derive(Debug, Clone, Copy)]
struct Full {
    t_ms: u64,
    inactive_file: u64,
    anon: u64,
    file: u64,
    shmem: u64,
    limit: u64,
    pressure_some: f32,
    pressure_full: f32,
}

/// One second, in KiB to stay small (u32 KiB reaches 4 TiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    t_s: u32,
    ws_min_kib: u32,
    ws_max_kib: u32,
    ws_last_kib: u32,
    usage_last_kib: u32,
    /// u32::MAX: unlimited.
    limit_kib: u32,
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX - 1)
}

/// Summary figures of a history.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub peak_working_set: Option<u64>,
    /// Least-squares slope of the working set over the last minute.
    pub growth_bytes_per_second: Option<f64>,
    pub seconds_above_90pct: Option<f64>,
}

#[derive(Debug)]
pub struct History {
    windows: Windows,
    fine: VecDeque<Fine>,
    full: VecDeque<Full>,
    coarse: VecDeque<Bucket>,
    building: Option<Bucket>,
    /// Inactive file size of the latest full sample, its time, and that of
    /// the full sample before it: what usage samples since then need,
    /// without touching the ring of full samples.
    inactive_file: u64,
    last_full_ms: u64,
    previous_inactive_file: u64,
    limit: Option<u64>,
    /// Expected full-rate samples in the window, to size the ring once
    /// instead of letting it double past it.
    fine_capacity: usize,
}

impl History {
    /// `fast_interval_ms` is the usual interval between samples.
    pub fn new(windows: Windows) -> Self {
        Self::with_interval(windows, 100)
    }

    pub fn with_interval(windows: Windows, fast_interval_ms: u64) -> Self {
        Self {
            windows,
            fine: VecDeque::new(),
            full: VecDeque::new(),
            coarse: VecDeque::new(),
            building: None,
            inactive_file: 0,
            last_full_ms: 0,
            previous_inactive_file: 0,
            limit: None,
            // The window, plus the second held until the next prune.
            fine_capacity: usize::try_from((windows.fine_ms + 1000) / fast_interval_ms.max(1))
                .unwrap_or(usize::MAX)
                .saturating_add(8),
        }
    }

    /// Working set of a fine sample: usage minus the inactive file size of
    /// the latest full sample at or before it.
    fn working_set(&self, sample: &Fine) -> u64 {
        let at = self.full.partition_point(|full| full.t_ms <= sample.t_ms);
        let inactive = at.checked_sub(1).map_or(0, |i| self.full[i].inactive_file);
        sample.usage.saturating_sub(inactive)
    }

    /// The latest limit seen (None: unlimited or never read).
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Highest usage sampled between the two times (Unix ms).
    pub fn peak_usage(&self, from_ms: u64, to_ms: u64) -> Option<u64> {
        self.fine
            .iter()
            .filter(|f| (from_ms..=to_ms).contains(&f.t_ms))
            .map(|f| f.usage)
            .max()
    }

    /// Latest (time, working set, usage).
    pub fn latest(&self) -> Option<(u64, u64, u64)> {
        // The newest full sample describes the newest sample: no search.
        self.fine
            .back()
            .map(|f| (f.t_ms, f.usage.saturating_sub(self.inactive_file), f.usage))
    }

    pub fn record_usage(&mut self, t_ms: u64, usage: u64) {
        let working_set = usage.saturating_sub(self.inactive_file);
        self.push(Fine { t_ms, usage }, working_set);
    }

    pub fn record_full(&mut self, t_ms: u64, sample: &FullSample) {
        if self.fine.back().is_some_and(|last| t_ms < last.t_ms) {
            return;
        }
        self.previous_inactive_file = self.inactive_file;
        self.inactive_file = sample.stat.inactive_file.unwrap_or(0);
        self.last_full_ms = t_ms;
        self.limit = sample.limit;
        if self.full.capacity() == 0 {
            let seconds = usize::try_from(self.windows.fine_ms / 1000).unwrap_or(usize::MAX);
            self.full.reserve_exact(seconds.saturating_add(4));
        }
        self.full.push_back(Full {
            t_ms,
            inactive_file: self.inactive_file,
            anon: sample.stat.anon.unwrap_or(UNKNOWN),
            file: sample.stat.file.unwrap_or(UNKNOWN),
            shmem: sample.stat.shmem.unwrap_or(UNKNOWN),
            limit: sample.limit.unwrap_or(UNKNOWN),
            pressure_some: sample
                .pressure
                .map_or(f32::NAN, |p| compact_pressure(p.some_avg10)),
            pressure_full: sample
                .pressure
                .map_or(f32::NAN, |p| compact_pressure(p.full_avg10)),
        });
        self.push(
            Fine {
                t_ms,
                usage: sample.usage,
            },
            sample.working_set,
        );
    }

    fn push(&mut self, sample: Fine, working_set: u64) {
        if self.fine.back().is_some_and(|last| sample.t_ms < last.t_ms) {
            return; // never rewind: the clock stepped back
        }
        if self.fine.capacity() == 0 {
            self.fine.reserve_exact(self.fine_capacity);
        }
        if self.coarse.capacity() == 0 {
            self.coarse.reserve_exact(self.windows.coarse_s as usize + 2);
        }
        self.fine.push_back(sample);
        let second = u32::try_from(sample.t_ms / 1000).unwrap_or(u32::MAX);
        let (ws, usage) = (kib(working_set), kib(sample.usage));
        let limit_kib = self.limit.map_or(u32::MAX, kib);
        match self.building.as_mut() {
            Some(bucket) if bucket.t_s == second => {
                bucket.ws_min_kib = bucket.ws_min_kib.min(ws);
                bucket.ws_max_kib = bucket.ws_max_kib.max(ws);
                bucket.ws_last_kib = ws;
                bucket.usage_last_kib = usage;
                bucket.limit_kib = limit_kib;
            }
            _ => {
                if let Some(done) = self.building.take() {
                    self.coarse.push_back(done);
                }
                self.building = Some(Bucket {
                    t_s: second,
                    ws_min_kib: ws,
                    ws_max_kib: ws,
                    ws_last_kib: ws,
                    usage_last_kib: usage,
                    limit_kib,
                });
                // Old samples go once a second, not with every sample: the
                // oldest ones sit in other cache lines than the newest, and
                // readers skip what is older than the window anyway.
                self.prune(sample.t_ms, second);
            }
        }
    }

    fn prune(&mut self, t_ms: u64, second: u32) {
        let fine_floor = t_ms.saturating_sub(self.windows.fine_ms);
        while self.fine.front().is_some_and(|f| f.t_ms < fine_floor) {
            self.fine.pop_front();
        }
        // Keep one full sample from before the window: it describes the
        // window's oldest fine samples.
        while self.full.len() > 1 && self.full[1].t_ms < fine_floor {
            self.full.pop_front();
        }
        let coarse_floor = second.saturating_sub(self.windows.coarse_s);
        while self.coarse.front().is_some_and(|b| b.t_s < coarse_floor) {
            self.coarse.pop_front();
        }
    }

    /// The fine samples of the window before the newest one (up to a
    /// second more is held until the next prune).
    fn window(&self) -> impl DoubleEndedIterator<Item = &Fine> + Clone {
        let floor = self
            .fine
            .back()
            .map_or(0, |last| last.t_ms.saturating_sub(self.windows.fine_ms));
        let skip = self.fine.partition_point(|f| f.t_ms < floor);
        self.fine.range(skip..)
    }

    /// Heap bytes held, for the agent's own memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.fine.capacity() * size_of::<Fine>()
            + self.full.capacity() * size_of::<Full>()
            + self.coarse.capacity() * size_of::<Bucket>()
    }

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
        }
    }

    /// Growth between the oldest and newest sample of the last
    /// `window_ms`, bytes per second: cheap enough for every usage sample
    /// (it walks back only over the window, no regression). Exact when full
    /// samples are at least `window_ms` apart, as they are for a cgroup
    /// that is not hot; closer ones only shift which page-cache size the
    /// window's oldest sample is taken with.
    pub fn short_growth(&self, window_ms: u64) -> Option<f64> {
        let last = self.fine.back()?;
        let first = self
            .fine
            .iter()
            .rev()
            .take_while(|f| f.t_ms + window_ms >= last.t_ms)
            .last()?;
        let dt_ms = last.t_ms.checked_sub(first.t_ms).filter(|&d| d > 0)?;
        // The two latest full samples' page-cache sizes are kept at hand:
        // the ring of full samples is another allocation, and so another
        // page to touch, with every usage sample.
        let inactive_at = |t_ms: u64| {
            if t_ms >= self.last_full_ms {
                self.inactive_file
            } else {
                self.previous_inactive_file
            }
        };
        let working_set = |f: &Fine| f.usage.saturating_sub(inactive_at(f.t_ms));
        let grown = working_set(last) as f64 - working_set(first) as f64;
        Some(grown * 1000.0 / dt_ms as f64)
    }

    /// Working-set slope over the last `window_ms` before the latest sample.
    pub fn recent_growth(&self, window_ms: u64) -> Option<f64> {
        let last = self.fine.back()?.t_ms;
        // Newest first, stepping back through the full samples alongside
        // for each sample's inactive file size: called with every full
        // sample of every cgroup, so no search per point.
        let mut full = self.full.iter().rev().peekable();
        slope(
            self.fine
                .iter()
                .rev()
                .take_while(|f| f.t_ms + window_ms >= last)
                .map(|f| {
                    while full.next_if(|x| x.t_ms > f.t_ms).is_some() {}
                    let inactive = full.peek().map_or(0, |x| x.inactive_file);
                    (f.t_ms as f64 / 1000.0, f.usage.saturating_sub(inactive) as f64)
                }),
        )
    }
}

/// Least-squares slope of y over x; None with fewer than two distinct x.
pub fn slope(points: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    // One pass, no allocation (it runs with every full sample). Both axes
    // are shifted by the first point: Unix-time abscissae and byte counts
    // in the gigabytes would otherwise lose the slope to rounding.
    let mut points = points.peekable();
    let &(x0, y0) = points.peek()?;
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, y) in points {
        let (dx, dy) = (x - x0, y - y0);
        n += 1.0;
        sx += dx;
        sy += dy;
        sxx += dx * dx;
        sxy += dx * dy;
    }
    let denominator = n * sxx - sx * sx;
    (n >= 2.0 && denominator > 0.0).then(|| (n * sxy - sx * sy) / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::files::MemoryStat;

    fn full(usage: u64, inactive: u64, limit: Option<u64>) -> FullSample {
        FullSample {
            usage,
            limit,
            stat: MemoryStat {
                inactive_file: Some(inactive),
                anon: Some(usage - inactive),
                ..MemoryStat::default()
            },
            working_set: usage - inactive,
            ..FullSample::default()
        }
    }

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

    #[test]
    fn recent_growth_uses_each_samples_own_inactive_file() {
        // Usage climbs 2 MiB/s while the page cache shrinks 1 MiB/s: the
        // working set climbs 3 MiB/s. Each usage sample's working set must
        // use the full sample at or before it, not the latest.
        let mut history = History::new(Windows::default());
        let base = 1_700_000_000_000u64;
        let mib = 1u64 << 20;
        for i in 0..=300u64 {
            let t = base + i * 100;
            let usage = 100 * mib + i * 2 * mib / 10;
            if i % 10 == 0 {
                let inactive = 50 * mib - i * mib / 10;
                history.record_full(t, &full(usage, inactive, None));
            } else {
                history.record_usage(t, usage);
            }
        }
        // Within a second the inactive size is the last full sample's, so
        // the slope over whole seconds is the working set's.
        let growth = history.recent_growth(10_000).expect("growth");
        assert!((growth - 3.0 * mib as f64).abs() < 0.05 * mib as f64, "{growth}");
        // The same points, computed point by point.
        let brute = slope(
            history
                .fine
                .iter()
                .filter(|f| f.t_ms + 10_000 >= base + 30_000)
                .map(|f| (f.t_ms as f64 / 1000.0, history.working_set(f) as f64)),
        )
        .expect("slope");
        assert!((growth - brute).abs() < 1e-6 * brute, "{growth} vs {brute}");
    }

    #[test]
    fn windows_are_bounded() {
        let mut history = History::new(Windows {
            fine_ms: 10_000,
            coarse_s: 30,
            growth_ms: 10_000,
        });
        for i in 0..1000u64 {
            history.record_usage(i * 100, i);
        }
        // The window's 101 samples are what readers see; the ring holds at
        // most a second more until its next prune.
        assert_eq!(history.window().count(), 101);
        assert_eq!(history.export("/x", u64::MAX, 100).samples.len(), 101);
        assert!(history.fine.len() <= 111, "{}", history.fine.len());
        assert!(
            history.fine.capacity() <= history.fine_capacity,
            "the ring never grew"
        );
        assert!(history.coarse.len() <= 31, "{}", history.coarse.len());
        // A clock step backwards is ignored, not recorded out of order.
        history.record_usage(5, 1);
        assert_eq!(history.latest().map(|l| l.0), Some(99_900));
    }

    #[test]
    fn slope_edge_cases() {
        assert_eq!(slope([(1.0, 5.0)].into_iter()), None);
        assert_eq!(slope([(1.0, 5.0), (1.0, 6.0)].into_iter()), None);
        assert_eq!(
            slope([(1_700_000_000.0, 0.0), (1_700_000_002.0, 10.0)].into_iter()),
            Some(5.0)
        );
        // A 1 KiB/s climb at 64 GiB, over Unix-time seconds: the shifts keep
        // it from being lost to rounding.
        let climb = (0..600).map(|i| {
            (
                1_700_000_000.0 + f64::from(i) / 10.0,
                68_719_476_736.0 + f64::from(i) * 102.4,
            )
        });
        let growth = slope(climb).expect("slope");
        assert!((growth - 1024.0).abs() < 1e-3, "{growth}");
    }
}
