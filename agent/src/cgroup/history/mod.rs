//! The memory history of one cgroup: the last minute at full rate and the
//! last 15 minutes in 1-second buckets, kept compact (about 25 KiB per
//! container at the default schedule) because one agent holds hundreds.
//!
//! Times are Unix milliseconds. The working set of a usage-only sample is
//! computed with the inactive-file size of the latest full sample.
//!
//! This module keeps the rings; `export` summarises them and puts them in
//! the contract's form, `growth` has the slope maths.

use std::collections::VecDeque;

use super::reader::FullSample;

mod export;
mod growth;

pub use export::Summary;
pub use growth::{Fit, fit, slope};

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

/// A PSI average as stored: f32 takes half the room.
#[allow(clippy::cast_possible_truncation)] // 0..=100 with two decimals: f32 keeps them
fn compact_pressure(avg10: f64) -> f32 {
    avg10 as f32
}

/// Details only a full sample has.
#[derive(Debug, Clone, Copy)]
struct Full {
    t_ms: u64,
    inactive_file: u64,
    anon: u64,
    file: u64,
    shmem: u64,
    kernel: u64,
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

    /// The working set of the last sample at or before `until_ms`.
    pub fn working_set_at(&self, until_ms: u64) -> Option<u64> {
        let at = self.fine.partition_point(|f| f.t_ms <= until_ms);
        at.checked_sub(1).map(|i| self.working_set(&self.fine[i]))
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
            kernel: sample.stat.kernel.unwrap_or(UNKNOWN),
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

    /// The ring's newest sample; the next one is stored right after it
    /// (see `sampler::prefetch`).
    pub fn newest_slot(&self) -> Option<&impl Sized> {
        self.fine.back()
    }

    /// Heap bytes held, for the agent's own memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.fine.capacity() * size_of::<Fine>()
            + self.full.capacity() * size_of::<Full>()
            + self.coarse.capacity() * size_of::<Bucket>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::files::MemoryStat;

    /// A full sample with `inactive` bytes of inactive file (the
    /// submodules' tests use it too).
    pub(super) fn full(usage: u64, inactive: u64, limit: Option<u64>) -> FullSample {
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
}
