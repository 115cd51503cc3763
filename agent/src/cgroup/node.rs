//! The node's memory view: `/proc/meminfo`, `/proc/pressure/memory` and
//! `/proc/vmstat`'s `oom_kill`, read once a second and attached to events.

use std::path::PathBuf;

use oomlens_proto::v1 as pb;

use super::files::{parse_meminfo, parse_pressure};
use crate::vmstat::parse_vmstat_oom_kill;
use oomlens_proto::time::timestamp_from_unix_ms;

#[derive(Debug, Clone)]
pub struct NodeReader {
    proc_root: PathBuf,
}

impl NodeReader {
    pub fn new(proc_root: PathBuf) -> Self {
        Self { proc_root }
    }

    /// Reads what is available; a missing file (no PSI on this kernel)
    /// leaves its fields unset.
    pub fn read(&self, now_ms: u64) -> pb::NodeMemory {
        let read = |name: &str| std::fs::read_to_string(self.proc_root.join(name)).ok();
        let meminfo = read("meminfo").and_then(|t| parse_meminfo(&t).ok());
        let pressure = read("pressure/memory").and_then(|t| parse_pressure("/proc/pressure/memory", &t).ok());
        pb::NodeMemory {
            time: Some(timestamp_from_unix_ms(now_ms)),
            mem_total_bytes: meminfo.map(|m| m.0),
            mem_available_bytes: meminfo.map(|m| m.1),
            pressure_some_avg10: pressure.map(|p| p.some_avg10),
            pressure_full_avg10: pressure.map(|p| p.full_avg10),
            pressure_some_avg60: pressure.map(|p| p.some_avg60),
            pressure_full_avg60: pressure.map(|p| p.full_avg60),
            vmstat_oom_kill: read("vmstat").and_then(|t| parse_vmstat_oom_kill(&t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_proc_and_tolerates_missing_psi() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal: 1000 kB\nMemAvailable: 250 kB\n",
        )
        .expect("w");
        std::fs::write(dir.path().join("vmstat"), "oom_kill 4\n").expect("w");
        let node = NodeReader::new(dir.path().into()).read(1_700_000_000_000);
        assert_eq!(
            (node.mem_total_bytes, node.mem_available_bytes),
            (Some(1_024_000), Some(256_000))
        );
        assert_eq!(node.vmstat_oom_kill, Some(4));
        assert_eq!(node.pressure_some_avg10, None);
        std::fs::create_dir(dir.path().join("pressure")).expect("mkdir");
        std::fs::write(
            dir.path().join("pressure/memory"),
            "some avg10=2.5 avg60=1 avg300=0 total=9\nfull avg10=1.25 avg60=0 avg300=0 total=3\n",
        )
        .expect("w");
        let node = NodeReader::new(dir.path().into()).read(0);
        assert_eq!(
            (node.pressure_some_avg10, node.pressure_full_avg10),
            (Some(2.5), Some(1.25))
        );
    }
}
