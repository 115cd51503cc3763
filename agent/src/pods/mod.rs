//! Who a cgroup belongs to. [`path`] reads the identity encoded in a cgroup
//! path (pure); [`cri`] adds names from the container runtime, [`kube`]
//! owners, requests and limits from the Kubernetes API.

pub mod cri;
pub mod kube;
pub mod path;

pub use path::{CgroupIdentity, Level, Qos, RuntimeKind, parse_cgroup_path};
