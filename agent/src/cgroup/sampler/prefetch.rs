//! Starting the loads of the next due cgroups' state while this one's
//! files are read.
//!
//! Every sample touches per-cgroup memory that has gone cold since the
//! cgroup's last sample 100 ms ago (its entry, the newest slot of its
//! history ring): on a busy node each is a cache miss, and together they
//! were a fifth of the sampler's own work. The kernel's read of the
//! current cgroup's file takes microseconds, long enough for those lines
//! to arrive if asked for first.

/// Bytes of an entry a sample reads (its first cache lines: `Tracked` puts
/// what every sample touches first).
pub(super) const ENTRY_BYTES: usize = 256;

/// Asks the CPU to start loading the `bytes` from `at` into its caches.
/// Only a hint: it never faults and changes nothing the program sees.
#[inline]
pub(super) fn prefetch<T>(at: &T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = std::ptr::from_ref(at).cast::<i8>();
        // Every line the range touches, its last byte's included.
        let offsets = (0..bytes).step_by(64).chain(bytes.checked_sub(1));
        for offset in offsets {
            // The workspace's second unsafe expression (see Cargo.toml).
            // SAFETY: a prefetch has no memory-safety requirement: it never
            // faults, whatever the address (`wrapping_add` keeps the
            // arithmetic defined), and its only effect is on the caches.
            // `unsafe` is only because `_mm_prefetch` is a `target_feature`
            // function (SSE, which every x86_64 has).
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, bytes);
}
