//! The request protocol: what the rest of the agent asks the sampler task
//! through a [`SamplerHandle`], and how the task answers.

use oomlens_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use super::evidence::{CounterStep, OomNotice};
use super::{Sampler, SamplerStats};

/// What the event assembler gets for a kill.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// History of the victim's cgroup.
    pub victim: Option<pb::MemoryHistory>,
    /// History of the limited cgroup when it differs (pod, kubepods).
    pub oom_memcg: Option<pb::MemoryHistory>,
    pub node: Option<pb::NodeMemory>,
    /// When the limited cgroup is above the victim's (a pod, kubepods):
    /// the containers below it, largest first, with their working set at
    /// the kill.
    pub members: Vec<pb::ContainerUsage>,
}

/// A request to the sampler task (made through [`SamplerHandle`]).
#[derive(Debug)]
pub enum Request {
    Snapshot {
        victim: Option<String>,
        oom_memcg: Option<String>,
        until_ms: u64,
        reply: oneshot::Sender<Snapshot>,
    },
    OomSteps {
        from_ms: u64,
        to_ms: u64,
        reply: oneshot::Sender<Vec<CounterStep>>,
    },
    OomNotices {
        from_us: u64,
        to_us: u64,
        reply: oneshot::Sender<Vec<OomNotice>>,
    },
    LimitedCgroup {
        victim: String,
        until_ms: u64,
        reply: oneshot::Sender<Option<String>>,
    },
    CgroupOfPid {
        pid: u32,
        since_ms: u64,
        reply: oneshot::Sender<Option<String>>,
    },
    Stats {
        reply: oneshot::Sender<SamplerStats>,
    },
    Statuses {
        reply: oneshot::Sender<Vec<pb::ContainerMemoryStatus>>,
    },
}

/// The rest of the agent's way to the sampler.
#[derive(Debug, Clone)]
pub struct SamplerHandle {
    pub(super) requests: mpsc::Sender<Request>,
}

impl SamplerHandle {
    /// Sends one request and waits for its answer; None if the sampler is
    /// gone.
    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(request(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Frozen histories for a kill and the node view. None if the sampler
    /// is gone.
    pub async fn snapshot(
        &self,
        victim: Option<String>,
        oom_memcg: Option<String>,
        until_ms: u64,
    ) -> Option<Snapshot> {
        self.ask(|reply| Request::Snapshot {
            victim,
            oom_memcg,
            until_ms,
            reply,
        })
        .await
    }

    /// OOM-kill counter steps (cgroup, Unix ms when seen) between the two
    /// times: how a kill without a cgroup path (rate-limited report) is
    /// attributed.
    pub async fn oom_steps(&self, from_ms: u64, to_ms: u64) -> Vec<CounterStep> {
        self.ask(|reply| Request::OomSteps {
            from_ms,
            to_ms,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Kernel OOM notifications (cgroup, monotonic µs) between the two
    /// times: they place a kill without a cgroup path precisely.
    pub async fn oom_notices(&self, from_us: u64, to_us: u64) -> Vec<OomNotice> {
        self.ask(|reply| Request::OomNotices {
            from_us,
            to_us,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// The cgroup a process was last seen in, if that was at or after
    /// `since_ms` (Unix ms) in a cgroup near its limit: names the cgroup
    /// of a kill whose report the kernel rate-limited, exactly.
    pub async fn cgroup_of_pid(&self, pid: u32, since_ms: u64) -> Option<String> {
        self.ask(|reply| Request::CgroupOfPid { pid, since_ms, reply })
            .await
            .flatten()
    }

    /// For a memcg kill whose report did not say which limit was hit: see
    /// [`Sampler::limited_cgroup`].
    pub async fn limited_cgroup(&self, victim: String, until_ms: u64) -> Option<String> {
        self.ask(|reply| Request::LimitedCgroup {
            victim,
            until_ms,
            reply,
        })
        .await
        .flatten()
    }

    /// The live containers' memory now (for the collector's `top`).
    pub async fn statuses(&self) -> Vec<pb::ContainerMemoryStatus> {
        self.ask(|reply| Request::Statuses { reply })
            .await
            .unwrap_or_default()
    }

    pub async fn stats(&self) -> Option<SamplerStats> {
        self.ask(|reply| Request::Stats { reply }).await
    }
}

impl Sampler {
    /// Answers one request; a requester that stopped waiting is no error.
    pub(super) fn answer(&mut self, request: Request) {
        match request {
            Request::Snapshot {
                victim,
                oom_memcg,
                until_ms,
                reply,
            } => {
                let _ = reply.send(self.snapshot(victim.as_deref(), oom_memcg.as_deref(), until_ms));
            }
            Request::OomSteps {
                from_ms,
                to_ms,
                reply,
            } => {
                let _ = reply.send(self.oom_steps(from_ms, to_ms));
            }
            Request::OomNotices {
                from_us,
                to_us,
                reply,
            } => {
                let _ = reply.send(self.oom_notices(from_us, to_us));
            }
            Request::LimitedCgroup {
                victim,
                until_ms,
                reply,
            } => {
                let _ = reply.send(self.limited_cgroup(&victim, until_ms));
            }
            Request::CgroupOfPid { pid, since_ms, reply } => {
                let _ = reply.send(self.cgroup_of_pid(pid, since_ms));
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Request::Statuses { reply } => {
                let _ = reply.send(self.statuses());
            }
        }
    }
}
