//! `oomlens_agent_container_oom_kills_total`: kills per container, the
//! counter to alert on. kube-state-metrics' last-terminated reason is a
//! gauge that misses repeated kills and silent ones; cAdvisor's OOM counter
//! vanishes with its container. This one counts every kill, and a series
//! stays [`SERIES_GRACE`] after its pod's cgroup is gone, so an alert's
//! window sees it; then it is dropped, which bounds the series by the
//! node's pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use oomlens_proto::v1::OomEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How long a series outlives its pod's cgroup.
pub const SERIES_GRACE: Duration = Duration::from_secs(15 * 60);
/// How often the agent looks for pods that are gone.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerKillLabels {
    pub namespace: String,
    /// The pod's name, or its uid when the runtime did not name it.
    pub pod: String,
    /// The container's name, or the first 12 digits of its id.
    pub container: String,
    /// `Scope` as its JSON word.
    pub scope: String,
    /// `true` (a child killed in a container that lived on), `false`, or
    /// empty when unknown.
    pub silent: String,
}

#[derive(Debug)]
struct Life {
    /// The cgroup whose disappearance ends the series: the pod's.
    cgroup: Option<String>,
    gone_since: Option<Instant>,
    last_kill: Instant,
}

/// The counter and what decides when each series goes.
#[derive(Debug, Clone, Default)]
pub struct ContainerKills {
    family: Family<ContainerKillLabels, Counter>,
    lives: Arc<Mutex<HashMap<ContainerKillLabels, Life>>>,
}

impl ContainerKills {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "container_oom_kills",
            "OOM kills of a pod's processes, by namespace, pod, container, scope and silent \
             (series kept 15 minutes after the pod's cgroup is gone)",
            self.family.clone(),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerKillLabels, Life>> {
        self.lives.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a kill of a pod's process; kills outside pods are not
    /// counted here (`oom_kills_total` has them).
    pub fn record(&self, event: &OomEvent, scope: &str, now: Instant) {
        let Some(labels) = labels(event, scope) else {
            return;
        };
        let cgroup = event
            .pod
            .as_ref()
            .and_then(|p| p.cgroup.clone())
            .or_else(|| event.task_memcg.clone());
        self.family.get_or_create(&labels).inc();
        let mut lives = self.lock();
        let life = lives.entry(labels).or_insert(Life {
            cgroup: None,
            gone_since: None,
            last_kill: now,
        });
        life.last_kill = now;
        life.gone_since = None;
        if cgroup.is_some() {
            life.cgroup = cgroup;
        }
    }

    /// Drops the series whose pod's cgroup has been gone for `grace` (those
    /// with no cgroup known: `grace` after their last kill). `exists` says
    /// whether a cgroup path still exists. Returns how many went.
    pub fn prune(&self, now: Instant, grace: Duration, exists: impl Fn(&str) -> bool) -> usize {
        let mut lives = self.lock();
        let mut gone = Vec::new();
        for (labels, life) in lives.iter_mut() {
            let alive = life.cgroup.as_deref().is_some_and(&exists);
            if alive {
                life.gone_since = None;
                continue;
            }
            let since = *life.gone_since.get_or_insert(if life.cgroup.is_some() {
                now
            } else {
                life.last_kill
            });
            if now.saturating_duration_since(since) >= grace {
                gone.push(labels.clone());
            }
        }
        for labels in &gone {
            lives.remove(labels);
            self.family.remove(labels);
        }
        gone.len()
    }

    /// The count of one series (0 when absent).
    pub fn count(&self, labels: &ContainerKillLabels) -> u64 {
        if self.lock().contains_key(labels) {
            self.family.get_or_create(labels).get()
        } else {
            0
        }
    }

    /// Series alive.
    pub fn series(&self) -> usize {
        self.lock().len()
    }
}

/// The series of a kill; None outside pods.
pub fn labels(event: &OomEvent, scope: &str) -> Option<ContainerKillLabels> {
    let pod = event.pod.as_ref()?;
    let pod_name = pod
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| pod.uid.clone());
    if pod_name.is_empty() {
        return None;
    }
    let container = event.container.as_ref().map_or_else(String::new, |c| {
        c.name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| c.id.chars().take(12).collect())
    });
    Some(ContainerKillLabels {
        namespace: pod.namespace.clone().unwrap_or_default(),
        pod: pod_name,
        container,
        scope: scope.to_owned(),
        silent: event.silent.map_or_else(String::new, |s| s.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use oomlens_proto::v1::{Container, Pod};

    use super::*;

    fn kill(pod: &str, silent: Option<bool>) -> OomEvent {
        OomEvent {
            pod: Some(Pod {
                uid: format!("uid-{pod}"),
                name: Some(pod.to_owned()),
                namespace: Some("shop".to_owned()),
                cgroup: Some(format!("/kubepods/pod-{pod}")),
                ..Pod::default()
            }),
            container: Some(Container {
                id: "0123456789abcdef".to_owned(),
                name: Some("api".to_owned()),
                ..Container::default()
            }),
            silent,
            ..OomEvent::default()
        }
    }

    #[test]
    fn every_kill_counts_and_a_series_goes_a_grace_after_its_pod() {
        let kills = ContainerKills::default();
        let t0 = Instant::now();
        kills.record(&kill("api-1", Some(false)), "container_limit", t0);
        kills.record(&kill("api-1", Some(false)), "container_limit", t0);
        kills.record(&kill("api-2", Some(true)), "container_limit", t0);
        let mut host = kill("x", None);
        host.pod = None;
        kills.record(&host, "other_cgroup", t0);
        let one = labels(&kill("api-1", Some(false)), "container_limit").unwrap();
        assert_eq!(kills.count(&one), 2);
        assert_eq!(kills.series(), 2);
        let grace = Duration::from_secs(900);
        // api-1's pod is gone, api-2's lives on.
        let exists = |cgroup: &str| cgroup.ends_with("api-2");
        assert_eq!(kills.prune(t0 + Duration::from_secs(60), grace, exists), 0);
        assert_eq!(kills.prune(t0 + Duration::from_secs(959), grace, exists), 0);
        assert_eq!(kills.prune(t0 + Duration::from_secs(960), grace, exists), 1);
        assert_eq!(kills.count(&one), 0);
        assert_eq!(kills.series(), 1);
        let mut registry = Registry::default();
        kills.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"container_oom_kills_total{namespace="shop",pod="api-2",container="api",scope="container_limit",silent="true"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("api-1"), "{text}");
    }

    #[test]
    fn unnamed_pods_and_containers_are_labelled_by_their_ids() {
        let mut event = kill("p", None);
        event.pod.as_mut().unwrap().name = None;
        event.container.as_mut().unwrap().name = None;
        let labels = labels(&event, "pod_limit").unwrap();
        assert_eq!(
            (
                labels.pod.as_str(),
                labels.container.as_str(),
                labels.silent.as_str()
            ),
            ("uid-p", "0123456789ab", "")
        );
    }
}
