//! Verdicts from what the limited cgroup was charged for (its breakdown
//! and memory-backed volumes) and from who held a pod's memory: the causes
//! the working-set curve alone cannot tell apart.

use oomlens_common::units::human_bytes;
use oomlens_proto::v1::{MemoryBreakdown, MemoryVolume, OomEvent, Scope, Verdict};

use super::Rules;

/// A pod-level kill whose containers' shares are known: which held what.
pub(super) fn pod_limit(event: &OomEvent, scope: Scope, limit: Option<u64>) -> Option<(Verdict, String)> {
    if scope != Scope::PodLimit {
        return None;
    }
    let victim = event.task_memcg.as_deref();
    // The victim's own anonymous and shared memory at the kill, from the
    // kernel's line: samples 100 ms apart can miss the last climb
    // entirely. Not its file-rss: mapped files (its binary) are charged
    // to whoever read them first.
    let victim_rss = event.victim.as_ref().and_then(|v| {
        v.anon_rss_kb?
            .checked_add(v.shmem_rss_kb.unwrap_or(0))?
            .checked_mul(1024)
    });
    let comm = event
        .victim
        .as_ref()
        .and_then(|v| v.comm.clone())
        .unwrap_or_else(|| "the victim".to_owned());
    let shares: Vec<String> = event
        .limited_containers
        .iter()
        .filter_map(|c| {
            let bytes = c.working_set_bytes?;
            let name = c.name.clone().unwrap_or_else(|| short_id(&c.container_id));
            if Some(c.cgroup.as_str()) != victim {
                return Some(format!("{name} {}", human_bytes(bytes)));
            }
            Some(match victim_rss {
                Some(rss) if rss > bytes => format!(
                    "{name} at least {} at the kill (the victim {comm}'s anonymous and shared memory; {} at the last sample)",
                    human_bytes(rss),
                    human_bytes(bytes)
                ),
                _ => format!("{name} {} (the victim's)", human_bytes(bytes)),
            })
        })
        .take(8)
        .collect();
    if shares.is_empty() {
        return None;
    }
    let limit = limit.map_or_else(|| "its".to_owned(), |l| format!("its {}", human_bytes(l)));
    Some((
        Verdict::PodLimit,
        format!(
            "the pod's containers together reached {limit} limit, not one container's own: {}. \
             Raise the pod's limit (the sum of its containers' limits) or shrink the largest holder",
            shares.join(", ")
        ),
    ))
}

/// The first 12 characters of a container id, as `crictl` shows it.
fn short_id(id: &str) -> String {
    if id.is_empty() {
        "?".to_owned()
    } else {
        id.chars().take(12).collect()
    }
}

/// The verdict a dominant layer of the charge gives, if one does.
/// `charged_at_kill`: the kernel's own usage of the breakdown's cgroup at
/// the kill. A layer holds the charge only against that too: a breakdown
/// from the last sample, 100 ms before a fast climb, may show a volume's
/// few MiB as most of what was then charged, while the kill came from
/// another layer filling the rest.
pub(super) fn layer_verdict(
    b: &MemoryBreakdown,
    volumes: &[MemoryVolume],
    limit: Option<u64>,
    charged_at_kill: Option<u64>,
    rules: &Rules,
) -> Option<(Verdict, String)> {
    let anon = b.anon_bytes.unwrap_or(0);
    let page_cache = b.page_cache_bytes.unwrap_or(0);
    let shmem = b.shmem_bytes.unwrap_or(0);
    let kernel = b.kernel_bytes.unwrap_or(0);
    let total = anon
        .saturating_add(page_cache)
        .saturating_add(shmem)
        .saturating_add(kernel)
        .max(charged_at_kill.unwrap_or(0));
    if total == 0 {
        return None;
    }
    let share = |bytes: u64| bytes as f64 / total as f64;
    let of = |bytes: u64| match limit {
        Some(limit) => format!("{} of the {} limit", human_bytes(bytes), human_bytes(limit)),
        None => format!("{} of {} charged", human_bytes(bytes), human_bytes(total)),
    };
    if share(shmem) >= rules.layer_dominant {
        let mut reasoning = format!(
            "shmem held {}: files in a memory-backed volume (an emptyDir with medium: Memory) \
             or shared memory. They survive a restart, so the restarted container will be \
             killed again: set the emptyDir's sizeLimit, delete what fills it, or move it to disk",
            of(shmem)
        );
        // The volumes the agent found, fullest first.
        let mut named: Vec<&MemoryVolume> = volumes.iter().filter(|v| v.used_bytes.is_some()).collect();
        named.sort_by_key(|v| std::cmp::Reverse(v.used_bytes));
        for volume in named {
            reasoning.push_str(&format!(
                "; volume {} holds {}",
                volume.name,
                human_bytes(volume.used_bytes.unwrap_or(0))
            ));
            if let Some(size) = volume.size_bytes {
                reasoning.push_str(&format!(" of its {}", human_bytes(size)));
            }
        }
        return Some((Verdict::TmpfsFull, reasoning));
    }
    if share(kernel) >= rules.layer_dominant {
        let parts: Vec<String> = [
            ("sockets", b.sock_bytes),
            ("slab", {
                let slab = b.slab_reclaimable_bytes.unwrap_or(0) + b.slab_unreclaimable_bytes.unwrap_or(0);
                (slab > 0).then_some(slab)
            }),
            ("page tables", b.pagetables_bytes),
            ("kernel stacks", b.kernel_stack_bytes),
        ]
        .into_iter()
        .filter_map(|(name, bytes)| {
            bytes
                .filter(|b| *b > 0)
                .map(|b| format!("{name} {}", human_bytes(b)))
        })
        .collect();
        let detail = if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        };
        return Some((
            Verdict::KernelMemory,
            format!(
                "kernel memory held {}{detail}, which no process's RSS shows: look for many \
                 connections, sockets or pipes with full buffers, many files or threads",
                of(kernel)
            ),
        ));
    }
    let unwritten = b
        .dirty_bytes
        .unwrap_or(0)
        .saturating_add(b.writeback_bytes.unwrap_or(0));
    if share(page_cache) >= rules.layer_dominant
        && page_cache > 0
        && unwritten as f64 >= page_cache as f64 * rules.unwritten_share
    {
        return Some((
            Verdict::PageCachePressure,
            format!(
                "page cache held {}, {} of it dirty or under writeback: the kernel could not \
                 write it back fast enough to free it. Write less at once (fsync in smaller \
                 batches, O_DIRECT), or a faster volume; a higher limit only delays it",
                of(page_cache),
                human_bytes(unwritten)
            ),
        ));
    }
    None
}
