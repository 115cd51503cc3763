//! What places a kill whose kernel report lacks a cgroup path (rate-limited)
//! or does not say which limit was hit: the processes seen in hot cgroups,
//! the OOM-kill counter steps and kernel OOM notices of each cgroup, and
//! the queries the event assembler makes over them.

use std::collections::HashMap;
use std::time::Duration;

use super::Sampler;
use crate::cgroup::path::ancestors;

/// The kernel's OOM notification for a cgroup (`memory.oom_control`
/// eventfd on v1, `memory.events` on v2), on the kernel's clock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OomNotice {
    pub cgroup: String,
    /// Kernel monotonic microseconds.
    pub at_us: u64,
}

/// A step of a cgroup's OOM-kill counter, seen by a full sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterStep {
    pub cgroup: String,
    /// Unix milliseconds of the sample that saw it.
    pub at_ms: u64,
}

/// A level whose usage stayed below this share of its limit in the second
/// before a kill did not hit it.
const NEAR_LIMIT: f64 = 0.5;

/// How long a process seen in a hot cgroup is remembered: longer than a
/// kill record takes to be read, short enough that pid reuse cannot
/// mislead.
const PID_MEMORY: Duration = Duration::from_secs(10);

/// OOM-kill counter steps and kernel OOM notices kept per cgroup.
const TIMES_KEPT: usize = 64;

/// Adds a step or notice time to a cgroup's, dropping the oldest beyond
/// [`TIMES_KEPT`].
pub(super) fn keep_time(times: &mut Vec<u64>, t: u64) {
    times.push(t);
    if times.len() > TIMES_KEPT {
        times.remove(0);
    }
}

/// Where a process was last seen in a hot cgroup.
#[derive(Debug, PartialEq, Eq)]
struct PidPlace {
    cgroup: String,
    /// Unix ms.
    seen_ms: u64,
}

/// Processes seen in hot cgroups, by pid. Pruned after [`PID_MEMORY`].
#[derive(Debug, Default)]
pub(super) struct PidPlaces {
    places: HashMap<u32, PidPlace>,
}

impl PidPlaces {
    /// Records the processes of the hot cgroup `path` as seen at `t_ms`.
    pub(super) fn remember(&mut self, pids: Vec<u32>, path: &str, t_ms: u64) {
        // 20 times a second per hot cgroup: refresh the time, copy the path
        // only for a new place.
        for pid in pids {
            match self.places.get_mut(&pid) {
                Some(place) if place.cgroup == path => place.seen_ms = t_ms,
                _ => {
                    self.places.insert(
                        pid,
                        PidPlace {
                            cgroup: path.to_owned(),
                            seen_ms: t_ms,
                        },
                    );
                }
            }
        }
    }

    /// Forgets the processes not seen for [`PID_MEMORY`] before `t_ms`.
    pub(super) fn forget_old(&mut self, t_ms: u64) {
        let horizon = t_ms.saturating_sub(u64::try_from(PID_MEMORY.as_millis()).unwrap_or(u64::MAX));
        self.places.retain(|_, place| place.seen_ms >= horizon);
    }
}

impl Sampler {
    /// Moves the kernel's OOM notices to the cgroups they name.
    pub(super) fn collect_notices(&mut self) {
        let Some(notifier) = &self.notifier else { return };
        for notice in notifier.drain() {
            if let Some(&i) = self.index.get(&notice.path) {
                keep_time(&mut self.tracked[i].oom_notices, notice.monotonic_us);
            }
        }
    }

    /// Kernel OOM notifications in the window (monotonic µs), oldest
    /// first.
    pub fn oom_notices(&mut self, from_us: u64, to_us: u64) -> Vec<OomNotice> {
        self.collect_notices();
        let mut notices: Vec<OomNotice> = self
            .tracked
            .iter()
            .flat_map(|t| {
                t.oom_notices
                    .iter()
                    .filter(|&&n| n >= from_us && n <= to_us)
                    .map(|&at_us| OomNotice {
                        cgroup: t.path.clone(),
                        at_us,
                    })
            })
            .collect();
        notices.sort_by_key(|n| n.at_us);
        notices
    }

    /// OOM-kill counter steps in the window (Unix ms when seen), oldest
    /// first.
    pub fn oom_steps(&self, from_ms: u64, to_ms: u64) -> Vec<CounterStep> {
        let mut steps: Vec<CounterStep> = self
            .tracked
            .iter()
            .flat_map(|t| {
                t.oom_steps
                    .iter()
                    .filter(|&&s| s >= from_ms && s <= to_ms)
                    .map(|&at_ms| CounterStep {
                        cgroup: t.path.clone(),
                        at_ms,
                    })
            })
            .collect();
        steps.sort_by_key(|s| s.at_ms);
        steps
    }

    /// The cgroup near its limit that `pid` was last seen in, at or after
    /// `since_ms` (Unix ms).
    pub fn cgroup_of_pid(&self, pid: u32, since_ms: u64) -> Option<String> {
        self.pid_places
            .places
            .get(&pid)
            .filter(|place| place.seen_ms >= since_ms)
            .map(|place| place.cgroup.clone())
    }

    /// Which limit a memcg kill hit, for a kill placed only by its
    /// victim's cgroup: among that cgroup and its tracked ancestors with a
    /// limit, the one whose usage in the last second before `until_ms` came
    /// closest to it (the nearer level on a tie), if within [`NEAR_LIMIT`].
    /// The last sample before a fast climb can be a whole hot interval
    /// early, so "at the limit" cannot be asked for.
    pub fn limited_cgroup(&self, victim: &str, until_ms: u64) -> Option<String> {
        let from_ms = until_ms.saturating_sub(1000);
        let levels = std::iter::once(victim).chain(ancestors(victim));
        let mut closest: Option<(&str, f64)> = None;
        for path in levels {
            let Some(&i) = self.index.get(path) else { continue };
            let history = &self.tracked[i].history;
            let (Some(limit), Some(peak)) = (
                history.limit(),
                history.peak_usage(from_ms, until_ms.saturating_add(100)),
            ) else {
                continue;
            };
            let ratio = peak as f64 / limit as f64;
            if ratio >= NEAR_LIMIT && closest.is_none_or(|(_, best)| ratio > best) {
                closest = Some((path, ratio));
            }
        }
        closest.map(|(path, _)| path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_times_are_kept() {
        let mut times = Vec::new();
        for t in 0..100 {
            keep_time(&mut times, t);
        }
        assert_eq!(times, (36..100).collect::<Vec<u64>>());
    }

    #[test]
    fn a_process_is_placed_where_it_was_last_seen_until_it_is_forgotten() {
        let mut places = PidPlaces::default();
        places.remember(vec![7, 8], "/kubepods/a", 1_000);
        places.remember(vec![7], "/kubepods/b", 2_000);
        let place = |cgroup: &str, seen_ms| PidPlace {
            cgroup: cgroup.to_owned(),
            seen_ms,
        };
        assert_eq!(places.places[&7], place("/kubepods/b", 2_000));
        assert_eq!(places.places[&8], place("/kubepods/a", 1_000));
        places.forget_old(11_500);
        assert!(!places.places.contains_key(&8), "not seen for over 10 s");
        assert!(places.places.contains_key(&7));
    }
}
