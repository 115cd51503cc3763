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

/// Where a container stands in `Top`: its projected seconds to the limit
/// when within [`TOP_HORIZON_SECONDS`], and its fraction of the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Standing {
    soon: Option<f64>,
    fraction: f64,
}

impl Standing {
    pub(super) fn of(s: &ContainerMemoryStatus) -> Self {
        Self {
            soon: s.seconds_to_limit.filter(|t| *t <= TOP_HORIZON_SECONDS),
            fraction: s.working_set_bytes as f64 / s.limit_bytes.unwrap_or(1).max(1) as f64,
        }
    }

    /// `Top`'s order: containers projected to reach their limit within
    /// [`TOP_HORIZON_SECONDS`], soonest first; then the others, the
    /// largest fraction of their limit first.
    pub(super) fn order(&self, other: &Self) -> std::cmp::Ordering {
        match (self.soon, other.soon) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => other.fraction.total_cmp(&self.fraction),
        }
    }
}

/// `Top`'s order of two statuses ([`Standing::order`]).
pub(super) fn closest_first(a: &ContainerMemoryStatus, b: &ContainerMemoryStatus) -> std::cmp::Ordering {
    Standing::of(a).order(&Standing::of(b))
}

/// The first `limit` of `items` in `order`, sorted (a partial selection:
/// `Top` ranks hundreds of thousands of containers to show a few).
pub(super) fn first_by<T>(
    mut items: Vec<T>,
    limit: usize,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    if items.len() > limit && limit > 0 {
        items.select_nth_unstable_by(limit - 1, &order);
    }
    items.truncate(limit);
    items.sort_by(order);
    items
}

/// A status's sample time, to tell which of two views of a node is newer.
pub(super) fn sample_time(s: &ContainerMemoryStatus) -> Option<(i64, i32)> {
    s.time.as_ref().map(|t| (t.seconds, t.nanos))
}

/// A container not reported for this long is gone (agents report every
/// few seconds).
pub const STATUS_TTL: Duration = Duration::from_secs(30);
/// Containers tracked by default (about 1 KiB each;
/// `--max-container-statuses` changes it): within the 1 GiB a collector
/// is given by default. A replica serving a third of 5,000 nodes with
/// 110 pods each needs 200,000 and more memory (docs/scale.md).
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

    /// The first `limit` live statuses that pass `keep`, in `Top`'s
    /// order; only those are copied.
    pub(super) fn top(
        &self,
        now: Instant,
        keep: impl Fn(&ContainerMemoryStatus) -> bool,
        limit: usize,
    ) -> Vec<ContainerMemoryStatus> {
        let board = self.lock();
        let live: Vec<&ContainerMemoryStatus> = board
            .entries
            .values()
            .filter(|(seen, _)| now.saturating_duration_since(*seen) < STATUS_TTL)
            .map(|(_, status)| status)
            .filter(|status| keep(status))
            .collect();
        first_by(live, limit, |a, b| closest_first(a, b))
            .into_iter()
            .cloned()
            .collect()
    }

    /// Each node with live statuses, and the newest sample time among them.
    pub(super) fn newest_by_node(&self, now: Instant) -> HashMap<String, Option<(i64, i32)>> {
        let board = self.lock();
        let mut newest: HashMap<String, Option<(i64, i32)>> = HashMap::new();
        for (seen, status) in board.entries.values() {
            if now.saturating_duration_since(*seen) < STATUS_TTL {
                let time = sample_time(status);
                let held = newest.entry(status.node.clone()).or_insert(time);
                *held = (*held).max(time);
            }
        }
        newest
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

    #[test]
    fn top_selects_what_a_full_sort_would_show() {
        let board = StatusBoard::new(10_000);
        let now = Instant::now();
        for n in 0..5_000u64 {
            board.record(
                ContainerMemoryStatus {
                    node: format!("node-{}", n % 7),
                    cgroup: format!("/c{n}"),
                    working_set_bytes: (n * 7919) % 10_007,
                    limit_bytes: Some(10_007),
                    seconds_to_limit: (n % 97 == 0).then_some((n % 13) as f64 * 60.0),
                    ..ContainerMemoryStatus::default()
                },
                now,
            );
        }
        let mut everything = board.top(now, |_| true, usize::MAX);
        assert_eq!(everything.len(), 5_000);
        everything.sort_by(closest_first);
        // Ties may come in any order: compare where each stands.
        let first: Vec<Standing> = board.top(now, |_| true, 20).iter().map(Standing::of).collect();
        let expected: Vec<Standing> = everything.iter().take(20).map(Standing::of).collect();
        assert_eq!(first.len(), 20);
        for (got, want) in first.iter().zip(&expected) {
            assert_eq!(
                got.order(want),
                std::cmp::Ordering::Equal,
                "{got:?} in place of {want:?}"
            );
        }
        let newest = board.newest_by_node(now);
        assert_eq!(newest.len(), 7);
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
            board.top(later, |_| true, 1000).len(),
            0,
            "stale entries are not shown"
        );
        assert!(board.newest_by_node(later).is_empty());
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
