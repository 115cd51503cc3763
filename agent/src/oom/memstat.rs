//! The memory.stat dump of an OOM report: what the limited cgroup's memory
//! was charged for when the kernel killed. Pure.
//!
//! Three shapes are in the field:
//! - cgroup v2 (4.19+): `Memory cgroup stats for /A:` then `anon N`, `file
//!   N`, … in bytes (one record with embedded newlines; dmesg splits it);
//! - cgroup v1 since 4.19: the same, with v1's keys (`cache`, `rss`, …) and
//!   their hierarchical `total_*` twins;
//! - cgroup v1 before 4.19: `Memory cgroup stats for /A: cache:32KB
//!   rss:524188KB …`, one line per cgroup of the subtree, each its own
//!   (non-hierarchical) charge.

/// The keys a breakdown uses; others are not kept.
const KEYS: [&str; 21] = [
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "shmem",
    "file_dirty",
    "file_writeback",
    "active_file",
    "inactive_file",
    "slab_reclaimable",
    "slab_unreclaimable",
    "cache",
    "rss",
    "dirty",
    "writeback",
    "swap",
    "mapped_file",
];

/// Values by key, in bytes, as the kernel printed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStat {
    own: [Option<u64>; KEYS.len()],
    /// v1's hierarchical `total_*` values, which win when present.
    total: [Option<u64>; KEYS.len()],
}

impl MemStat {
    /// Adds one `key value` line (bytes). Repeated keys add up: a pre-4.19
    /// kernel prints each cgroup of the subtree on its own line.
    pub fn add(&mut self, key: &str, bytes: u64) {
        let (slots, key) = match key.strip_prefix("total_") {
            Some(key) => (&mut self.total, key),
            None => (&mut self.own, key),
        };
        if let Some(at) = KEYS.iter().position(|k| *k == key) {
            let slot = &mut slots[at];
            *slot = Some(slot.unwrap_or(0).saturating_add(bytes));
        }
    }

    /// Adds the `key:NKB` pairs of a pre-4.19 stats line.
    pub fn add_inline(&mut self, pairs: &str) {
        for pair in pairs.split_ascii_whitespace() {
            let Some((key, value)) = pair.split_once(':') else {
                continue;
            };
            let Some(kb) = value.strip_suffix("KB").and_then(|v| v.parse::<u64>().ok()) else {
                continue;
            };
            self.add(key, kb.saturating_mul(1024));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.own.iter().chain(&self.total).all(Option::is_none)
    }

    /// The value of `key`: the hierarchical one when printed.
    pub fn get(&self, key: &str) -> Option<u64> {
        let at = KEYS.iter().position(|k| *k == key)?;
        self.total[at].or(self.own[at])
    }

    /// The breakdown these stats give; `kmem_kb` is v1's `kmem: usage`
    /// counter (v1's memory.stat has no kernel memory of its own).
    pub fn breakdown(&self, kmem_kb: Option<u64>) -> Breakdown {
        if self.get("anon").is_some() {
            self.breakdown_v2()
        } else {
            self.breakdown_v1(kmem_kb)
        }
    }

    fn breakdown_v2(&self) -> Breakdown {
        let slab_reclaimable = self.get("slab_reclaimable");
        let slab_unreclaimable = self.get("slab_unreclaimable");
        let parts = [
            self.get("kernel_stack"),
            self.get("pagetables"),
            self.get("percpu"),
            self.get("sock"),
            self.get("vmalloc"),
            slab_reclaimable,
            slab_unreclaimable,
        ];
        // `kernel` is printed since 5.18; before, the sum of its parts.
        let kernel = self.get("kernel").or_else(|| {
            parts
                .iter()
                .any(Option::is_some)
                .then(|| parts.iter().flatten().sum())
        });
        let shmem = self.get("shmem");
        Breakdown {
            anon: self.get("anon"),
            // v2's `file` counts shmem too.
            page_cache: self
                .get("file")
                .map(|file| file.saturating_sub(shmem.unwrap_or(0))),
            active_file: self.get("active_file"),
            inactive_file: self.get("inactive_file"),
            dirty: self.get("file_dirty"),
            writeback: self.get("file_writeback"),
            shmem,
            kernel,
            slab_reclaimable,
            slab_unreclaimable,
            sock: self.get("sock"),
            kernel_stack: self.get("kernel_stack"),
            pagetables: self.get("pagetables"),
            percpu: self.get("percpu"),
            swap: None,
        }
    }

    fn breakdown_v1(&self, kmem_kb: Option<u64>) -> Breakdown {
        let shmem = self.get("shmem");
        Breakdown {
            // v1's `rss`: anonymous memory and swap cache, THP included.
            anon: self.get("rss"),
            // v1's `cache` counts shmem too.
            page_cache: self
                .get("cache")
                .map(|cache| cache.saturating_sub(shmem.unwrap_or(0))),
            active_file: self.get("active_file"),
            inactive_file: self.get("inactive_file"),
            dirty: self.get("dirty"),
            writeback: self.get("writeback"),
            shmem,
            kernel: kmem_kb.map(|kb| kb.saturating_mul(1024)),
            swap: self.get("swap"),
            ..Breakdown::default()
        }
    }
}

/// What a cgroup's memory was charged for, in bytes; None where the kernel
/// did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breakdown {
    pub anon: Option<u64>,
    /// Page cache of files, without shmem.
    pub page_cache: Option<u64>,
    pub active_file: Option<u64>,
    pub inactive_file: Option<u64>,
    pub dirty: Option<u64>,
    pub writeback: Option<u64>,
    /// tmpfs and shared memory.
    pub shmem: Option<u64>,
    pub kernel: Option<u64>,
    pub slab_reclaimable: Option<u64>,
    pub slab_unreclaimable: Option<u64>,
    pub sock: Option<u64>,
    pub kernel_stack: Option<u64>,
    pub pagetables: Option<u64>,
    pub percpu: Option<u64>,
    pub swap: Option<u64>,
}

/// A `key value` line of the dump (lowercase key, decimal bytes).
pub fn stat_line(text: &str) -> Option<(&str, u64)> {
    let (key, value) = text.trim_end().split_once(' ')?;
    let key_ok = key.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !key_ok || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((key, value.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_lines(lines: &str) -> MemStat {
        let mut stat = MemStat::default();
        for (key, value) in lines.lines().filter_map(stat_line) {
            stat.add(key, value);
        }
        stat
    }

    #[test]
    fn cgroup_v2_stats_split_file_into_page_cache_and_shmem() {
        // From a real 6.1 kill in the test VM (agent/tests/corpus/own-02).
        let stat = from_lines(
            "anon 33390592\nfile 8192\nkernel 163840\nkernel_stack 0\npagetables 110592\n\
             percpu 0\nsock 0\nvmalloc 0\nshmem 4096\nfile_dirty 0\nfile_writeback 0\n\
             inactive_anon 33337344\nactive_anon 8192\ninactive_file 4096\nactive_file 0\n\
             slab_reclaimable 0\nslab_unreclaimable 8344\nslab 8344\n",
        );
        let b = stat.breakdown(None);
        assert_eq!(b.anon, Some(33_390_592));
        assert_eq!(b.page_cache, Some(4096));
        assert_eq!(b.shmem, Some(4096));
        assert_eq!(b.kernel, Some(163_840));
        assert_eq!(b.pagetables, Some(110_592));
        assert_eq!(b.slab_unreclaimable, Some(8344));
        assert_eq!(b.swap, None);
    }

    #[test]
    fn cgroup_v2_before_5_18_sums_the_kernel_parts() {
        let stat = from_lines(
            "anon 100\nfile 0\nkernel_stack 16384\npagetables 8192\nsock 4096\nslab_reclaimable 1000\nslab_unreclaimable 2000\n",
        );
        assert_eq!(
            stat.breakdown(None).kernel,
            Some(16384 + 8192 + 4096 + 1000 + 2000)
        );
    }

    #[test]
    fn cgroup_v1_prefers_the_hierarchical_totals_and_takes_kernel_from_kmem() {
        // Shape of a real 6.18 v1 kill on this machine
        // (agent/tests/fixtures/kmsg/linux-6.18-memcg-v1.kmsg).
        let stat = from_lines(
            "cache 0\nrss 4096\nshmem 0\ndirty 0\nwriteback 0\nswap 0\ninactive_file 0\n\
             total_cache 1048576\ntotal_rss 33415168\ntotal_shmem 524288\ntotal_dirty 8192\n\
             total_writeback 0\ntotal_swap 0\ntotal_inactive_file 524288\ntotal_active_file 0\n",
        );
        let b = stat.breakdown(Some(512));
        assert_eq!(b.anon, Some(33_415_168));
        assert_eq!(b.page_cache, Some(524_288));
        assert_eq!(b.shmem, Some(524_288));
        assert_eq!(b.dirty, Some(8192));
        assert_eq!(b.kernel, Some(512 * 1024));
        assert_eq!(b.swap, Some(0));
    }

    #[test]
    fn cgroup_v1_before_4_19_adds_up_the_lines_of_the_subtree() {
        // RHEL 7 (3.10), agent/tests/fixtures/logs/rhel7-3.10-memcg-dmesg-T.txt.
        let mut stat = MemStat::default();
        stat.add_inline("cache:32KB rss:524188KB rss_huge:370688KB mapped_file:0KB swap:524356KB inactive_anon:267804KB active_anon:256384KB inactive_file:0KB active_file:0KB unevictable:0KB");
        stat.add_inline("cache:0KB rss:1000KB shmem:8KB");
        let b = stat.breakdown(None);
        assert_eq!(b.anon, Some((524_188 + 1000) * 1024));
        assert_eq!(b.page_cache, Some(24 * 1024));
        assert_eq!(b.shmem, Some(8 * 1024));
        assert_eq!(b.swap, Some(524_356 * 1024));
        assert_eq!(b.kernel, None);
    }

    #[test]
    fn only_key_value_lines_are_stat_lines() {
        assert_eq!(stat_line("anon 123"), Some(("anon", 123)));
        assert_eq!(stat_line("total_rss 0\n"), Some(("total_rss", 0)));
        for text in [
            "anon",
            "anon x",
            "Anon 1",
            "anon 1 2",
            "[  pid  ]   uid  tgid",
            "oom-kill:constraint=CONSTRAINT_MEMCG",
            "anon -1",
            "anon 99999999999999999999999",
        ] {
            assert_eq!(stat_line(text), None, "{text:?}");
        }
        let mut stat = MemStat::default();
        stat.add("pgfault", 8207);
        assert!(stat.is_empty(), "keys a breakdown does not use are not kept");
    }
}
