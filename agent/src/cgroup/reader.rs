//! Reads one memory cgroup's files. Each file is opened once and re-read
//! with `pread` at offset 0, which makes the kernel regenerate it: measured
//! here (Linux 6.18), about 1 µs for a usage file and 10 µs for v1
//! `memory.stat`, several times less than reopening.
//!
//! A cgroup that disappears (its container died) is an ordinary outcome:
//! reads of its open files then fail with ENODEV, reported as
//! [`ReadError::Vanished`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::files::{
    self, MemoryStat, OomCounters, ParseError, Pressure, parse_events_v2, parse_limit, parse_oom_control_v1,
    parse_pressure, parse_stat_v1, parse_stat_v2, parse_u64,
};

/// Large enough for any memory file (v1 `memory.stat` is about 1.2 KiB).
pub const READ_BUFFER: usize = 8 * 1024;

/// Which cgroup version a memory cgroup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The cgroup was removed.
    #[error("cgroup {0} vanished")]
    Vanished(PathBuf),
    /// The directory has no memory files: on cgroup v2, the memory
    /// controller is not enabled for it (not an error).
    #[error("{0} is not a memory cgroup")]
    NotMemoryCgroup(PathBuf),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
}

/// Everything one full sample reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FullSample {
    pub usage: u64,
    pub limit: Option<u64>,
    /// v2 `memory.high`.
    pub high: Option<u64>,
    pub stat: MemoryStat,
    pub working_set: u64,
    pub counters: OomCounters,
    /// v2 `memory.pressure`.
    pub pressure: Option<Pressure>,
}

/// A cgroup's limits; None is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub limit: Option<u64>,
    /// v2 `memory.high`.
    pub high: Option<u64>,
}

/// The open files of one memory cgroup.
#[derive(Debug)]
pub struct MemcgReader {
    dir: PathBuf,
    version: Version,
    usage: File,
    limit: Option<File>,
    high: Option<File>,
    stat: Option<File>,
    events: Option<File>,
    pressure: Option<File>,
    failcnt: Option<File>,
}

fn is_gone(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == nix::libc::ENODEV || code == nix::libc::ENOENT)
        || error.kind() == io::ErrorKind::NotFound
}

/// Opens a file that may legitimately be missing (a kernel without PSI,
/// the root cgroup without limits).
fn open_optional(dir: &Path, name: &str) -> Result<Option<File>, ReadError> {
    match File::open(dir.join(name)) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if is_gone(&e) => Err(ReadError::Vanished(dir.to_path_buf())),
        // Unreadable (EACCES, EOPNOTSUPP on PSI-less kernels): do without.
        Err(_) => Ok(None),
    }
}

impl MemcgReader {
    /// Opens the memory files of the cgroup directory `dir`.
    pub fn open(dir: &Path, version: Version) -> Result<Self, ReadError> {
        let usage_name = match version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        let usage = File::open(dir.join(usage_name)).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                if dir.exists() {
                    ReadError::NotMemoryCgroup(dir.to_path_buf())
                } else {
                    ReadError::Vanished(dir.to_path_buf())
                }
            } else if is_gone(&source) {
                ReadError::Vanished(dir.to_path_buf())
            } else {
                ReadError::Io {
                    path: dir.join(usage_name),
                    source,
                }
            }
        })?;
        let (limit, high, events, pressure, failcnt) = match version {
            Version::V1 => (
                open_optional(dir, "memory.limit_in_bytes")?,
                None,
                open_optional(dir, "memory.oom_control")?,
                None,
                open_optional(dir, "memory.failcnt")?,
            ),
            Version::V2 => (
                open_optional(dir, "memory.max")?,
                open_optional(dir, "memory.high")?,
                open_optional(dir, "memory.events")?,
                open_optional(dir, "memory.pressure")?,
                None,
            ),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            version,
            usage,
            limit,
            high,
            stat: open_optional(dir, "memory.stat")?,
            events,
            pressure,
            failcnt,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn version(&self) -> Version {
        self.version
    }

    fn read<'b>(&self, file: &File, name: &'static str, buf: &'b mut [u8]) -> Result<&'b str, ReadError> {
        let len = file.read_at(buf, 0).map_err(|source| {
            if is_gone(&source) {
                ReadError::Vanished(self.dir.clone())
            } else {
                ReadError::Io {
                    path: self.dir.join(name),
                    source,
                }
            }
        })?;
        std::str::from_utf8(&buf[..len]).map_err(|_| ReadError::Parse {
            path: self.dir.join(name),
            source: ParseError {
                file: name,
                text: String::from_utf8_lossy(&buf[..len]).into_owned(),
            },
        })
    }

    fn parsed<T>(&self, result: Result<T, ParseError>) -> Result<T, ReadError> {
        result.map_err(|source| ReadError::Parse {
            path: self.dir.join(source.file),
            source,
        })
    }

    /// Reads usage only: the cheap, frequent sample.
    pub fn read_usage(&self, buf: &mut [u8]) -> Result<u64, ReadError> {
        let name = match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        let text = self.read(&self.usage, name, buf)?;
        self.parsed(parse_u64(name, text))
    }

    /// The processes directly in this cgroup (`cgroup.procs`). Read whole
    /// (a busy cgroup's list outgrows the sample buffer), and only for
    /// cgroups near their limit: it names the cgroup of a kill whose
    /// report the kernel rate-limited.
    pub fn read_procs(&self) -> Result<Vec<u32>, ReadError> {
        let path = self.dir.join("cgroup.procs");
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if is_gone(&source) {
                ReadError::Vanished(self.dir.clone())
            } else {
                ReadError::Io { path, source }
            }
        })?;
        self.parsed(files::parse_pids(&text))
    }

    /// v1 `memory.failcnt` (times usage hit the limit), None on v2. Not
    /// part of a full sample: nothing in the history needs it, and it would
    /// be a fifth of a v1 full sample's reads.
    pub fn read_failcnt(&self, buf: &mut [u8]) -> Result<Option<u64>, ReadError> {
        let Some(file) = &self.failcnt else {
            return Ok(None);
        };
        let text = self.read(file, "memory.failcnt", buf)?;
        Ok(Some(self.parsed(parse_u64("memory.failcnt", text))?))
    }

    /// Reads the limits (`memory.limit_in_bytes`, or v2 `memory.max` and
    /// `memory.high`). Settings, not measurements: the sampler re-reads
    /// them less often than the rest of a full sample.
    pub fn read_limits(&self, buf: &mut [u8]) -> Result<Limits, ReadError> {
        let mut limits = Limits::default();
        if let Some(file) = &self.limit {
            let name = if self.version == Version::V1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            let text = self.read(file, name, buf)?;
            limits.limit = self.parsed(parse_limit(name, text))?;
        }
        if let Some(file) = &self.high {
            let text = self.read(file, "memory.high", buf)?;
            limits.high = self.parsed(parse_limit("memory.high", text))?;
        }
        Ok(limits)
    }

    /// Reads the memory files a sample measures: usage, stat, OOM counters,
    /// pressure (v2). The limits come from [`Self::read_limits`], read now
    /// or earlier.
    pub fn read_full(&self, buf: &mut [u8], limits: Limits) -> Result<FullSample, ReadError> {
        let usage = self.read_usage(buf)?;
        let mut sample = FullSample {
            usage,
            limit: limits.limit,
            high: limits.high,
            ..FullSample::default()
        };
        if let Some(file) = &self.stat {
            let text = self.read(file, "memory.stat", buf)?;
            sample.stat = self.parsed(match self.version {
                Version::V1 => parse_stat_v1(text),
                Version::V2 => parse_stat_v2(text),
            })?;
        }
        if let Some(file) = &self.events {
            let name = if self.version == Version::V1 {
                "memory.oom_control"
            } else {
                "memory.events"
            };
            let text = self.read(file, name, buf)?;
            sample.counters = self.parsed(match self.version {
                Version::V1 => parse_oom_control_v1(text),
                Version::V2 => parse_events_v2(text),
            })?;
        }
        if let Some(file) = &self.pressure {
            let text = self.read(file, "memory.pressure", buf)?;
            sample.pressure = Some(self.parsed(parse_pressure("memory.pressure", text))?);
        }
        sample.working_set = files::working_set(usage, sample.stat.inactive_file);
        Ok(sample)
    }
}
