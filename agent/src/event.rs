//! Assembling the `oomlens.v1.OomEvent` from a parsed report and what the
//! agent knows about its node.

use oomlens_proto::time::timestamp_from_unix_us;
use oomlens_proto::v1 as pb;
use prost_types::Timestamp;

use crate::oom::{OomReport, ReportConstraint};
use crate::pods::{CgroupIdentity, Level, Qos, RuntimeKind, parse_cgroup_path};

/// The node facts every event carries.
#[derive(Debug, Clone, Default)]
pub struct NodeContext {
    pub node: String,
    /// Empty when unknown (a saved log from another machine).
    pub boot_id: String,
    /// Wall-clock time of boot in microseconds since the Unix epoch, to turn
    /// kernel timestamps into wall time; None for saved logs.
    pub boot_wall_us: Option<i64>,
    /// The kernel log's clock minus `CLOCK_MONOTONIC` (µs; 0 unmeasured):
    /// [`crate::clock::log_clock_offset_us`].
    pub log_clock_offset_us: i64,
    pub kernel_release: Option<String>,
}

/// Which limit was hit, from the constraint and the level of `oom_memcg` in
/// the kubepods tree.
pub fn classify_scope(constraint: ReportConstraint, oom_memcg: Option<&str>) -> pb::Scope {
    match constraint {
        ReportConstraint::Global => pb::Scope::NodeOom,
        ReportConstraint::Cpuset => pb::Scope::Cpuset,
        ReportConstraint::MemoryPolicy => pb::Scope::Mempolicy,
        ReportConstraint::Unknown => pb::Scope::NodeOom,
        ReportConstraint::Memcg => match oom_memcg.map(|m| parse_cgroup_path(m).level) {
            Some(Level::Container) => pb::Scope::ContainerLimit,
            Some(Level::Pod) => pb::Scope::PodLimit,
            Some(Level::Qos | Level::Kubepods) => pb::Scope::NodeAllocatable,
            Some(Level::Other) => pb::Scope::OtherCgroup,
            None => pb::Scope::Unknown,
        },
    }
}

fn constraint_of(constraint: ReportConstraint) -> pb::Constraint {
    match constraint {
        ReportConstraint::Memcg => pb::Constraint::Memcg,
        ReportConstraint::Global => pb::Constraint::Global,
        ReportConstraint::Cpuset => pb::Constraint::Cpuset,
        ReportConstraint::MemoryPolicy => pb::Constraint::Mempolicy,
        // Nothing in the report says: the documented default.
        ReportConstraint::Unknown => pb::Constraint::Global,
    }
}

/// Builds the event. `ordinal` (the report's position in its input) keys
/// the id only when the log has neither sequence numbers nor timestamps.
/// What the limited cgroup was charged for, from the last full sample of its
/// history before the kill: for kills whose report printed no stats (a
/// rate-limited or filtered report).
pub fn breakdown_from_history(event: &pb::OomEvent) -> Option<pb::MemoryBreakdown> {
    let oom_memcg = event.oom_memcg.as_deref()?;
    let history = [event.oom_memcg_history.as_ref(), event.history.as_ref()]
        .into_iter()
        .flatten()
        .find(|h| h.cgroup == oom_memcg)?;
    let last = history.samples.iter().rev().find(|s| s.anon_bytes.is_some())?;
    Some(pb::MemoryBreakdown {
        cgroup: oom_memcg.to_owned(),
        source: pb::BreakdownSource::LastSample as i32,
        anon_bytes: last.anon_bytes,
        // The sample's file counts shmem too.
        page_cache_bytes: last
            .file_bytes
            .map(|file| file.saturating_sub(last.shmem_bytes.unwrap_or(0))),
        shmem_bytes: last.shmem_bytes,
        kernel_bytes: last.kernel_bytes,
        ..pb::MemoryBreakdown::default()
    })
}

/// What the limited cgroup was charged for, from the report's stats dump.
fn breakdown_of(report: &OomReport, oom_memcg: Option<&str>) -> Option<pb::MemoryBreakdown> {
    let stat = report.memstat.as_ref()?;
    let b = stat.breakdown(report.kmem.and_then(|k| k.usage_kb));
    Some(pb::MemoryBreakdown {
        cgroup: report
            .stats_memcg
            .as_deref()
            .or(oom_memcg)
            .unwrap_or_default()
            .to_owned(),
        source: pb::BreakdownSource::KernelReport as i32,
        anon_bytes: b.anon,
        page_cache_bytes: b.page_cache,
        active_file_bytes: b.active_file,
        inactive_file_bytes: b.inactive_file,
        dirty_bytes: b.dirty,
        writeback_bytes: b.writeback,
        shmem_bytes: b.shmem,
        kernel_bytes: b.kernel,
        slab_reclaimable_bytes: b.slab_reclaimable,
        slab_unreclaimable_bytes: b.slab_unreclaimable,
        sock_bytes: b.sock,
        kernel_stack_bytes: b.kernel_stack,
        pagetables_bytes: b.pagetables,
        percpu_bytes: b.percpu,
        swap_bytes: b.swap,
    })
}

pub fn event_from_report(report: &OomReport, ctx: &NodeContext, ordinal: u64) -> pb::OomEvent {
    let stamp = report.kill_stamp;
    let key = stamp
        .seq
        .or(stamp.monotonic_us)
        .or(stamp.wall.map(|(s, n)| {
            s.cast_unsigned()
                .wrapping_mul(1_000_000_000)
                .wrapping_add(u64::from(n))
        }))
        .unwrap_or(ordinal);
    let node = Some(ctx.node.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| report.host.clone());
    let time = match (stamp.wall, stamp.monotonic_us, ctx.boot_wall_us) {
        // The parsers keep nanos below 10^9: it fits an i32.
        (Some((seconds, nanos)), _, _) => Some(Timestamp {
            seconds,
            nanos: i32::try_from(nanos).unwrap_or(0),
        }),
        (None, Some(mono), Some(boot)) => Some(timestamp_from_unix_us(
            boot.saturating_add(i64::try_from(mono).unwrap_or(i64::MAX)),
        )),
        _ => None,
    };
    let constraint = report.constraint();
    let oom_memcg = report.oom_memcg().map(str::to_owned);
    let task_memcg = report.task_memcg().map(str::to_owned);

    let victim = &report.victim;
    let mut event = pb::OomEvent {
        id: oomlens_proto::event_id(node.as_deref().unwrap_or_default(), &ctx.boot_id, key),
        node,
        time,
        constraint: constraint_of(constraint) as i32,
        scope: classify_scope(constraint, oom_memcg.as_deref()) as i32,
        victim: Some(pb::Victim {
            pid: victim.pid,
            comm: victim.comm.clone(),
            uid: victim.uid,
            total_vm_kb: victim.total_vm_kb,
            anon_rss_kb: victim.anon_rss_kb,
            file_rss_kb: victim.file_rss_kb,
            shmem_rss_kb: victim.shmem_rss_kb,
            pgtables_kb: victim.pgtables_kb,
            oom_score_adj: victim.oom_score_adj,
            oom_score: victim.oom_score,
            main_process: None,
        }),
        trigger: report.trigger.as_ref().map(|t| pb::Trigger {
            pid: t.pid,
            comm: Some(t.comm.clone()),
            gfp_mask: t.gfp_mask.clone(),
            order: t.order,
            oom_score_adj: t.oom_score_adj,
        }),
        memcg_usage: report.memory.map(|m| pb::MemcgUsage {
            usage_kb: m.usage_kb,
            limit_kb: m.limit_kb,
            failcnt: m.failcnt,
            swap_usage_kb: report.memory_swap.and_then(|s| s.usage_kb),
            swap_limit_kb: report.memory_swap.and_then(|s| s.limit_kb),
        }),
        breakdown: breakdown_of(report, oom_memcg.as_deref()),
        tasks: report
            .tasks
            .iter()
            .map(|t| pb::TaskEntry {
                pid: t.pid,
                uid: t.uid,
                tgid: t.tgid,
                total_vm_pages: t.total_vm_pages,
                rss_pages: t.rss_pages,
                pgtables_bytes: t.pgtables_bytes,
                swapents: t.swapents,
                oom_score_adj: t.oom_score_adj,
                comm: t.comm.clone(),
            })
            .collect(),
        partial: report.partial,
        group_kill: report.group_memcg.is_some(),
        kernel_lines: report
            .evidence
            .iter()
            .map(|line| pb::KernelLine {
                seq: line.stamp.seq,
                monotonic_us: line.stamp.monotonic_us,
                level: line.stamp.level.map(u32::from),
                text: line.text.clone(),
                input_line: line.stamp.line,
            })
            .collect(),
        kernel: (stamp.seq.is_some() || stamp.monotonic_us.is_some()).then(|| pb::KernelRef {
            boot_id: Some(ctx.boot_id.clone()).filter(|b| !b.is_empty()),
            seq: stamp.seq,
            monotonic_us: stamp.monotonic_us,
            release: ctx.kernel_release.clone(),
        }),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        oom_memcg,
        task_memcg,
        ..pb::OomEvent::default()
    };
    // The victim's cgroup names its pod and container; a rate-limited
    // report has only the limited memcg, if anything.
    let identity = event
        .task_memcg
        .as_deref()
        .or(event.oom_memcg.as_deref().filter(|m| *m != "/"))
        .map(parse_cgroup_path);
    if let Some(identity) = identity {
        apply_identity(&mut event, &identity);
    }
    event
}

/// Fills in what a kill's report lacked (the kernel rate-limited it): the
/// limited cgroup (which decides the scope of a memcg kill) and the
/// victim's cgroup, with the identity they encode.
pub fn attribute(event: &mut pb::OomEvent, oom_memcg: Option<&str>, task_memcg: Option<&str>) {
    if let Some(oom) = oom_memcg {
        event.oom_memcg = Some(oom.to_owned());
        if event.constraint == pb::Constraint::Memcg as i32 {
            event.scope = classify_scope(ReportConstraint::Memcg, Some(oom)) as i32;
        }
    }
    if let Some(task) = task_memcg {
        event.task_memcg = Some(task.to_owned());
    }
    if let Some(path) = task_memcg.or(oom_memcg) {
        apply_identity(event, &parse_cgroup_path(path));
    }
}

fn apply_identity(event: &mut pb::OomEvent, identity: &CgroupIdentity) {
    if identity.level == Level::Other {
        event.systemd_unit = identity.systemd_unit.clone();
        event.docker_id = identity.docker_id.clone();
        if event.systemd_unit.is_some() || event.docker_id.is_some() {
            event.identity_source = pb::IdentitySource::CgroupPath as i32;
        }
        return;
    }
    let Some(uid) = identity.pod_uid.clone() else {
        return;
    };
    event.identity_source = pb::IdentitySource::CgroupPath as i32;
    event.pod = Some(pb::Pod {
        uid,
        qos: match identity.qos {
            Some(Qos::Guaranteed) => pb::QosClass::Guaranteed,
            Some(Qos::Burstable) => pb::QosClass::Burstable,
            Some(Qos::BestEffort) => pb::QosClass::Besteffort,
            None => pb::QosClass::Unspecified,
        } as i32,
        cgroup: identity.pod_cgroup.clone(),
        ..pb::Pod::default()
    });
    if let Some(id) = identity.container_id.clone() {
        event.container = Some(pb::Container {
            id,
            runtime: match identity.runtime {
                Some(RuntimeKind::Containerd) => pb::Runtime::Containerd,
                Some(RuntimeKind::CriO) => pb::Runtime::Crio,
                Some(RuntimeKind::Docker) => pb::Runtime::Docker,
                Some(RuntimeKind::Kata) => pb::Runtime::Kata,
                None => pb::Runtime::Unspecified,
            } as i32,
            cgroup: identity.container_cgroup.clone(),
            ..pb::Container::default()
        });
    }
}

/// Names from the runtime (pod name and namespace, container name and
/// image), keeping what is already known where the runtime says nothing.
pub fn apply_names(pod: &mut pb::Pod, container: &mut pb::Container, info: &crate::pods::cri::ContainerInfo) {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if pod.uid.is_empty() {
        pod.uid = info.pod_uid.clone();
    }
    pod.name = non_empty(&info.pod_name).or(pod.name.take());
    pod.namespace = non_empty(&info.namespace).or(pod.namespace.take());
    if container.id.is_empty() {
        container.id = info.id.clone();
    }
    container.name = non_empty(&info.name).or(container.name.take());
    container.image = non_empty(&info.image).or(container.image.take());
}

/// Adds what the container runtime knows: names, image, restart count, the
/// main pid, and from those whether the victim was the main process and
/// whether the kill was *silent* (the container kept running, so
/// Kubernetes shows neither OOMKilled nor a restart).
pub fn apply_runtime(event: &mut pb::OomEvent, resolved: &crate::pods::cri::Resolved) {
    let info = &resolved.info;
    let pod = event.pod.get_or_insert_with(pb::Pod::default);
    let container = event.container.get_or_insert_with(pb::Container::default);
    apply_names(pod, container, info);
    container.restart_count = info.restart_count.or(container.restart_count);
    container.main_pid = info.main_pid.or(container.main_pid);
    container.survived = resolved.running_now;
    let victim_pid = event.victim.as_ref().and_then(|v| v.pid);
    let main_process = match (victim_pid, container.main_pid) {
        (Some(victim), Some(main)) => Some(victim == main),
        _ => None,
    };
    if let Some(victim) = event.victim.as_mut() {
        victim.main_process = main_process;
    }
    event.silent = match (main_process, resolved.running_now) {
        // The main process died: the container restarts, Kubernetes shows it.
        (Some(true), _) => Some(false),
        (Some(false), Some(running)) => Some(running),
        _ => None,
    };
    event.identity_source = pb::IdentitySource::Cri as i32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::cri::{ContainerInfo, Resolved};

    fn event(victim_pid: i32) -> pb::OomEvent {
        pb::OomEvent {
            victim: Some(pb::Victim {
                pid: Some(victim_pid),
                ..pb::Victim::default()
            }),
            pod: Some(pb::Pod {
                uid: "u1".into(),
                ..pb::Pod::default()
            }),
            container: Some(pb::Container {
                id: "c1".into(),
                ..pb::Container::default()
            }),
            ..pb::OomEvent::default()
        }
    }

    fn resolved(main_pid: Option<i32>, running_now: Option<bool>) -> Resolved {
        Resolved {
            info: ContainerInfo {
                id: "c1".into(),
                name: "app".into(),
                image: "registry.example/app:1".into(),
                pod_uid: "u1".into(),
                pod_name: "app-7d9f".into(),
                namespace: "shop".into(),
                restart_count: Some(2),
                main_pid,
                running: true,
                labels: Default::default(),
            },
            running_now,
        }
    }

    #[test]
    fn names_come_from_the_runtime() {
        let mut e = event(10);
        apply_runtime(&mut e, &resolved(Some(10), Some(false)));
        let (pod, container) = (
            e.pod.as_ref().expect("pod"),
            e.container.as_ref().expect("container"),
        );
        assert_eq!(
            (pod.name.as_deref(), pod.namespace.as_deref()),
            (Some("app-7d9f"), Some("shop"))
        );
        assert_eq!(
            (container.name.as_deref(), container.restart_count),
            (Some("app"), Some(2))
        );
        assert_eq!(e.identity_source, pb::IdentitySource::Cri as i32);
    }

    #[test]
    fn silent_only_when_a_child_died_and_the_container_lives_on() {
        let mut main = event(10);
        apply_runtime(&mut main, &resolved(Some(10), Some(true)));
        assert_eq!(
            (main.victim.as_ref().and_then(|v| v.main_process), main.silent),
            (Some(true), Some(false))
        );
        let mut child = event(11);
        apply_runtime(&mut child, &resolved(Some(10), Some(true)));
        assert_eq!(
            (child.victim.as_ref().and_then(|v| v.main_process), child.silent),
            (Some(false), Some(true))
        );
        let mut child_but_gone = event(11);
        apply_runtime(&mut child_but_gone, &resolved(Some(10), Some(false)));
        assert_eq!(child_but_gone.silent, Some(false));
        let mut unknown = event(11);
        apply_runtime(&mut unknown, &resolved(None, Some(true)));
        assert_eq!(unknown.silent, None, "never guessed");
    }

    #[test]
    fn a_kill_without_stats_is_broken_down_from_the_last_full_sample_of_its_limited_cgroup() {
        let sample = |anon: Option<u64>| pb::MemorySample {
            anon_bytes: anon,
            file_bytes: anon.map(|_| 30 << 20),
            shmem_bytes: anon.map(|_| 20 << 20),
            kernel_bytes: anon.map(|_| 1 << 20),
            ..pb::MemorySample::default()
        };
        let history = |cgroup: &str| pb::MemoryHistory {
            cgroup: cgroup.into(),
            // The newest samples are fine ones, before the next full one.
            samples: vec![sample(Some(5 << 20)), sample(Some(6 << 20)), sample(None)],
            ..pb::MemoryHistory::default()
        };
        let mut kill = event(7);
        kill.oom_memcg = Some("/kubepods/pod1".into());
        kill.history = Some(history("/kubepods/pod1/c1"));
        kill.oom_memcg_history = Some(history("/kubepods/pod1"));
        let b = breakdown_from_history(&kill).expect("a breakdown");
        assert_eq!(b.cgroup, "/kubepods/pod1");
        assert_eq!(b.source, pb::BreakdownSource::LastSample as i32);
        assert_eq!(
            (b.anon_bytes, b.page_cache_bytes, b.shmem_bytes, b.kernel_bytes),
            (Some(6 << 20), Some(10 << 20), Some(20 << 20), Some(1 << 20))
        );
        // No history of the limited cgroup: none rather than another's.
        kill.oom_memcg_history = None;
        assert_eq!(breakdown_from_history(&kill), None);
        kill.oom_memcg = None;
        assert_eq!(breakdown_from_history(&kill), None);
    }
}
