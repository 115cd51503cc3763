//! What the sampler tells the rest of the agent about live cgroups: pre-OOM
//! warnings, the containers' memory now, and the histories frozen for a
//! kill.

use std::time::{Duration, Instant};

use oomlens_proto::v1 as pb;

use super::schedule::effective_limit;
use super::tracked::Tracked;
use super::{Sampler, SamplerConfig, Snapshot};
use crate::pods::{CgroupIdentity, Level, parse_cgroup_path};
use oomlens_proto::time::timestamp_from_unix_ms;

/// Containers listed below a limited pod or kubepods cgroup, at most.
const MAX_MEMBERS: usize = 64;

/// When a live container is worth a `MemoryWarning`.
#[derive(Debug, Clone, Copy)]
pub struct WarningRules {
    /// Working set above this fraction of the limit...
    pub ratio: f64,
    /// ...and projected to reach it within this many seconds.
    pub horizon_s: f64,
    /// At most one warning per container per this interval.
    pub min_interval: Duration,
}

impl Default for WarningRules {
    fn default() -> Self {
        Self {
            ratio: 0.9,
            horizon_s: 300.0,
            min_interval: Duration::from_secs(60),
        }
    }
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
                let growth = t.history.recent_growth(60_000).unwrap_or(0.0);
                let seconds_to_limit = match limit {
                    Some(limit) if growth > 0.0 => Some(limit.saturating_sub(working_set) as f64 / growth),
                    _ => None,
                };
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
/// [`WarningRules`], if any (None too within `min_interval` of the last).
pub(super) fn warning_due(
    config: &SamplerConfig,
    tracked: &Tracked,
    now: Instant,
    t_ms: u64,
    working_set: u64,
    limit: Option<u64>,
) -> Option<pb::MemoryWarning> {
    let rules = config.warnings;
    let path = tracked.path.as_str();
    let limit = limit?;
    if tracked.identity.level != Level::Container || (working_set as f64) < limit as f64 * rules.ratio {
        return None;
    }
    if tracked
        .last_warning
        .is_some_and(|t| now.duration_since(t) < rules.min_interval)
    {
        return None;
    }
    let growth = tracked.history.recent_growth(60_000)?;
    if growth <= 0.0 {
        return None;
    }
    let seconds_to_limit = limit.saturating_sub(working_set) as f64 / growth;
    if seconds_to_limit > rules.horizon_s {
        return None;
    }
    let identity = &tracked.identity;
    let container_id = identity.container_id.clone().unwrap_or_default();
    let minute = t_ms / 60_000;
    Some(pb::MemoryWarning {
        id: oomlens_proto::event_id(&config.node_name, &container_id, minute),
        node: config.node_name.clone(),
        time: Some(timestamp_from_unix_ms(t_ms)),
        pod: identity_pod(identity),
        container: identity_container(identity, path, Some(limit)),
        cgroup: path.to_owned(),
        working_set_bytes: working_set,
        limit_bytes: limit,
        growth_bytes_per_second: growth,
        seconds_to_limit: Some(seconds_to_limit),
        history: Some(tracked.history.export(
            path,
            t_ms,
            u32::try_from(config.schedule.fast.as_millis()).unwrap_or(u32::MAX),
        )),
    })
}
