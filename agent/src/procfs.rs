//! The few `/proc` files the agent reads, under a configurable root (the
//! host's `/proc` mounted into the agent's container): this boot's id, the
//! host name and kernel release for events, and a dying victim's cgroup.
//! Parsers are pure; the readers are one file each.

use std::path::Path;

/// This boot's id (`sys/kernel/random/boot_id`): kernel log cursors are
/// only valid within one boot.
pub fn read_boot_id(proc_root: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))?;
    Ok(text.trim().to_owned())
}

/// The host name (`sys/kernel/hostname`), None when unreadable or empty.
pub fn hostname(proc_root: &Path) -> Option<String> {
    read_trimmed(&proc_root.join("sys/kernel/hostname"))
}

/// The kernel release (`sys/kernel/osrelease`), None when unreadable.
pub fn kernel_release(proc_root: &Path) -> Option<String> {
    read_trimmed(&proc_root.join("sys/kernel/osrelease"))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The memory cgroup of a live (or dying) process, from
/// `PID/cgroup`: the `memory` line on v1, the unified line on v2.
/// None for `/`: an exiting process is moved to the root cgroup, so `/`
/// says nothing about where it was killed. None for a path outside the
/// agent's own cgroup namespace (`/..`, an agent in a container with a
/// private cgroup namespace): the kernel log's paths are absolute.
pub fn memory_cgroup_of(proc_root: &Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    parse_proc_cgroup(&text).filter(|path| path != "/" && !path.starts_with("/.."))
}

/// The memory cgroup in a `/proc/PID/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if controllers.is_empty() {
            unified = Some(path.to_owned());
        }
    }
    unified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:pids:/kubepods/x\n7:memory:/kubepods/burstable/pod1/c1\n0::/system.slice/containerd.service\n";
        assert_eq!(
            parse_proc_cgroup(v1).as_deref(),
            Some("/kubepods/burstable/pod1/c1")
        );
        let v2 = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope\n";
        assert_eq!(
            parse_proc_cgroup(v2).as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope")
        );
        assert_eq!(parse_proc_cgroup("garbage"), None);
    }

    #[test]
    fn a_dying_process_in_the_root_or_outside_our_namespace_says_nothing() {
        let proc_root = tempfile::tempdir().expect("tempdir");
        for (pid, text) in [
            (1, "0::/\n"),
            (2, "0::/../kubepods/pod1/c1\n"),
            (3, "7:memory:/kubepods/pod1/c1\n"),
        ] {
            let dir = proc_root.path().join(pid.to_string());
            std::fs::create_dir(&dir).expect("pid dir");
            std::fs::write(dir.join("cgroup"), text).expect("cgroup file");
        }
        assert_eq!(memory_cgroup_of(proc_root.path(), 1), None);
        assert_eq!(memory_cgroup_of(proc_root.path(), 2), None);
        assert_eq!(
            memory_cgroup_of(proc_root.path(), 3).as_deref(),
            Some("/kubepods/pod1/c1")
        );
        assert_eq!(memory_cgroup_of(proc_root.path(), 4), None, "gone");
    }
}
