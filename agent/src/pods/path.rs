//! Pure parser from a cgroup path to the Kubernetes identity it encodes.
//!
//! Shapes (cgroup v1 and v2 alike; paths relative to the controller root):
//! - cgroupfs driver: `/kubepods[/<qos>]/pod<uid>/<container id>`
//!   (guaranteed pods have no QoS level); CRI-O adds `crio-<id>`.
//! - systemd driver: `/kubepods.slice/kubepods-<qos>.slice/
//!   kubepods-<qos>-pod<uid_with_underscores>.slice/<runtime>-<id>.scope`
//!   with runtime `cri-containerd`, `crio` (and `crio-conmon`), `docker`.
//! - nested prefixes: kind (`/docker/<node id>/kubepods/...`), LXC,
//!   rootless (`.../kubelet.slice/kubelet-kubepods.slice/...`).
//! - outside Kubernetes: plain Docker `/docker/<id>`,
//!   `/system.slice/docker-<id>.scope`, systemd units.

use std::fmt;

/// How deep in the kubepods tree a cgroup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Container,
    Pod,
    /// `burstable` or `besteffort` below kubepods.
    Qos,
    Kubepods,
    /// Not under kubepods.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Containerd,
    CriO,
    Docker,
    Kata,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Kata => "kata",
        })
    }
}

/// What a cgroup path says about who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupIdentity {
    pub level: Level,
    /// Pod UID with dashes.
    pub pod_uid: Option<String>,
    /// Known when the path has a pod level (absent QoS level = guaranteed).
    pub qos: Option<Qos>,
    pub container_id: Option<String>,
    /// None for cgroupfs ids, which do not name their runtime.
    pub runtime: Option<RuntimeKind>,
    /// `crio-conmon-<id>.scope`: CRI-O's monitor, not the container.
    pub conmon: bool,
    /// The path up to and including the pod level.
    pub pod_cgroup: Option<String>,
    /// The path up to and including the container level.
    pub container_cgroup: Option<String>,
    /// For non-Kubernetes cgroups: the innermost systemd unit.
    pub systemd_unit: Option<String>,
    /// For non-Kubernetes cgroups: a Docker container id.
    pub docker_id: Option<String>,
    /// The path of the cgroup that *is* this level (`/kubepods/burstable`
    /// for a QoS level); a deeper path parsed to the same level (a
    /// container's sub-cgroup) has a longer path than this.
    pub level_path: String,
}

impl CgroupIdentity {
    fn other(path: &str) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let docker_id = segments
            .windows(2)
            .find_map(|w| (w[0] == "docker" && is_hex_id(w[1])).then(|| w[1].to_owned()))
            .or_else(|| {
                segments.iter().find_map(|s| {
                    s.strip_prefix("docker-")?
                        .strip_suffix(".scope")
                        .filter(|id| is_hex_id(id))
                        .map(str::to_owned)
                })
            });
        let systemd_unit = segments
            .iter()
            .rev()
            .find(|s| s.ends_with(".service") || s.ends_with(".scope"))
            .map(|s| (*s).to_owned());
        Self {
            level: Level::Other,
            pod_uid: None,
            qos: None,
            container_id: None,
            runtime: None,
            conmon: false,
            pod_cgroup: None,
            container_cgroup: None,
            systemd_unit,
            docker_id,
            level_path: path.to_owned(),
        }
    }
}

/// Parses a cgroup path. Never fails: anything unrecognised is
/// [`Level::Other`].
pub fn parse_cgroup_path(path: &str) -> CgroupIdentity {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(kubepods) = segments.iter().position(|s| is_kubepods(s)) else {
        return CgroupIdentity::other(path);
    };
    let join = |upto: usize| format!("/{}", segments[..=upto].join("/"));
    let mut identity = CgroupIdentity {
        level: Level::Kubepods,
        ..CgroupIdentity::other("")
    };
    identity.systemd_unit = None;
    identity.level_path = join(kubepods);
    let mut next = kubepods + 1;
    let Some(segment) = segments.get(next) else {
        return identity;
    };
    let pod_qos;
    if let Some(qos) = qos_segment(segment) {
        identity.level = Level::Qos;
        identity.qos = Some(qos);
        identity.level_path = join(next);
        pod_qos = qos;
        next += 1;
    } else {
        pod_qos = Qos::Guaranteed;
    }
    let Some(segment) = segments.get(next) else {
        return identity;
    };
    let Some(uid) = pod_uid(segment) else {
        // Something else under kubepods/QoS (kubelet's own cgroups).
        return identity;
    };
    identity.level = Level::Pod;
    identity.qos = Some(pod_qos);
    identity.pod_uid = Some(uid);
    identity.pod_cgroup = Some(join(next));
    identity.level_path = join(next);
    next += 1;
    let Some(segment) = segments.get(next) else {
        return identity;
    };
    if let Some((id, runtime, conmon)) = container_segment(segment) {
        identity.level = Level::Container;
        identity.container_id = Some(id.to_owned());
        identity.runtime = runtime;
        identity.conmon = conmon;
        identity.container_cgroup = Some(join(next));
        identity.level_path = join(next);
    }
    identity
}

fn is_kubepods(segment: &str) -> bool {
    segment == "kubepods" || segment == "kubepods.slice" || segment.ends_with("-kubepods.slice")
}

fn qos_segment(segment: &str) -> Option<Qos> {
    let name = segment
        .strip_suffix(".slice")
        .map_or(segment, |s| s.rsplit('-').next().unwrap_or(s));
    match name {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

/// `pod<uid>` (cgroupfs) or `...-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let body = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = body.rfind("pod")?;
    if at > 0 && !body[..at].ends_with('-') {
        return None;
    }
    let uid = body[at + 3..].replace('_', "-");
    let valid = uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

fn container_segment(segment: &str) -> Option<(&str, Option<RuntimeKind>, bool)> {
    let body = segment.strip_suffix(".scope").unwrap_or(segment);
    let prefixes: [(&str, Option<RuntimeKind>, bool); 6] = [
        ("cri-containerd-", Some(RuntimeKind::Containerd), false),
        ("crio-conmon-", Some(RuntimeKind::CriO), true),
        ("crio-", Some(RuntimeKind::CriO), false),
        ("docker-", Some(RuntimeKind::Docker), false),
        ("kata_", Some(RuntimeKind::Kata), false),
        ("", None, false),
    ];
    prefixes.iter().find_map(|(prefix, runtime, conmon)| {
        body.strip_prefix(prefix)
            .filter(|id| is_hex_id(id))
            .map(|id| (id, *runtime, *conmon))
    })
}

fn is_hex_id(id: &str) -> bool {
    id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8a1b7c6d-1111-2222-3333-444455556666";
    const UID_US: &str = "8a1b7c6d_1111_2222_3333_444455556666";
    const ID: &str = "4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c";

    /// (path, level, qos, container id present, runtime)
    type Case = (String, Level, Option<Qos>, bool, Option<RuntimeKind>);

    fn cases() -> Vec<Case> {
        vec![
            // cgroupfs driver, containerd/Docker (kubeadm on v1 hosts).
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                Level::Container,
                Some(Qos::Burstable),
                true,
                None,
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                Level::Container,
                Some(Qos::BestEffort),
                true,
                None,
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                Level::Container,
                Some(Qos::Guaranteed),
                true,
                None,
            ),
            (
                format!("/kubepods/pod{UID}"),
                Level::Pod,
                Some(Qos::Guaranteed),
                false,
                None,
            ),
            (
                format!("/kubepods/burstable/pod{UID}"),
                Level::Pod,
                Some(Qos::Burstable),
                false,
                None,
            ),
            (
                "/kubepods/burstable".to_owned(),
                Level::Qos,
                Some(Qos::Burstable),
                false,
                None,
            ),
            ("/kubepods".to_owned(), Level::Kubepods, None, false, None),
            // CRI-O with cgroupfs.
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                Level::Container,
                Some(Qos::Burstable),
                true,
                Some(RuntimeKind::CriO),
            ),
            // systemd driver (GKE/EKS/OpenShift, v1 and v2).
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"
                ),
                Level::Container,
                Some(Qos::Burstable),
                true,
                Some(RuntimeKind::Containerd),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{ID}.scope"
                ),
                Level::Container,
                Some(Qos::BestEffort),
                true,
                Some(RuntimeKind::CriO),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice/docker-{ID}.scope"),
                Level::Container,
                Some(Qos::Guaranteed),
                true,
                Some(RuntimeKind::Docker),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice/crio-conmon-{ID}.scope"),
                Level::Container,
                Some(Qos::Guaranteed),
                true,
                Some(RuntimeKind::CriO),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"),
                Level::Pod,
                Some(Qos::Burstable),
                false,
                None,
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice".to_owned(),
                Level::Qos,
                Some(Qos::BestEffort),
                false,
                None,
            ),
            ("/kubepods.slice".to_owned(), Level::Kubepods, None, false, None),
            // Kata (sandbox cgroup per pod).
            (
                format!("/kubepods/burstable/pod{UID}/kata_{ID}"),
                Level::Container,
                Some(Qos::Burstable),
                true,
                Some(RuntimeKind::Kata),
            ),
            // kind: the node is itself a Docker container.
            (
                format!("/docker/{ID}/kubepods/besteffort/pod{UID}/{ID}"),
                Level::Container,
                Some(Qos::BestEffort),
                true,
                None,
            ),
            // kind on a systemd host with cgroup v2.
            (
                format!(
                    "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"
                ),
                Level::Container,
                Some(Qos::Burstable),
                true,
                Some(RuntimeKind::Containerd),
            ),
            // Rootless (usernetes).
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope"
                ),
                Level::Container,
                Some(Qos::Guaranteed),
                true,
                Some(RuntimeKind::Containerd),
            ),
            // LXC host nesting.
            (
                format!("/lxc.payload.node1/kubepods/burstable/pod{UID}/{ID}"),
                Level::Container,
                Some(Qos::Burstable),
                true,
                None,
            ),
            // Not Kubernetes.
            (format!("/docker/{ID}"), Level::Other, None, false, None),
            (
                "/system.slice/cron.service".to_owned(),
                Level::Other,
                None,
                false,
                None,
            ),
            ("/".to_owned(), Level::Other, None, false, None),
        ]
    }

    #[test]
    fn every_real_layout() {
        for (path, level, qos, has_container, runtime) in cases() {
            let id = parse_cgroup_path(&path);
            assert_eq!(id.level, level, "{path}");
            assert_eq!(id.qos, qos, "{path}");
            assert_eq!(id.container_id.is_some(), has_container, "{path}");
            if has_container {
                assert_eq!(id.container_id.as_deref(), Some(ID), "{path}");
                assert_eq!(id.runtime, runtime, "{path}");
            }
            if matches!(level, Level::Pod | Level::Container) {
                assert_eq!(id.pod_uid.as_deref(), Some(UID), "{path}");
                assert!(
                    path.starts_with(id.pod_cgroup.as_deref().expect("pod cgroup")),
                    "{path}"
                );
            }
        }
    }

    #[test]
    fn non_kubernetes_identities() {
        let docker = parse_cgroup_path(&format!("/docker/{ID}"));
        assert_eq!(docker.docker_id.as_deref(), Some(ID));
        let scope = parse_cgroup_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(scope.docker_id.as_deref(), Some(ID));
        let unit = parse_cgroup_path("/system.slice/cron.service");
        assert_eq!(unit.systemd_unit.as_deref(), Some("cron.service"));
        assert!(
            parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}"))
                .systemd_unit
                .is_none()
        );
        assert!(
            parse_cgroup_path(&format!(
                "/kubepods.slice/kubepods-pod{UID_US}.slice/crio-conmon-{ID}.scope"
            ))
            .conmon
        );
        // Short names are not container ids, and a "pod" substring is not a pod.
        let not_a_pod = parse_cgroup_path("/kubepods/burstable/podfoo");
        assert_eq!(
            (not_a_pod.level, not_a_pod.level_path.as_str()),
            (Level::Qos, "/kubepods/burstable")
        );
        let sub = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}/init.scope"));
        assert_eq!(sub.level_path, format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!(
            parse_cgroup_path("/system.slice/cron.service").level_path,
            "/system.slice/cron.service"
        );
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/pod{UID}/abc")).level,
            Level::Pod
        );
    }
}
