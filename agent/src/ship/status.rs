//! Status reports and warnings for the collector: the sampler's view of
//! the live containers, named through the container runtime, sent every
//! few seconds so `oomlens top` can rank them.

use std::time::Duration;

use oomlens_proto::v1::{Container, ContainerMemoryStatus, ContainerStatusReport, MemoryWarning, Pod};
use tokio::sync::mpsc;

use super::SideItem;
use crate::cgroup::SamplerHandle;
use crate::pods::cri::CriHandle;

const NAME_TIMEOUT: Duration = Duration::from_millis(300);

/// Fills pod and container names from the runtime, where it knows them.
pub async fn name(cri: Option<&CriHandle>, pod: &mut Option<Pod>, container: &mut Option<Container>) {
    let (Some(cri), Some(c)) = (cri, container.as_mut()) else {
        return;
    };
    let Ok(Some(resolved)) = tokio::time::timeout(NAME_TIMEOUT, cri.resolve(&c.id)).await else {
        return;
    };
    crate::event::apply_names(pod.get_or_insert_with(Pod::default), c, &resolved.info);
}

async fn named(cri: Option<&CriHandle>, mut status: ContainerMemoryStatus) -> ContainerMemoryStatus {
    name(cri, &mut status.pod, &mut status.container).await;
    status
}

/// Logs the sampler's warnings, for an agent that sends to no collector.
pub async fn log_warnings(mut warnings: mpsc::Receiver<MemoryWarning>) {
    while let Some(warning) = warnings.recv().await {
        log_warning(&warning);
    }
}

fn log_warning(warning: &MemoryWarning) {
    tracing::warn!(
        cgroup = %warning.cgroup,
        working_set = warning.working_set_bytes,
        limit = warning.limit_bytes,
        seconds_to_limit = warning.seconds_to_limit,
        "container approaching its memory limit"
    );
}

/// Sends a status report every `every`, and forwards warnings (named),
/// until the side channel closes or `warnings` ends.
pub async fn report(
    sampler: SamplerHandle,
    cri: Option<CriHandle>,
    mut warnings: mpsc::Receiver<MemoryWarning>,
    side: mpsc::Sender<SideItem>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let mut containers = Vec::new();
                for status in sampler.statuses().await {
                    containers.push(named(cri.as_ref(), status).await);
                }
                // Full: the collector is away; the next report replaces this one.
                let _ = side.try_send(SideItem::Status(ContainerStatusReport { containers }));
            }
            warning = warnings.recv() => {
                let Some(mut warning) = warning else { return };
                log_warning(&warning);
                name(cri.as_ref(), &mut warning.pod, &mut warning.container).await;
                if side.send(SideItem::Warning(Box::new(warning))).await.is_err() {
                    return;
                }
            }
        }
    }
}
