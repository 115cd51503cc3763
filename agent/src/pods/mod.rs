//! Who a cgroup belongs to. [`path`] reads the identity encoded in a cgroup
//! path (pure); [`cri`] adds names from the container runtime, [`kube`]
//! owners, requests and limits from the Kubernetes API.

pub mod cri;
pub mod kube;
pub mod path;
pub mod volumes;

pub use path::{CgroupIdentity, Level, Qos, RuntimeKind, parse_cgroup_path};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A source of pod identity besides cgroup paths (which are always used).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum IdentitySource {
    Cri,
    KubernetesApi,
}

impl EncodeLabelValue for IdentitySource {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Cri => "cri",
            Self::KubernetesApi => "kubernetes_api",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: IdentitySource,
}

/// Which identity sources are in use, exported as
/// `oomlens_agent_identity_sources{source}`.
#[derive(Debug, Clone, Default)]
pub struct IdentityMetrics {
    sources: Family<SourceLabels, Gauge>,
}

impl IdentityMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "identity_sources",
            "1 for each identity source in use (cgroup paths are always used)",
            self.sources.clone(),
        );
    }

    pub fn in_use(&self, source: IdentitySource) {
        self.sources.get_or_create(&SourceLabels { source }).set(1);
    }
}
