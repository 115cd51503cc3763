//! Placing a kill whose report named no cgroup. Pure: the pipeline gathers
//! the evidence (from `/proc`, the sampler) and this decides.
//!
//! Under an OOM storm the kernel rate-limits the report's header, and only
//! `Killed process PID (comm)` reaches the log: no cgroup path. Each kill
//! goes through these states, and every transition is one method here:
//!
//! ```text
//!   reported ──path in the report──────────────────────────────► Placed(Report)
//!      │ no path
//!      ├──the victim's /proc entry names its cgroup──────────────► Placed(Proc)
//!      ├──the sampler saw the pid in a cgroup near its limit─────► Placed(ProcessList)
//!      ▼
//!   Waiting (ATTRIBUTION_WAIT: counters are seen at the next full sample)
//!      ├──the kernel's OOM notices at its moment, unambiguous────► Placed(Notice)
//!      ├──the only OOM counter that stepped with it──────────────► Placed(Counter)
//!      ▼
//!   Unplaced (sent without a path: no answer beats a wrong one)
//! ```
//!
//! A placed kill owns the notices and counter steps of its moment
//! ([`Attributor::placed`]), so a later kill cannot take them; evidence
//! used to place a kill is claimed the same way.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::cgroup::path::is_below;
pub use crate::cgroup::sampler::{CounterStep, OomNotice};

/// How long a kill without a cgroup path waits before it is placed by the
/// sampler's evidence: a counter step is seen at the next full sample
/// (every second, every 50 ms near a limit).
pub const ATTRIBUTION_WAIT: Duration = Duration::from_millis(1300);

/// A rate-limited kill's pid is looked up among processes seen in hot
/// cgroups this long before the kill.
pub const PID_LOOKBACK_MS: u64 = 5_000;

/// An OOM's notices come this close to its kill line: the ones of a placed
/// kill are its own.
const PLACED_NOTICE_US: u64 = 20_000;

/// A counter step is seen at the first full sample after the kill: within
/// the hot interval for a cgroup at its limit, a second otherwise. The
/// window allows for clock skew before and slow samples after.
const STEP_BEFORE_MS: u64 = 200;
const STEP_AFTER_MS: u64 = 2_000;

/// Notices of one OOM arrive within this of each other.
const NOTICE_GROUP_US: u64 = 2_000;
/// Two unrelated OOMs this close make a kill's notice ambiguous.
const NOTICE_AMBIGUITY_US: u64 = 20_000;
/// A notice precedes its kill line; this allows for the two clocks.
const NOTICE_AFTER_KILL_US: u64 = 10_000;
/// Notices are looked for this long before a kill.
const NOTICE_BEFORE_KILL_US: u64 = 2_000_000;
/// Claims older than this can match no kill any more.
const CLAIM_EXPIRY_US: u64 = 10_000_000;
const CLAIM_EXPIRY_MS: u64 = 10_000;
/// Placed kills remembered (far more than a storm's kills in a window).
const PLACED_KEPT: usize = 256;
/// Two counter steps this close are one OOM seen at two levels.
const SAME_STEP_MS: u64 = 100;

/// How a kill was placed: the end state of its attribution, and a metric
/// label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Its report named its cgroup.
    Report,
    /// The victim's `/proc/PID/cgroup`, read while it was dying.
    Proc,
    /// The sampler saw the pid in a cgroup near its limit.
    ProcessList,
    /// The kernel's OOM notices at the kill's moment.
    Notice,
    /// The only OOM-kill counter that stepped with it.
    Counter,
    /// Nothing placed it without a guess.
    Unplaced,
}

impl Placement {
    pub fn word(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Proc => "proc",
            Self::ProcessList => "process_list",
            Self::Notice => "notice",
            Self::Counter => "counter",
            Self::Unplaced => "unplaced",
        }
    }
}

/// Where a kill's notices place it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticePlace {
    /// The limited cgroup, when one notified cgroup is above all the others.
    pub oom_memcg: Option<String>,
    /// The victim's cgroup, when only one leaf was notified.
    pub task_memcg: Option<String>,
}

/// A kill placed in a cgroup, which owns the evidence of its moment.
#[derive(Debug, Clone)]
struct PlacedKill {
    cgroup: String,
    kernel_us: u64,
    unix_ms: u64,
}

/// The attribution state that outlives one kill: kills already placed and
/// evidence already claimed.
#[derive(Debug, Default)]
pub struct Attributor {
    placed: VecDeque<PlacedKill>,
    claimed_notices: HashSet<OomNotice>,
    claimed_steps: HashSet<CounterStep>,
}

impl Attributor {
    /// A kill was placed in `cgroup` (by any means): the notices and steps
    /// of its moment are its own.
    pub fn placed(&mut self, cgroup: &str, kernel_us: u64, unix_ms: u64) {
        self.placed.push_back(PlacedKill {
            cgroup: cgroup.to_owned(),
            kernel_us,
            unix_ms,
        });
        while self.placed.len() > PLACED_KEPT {
            self.placed.pop_front();
        }
    }

    /// The kernel-time window to ask the sampler's notices for.
    pub fn notice_window(kill_us: u64) -> (u64, u64) {
        (kill_us.saturating_sub(NOTICE_BEFORE_KILL_US), kill_us + 50_000)
    }

    /// The Unix-time window to ask the sampler's counter steps for.
    pub fn step_window(kill_ms: u64) -> (u64, u64) {
        (kill_ms.saturating_sub(STEP_BEFORE_MS), kill_ms + STEP_AFTER_MS)
    }

    /// Waiting → Placed(Notice): the latest unclaimed notice at (or just
    /// before) the kill, with the notices of the same OOM, unless another
    /// cgroup's OOM came too close to tell. Claims what it uses.
    pub fn place_by_notices(&mut self, kill_us: u64, notices: Vec<OomNotice>) -> Option<NoticePlace> {
        self.claimed_notices
            .retain(|n| n.at_us + CLAIM_EXPIRY_US > kill_us);
        let notices: Vec<OomNotice> = notices
            .into_iter()
            .filter(|n| {
                !self.owned_by_placed_kill(&n.cgroup, |kill| {
                    n.at_us.abs_diff(kill.kernel_us) <= PLACED_NOTICE_US
                })
            })
            .collect();
        let group = match_notice(&notices, kill_us, &self.claimed_notices)?;
        let place = group.place();
        self.claimed_notices.extend(group.notices);
        Some(place)
    }

    /// Waiting → Placed(Counter): the only unclaimed leaf-most step in the
    /// window. Claims it.
    pub fn place_by_steps(&mut self, kill_ms: u64, steps: Vec<CounterStep>) -> Result<String, usize> {
        self.claimed_steps.retain(|s| s.at_ms + CLAIM_EXPIRY_MS > kill_ms);
        let steps: Vec<CounterStep> = steps
            .into_iter()
            .filter(|s| {
                !self.owned_by_placed_kill(&s.cgroup, |kill| {
                    (kill.unix_ms.saturating_sub(STEP_BEFORE_MS)..=kill.unix_ms + STEP_AFTER_MS)
                        .contains(&s.at_ms)
                })
            })
            .collect();
        let candidates = steps.len();
        let step = match_step(&steps, &self.claimed_steps).ok_or(candidates)?;
        let cgroup = step.cgroup.clone();
        self.claimed_steps.insert(step);
        Ok(cgroup)
    }

    /// Whether evidence at `path` belongs to a kill already placed there
    /// (or below, for an ancestor's evidence) that `near` matches.
    fn owned_by_placed_kill(&self, path: &str, near: impl Fn(&PlacedKill) -> bool) -> bool {
        self.placed
            .iter()
            .any(|kill| (kill.cgroup == path || is_below(&kill.cgroup, path)) && near(kill))
    }
}

/// The step that belongs to a kill: the only unclaimed leaf-most one in
/// the window (on cgroup v2 the ancestors' counters step with the victim's
/// cgroup). A step is seen at the next full sample, up to a second after
/// its kill, so with several candidates the order tells nothing: then no
/// attribution, rather than a guess.
fn match_step(steps: &[CounterStep], claimed: &HashSet<CounterStep>) -> Option<CounterStep> {
    let free: Vec<&CounterStep> = steps.iter().filter(|s| !claimed.contains(*s)).collect();
    let mut leaves = free.iter().filter(|step| {
        !free.iter().any(|other| {
            is_below(&other.cgroup, &step.cgroup) && other.at_ms.abs_diff(step.at_ms) <= SAME_STEP_MS
        })
    });
    let only = leaves.next()?;
    leaves.next().is_none().then(|| (*only).clone())
}

/// The notices of one OOM: the limited cgroup and its descendants, notified
/// at the same moment.
#[derive(Debug, PartialEq, Eq)]
struct NoticeGroup {
    notices: Vec<OomNotice>,
}

impl NoticeGroup {
    /// The shallowest notified cgroup is the limit if it is an ancestor of
    /// all the others; the only leaf, if there is one, is the victim's
    /// (several leaves: the victim could be in any of them).
    fn place(&self) -> NoticePlace {
        let mut paths: Vec<&str> = self.notices.iter().map(|n| n.cgroup.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        let shallowest = paths.iter().min_by_key(|p| p.matches('/').count()).copied();
        let oom = shallowest.filter(|top| paths.iter().all(|p| p == top || is_below(p, top)));
        let mut leaves = paths
            .iter()
            .filter(|p| !paths.iter().any(|other| is_below(other, p)));
        let task = match (leaves.next(), leaves.next()) {
            (Some(only), None) => Some((*only).to_owned()),
            _ => None,
        };
        NoticePlace {
            oom_memcg: oom.map(str::to_owned),
            task_memcg: task,
        }
    }
}

/// The OOM notification of a kill: the latest unclaimed notice at (or just
/// before) the kill's kernel time, with the notices of the same OOM.
fn match_notice(notices: &[OomNotice], kill_us: u64, claimed: &HashSet<OomNotice>) -> Option<NoticeGroup> {
    let free: Vec<&OomNotice> = notices
        .iter()
        .filter(|n| !claimed.contains(*n) && n.at_us <= kill_us + NOTICE_AFTER_KILL_US)
        .collect();
    let latest = free.iter().map(|n| n.at_us).max()?;
    let (group, others): (Vec<&OomNotice>, Vec<&OomNotice>) = free
        .into_iter()
        .partition(|n| latest - n.at_us <= NOTICE_GROUP_US);
    // Another cgroup's OOM this close (a storm): which one this kill
    // belongs to is a guess, and no answer is better than a wrong one.
    let related = |path: &str| {
        group
            .iter()
            .any(|n| n.cgroup == path || is_below(&n.cgroup, path) || is_below(path, &n.cgroup))
    };
    let (same_oom, rivals): (Vec<&OomNotice>, Vec<&OomNotice>) = others
        .into_iter()
        .filter(|n| latest - n.at_us <= NOTICE_AMBIGUITY_US)
        .partition(|n| related(&n.cgroup));
    if !rivals.is_empty() {
        return None;
    }
    // The kernel's retries of the same OOM belong to this kill too.
    Some(NoticeGroup {
        notices: group.into_iter().chain(same_oom).cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(cgroup: &str, at_us: u64) -> OomNotice {
        OomNotice {
            cgroup: cgroup.to_owned(),
            at_us,
        }
    }

    fn step(cgroup: &str, at_ms: u64) -> CounterStep {
        CounterStep {
            cgroup: cgroup.to_owned(),
            at_ms,
        }
    }

    #[test]
    fn only_an_unambiguous_step_is_matched() {
        let mut claimed = HashSet::new();
        // v2: the pod's counter steps with its container's.
        let one = vec![step("/kubepods/pod1", 1_050), step("/kubepods/pod1/c1", 1_050)];
        assert_eq!(match_step(&one, &claimed), Some(step("/kubepods/pod1/c1", 1_050)));
        // Two containers stepped in the window: no guess.
        let two = vec![step("/kubepods/pod1/c1", 1_050), step("/kubepods/pod2/c2", 1_100)];
        assert_eq!(match_step(&two, &claimed), None);
        // Once one of them is claimed by its own kill, the other is clear.
        claimed.insert(step("/kubepods/pod1/c1", 1_050));
        assert_eq!(match_step(&two, &claimed), Some(step("/kubepods/pod2/c2", 1_100)));
    }

    #[test]
    fn notices_place_the_limit_and_the_victim() {
        let claimed = HashSet::new();
        // A container-limit OOM: only the container is notified.
        let container = vec![notice("/kubepods/pod1/c1", 5_000_000)];
        let group = match_notice(&container, 5_000_300, &claimed).expect("a notice");
        assert_eq!(
            group.place(),
            NoticePlace {
                oom_memcg: Some("/kubepods/pod1/c1".to_owned()),
                task_memcg: Some("/kubepods/pod1/c1".to_owned())
            }
        );
        // A pod-limit OOM of a pod with two containers: the pod is the
        // limit, the victim could be in either container.
        let pod = vec![
            notice("/kubepods/pod2", 7_000_000),
            notice("/kubepods/pod2/a", 7_000_010),
            notice("/kubepods/pod2/b", 7_000_020),
        ];
        let group = match_notice(&pod, 7_000_500, &claimed).expect("notices");
        assert_eq!(
            group.place(),
            NoticePlace {
                oom_memcg: Some("/kubepods/pod2".to_owned()),
                task_memcg: None
            }
        );
        // In a storm each kill takes the latest notice before it.
        let storm = vec![notice("/k/p/c1", 1_000_000), notice("/k/p/c2", 1_020_000)];
        let first = match_notice(&storm, 1_000_200, &claimed).expect("c1");
        assert_eq!(first.place().task_memcg.as_deref(), Some("/k/p/c1"));
        let mut claimed = claimed;
        claimed.extend(first.notices);
        let second = match_notice(&storm, 1_020_150, &claimed).expect("c2");
        assert_eq!(second.place().task_memcg.as_deref(), Some("/k/p/c2"));
        // Nothing before the kill: no match.
        assert_eq!(match_notice(&storm, 900_000, &HashSet::new()), None);
        // Two containers' OOMs 5 ms apart: either could be this kill's.
        let tight = vec![notice("/k/p/c1", 1_000_000), notice("/k/p/c2", 1_005_000)];
        assert_eq!(match_notice(&tight, 1_005_200, &HashSet::new()), None);
        // Repeated notices of one OOM (the kernel retries while the victim
        // exits) are no rival.
        let repeated = vec![notice("/k/p/c1", 1_000_000), notice("/k/p/c1", 1_004_000)];
        let group = match_notice(&repeated, 1_004_100, &HashSet::new()).expect("c1");
        assert_eq!(group.place().task_memcg.as_deref(), Some("/k/p/c1"));
        assert_eq!(group.notices.len(), 2, "both claimed with the kill");
    }

    #[test]
    fn placed_kills_keep_their_evidence_and_claims_expire() {
        let mut attributor = Attributor::default();
        // c1's kill was placed by its report; its notice is its own.
        attributor.placed("/k/p/c1", 1_000_000, 50_000);
        let notices = vec![notice("/k/p/c1", 1_000_100)];
        assert_eq!(attributor.place_by_notices(1_000_300, notices.clone()), None);
        // A pod's notice at the same moment belongs to the placed kill below it.
        let pod = vec![notice("/k/p", 1_000_050)];
        assert_eq!(attributor.place_by_notices(1_000_300, pod), None);
        // c2's step, unclaimed, places a kill once; the second kill finds it taken.
        let steps = vec![step("/k/p/c2", 60_500)];
        assert_eq!(
            attributor.place_by_steps(60_000, steps.clone()),
            Ok("/k/p/c2".to_owned())
        );
        assert_eq!(attributor.place_by_steps(60_100, steps.clone()), Err(1));
        // Long after, the claim has expired (and the step would be out of
        // any real window anyway).
        assert_eq!(attributor.place_by_steps(80_000, steps), Ok("/k/p/c2".to_owned()));
        // The placed kill's step, in its window, is its own.
        let own = vec![step("/k/p/c1", 50_400)];
        assert_eq!(attributor.place_by_steps(50_100, own), Err(0));
    }
}
