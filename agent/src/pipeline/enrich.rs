//! What a placed kill gets before it leaves: the memory history from the
//! sampler, names and the main pid from the container runtime, owners and
//! requests from the Kubernetes API. Each source has a deadline: a slow
//! source costs its data, never the event.

use std::sync::Arc;
use std::time::Duration;

use oomlens_proto::v1::OomEvent;
use tracing::{debug, warn};

use crate::cgroup::SamplerHandle;
use crate::pods::cri::CriHandle;
use crate::pods::kube::KubeEnricher;

/// How long an event waits for the container runtime's (or the
/// Kubernetes API's) answer.
const CRI_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an event waits for the sampler's snapshot before it goes out
/// without one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(250);

/// The sources an event is enriched from; each optional.
#[derive(Debug, Clone, Default)]
pub struct Enrichers {
    pub sampler: Option<SamplerHandle>,
    pub cri: Option<CriHandle>,
    pub kube: Option<Arc<KubeEnricher>>,
    /// The host's /proc (with `hostPID`), where a pod's memory-backed
    /// volumes are found.
    pub host_proc: Option<std::path::PathBuf>,
}

impl Enrichers {
    pub async fn enrich(&self, event: &mut OomEvent) {
        if let Some(sampler) = &self.sampler {
            attach_snapshot(sampler, event).await;
        }
        if let (Some(cri), Some(id)) = (&self.cri, event.container.as_ref().map(|c| c.id.clone())) {
            match tokio::time::timeout(CRI_TIMEOUT, cri.resolve(&id)).await {
                Ok(Some(resolved)) => crate::event::apply_runtime(event, &resolved),
                Ok(None) => debug!(id = %event.id, container = %id, "container unknown to the runtime"),
                Err(_) => warn!(id = %event.id, "the container runtime did not answer in time"),
            }
        }
        if let Some(cri) = &self.cri {
            name_members(cri, event).await;
        }
        if let Some(kube) = &self.kube
            && tokio::time::timeout(CRI_TIMEOUT, kube.enrich(event))
                .await
                .is_err()
        {
            warn!(id = %event.id, "the Kubernetes API did not answer in time");
        }
        if let (Some(proc_root), Some(uid)) = (&self.host_proc, event.pod.as_ref().map(|p| p.uid.clone()))
            && !uid.is_empty()
        {
            let proc_root = proc_root.clone();
            let find =
                tokio::task::spawn_blocking(move || crate::pods::volumes::memory_volumes(&proc_root, &uid));
            match tokio::time::timeout(CRI_TIMEOUT, find).await {
                Ok(Ok(volumes)) => event.memory_volumes = volumes,
                Ok(Err(error)) => {
                    warn!(id = %event.id, %error, "looking for the pod's memory volumes failed")
                }
                Err(_) => warn!(id = %event.id, "the pod's memory volumes could not be measured in time"),
            }
        }
    }
}

/// Names the largest containers below the limited cgroup (the runtime
/// caches them: one lookup each), within one deadline for all.
async fn name_members(cri: &CriHandle, event: &mut OomEvent) {
    const NAMED: usize = 16;
    let naming = async {
        for member in event.limited_containers.iter_mut().take(NAMED) {
            if member.container_id.is_empty() {
                continue;
            }
            if let Some(resolved) = cri.resolve(&member.container_id).await {
                member.name = Some(resolved.info.name.clone());
            }
        }
    };
    if tokio::time::timeout(CRI_TIMEOUT, naming).await.is_err() {
        debug!(id = %event.id, "the container runtime did not name every container below the limit in time");
    }
}

/// Attaches the memory history of the victim's cgroup (and of the limited
/// cgroup when it is another level) up to the kill, and the node view.
async fn attach_snapshot(sampler: &SamplerHandle, event: &mut OomEvent) {
    let until_ms = super::event_time_ms(event);
    let request = sampler.snapshot(event.task_memcg.clone(), event.oom_memcg.clone(), until_ms);
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, request).await {
        Ok(Some(snapshot)) => {
            event.history = snapshot.victim;
            event.oom_memcg_history = snapshot.oom_memcg;
            event.node_memory = snapshot.node;
            event.limited_containers = snapshot.members;
            if event.breakdown.is_none() {
                event.breakdown = crate::event::breakdown_from_history(event);
            }
        }
        Ok(None) => warn!(id = %event.id, "the sampler is gone; event sent without history"),
        Err(_) => warn!(id = %event.id, "the sampler did not answer in time; event sent without history"),
    }
}
