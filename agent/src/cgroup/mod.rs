//! Sampling cgroup memory: [`files`] parses the memory files (pure),
//! [`reader`] reads one cgroup's open files, [`discovery`] finds the
//! controller and the cgroups to follow, [`history`] keeps the rings,
//! [`node`] reads the node's view, [`notify`] times the kernel's OOM
//! notifications, [`sampler`] is the task that runs it all.

pub mod discovery;
pub mod files;
pub mod history;
pub mod node;
pub mod notify;
pub mod path;
pub mod reader;
pub mod sampler;

pub use discovery::{MemoryRoot, Mode, Selection, detect};
pub use reader::{MemcgReader, Version};
pub use sampler::{
    CounterStep, OomNotice, Request, Sampler, SamplerConfig, SamplerHandle, SamplerMetrics, SamplerStats,
    Schedule, Snapshot, Trend, WarningRules,
};
