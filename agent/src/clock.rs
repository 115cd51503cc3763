//! The kernel's clock: printk stamps records with `CLOCK_MONOTONIC`
//! microseconds, and OOM notifications are timed on it too. Turning those
//! into wall time needs the wall time of boot.

use nix::time::{ClockId, clock_gettime};

/// Microseconds on the kernel's monotonic clock (0 if it cannot be read).
pub fn monotonic_us() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let micros = i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1000;
        u64::try_from(micros).unwrap_or(0)
    })
}

/// Wall-clock microseconds at boot, to convert kernel timestamps.
pub fn boot_wall_us() -> Option<i64> {
    let real = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
    let real_us = real.tv_sec() * 1_000_000 + real.tv_nsec() / 1000;
    Some(real_us - i64::try_from(monotonic_us()).ok()?)
}
