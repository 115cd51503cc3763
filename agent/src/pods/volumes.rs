//! A pod's memory-backed volumes: the kubelet mounts an `emptyDir` with
//! `medium: Memory` as a tmpfs at `<kubelet root>/pods/<uid>/volumes/
//! kubernetes.io~empty-dir/<name>`. Its files are charged to the memory
//! cgroup of whoever wrote them and outlive a container's restart, which is
//! why a pod that fills one is killed again and again (kubernetes#128339).
//!
//! Found in the host's mount table (`<proc>/1/mountinfo`, so it works from
//! the agent's container with `hostPID`; else the agent's own) and measured
//! through `<proc>/1/root` (else at the same path, when the agent shares the
//! host's mounts), without the kubelet or the API.

use std::path::Path;

use oomlens_proto::v1::MemoryVolume;

const EMPTY_DIR: &str = "/volumes/kubernetes.io~empty-dir/";

/// The memory-backed `emptyDir` volumes of pod `uid` in a mountinfo table:
/// (volume name, mount point). Pure.
pub fn memory_volumes_in(mountinfo: &str, uid: &str) -> Vec<(String, String)> {
    let pod_dir = format!("/pods/{uid}{EMPTY_DIR}");
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        // `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        if after.split(' ').next() != Some("tmpfs") {
            continue;
        }
        let mount_point = unescape(mount_point);
        let Some(at) = mount_point.find(&pod_dir) else {
            continue;
        };
        let name = &mount_point[at + pod_dir.len()..];
        if name.is_empty() || name.contains('/') {
            continue;
        }
        if !found.iter().any(|(n, _)| n == name) {
            found.push((name.to_owned(), mount_point.clone()));
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(value) = u8::from_str_radix(octal, 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The memory-backed volumes of pod `uid` on this host, each with its size
/// now (a volume that cannot be measured is still named).
pub fn memory_volumes(proc_root: &Path, uid: &str) -> Vec<MemoryVolume> {
    let Ok(mountinfo) = std::fs::read_to_string(proc_root.join("1/mountinfo"))
        .or_else(|_| std::fs::read_to_string(proc_root.join("self/mountinfo")))
    else {
        return Vec::new();
    };
    memory_volumes_in(&mountinfo, uid)
        .into_iter()
        .map(|(name, mount_point)| {
            let through_init = proc_root.join("1/root").join(mount_point.trim_start_matches('/'));
            // Only a tmpfs: at the same path in the agent's own mounts
            // there may be the directory the tmpfs hides.
            let stat = [through_init.as_path(), Path::new(&mount_point)]
                .into_iter()
                .filter_map(|path| nix::sys::statfs::statfs(path).ok())
                .find(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
            let size = |blocks: u64| {
                stat.as_ref()
                    .and_then(|s| u64::try_from(s.block_size()).ok())
                    .map(|block| blocks.saturating_mul(block))
            };
            MemoryVolume {
                name,
                used_bytes: stat
                    .as_ref()
                    .and_then(|s| size(s.blocks().saturating_sub(s.blocks_free()))),
                size_bytes: stat.as_ref().and_then(|s| size(s.blocks())),
                path: mount_point,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as on a kubeadm node (a container's own mounts, a projected
    /// token volume, a disk-backed emptyDir, and two in memory).
    const MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
610 25 0:58 / /var/lib/kubelet/pods/5c7e0a52-0000-4000-8000-000000000001/volumes/kubernetes.io~projected/kube-api-access-x7k2p rw,relatime shared:330 - tmpfs tmpfs rw,size=3985576k
611 25 0:59 / /var/lib/kubelet/pods/5c7e0a52-0000-4000-8000-000000000001/volumes/kubernetes.io~empty-dir/cache rw,relatime shared:331 - tmpfs tmpfs rw,size=524288k
612 25 0:60 / /var/lib/kubelet/pods/5c7e0a52-0000-4000-8000-000000000001/volumes/kubernetes.io~empty-dir/shm\\040dir rw,relatime shared:332 - tmpfs tmpfs rw
613 25 0:61 / /var/lib/kubelet/pods/99999999-0000-4000-8000-000000000009/volumes/kubernetes.io~empty-dir/cache rw,relatime shared:333 - tmpfs tmpfs rw
614 25 8:1 /var/lib/kubelet/pods/5c7e0a52-0000-4000-8000-000000000001/volumes/kubernetes.io~empty-dir/scratch /var/lib/kubelet/pods/5c7e0a52-0000-4000-8000-000000000001/volumes/kubernetes.io~empty-dir/scratch rw - ext4 /dev/sda1 rw
";

    #[test]
    fn only_the_pods_tmpfs_empty_dirs_are_memory_volumes() {
        let found = memory_volumes_in(MOUNTINFO, "5c7e0a52-0000-4000-8000-000000000001");
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cache", "shm dir"]);
        assert!(found[1].1.ends_with("empty-dir/shm dir"));
        assert!(memory_volumes_in(MOUNTINFO, "00000000-0000-4000-8000-000000000000").is_empty());
        assert!(memory_volumes_in("garbage\n\n - \n1 2 3", "x").is_empty());
    }

    #[test]
    fn no_mount_table_is_no_volume() {
        assert!(memory_volumes(Path::new("/nonexistent"), "x").is_empty());
    }
}
