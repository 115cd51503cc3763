//! Whether a kill may be followed by the rest of its `memory.oom.group`.
//!
//! The kernel prints the victim's `Killed process` line first and only
//! then `Tasks in /A are going to be killed due to memory.oom.group set`
//! and the other members' kills (mm/oom_kill.c, `oom_kill_process`). So a
//! report cannot be closed at its kill line unless no group can follow:
//! on cgroup v1, which has no `memory.oom.group`, or on v2 when neither the
//! victim's cgroup nor any ancestor up to the limited one has it set. Then
//! the kill is reported at once instead of after a quiet pause.

use std::path::{Path, PathBuf};

/// What the pipeline knows of `memory.oom.group` on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OomGroups {
    /// Nothing known (no cgroup root given): every kill waits for a quiet
    /// pause, in case its group follows.
    #[default]
    Unknown,
    /// cgroup v1 memory: there is no `memory.oom.group`.
    Impossible,
    /// cgroup v2 with memory, mounted here.
    V2(PathBuf),
}

impl OomGroups {
    /// Whether a group kill may follow the kill of a task in `task_memcg`
    /// limited at `oom_memcg` (None or `/`: the whole node). `Some(false)`
    /// only when it certainly cannot; None when unknown.
    pub fn may_follow(&self, task_memcg: Option<&str>, oom_memcg: Option<&str>) -> Option<bool> {
        match self {
            Self::Unknown => None,
            Self::Impossible => Some(false),
            Self::V2(root) => may_follow_v2(root, task_memcg?, oom_memcg.unwrap_or("/")),
        }
    }
}

/// Reads `memory.oom.group` from `task_memcg` up to `oom_memcg`.
fn may_follow_v2(root: &Path, task_memcg: &str, oom_memcg: &str) -> Option<bool> {
    let top = oom_memcg.trim_end_matches('/');
    let mut level = task_memcg.trim_end_matches('/');
    // The victim's cgroup must be the limited one or below it.
    if !(level == top || top.is_empty() || level.starts_with(&format!("{top}/"))) {
        return None;
    }
    loop {
        if level.is_empty() {
            // The root cgroup has no memory.oom.group.
            return Some(false);
        }
        let dir = root.join(level.trim_start_matches('/'));
        match std::fs::read_to_string(dir.join("memory.oom.group")) {
            Ok(value) if value.trim() == "1" => return Some(true),
            Ok(_) => {}
            // A level without the file (no memory controller there): none.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {}
            // Gone already, or unreadable: cannot tell.
            Err(_) => return None,
        }
        if level == top {
            return Some(false);
        }
        level = match level.rfind('/') {
            Some(slash) => &level[..slash],
            None => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(groups: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, value) in groups {
            let at = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&at).unwrap();
            if let Some(value) = value {
                std::fs::write(at.join("memory.oom.group"), format!("{value}\n")).unwrap();
            }
        }
        dir
    }

    const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice";
    const CONTAINER: &str =
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab.scope";

    #[test]
    fn a_group_set_between_the_victim_and_the_limit_may_follow() {
        let dir = tree(&[
            ("/kubepods.slice", Some("0")),
            ("/kubepods.slice/kubepods-burstable.slice", Some("0")),
            (POD, Some("0")),
            (CONTAINER, Some("1")),
        ]);
        let groups = OomGroups::V2(dir.path().to_owned());
        assert_eq!(groups.may_follow(Some(CONTAINER), Some(CONTAINER)), Some(true));
        assert_eq!(groups.may_follow(Some(CONTAINER), Some(POD)), Some(true));
        assert_eq!(groups.may_follow(Some(CONTAINER), None), Some(true));
    }

    #[test]
    fn without_a_group_up_to_the_limit_none_follows() {
        // Set above the limited cgroup only: the kernel looks no higher.
        let dir = tree(&[
            ("/kubepods.slice", Some("1")),
            ("/kubepods.slice/kubepods-burstable.slice", Some("0")),
            (POD, Some("0")),
            (CONTAINER, Some("0")),
        ]);
        let groups = OomGroups::V2(dir.path().to_owned());
        assert_eq!(groups.may_follow(Some(CONTAINER), Some(CONTAINER)), Some(false));
        assert_eq!(groups.may_follow(Some(CONTAINER), Some(POD)), Some(false));
        // A node-wide kill looks up to the root, and finds kubepods'.
        assert_eq!(groups.may_follow(Some(CONTAINER), None), Some(true));
        assert_eq!(groups.may_follow(Some(CONTAINER), Some("/")), Some(true));
    }

    #[test]
    fn what_cannot_be_read_is_unknown_and_v1_never_groups() {
        let dir = tree(&[(POD, Some("0"))]);
        let groups = OomGroups::V2(dir.path().to_owned());
        // The container's cgroup is gone already.
        assert_eq!(groups.may_follow(Some(CONTAINER), Some(CONTAINER)), None);
        // No task cgroup in the report, or one outside the limited cgroup.
        assert_eq!(groups.may_follow(None, Some(POD)), None);
        assert_eq!(
            groups.may_follow(Some("/system.slice/x.service"), Some(POD)),
            None
        );
        assert_eq!(OomGroups::Impossible.may_follow(None, None), Some(false));
        assert_eq!(OomGroups::Unknown.may_follow(Some(CONTAINER), Some(POD)), None);
        // Levels without the file (no memory controller there) set nothing.
        let bare = tree(&[(CONTAINER, None)]);
        let groups = OomGroups::V2(bare.path().to_owned());
        assert_eq!(groups.may_follow(Some(CONTAINER), Some(POD)), Some(false));
    }
}
