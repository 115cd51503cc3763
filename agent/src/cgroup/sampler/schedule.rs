//! When each cgroup is read: the intervals per kind of cgroup and the pure
//! rules (due, hot, binding limit) the tick applies to them.

use std::time::{Duration, Instant};

use crate::pods::Level;

/// When each cgroup is read. Usage is cheap (one number); a full sample
/// adds `memory.stat` (about ten times a usage read on v1), the OOM
/// counters and pressure; limits are settings and are re-read least often.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Usage of every container.
    pub fast: Duration,
    /// Every memory file of every container (and of other followed
    /// cgroups); usage of pods and the levels above them.
    pub full: Duration,
    /// Every memory file of a hot cgroup (near its limit or climbing fast),
    /// limits included.
    pub hot: Duration,
    /// Every memory file of pods and the levels above them (QoS, kubepods)
    /// while they are not hot. Their usage every `full` interval turns them
    /// hot as fast as a full sample would, and a pod-level kill comes only
    /// after the pod has been hot.
    pub pod_full: Duration,
    /// Limits (`memory.limit_in_bytes`, `memory.max`, `memory.high`) of a
    /// cgroup that is not hot: a resized limit is seen within this time.
    pub limits: Duration,
    /// Hot above this fraction of the limit...
    pub hot_ratio: f64,
    /// ...or when the working set would reach the limit within this many
    /// seconds at its current growth.
    pub hot_seconds_to_limit: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            fast: Duration::from_millis(100),
            full: Duration::from_secs(1),
            hot: Duration::from_millis(50),
            pod_full: Duration::from_secs(5),
            limits: Duration::from_secs(10),
            hot_ratio: 0.8,
            hot_seconds_to_limit: 60.0,
        }
    }
}

impl Schedule {
    /// How often a cgroup of this kind gets a full sample and, in between,
    /// a usage sample (None: full samples only).
    pub(super) fn intervals(&self, kind: Kind, hot: bool) -> (Duration, Option<Duration>) {
        match (hot, kind) {
            (true, _) => (self.hot, None),
            (false, Kind::Container) => (self.full, Some(self.fast)),
            (false, Kind::AboveContainers) => (self.pod_full, Some(self.full)),
            (false, Kind::Other) => (self.full, None),
        }
    }
}

/// What a followed cgroup is, for its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Container,
    /// Pod, QoS class, kubepods.
    AboveContainers,
    /// A systemd service or plain Docker container (`--include-other-cgroups`).
    Other,
}

impl Kind {
    pub(super) fn of(level: Level) -> Self {
        match level {
            Level::Container => Self::Container,
            Level::Pod | Level::Qos | Level::Kubepods => Self::AboveContainers,
            Level::Other => Self::Other,
        }
    }
}

/// How early a read may be done: timer jitter must not turn a 100 ms
/// schedule into 150 ms.
pub(super) const SLACK: Duration = Duration::from_millis(2);

/// When a read last done at `last` is due again (`now` if never done),
/// `slack` early ([`SLACK`]). The one rule for both the tick and the
/// next-due times.
pub(super) fn due_at(last: Option<Instant>, every: Duration, slack: Duration, now: Instant) -> Instant {
    last.map_or(now, |t| t + every.saturating_sub(slack))
}

/// The limit that binds a cgroup: its own or its tightest tracked
/// ancestor's, whichever is lower.
pub(super) fn effective_limit(own: Option<u64>, ancestor: Option<u64>) -> Option<u64> {
    match (own, ancestor) {
        (Some(own), Some(ancestor)) => Some(own.min(ancestor)),
        (own, ancestor) => own.or(ancestor),
    }
}

/// Whether a cgroup is near its limit or climbing to it fast enough to be
/// sampled on the hot interval. No limit: never hot.
pub(super) fn is_hot(schedule: &Schedule, working_set: u64, limit: Option<u64>, growth: Option<f64>) -> bool {
    let Some(limit) = limit else { return false };
    if working_set as f64 >= limit as f64 * schedule.hot_ratio {
        return true;
    }
    match growth {
        Some(g) if g > 0.0 => (limit.saturating_sub(working_set) as f64 / g) < schedule.hot_seconds_to_limit,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn never_read_is_due_now() {
        let now = Instant::now();
        assert_eq!(due_at(None, Duration::from_secs(1), SLACK, now), now);
    }

    #[test]
    fn read_is_due_again_slack_early() {
        let now = Instant::now();
        let last = now - Duration::from_millis(30);
        assert_eq!(
            due_at(Some(last), Duration::from_millis(100), SLACK, now),
            last + Duration::from_millis(98)
        );
    }

    #[test]
    fn slack_longer_than_the_interval_makes_it_due_at_the_last_read() {
        let now = Instant::now();
        let last = now - Duration::from_millis(5);
        assert_eq!(due_at(Some(last), Duration::from_millis(1), SLACK, now), last);
    }

    #[test]
    fn the_lower_limit_binds() {
        assert_eq!(effective_limit(Some(100), Some(50)), Some(50));
        assert_eq!(effective_limit(Some(50), Some(100)), Some(50));
        assert_eq!(effective_limit(Some(100), None), Some(100));
        assert_eq!(effective_limit(None, Some(50)), Some(50));
        assert_eq!(effective_limit(None, None), None);
    }

    #[test]
    fn without_a_limit_nothing_is_hot() {
        let schedule = Schedule::default();
        assert!(!is_hot(&schedule, 10_000 * MIB, None, Some(1e9)));
    }

    #[test]
    fn hot_from_the_ratio_of_the_limit() {
        let schedule = Schedule::default();
        assert!(is_hot(&schedule, 80 * MIB, Some(100 * MIB), None));
        assert!(!is_hot(&schedule, 79 * MIB, Some(100 * MIB), None));
    }

    #[test]
    fn hot_from_the_time_to_the_limit() {
        let schedule = Schedule::default();
        let limit = Some(100 * MIB);
        // 50 MiB left: at 1 MiB/s that is 50 s, under the 60 s default.
        assert!(is_hot(&schedule, 50 * MIB, limit, Some(MIB as f64)));
        // At 0.5 MiB/s it is 100 s.
        assert!(!is_hot(&schedule, 50 * MIB, limit, Some(MIB as f64 / 2.0)));
        // Flat or shrinking usage never reaches the limit.
        assert!(!is_hot(&schedule, 50 * MIB, limit, Some(0.0)));
        assert!(!is_hot(&schedule, 50 * MIB, limit, Some(-(MIB as f64))));
    }

    #[test]
    fn hot_cgroups_get_full_samples_only() {
        let schedule = Schedule::default();
        for kind in [Kind::Container, Kind::AboveContainers, Kind::Other] {
            assert_eq!(schedule.intervals(kind, true), (schedule.hot, None));
        }
        assert_eq!(
            schedule.intervals(Kind::Container, false),
            (schedule.full, Some(schedule.fast))
        );
        assert_eq!(
            schedule.intervals(Kind::AboveContainers, false),
            (schedule.pod_full, Some(schedule.full))
        );
        assert_eq!(schedule.intervals(Kind::Other, false), (schedule.full, None));
    }
}
