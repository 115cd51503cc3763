//! The latest memory status of each live container, for `Top`: by (node,
//! cgroup), kept while agents keep reporting it. Bounded: entries older
//! than [`STATUS_TTL`] are pruned on a timer, and at most
//! [`MAX_STATUSES`] containers are kept (statuses of new containers
//! beyond that are dropped and counted until room frees).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use oomlens_proto::v1::ContainerMemoryStatus;

/// Containers projected to reach their limit within this long rank by
/// that time in `Top`, ahead of the rest.
pub(super) const TOP_HORIZON_SECONDS: f64 = 6.0 * 3600.0;

/// `Top`'s order: containers projected to reach their limit within
/// [`TOP_HORIZON_SECONDS`], soonest first; then the others, the largest
/// fraction of their limit first.
pub(super) fn closest_first(a: &ContainerMemoryStatus, b: &ContainerMemoryStatus) -> std::cmp::Ordering {
    let soon = |s: &ContainerMemoryStatus| s.seconds_to_limit.filter(|t| *t <= TOP_HORIZON_SECONDS);
    let ratio =
        |s: &ContainerMemoryStatus| s.working_set_bytes as f64 / s.limit_bytes.unwrap_or(1).max(1) as f64;
    match (soon(a), soon(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => ratio(b).total_cmp(&ratio(a)),
    }
}

/// A container not reported for this long is gone (agents report every
/// few seconds).
pub const STATUS_TTL: Duration = Duration::from_secs(30);
/// Containers tracked across the cluster by default (about 1 KiB each;
/// `--max-container-statuses` changes it).
pub const MAX_STATUSES: usize = 100_000;

type Entries = HashMap<(String, String), (Instant, ContainerMemoryStatus)>;

#[derive(Debug, Default)]
struct Board {
    entries: Entries,
    /// When a full board last pruned itself for a new container, and how
    /// many times it has.
    pruned_at: Option<Instant>,
    prunes_when_full: u64,
}

#[derive(Debug, Default)]
pub(super) struct StatusBoard {
    board: Mutex<Board>,
    max: usize,
}

/// A full board prunes itself for a new container at most this often: a
/// prune walks every entry, and a flood of new containers must not make
/// each of them pay for one.
const PRUNE_WHEN_FULL_EVERY: Duration = Duration::from_secs(1);

/// What [`StatusBoard::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recorded {
    Kept,
    /// A new container with the board full.
    Dropped,
}

impl StatusBoard {
    pub(super) fn new(max: usize) -> Self {
        Self {
            board: Mutex::default(),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn record(&self, status: ContainerMemoryStatus, now: Instant) -> Recorded {
        let key = (status.node.clone(), status.cgroup.clone());
        let mut board = self.lock();
        if board.entries.len() >= self.max && !board.entries.contains_key(&key) {
            let due = board
                .pruned_at
                .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_WHEN_FULL_EVERY);
            if due {
                board
                    .entries
                    .retain(|_, (seen, _)| now.saturating_duration_since(*seen) < STATUS_TTL);
                board.pruned_at = Some(now);
                board.prunes_when_full += 1;
            }
            if board.entries.len() >= self.max {
                return Recorded::Dropped;
            }
        }
        board.entries.insert(key, (now, status));
        Recorded::Kept
    }

    /// Forgets containers not reported within [`STATUS_TTL`]; how many
    /// remain.
    pub(super) fn prune(&self, now: Instant) -> usize {
        let mut board = self.lock();
        board
            .entries
            .retain(|_, (seen, _)| now.saturating_duration_since(*seen) < STATUS_TTL);
        board.entries.len()
    }

    /// The live statuses that pass `keep`.
    pub(super) fn live(
        &self,
        now: Instant,
        keep: impl Fn(&ContainerMemoryStatus) -> bool,
    ) -> Vec<ContainerMemoryStatus> {
        self.lock()
            .entries
            .values()
            .filter(|(seen, _)| now.duration_since(*seen) < STATUS_TTL)
            .map(|(_, status)| status)
            .filter(|status| keep(status))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_ranks_by_time_to_the_limit_then_by_fraction() {
        let with = |name: &str, working_set: u64, seconds: Option<f64>| ContainerMemoryStatus {
            cgroup: name.to_owned(),
            working_set_bytes: working_set,
            limit_bytes: Some(100),
            seconds_to_limit: seconds,
            ..ContainerMemoryStatus::default()
        };
        let mut statuses = [
            with("full-flat", 99, None),
            with("leak-5h", 60, Some(5.0 * 3600.0)),
            with("climb-30s", 55, Some(30.0)),
            with("slow-2d", 97, Some(2.0 * 86_400.0)),
            with("half", 50, None),
        ];
        statuses.sort_by(closest_first);
        let order: Vec<&str> = statuses.iter().map(|s| s.cgroup.as_str()).collect();
        assert_eq!(order, ["climb-30s", "leak-5h", "full-flat", "slow-2d", "half"]);
    }

    fn status(node: &str, cgroup: &str) -> ContainerMemoryStatus {
        ContainerMemoryStatus {
            node: node.into(),
            cgroup: cgroup.into(),
            ..ContainerMemoryStatus::default()
        }
    }

    #[test]
    fn the_board_is_capped_and_pruned_by_age() {
        let board = StatusBoard::new(3);
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(
                board.record(status("n", &format!("/c{n}")), start),
                Recorded::Kept
            );
        }
        assert_eq!(board.record(status("n", "/c3"), start), Recorded::Dropped);
        // A container already on the board is still updated.
        assert_eq!(board.record(status("n", "/c0"), start), Recorded::Kept);
        let later = start + STATUS_TTL + Duration::from_secs(1);
        assert_eq!(
            board.live(later, |_| true).len(),
            0,
            "stale entries are not shown"
        );
        assert_eq!(
            board.record(status("n", "/c3"), later),
            Recorded::Kept,
            "stale entries make room"
        );
        assert_eq!(board.prune(later), 1);
    }

    #[test]
    fn a_flood_of_new_containers_on_a_full_board_prunes_at_most_once_a_second() {
        let board = StatusBoard::new(1000);
        let start = Instant::now();
        for n in 0..1000 {
            board.record(status("n", &format!("/c{n}")), start);
        }
        // 200,000 new containers at once: without the rate limit each
        // would walk the 1,000 entries.
        for n in 0..200_000 {
            assert_eq!(
                board.record(status("m", &format!("/f{n}")), start),
                Recorded::Dropped
            );
        }
        assert_eq!(board.lock().prunes_when_full, 1, "one prune for the whole flood");
        // A second later, the next new container may prune again.
        let later = start + PRUNE_WHEN_FULL_EVERY;
        board.record(status("m", "/late"), later);
        assert_eq!(board.lock().prunes_when_full, 2);
    }
}
