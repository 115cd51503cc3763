//! Who a cgroup belongs to. [`path`] reads the identity encoded in a cgroup
//! path (pure); runtime (CRI) and Kubernetes API metadata build on it.

pub mod path;

pub use path::{CgroupIdentity, Level, Qos, RuntimeKind, parse_cgroup_path};
