//! Where the memory controller is, and which of its cgroups to follow.

use std::path::{Path, PathBuf};

use super::reader::Version;
use crate::pods::{CgroupIdentity, Level, parse_cgroup_path};

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// Only the unified (v2) hierarchy.
    V2,
    /// v1 controllers plus a v2 hierarchy at `unified/` (systemd's hybrid
    /// mode).
    Hybrid,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::V1 => "v1",
            Mode::V2 => "v2",
            Mode::Hybrid => "hybrid",
        })
    }
}

/// The memory controller's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRoot {
    pub mode: Mode,
    pub version: Version,
    /// The directory whose subdirectories are the memory cgroups; paths
    /// relative to it are what the kernel prints in OOM reports.
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "no cgroup memory controller under {0}: neither {0}/memory (v1) nor a cgroup v2 hierarchy with the memory controller enabled"
    )]
    NoMemoryController(PathBuf),
}

fn v2_has_memory(dir: &Path) -> Option<bool> {
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    Some(controllers.split_whitespace().any(|c| c == "memory"))
}

/// Probes the cgroup mount root (normally `/sys/fs/cgroup`). Hybrid hosts
/// normally have memory on v1 (systemd's `unified/` holds no controllers);
/// if v1 has no memory controller, a v2 memory controller is used
/// wherever it is.
pub fn detect(cgroup_root: &Path) -> Result<MemoryRoot, DetectError> {
    let v1_memory = cgroup_root.join("memory");
    let v1 = v1_memory.join("memory.usage_in_bytes").exists();
    let unified = cgroup_root.join("unified");
    let hybrid_v2 = v2_has_memory(&unified);
    let pure_v2 = v2_has_memory(cgroup_root);
    if v1 {
        let mode = if hybrid_v2.is_some() {
            Mode::Hybrid
        } else {
            Mode::V1
        };
        return Ok(MemoryRoot {
            mode,
            version: Version::V1,
            path: v1_memory,
        });
    }
    if pure_v2 == Some(true) {
        return Ok(MemoryRoot {
            mode: Mode::V2,
            version: Version::V2,
            path: cgroup_root.to_path_buf(),
        });
    }
    if hybrid_v2 == Some(true) {
        return Ok(MemoryRoot {
            mode: Mode::Hybrid,
            version: Version::V2,
            path: unified,
        });
    }
    Err(DetectError::NoMemoryController(cgroup_root.to_path_buf()))
}

/// Which cgroups to follow.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    /// Also systemd services and plain Docker containers.
    pub include_other: bool,
}

/// Whether to follow the cgroup at `relative` (kernel-style path), and its
/// identity if so. Kubernetes cgroups are followed at every level (the
/// kubepods root, QoS, pod, container), each only at the directory that is
/// that level, not its sub-cgroups; CRI-O's conmon cgroups are skipped.
pub fn select(relative: &str, selection: Selection) -> Option<CgroupIdentity> {
    let identity = parse_cgroup_path(relative);
    if identity.level_path != relative {
        return None;
    }
    match identity.level {
        Level::Container => (!identity.conmon).then_some(identity),
        Level::Pod | Level::Qos | Level::Kubepods => Some(identity),
        Level::Other => {
            let service = relative.ends_with(".service");
            (selection.include_other && (service || identity.docker_id.is_some())).then_some(identity)
        }
    }
}

/// A cgroup directory found by a scan.
#[derive(Debug, Clone)]
pub struct Found {
    /// Kernel-style path (`/kubepods/burstable/pod.../id`).
    pub relative: String,
    pub identity: CgroupIdentity,
}

/// Deepest directory level a scan descends to (nested kind/LXC prefixes
/// plus the kubepods levels fit well within it).
const MAX_DEPTH: usize = 16;

/// Kernel-style path of `dir` under `root`.
pub fn relative_path(root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    Some(
        format!("/{}", rel.to_string_lossy())
            .trim_end_matches('/')
            .to_owned(),
    )
    .map(|p| if p.is_empty() { "/".to_owned() } else { p })
}

/// Walks `start` (a directory under `root`) and returns the cgroups to
/// follow, plus every directory walked (for inotify watches). Directories
/// that vanish during the walk are skipped.
pub fn scan(root: &Path, start: &Path, selection: Selection) -> (Vec<Found>, Vec<PathBuf>) {
    let mut found = Vec::new();
    let mut dirs = Vec::new();
    let mut stack = vec![(start.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Some(relative) = relative_path(root, &dir) else {
            continue;
        };
        let mut container = false;
        if relative != "/"
            && let Some(identity) = select(&relative, selection)
        {
            container = identity.level == Level::Container;
            found.push(Found {
                relative: relative.clone(),
                identity,
            });
        }
        dirs.push(dir.clone());
        // Nothing below a container is followed, and containers are most of
        // the tree: not reading them keeps the periodic rescan cheap.
        if depth >= MAX_DEPTH || container {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    (found, dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_rules() {
        let all = Selection { include_other: true };
        let k8s = Selection { include_other: false };
        let uid = "8a1b7c6d-1111-2222-3333-444455556666";
        let id = "ab".repeat(32);
        assert!(select("/kubepods", k8s).is_some());
        assert!(select("/kubepods/burstable", k8s).is_some());
        assert!(select(&format!("/kubepods/burstable/pod{uid}"), k8s).is_some());
        assert!(select(&format!("/kubepods/burstable/pod{uid}/{id}"), k8s).is_some());
        assert!(select(&format!("/kubepods/burstable/pod{uid}/{id}/sub"), k8s).is_none());
        let us = uid.replace('-', "_");
        assert!(
            select(
                &format!("/kubepods.slice/kubepods-pod{us}.slice/crio-conmon-{id}.scope"),
                k8s
            )
            .is_none()
        );
        assert!(select("/system.slice/cron.service", k8s).is_none());
        assert!(select("/system.slice/cron.service", all).is_some());
        assert!(select(&format!("/docker/{id}"), all).is_some());
        assert!(select("/user.slice", all).is_none());
    }

    #[test]
    fn relative_paths() {
        let root = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(relative_path(root, root).as_deref(), Some("/"));
        assert_eq!(
            relative_path(root, &root.join("kubepods/burstable")).as_deref(),
            Some("/kubepods/burstable")
        );
        assert_eq!(relative_path(root, Path::new("/elsewhere")), None);
    }
}
