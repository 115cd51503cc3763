//! The agent's metrics: each component's own set, registered in one
//! registry that `/metrics` serves.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::cgroup::SamplerMetrics;
use crate::kmsg::ReaderMetrics;
use crate::pipeline::metrics::PipelineMetrics;
use crate::pods::IdentityMetrics;
use crate::ship::{SenderMetrics, SpoolMetrics};
use crate::telemetry::{self, Readiness};

/// Every metric the agent exports: each component's own set, registered
/// in one registry.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    pub readiness: Arc<Readiness>,
    pub reader: ReaderMetrics,
    pub pipeline: PipelineMetrics,
    pub sampler: SamplerMetrics,
    pub spool: SpoolMetrics,
    pub sender: SenderMetrics,
    pub identity: IdentityMetrics,
    pub runtime_watch: crate::pipeline::runtime_watch::RuntimeWatchMetrics,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oomlens_agent");
        let metrics = Self {
            registry: Arc::default(),
            readiness: Arc::default(),
            reader: ReaderMetrics::default(),
            pipeline: PipelineMetrics::default(),
            sampler: SamplerMetrics::default(),
            spool: SpoolMetrics::default(),
            sender: SenderMetrics::default(),
            identity: IdentityMetrics::default(),
            runtime_watch: Default::default(),
        };
        metrics.pipeline.register(&mut registry);
        metrics.reader.register(&mut registry);
        metrics.sampler.register(&mut registry);
        metrics.spool.register(&mut registry);
        metrics.sender.register(&mut registry);
        metrics.identity.register(&mut registry);
        metrics.runtime_watch.register(&mut registry);
        Self {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        telemetry::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::attribute::Placement;
    use crate::pipeline::metrics::{KillReported, KillsMissed};
    use crate::telemetry::Happening as _;
    use oomlens_proto::v1::{OomEvent, Pod, Scope};

    #[test]
    fn kills_are_counted_by_scope_and_namespace() {
        let metrics = AgentMetrics::new();
        let event = OomEvent {
            scope: Scope::PodLimit as i32,
            pod: Some(Pod {
                namespace: Some("shop".into()),
                ..Pod::default()
            }),
            partial: true,
            ..OomEvent::default()
        };
        for _ in 0..2 {
            KillReported {
                event: &event,
                placement: Placement::Counter,
            }
            .emit(&metrics.pipeline);
        }
        metrics.reader.count(10, 3);
        metrics.reader.count(5, 0);
        KillsMissed { total: 2, new: true }.emit(&metrics.pipeline);
        let text = metrics.encode();
        assert!(
            text.contains(r#"oomlens_agent_oom_kills_total{scope="pod_limit",namespace="shop"} 2"#),
            "{text}"
        );
        assert!(text.contains("oomlens_agent_oom_kills_partial_total 2"), "{text}");
        assert!(text.contains("oomlens_agent_kmsg_records_total 15"), "{text}");
        assert!(text.contains("oomlens_agent_kmsg_lost_records_total 3"), "{text}");
        assert!(text.contains("oomlens_agent_missed_kills 2"), "{text}");
        assert!(
            text.contains(r#"oomlens_agent_kill_placements_total{by="counter"} 2"#),
            "{text}"
        );
    }
}
