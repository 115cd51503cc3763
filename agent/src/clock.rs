//! The kernel's clocks. printk stamps records with its own clock
//! (`local_clock`, microseconds since boot), and OOM notifications are
//! timed on `CLOCK_MONOTONIC`. The two start together but drift apart with
//! uptime, since NTP slews only the latter (7.4 ms after 22 hours on one
//! test VM; seconds after months). Turning kernel-log stamps into wall time
//! needs the wall time of the log clock's zero: [`boot_wall_us`], corrected
//! by [`log_clock_offset_us`] when it can be measured.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

/// Microseconds on the kernel's monotonic clock (0 if it cannot be read).
pub fn monotonic_us() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let micros = i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1000;
        u64::try_from(micros).unwrap_or(0)
    })
}

/// Wall-clock microseconds at the zero of the kernel log's clock, to
/// convert its stamps: `log_offset_us` is [`log_clock_offset_us`] (0 when
/// unmeasured: the clocks taken as one).
pub fn boot_wall_us(log_offset_us: i64) -> Option<i64> {
    let real = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
    let real_us = real.tv_sec() * 1_000_000 + real.tv_nsec() / 1000;
    Some(real_us - i64::try_from(monotonic_us()).ok()? - log_offset_us)
}

/// Why the log clock could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ClockProbeError {
    #[error("{0} is not the kernel log device")]
    NotDevice(String),
    #[error("writing the probe line to {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the probe line did not come back within a second (printk_devkmsg off or rate-limited?)")]
    NotSeen,
}

/// The kernel log's clock minus `CLOCK_MONOTONIC`, in microseconds: a line
/// written to `kmsg` (the `/dev/kmsg` device) is read back, and its stamp
/// compared with the monotonic time just before the write (which takes
/// about 20 µs). It leaves one debug-level line in the kernel log.
pub fn log_clock_offset_us(kmsg: &Path) -> Result<i64, ClockProbeError> {
    let probe = probe(kmsg)?;
    Ok(probe.stamp_us - probe.monotonic_before_us)
}

/// A probe line's stamp and the clocks just before it was written.
#[derive(Debug, Clone, Copy)]
struct Probe {
    stamp_us: i64,
    monotonic_before_us: i64,
    /// Read by the test that converts a stamp to wall time.
    #[cfg_attr(not(test), allow(dead_code))]
    wall_before_us: i64,
}

fn probe(kmsg: &Path) -> Result<Probe, ClockProbeError> {
    let name = || kmsg.display().to_string();
    let is_device = std::fs::metadata(kmsg).is_ok_and(|m| m.file_type().is_char_device());
    if !is_device {
        return Err(ClockProbeError::NotDevice(name()));
    }
    let read_err = |source| ClockProbeError::Read { path: name(), source };
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(kmsg)
        .map_err(read_err)?;
    reader.seek(std::io::SeekFrom::End(0)).map_err(read_err)?;
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(kmsg)
        .map_err(|source| ClockProbeError::Write { path: name(), source })?;
    let token = format!("{:016x}", rand_token());
    let line = format!("<7>oomlens-agent: kernel log clock probe {token}\n");
    let wall_before_us = wall_us();
    let monotonic_before_us = i64::try_from(monotonic_us()).unwrap_or(i64::MAX);
    writer
        .write_all(line.as_bytes())
        .map_err(|source| ClockProbeError::Write { path: name(), source })?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut record = vec![0u8; 8192];
    while Instant::now() < deadline {
        match reader.read(&mut record) {
            Ok(n) => {
                if let Some(stamp_us) = probe_stamp(&record[..n], &token) {
                    return Ok(Probe {
                        stamp_us,
                        monotonic_before_us,
                        wall_before_us,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            // Records overwritten under the reader: it goes on with the next.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
            Err(source) => return Err(read_err(source)),
        }
    }
    Err(ClockProbeError::NotSeen)
}

fn wall_us() -> i64 {
    clock_gettime(ClockId::CLOCK_REALTIME).map_or(0, |t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1000)
}

/// The stamp (µs) of a `/dev/kmsg` record whose message holds `token`.
fn probe_stamp(record: &[u8], token: &str) -> Option<i64> {
    let text = std::str::from_utf8(record).ok()?;
    let (header, message) = text.split_once(';')?;
    if !message.contains(token) {
        return None;
    }
    header.split(',').nth(2)?.parse().ok()
}

/// A token no other probe (another agent's, a restarted one's) shares.
fn rand_token() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_REALTIME).map_or(0, |t| t.tv_nsec().unsigned_abs());
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_record_gives_its_stamp() {
        let token = "0123456789abcdef";
        let record = format!("7,1234,80307063482,-;oomlens-agent: kernel log clock probe {token}\n");
        assert_eq!(probe_stamp(record.as_bytes(), token), Some(80_307_063_482));
        assert_eq!(probe_stamp(b"7,1234,5,-;something else\n", token), None);
        assert_eq!(probe_stamp(b"garbage", token), None);
    }

    #[test]
    fn a_file_is_not_measured() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kmsg");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            log_clock_offset_us(&file),
            Err(ClockProbeError::NotDevice(_))
        ));
    }

    /// On the real kernel log (root): two probes agree within a
    /// millisecond, and a later probe's stamp, converted with the measured
    /// offset, is the wall time of its write (without it, off by the
    /// clocks' drift: 7.4 ms on the VM this was written on).
    #[test]
    fn the_log_clock_offset_is_measured_on_the_real_kernel_log() {
        let kmsg = Path::new("/dev/kmsg");
        if !nix::unistd::geteuid().is_root() || std::fs::File::open(kmsg).is_err() {
            println!("SKIPPED: needs root and a readable /dev/kmsg");
            return;
        }
        let first = log_clock_offset_us(kmsg).expect("first probe");
        let second = log_clock_offset_us(kmsg).expect("second probe");
        assert!((first - second).abs() < 1_000, "{first} µs then {second} µs");
        let boot = boot_wall_us(second).expect("wall clock");
        let later = probe(kmsg).expect("third probe");
        let converted = boot + later.stamp_us;
        assert!(
            (converted - later.wall_before_us).abs() < 1_000,
            "stamp as wall time {converted}, written at {} (offset {second} µs)",
            later.wall_before_us
        );
    }
}
