//! Optional enrichment from the Kubernetes API: the workload that owns a
//! pod (through ReplicaSets to Deployments, through Jobs to CronJobs),
//! memory requests and limits, and each container's role (main, init,
//! native sidecar, ephemeral).
//!
//! Pods come from a reflector scoped to this node by field selector
//! (`spec.nodeName`), trimmed of what is never read; owners are fetched on
//! demand and cached. Everything that turns an API object into oomlens
//! facts is a pure function, tested on recorded objects.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use oomlens_common::units::saturating_u64;
use oomlens_proto::v1 as pb;
use tracing::{debug, info, warn};

/// Owners are re-read after this long.
const OWNER_TTL: Duration = Duration::from_secs(600);

/// (namespace, kind, name) of a controller.
type ControllerKey = (String, String, String);
/// The workload behind it as (kind, name), and when that was learned.
type CachedOwner = (Option<(String, String)>, Instant);

/// A container's place in its pod, from the pod spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub role: pb::ContainerRole,
    pub memory_limit: Option<u64>,
    pub memory_request: Option<u64>,
}

/// What oomlens takes from a pod object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The controlling owner reference as (kind, name), before following
    /// ReplicaSets and Jobs.
    pub owner: Option<(String, String)>,
    /// Sums over the regular containers; None when any lacks the value.
    pub memory_limit: Option<u64>,
    pub memory_request: Option<u64>,
    pub containers: HashMap<String, ContainerSpec>,
    /// Runtime container id (without `containerd://`) -> container name.
    pub container_ids: HashMap<String, String>,
}

/// A Kubernetes memory quantity in bytes: `128Mi`, `1Gi`, `500M`, `1e9`,
/// `100k`, `12345`. None for anything else (never a guess).
pub fn parse_memory_quantity(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "m" => 1e-3,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then(|| saturating_u64(bytes.ceil()))
}

fn memory(container: &Container, which: &str) -> Option<u64> {
    let resources = container.resources.as_ref()?;
    let map = if which == "limits" {
        resources.limits.as_ref()?
    } else {
        resources.requests.as_ref()?
    };
    parse_memory_quantity(&map.get("memory")?.0)
}

fn controller(references: &[OwnerReference]) -> Option<&OwnerReference> {
    references
        .iter()
        .find(|r| r.controller == Some(true))
        .or(references.first())
}

/// The facts of a pod object.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let mut containers = HashMap::new();
    let spec = pod.spec.as_ref();
    let regular = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    for c in regular {
        containers.insert(
            c.name.clone(),
            ContainerSpec {
                role: pb::ContainerRole::Main,
                memory_limit: memory(c, "limits"),
                memory_request: memory(c, "requests"),
            },
        );
    }
    for c in spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
    {
        // A native sidecar is an init container that keeps running.
        let role = if c.restart_policy.as_deref() == Some("Always") {
            pb::ContainerRole::Sidecar
        } else {
            pb::ContainerRole::Init
        };
        containers.insert(
            c.name.clone(),
            ContainerSpec {
                role,
                memory_limit: memory(c, "limits"),
                memory_request: memory(c, "requests"),
            },
        );
    }
    for c in spec
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
    {
        containers.insert(
            c.name.clone(),
            ContainerSpec {
                role: pb::ContainerRole::Ephemeral,
                memory_limit: None,
                memory_request: None,
            },
        );
    }
    let sum = |which: &str| -> Option<u64> { regular.iter().map(|c| memory(c, which)).sum() };
    let status = pod.status.as_ref();
    let container_ids = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .chain(s.ephemeral_container_statuses.iter().flatten())
        })
        .filter_map(|s| {
            let id = s.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((id.to_owned(), s.name.clone()))
        })
        .collect();
    PodFacts {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        name: pod.name_any(),
        namespace: pod.namespace().unwrap_or_default(),
        owner: pod
            .metadata
            .owner_references
            .as_deref()
            .and_then(controller)
            .map(|r| (r.kind.clone(), r.name.clone())),
        memory_limit: sum("limits"),
        memory_request: sum("requests"),
        containers,
        container_ids,
    }
}

/// Adds the API's facts to an event; `owner` is the workload after
/// following ReplicaSets and Jobs.
pub fn apply_facts(event: &mut pb::OomEvent, facts: &PodFacts, owner: Option<(String, String)>) {
    let pod = event.pod.get_or_insert_with(pb::Pod::default);
    if pod.uid.is_empty() {
        pod.uid = facts.uid.clone();
    }
    pod.name.get_or_insert_with(|| facts.name.clone());
    pod.namespace.get_or_insert_with(|| facts.namespace.clone());
    pod.owner = owner.map(|(kind, name)| pb::Workload { kind, name });
    pod.memory_limit_bytes = facts.memory_limit;
    pod.memory_request_bytes = facts.memory_request;
    if let Some(container) = event.container.as_mut() {
        let name = container
            .name
            .clone()
            .or_else(|| facts.container_ids.get(&container.id).cloned());
        if let Some(spec) = name.as_deref().and_then(|n| facts.containers.get(n)) {
            container.role = spec.role as i32;
            container.memory_limit_bytes = spec.memory_limit;
            container.memory_request_bytes = spec.memory_request;
        }
        container.name = name;
    }
    event.identity_source = pb::IdentitySource::KubernetesApi as i32;
}

/// Pods of this node and the owners of their controllers.
pub struct KubeEnricher {
    pods: Store<Pod>,
    client: Client,
    owners: Mutex<HashMap<ControllerKey, CachedOwner>>,
}

impl std::fmt::Debug for KubeEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnricher")
            .field("pods", &self.pods.state().len())
            .finish_non_exhaustive()
    }
}

impl KubeEnricher {
    /// An enricher over an existing store (tests drive the store directly).
    pub fn new(pods: Store<Pod>, client: Client) -> Self {
        Self {
            pods,
            client,
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a reflector of the pods scheduled on `node`; returns the
    /// enricher and the future that keeps the reflector running.
    pub fn start(
        client: Client,
        node: &str,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let api: Api<Pod> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (reader, writer) = reflector::store();
        let node = node.to_owned();
        let stream = watcher(api, config)
            .default_backoff()
            // Keep only what is read: spec resources, owners, container ids.
            .modify(|pod| {
                pod.managed_fields_mut().clear();
                pod.annotations_mut().clear();
                if let Some(status) = pod.status.as_mut() {
                    status.conditions = None;
                }
            })
            .reflect(writer)
            .applied_objects();
        let task = async move {
            info!(%node, "watching this node's pods in the Kubernetes API");
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if let Err(error) = item {
                    warn!(%error, "Kubernetes pod watch failed; retrying with backoff");
                }
            }
        };
        (Self::new(reader, client), task)
    }

    /// The pod with this UID, if the reflector has it.
    pub fn pod(&self, uid: &str) -> Option<PodFacts> {
        self.pods
            .state()
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
            .map(|p| pod_facts(p))
    }

    /// The workload behind a controller reference: a ReplicaSet's
    /// Deployment, a Job's CronJob, else the controller itself. Cached; an
    /// API error (RBAC, a deleted ReplicaSet) falls back to the controller.
    pub async fn workload(&self, namespace: &str, kind: &str, name: &str) -> Option<(String, String)> {
        let key = (namespace.to_owned(), kind.to_owned(), name.to_owned());
        if let Some((owner, at)) = self.owners.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < OWNER_TTL
        {
            return owner.clone();
        }
        let direct = Some((kind.to_owned(), name.to_owned()));
        let parent = match kind {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await
                .map(|rs| rs.metadata.owner_references.unwrap_or_default()),
            "Job" => Api::<Job>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await
                .map(|job| job.metadata.owner_references.unwrap_or_default()),
            _ => return direct,
        };
        let owner = match parent {
            Ok(references) => match controller(&references) {
                Some(r) if matches!(r.kind.as_str(), "Deployment" | "CronJob") => {
                    Some((r.kind.clone(), r.name.clone()))
                }
                _ => direct,
            },
            Err(error) => {
                debug!(%error, kind, name, "owner lookup failed; reporting the controller itself");
                direct
            }
        };
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (owner.clone(), Instant::now()));
        owner
    }

    /// Adds what the API knows about the event's pod, if it knows the pod.
    pub async fn enrich(&self, event: &mut pb::OomEvent) {
        let Some(uid) = event
            .pod
            .as_ref()
            .map(|p| p.uid.clone())
            .filter(|u| !u.is_empty())
        else {
            return;
        };
        let Some(facts) = self.pod(&uid) else {
            debug!(%uid, "pod not in the API cache");
            return;
        };
        let owner = match &facts.owner {
            Some((kind, name)) => self.workload(&facts.namespace, kind, name).await,
            None => None,
        };
        apply_facts(event, &facts, owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory_quantity("128Mi"), Some(128 << 20));
        assert_eq!(parse_memory_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_memory_quantity("1.5Gi"), Some(1_610_612_736));
        assert_eq!(parse_memory_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_memory_quantity("1e9"), Some(1_000_000_000));
        assert_eq!(parse_memory_quantity("100k"), Some(100_000));
        assert_eq!(parse_memory_quantity("12345"), Some(12_345));
        assert_eq!(parse_memory_quantity("lots"), None);
        assert_eq!(parse_memory_quantity("12Xi"), None);
    }
}
