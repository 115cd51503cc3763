//! Identity sources started with the agent: the container runtime and the
//! Kubernetes API. Either may be missing; identity then comes from cgroup
//! paths.

use std::sync::Arc;
use std::time::Duration;

use oomlens_common::process::Shutdown;
use tracing::warn;

use crate::pods::cri;

/// The runtime's names and main pids, relisted every second as the kubelet
/// does: a container that dies of memory soon after starting still has its
/// main pid.
/// Also returns a client of its own for asking about killed containers.
pub(super) async fn start_cri(
    socket: &std::path::Path,
    grace: Duration,
    shutdown: &Shutdown,
) -> Option<(cri::CriHandle, cri::CriClient)> {
    match cri::CriClient::connect(socket).await {
        Ok(client) => {
            let (handle, requests) = cri::CriResolver::channel();
            let resolver = cri::CriResolver::new(client.clone(), grace, Duration::from_secs(1));
            tokio::spawn(resolver.run(requests, shutdown.wait()));
            Some((handle, client))
        }
        Err(error) => {
            warn!(%error, "pod and container names unavailable: identity from cgroup paths only");
            None
        }
    }
}

/// This node's pods from the Kubernetes API: owners, requests and limits.
pub(super) async fn start_kube(
    node: &str,
    kubeconfig: Option<&std::path::Path>,
    shutdown: &Shutdown,
) -> Option<Arc<crate::pods::kube::KubeEnricher>> {
    match client(kubeconfig).await {
        Ok(client) => {
            let (enricher, reflector) = crate::pods::kube::KubeEnricher::start(client, node);
            let stopping = shutdown.wait();
            tokio::spawn(async move {
                tokio::select! {
                    () = reflector => {}
                    () = stopping => {}
                }
            });
            Some(Arc::new(enricher))
        }
        Err(error) => {
            warn!(%error, "Kubernetes API unavailable: no owners, requests or limits on events");
            None
        }
    }
}

/// A Kubernetes API client: from `kubeconfig` when given, otherwise
/// in-cluster, then `$KUBECONFIG` and `~/.kube/config`.
async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let Some(path) = kubeconfig else {
        return Ok(kube::Client::try_default().await?);
    };
    let file = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("cannot read the kubeconfig {}: {e}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Drops per-container kill series whose pods are gone (their cgroups
/// under the memory controller), a grace after they went.
pub(super) fn spawn_kill_series_pruning(
    metrics: &super::AgentMetrics,
    cgroup_root: &std::path::Path,
    grace: Duration,
    shutdown: &Shutdown,
) {
    use crate::pipeline::container_kills::PRUNE_EVERY;
    // A short grace (tests) is checked as often as it needs.
    let every = PRUNE_EVERY.min(grace / 2).max(Duration::from_millis(100));
    let kills = metrics.pipeline.container_kills().clone();
    let memory_root = crate::cgroup::detect(cgroup_root).ok().map(|root| root.path);
    let stopping = shutdown.wait();
    tokio::spawn(async move {
        let pruning = async {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                kills.prune(std::time::Instant::now(), grace, |cgroup| {
                    memory_root
                        .as_ref()
                        .is_some_and(|root| root.join(cgroup.trim_start_matches('/')).exists())
                });
            }
        };
        tokio::select! {
            () = pruning => {}
            () = stopping => {}
        }
    });
}
