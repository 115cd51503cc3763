//! What the sampler tells the rest of the agent about live cgroups: pre-OOM
//! warnings, the containers' memory now, and the histories frozen for a
//! kill.

use std::time::{Duration, Instant};

use oomlens_proto::v1 as pb;

use super::schedule::effective_limit;
use super::tracked::Tracked;
use super::{Sampler, SamplerConfig, Snapshot};
use crate::cgroup::history::History;
use crate::pods::{CgroupIdentity, Level, parse_cgroup_path};
use oomlens_proto::time::timestamp_from_unix_ms;

/// Containers listed below a limited pod or kubepods cgroup, at most.
const MAX_MEMBERS: usize = 64;

/// A trend a warning can rest on: the working set's slope over `window`,
/// projected to reach the limit within `horizon`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    pub window: Duration,
    pub horizon: Duration,
}

/// When a live container is worth a `MemoryWarning` (docs/metrics.md#warnings):
/// its working set is at least `floor` of its limit, and either the last
/// minute's climb (`fast`) or the last 15 minutes' steady trend (`slow`, a
/// straight line that explains at least `slow_min_r2` of the points, over
/// at least `slow_min_span`) projects it to the limit within that trend's
/// horizon. One warning per container per `min_interval`; one resting on
/// the slow trend alone per `slow_min_interval`.
#[derive(Debug, Clone, Copy)]
pub struct WarningRules {
    pub floor: f64,
    pub fast: Trend,
    pub slow: Trend,
    pub slow_min_r2: f64,
    pub slow_min_span: Duration,
    pub min_interval: Duration,
    pub slow_min_interval: Duration,
}

impl Default for WarningRules {
    fn default() -> Self {
        Self {
            floor: 0.5,
            fast: Trend {
                window: Duration::from_secs(60),
                horizon: Duration::from_secs(15 * 60),
            },
            slow: Trend {
                window: Duration::from_secs(15 * 60),
                horizon: Duration::from_secs(6 * 3600),
            },
            slow_min_r2: 0.6,
            slow_min_span: Duration::from_secs(5 * 60),
            min_interval: Duration::from_secs(60),
            slow_min_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// Where a container's working set is heading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    pub seconds_to_limit: f64,
    /// Bytes per second.
    pub growth: f64,
    /// The trend's window: 60 for the last minute's climb, up to 900 for
    /// the slow trend.
    pub trend_seconds: u32,
    /// Rests on the slow trend alone.
    pub slow: bool,
}

/// The projections of the last minute's climb and of the slow trend (the
/// latter only when it is a clean line over enough time).
fn trends(
    rules: &WarningRules,
    history: &History,
    working_set: u64,
    limit: u64,
) -> (Option<Projection>, Option<Projection>) {
    let remaining = limit.saturating_sub(working_set) as f64;
    let window_ms = u64::try_from(rules.fast.window.as_millis()).unwrap_or(u64::MAX);
    let fast = history
        .recent_growth(window_ms)
        .filter(|g| *g > 0.0)
        .map(|growth| Projection {
            seconds_to_limit: remaining / growth,
            growth,
            trend_seconds: u32::try_from(rules.fast.window.as_secs()).unwrap_or(u32::MAX),
            slow: false,
        });
    let window_s = u32::try_from(rules.slow.window.as_secs()).unwrap_or(u32::MAX);
    // Every 10th second: 90 points for 15 minutes.
    let slow = history
        .long_trend(window_s, 10)
        .filter(|f| {
            f.slope > 0.0 && f.r2 >= rules.slow_min_r2 && f.span_s >= rules.slow_min_span.as_secs_f64()
        })
        .map(|f| Projection {
            seconds_to_limit: remaining / f.slope,
            growth: f.slope,
            trend_seconds: saturating_seconds(f.span_s),
            slow: true,
        });
    (fast, slow)
}

fn sooner(a: Option<Projection>, b: Option<Projection>) -> Option<Projection> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seconds_to_limit < a.seconds_to_limit {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// The soonest projection to `limit` of the two trends, without the floor
/// or the horizons: what `Top` ranks by.
pub(super) fn project(
    rules: &WarningRules,
    history: &History,
    working_set: u64,
    limit: u64,
) -> Option<Projection> {
    let (fast, slow) = trends(rules, history, working_set, limit);
    sooner(fast, slow)
}

fn saturating_seconds(seconds: f64) -> u32 {
    let rounded = seconds.round().clamp(0.0, f64::from(u32::MAX));
    // In range after the clamp.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = rounded as u32;
    whole
}

/// The projection that makes a warning under the rules: above the floor,
/// and within the horizon of the trend it rests on. A fast climb counts
/// only past the highest working set of the slow window before it (by 1%
/// of the limit): the upswing of a garbage collector's sawtooth is not a
/// climb toward the limit.
pub(super) fn warning_projection(
    rules: &WarningRules,
    history: &History,
    working_set: u64,
    limit: u64,
) -> Option<Projection> {
    if limit == 0 || (working_set as f64) < limit as f64 * rules.floor {
        return None;
    }
    let (fast, slow) = trends(rules, history, working_set, limit);
    let fast = fast
        .filter(|p| p.seconds_to_limit <= rules.fast.horizon.as_secs_f64())
        .filter(|_| {
            let window_s = u32::try_from(rules.slow.window.as_secs()).unwrap_or(u32::MAX);
            let fast_s = u32::try_from(rules.fast.window.as_secs()).unwrap_or(u32::MAX);
            history
                .max_working_set_before(window_s, fast_s)
                .is_none_or(|before| working_set > before.saturating_add(limit / 100))
        });
    let slow = slow.filter(|p| p.seconds_to_limit <= rules.slow.horizon.as_secs_f64());
    sooner(fast, slow)
}

impl Sampler {
    fn lookup(&self, path: &str) -> Option<&Tracked> {
        if let Some(&i) = self.index.get(path) {
            return Some(&self.tracked[i]);
        }
        // A sub-cgroup of a container: its container's history.
        let level_path = parse_cgroup_path(path).level_path;
        self.index.get(level_path.as_str()).map(|&i| &self.tracked[i])
    }

    /// Frozen histories up to `until_ms`.
    pub fn snapshot(&self, victim: Option<&str>, oom_memcg: Option<&str>, until_ms: u64) -> Snapshot {
        let interval = u32::try_from(self.config.schedule.fast.as_millis()).unwrap_or(u32::MAX);
        let export = |path: Option<&str>| {
            let tracked = self.lookup(path?)?;
            Some(tracked.history.export(&tracked.path, until_ms, interval))
        };
        let victim_history = export(victim);
        let oom_history = match (oom_memcg, victim_history.as_ref()) {
            (Some(oom), Some(v)) if oom == v.cgroup => None,
            (oom, _) => export(oom),
        };
        let members = match (oom_memcg, victim) {
            (Some(oom), Some(victim)) if oom != victim => self.members(oom, until_ms),
            _ => Vec::new(),
        };
        Snapshot {
            victim: victim_history,
            oom_memcg: oom_history,
            node: self.node_view,
            members,
        }
    }

    /// The followed containers below `memcg`, largest first (at most
    /// [`MAX_MEMBERS`]), with their working set at `until_ms`.
    fn members(&self, memcg: &str, until_ms: u64) -> Vec<pb::ContainerUsage> {
        let prefix = format!("{}/", memcg.trim_end_matches('/'));
        let mut members: Vec<pb::ContainerUsage> = self
            .tracked
            .iter()
            .filter(|t| t.identity.level == Level::Container && t.path.starts_with(&prefix))
            .filter_map(|t| {
                Some(pb::ContainerUsage {
                    cgroup: t.path.clone(),
                    container_id: t.identity.container_id.clone().unwrap_or_default(),
                    name: None,
                    working_set_bytes: Some(t.history.working_set_at(until_ms)?),
                })
            })
            .collect();
        members.sort_by_key(|m| std::cmp::Reverse(m.working_set_bytes));
        members.truncate(MAX_MEMBERS);
        members
    }

    /// Each live container's latest working set, limit (its own, or the
    /// tightest tracked ancestor's) and growth over the last minute.
    pub fn statuses(&self) -> Vec<pb::ContainerMemoryStatus> {
        self.tracked
            .iter()
            .filter(|t| t.removed_at.is_none() && t.identity.level == Level::Container)
            .filter_map(|t| {
                let (t_ms, working_set, _) = t.history.latest()?;
                let limit = effective_limit(t.history.limit(), t.ancestor_limit);
                let projection =
                    limit.and_then(|limit| project(&self.config.warnings, &t.history, working_set, limit));
                let growth =
                    projection.map_or_else(|| t.history.recent_growth(60_000).unwrap_or(0.0), |p| p.growth);
                let seconds_to_limit = projection.map(|p| p.seconds_to_limit);
                let identity = &t.identity;
                Some(pb::ContainerMemoryStatus {
                    node: self.config.node_name.clone(),
                    time: Some(timestamp_from_unix_ms(t_ms)),
                    pod: identity_pod(identity),
                    container: identity_container(identity, &t.path, limit),
                    cgroup: t.path.clone(),
                    working_set_bytes: working_set,
                    limit_bytes: limit,
                    growth_bytes_per_second: growth,
                    seconds_to_limit,
                })
            })
            .collect()
    }
}

/// The pod a followed cgroup belongs to, as far as its path tells.
fn identity_pod(identity: &CgroupIdentity) -> Option<pb::Pod> {
    identity.pod_uid.clone().map(|uid| pb::Pod {
        uid,
        cgroup: identity.pod_cgroup.clone(),
        ..pb::Pod::default()
    })
}

/// The container a followed cgroup is, with the limit that binds it.
fn identity_container(identity: &CgroupIdentity, path: &str, limit: Option<u64>) -> Option<pb::Container> {
    identity.container_id.clone().map(|id| pb::Container {
        id,
        cgroup: Some(path.to_owned()),
        memory_limit_bytes: limit,
        ..pb::Container::default()
    })
}

/// The warning a container's full sample calls for under
/// [`WarningRules`], if any (None too within the rate limits of the last).
/// Also says whether the container is past the rules regardless of the
/// rate limits (the `containers_near_limit` gauge).
pub(super) fn warning_due(
    config: &SamplerConfig,
    tracked: &Tracked,
    now: Instant,
    t_ms: u64,
    working_set: u64,
    limit: Option<u64>,
) -> (Option<pb::MemoryWarning>, bool) {
    let rules = config.warnings;
    let path = tracked.path.as_str();
    let Some(limit) = limit else {
        return (None, false);
    };
    if tracked.identity.level != Level::Container {
        return (None, false);
    }
    let Some(projection) = warning_projection(&rules, &tracked.history, working_set, limit) else {
        return (None, false);
    };
    let interval = if projection.slow {
        rules.slow_min_interval
    } else {
        rules.min_interval
    };
    if tracked
        .last_warning
        .is_some_and(|t| now.duration_since(t) < interval)
    {
        return (None, true);
    }
    let identity = &tracked.identity;
    let container_id = identity.container_id.clone().unwrap_or_default();
    let minute = t_ms / 60_000;
    let warning = pb::MemoryWarning {
        id: oomlens_proto::event_id(&config.node_name, &container_id, minute),
        node: config.node_name.clone(),
        time: Some(timestamp_from_unix_ms(t_ms)),
        pod: identity_pod(identity),
        container: identity_container(identity, path, Some(limit)),
        cgroup: path.to_owned(),
        working_set_bytes: working_set,
        limit_bytes: limit,
        growth_bytes_per_second: projection.growth,
        seconds_to_limit: Some(projection.seconds_to_limit),
        history: Some(tracked.history.export(
            path,
            t_ms,
            u32::try_from(config.schedule.fast.as_millis()).unwrap_or(u32::MAX),
        )),
        trend_seconds: projection.trend_seconds,
    };
    (Some(warning), true)
}

#[cfg(test)]
mod tests;
