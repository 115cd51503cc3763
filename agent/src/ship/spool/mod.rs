//! The durable spool: every event is on disk before it is sent, and leaves
//! only when the collector acknowledged storing it.
//!
//! One file per event (`NNNNNNNNNNNNNNNNNNNN.event`, numbered in arrival
//! order): kills are rare enough that a file each is cheap, and a
//! corrupted file costs one event, never the spool. The file format is in
//! `file`. Written to a temporary name, synced, renamed, and the directory
//! synced: a crash leaves the old state or the new one.
//!
//! Bounded: when a new event would exceed the budget, the histories of the
//! oldest events are thinned first (`thin`: every other sample dropped,
//! then the buckets), and only then are the oldest events dropped, each
//! counted. A file that cannot be read back is moved to `corrupt/`,
//! reported and counted; the rest of the spool goes on.
//!
//! Events name pods and commands: the directory is 0700, each file 0600.
//! Only regular files are read, never blocking: anything else under an
//! event's name (a FIFO would hang the agent's start) is skipped with a
//! warning.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use oomlens_common::secrets::{create_new_private, create_private_dir, tighten_dir};
use oomlens_proto::v1::OomEvent;
use tracing::warn;

use super::metrics::SpoolMetrics;

mod file;
mod thin;

pub use file::{decode_file, encode_file};
pub use thin::{fit_event, thin_event};

const SUFFIX: &str = "event";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spool file {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a spool file: a regular file only, opened without blocking (a
/// FIFO put in its place would block a plain open until a writer came)
/// and without following a symbolic link.
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW).bits())
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What the spool holds, and what it counted since it was opened (read
/// from its [`SpoolMetrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub events: u64,
    pub bytes: u64,
    /// Events dropped because the spool was full.
    pub dropped: u64,
    /// Events whose history was thinned to make room.
    pub thinned: u64,
    /// Files that could not be read back (moved to `corrupt/`).
    pub corrupt: u64,
    /// Events the collector rejected (moved to `rejected/`).
    pub rejected: u64,
}

impl SpoolStats {
    /// Read from the spool's metrics (no lock on the spool needed).
    pub fn of(metrics: &SpoolMetrics) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Self {
            events: count(metrics.events.get()),
            bytes: count(metrics.bytes.get()),
            dropped: metrics.dropped.get(),
            thinned: metrics.thinned.get(),
            corrupt: metrics.corrupt.get(),
            rejected: metrics.rejected.get(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    bytes: u64,
    /// Thinning rounds already applied (histories halve each round).
    thinned: u8,
}

/// The spool directory. Not shared: one owner (see [`super::SharedSpool`]).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: BTreeMap<u64, Entry>,
    next: u64,
    metrics: SpoolMetrics,
    /// The directory exists (else the next write creates it).
    created: bool,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, reading back what a previous
    /// run left. Unreadable files are quarantined and counted in `metrics`.
    ///
    /// A directory that does not exist and cannot be created yet (a full
    /// or read-only disk) is no error: the spool starts empty and creates
    /// it at its first write, which fails until the disk takes writes.
    pub fn open(dir: &Path, max_bytes: u64, metrics: SpoolMetrics) -> Result<Self, SpoolError> {
        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            entries: BTreeMap::new(),
            next: 1,
            metrics,
            created: true,
        };
        if let Err(error) = create_private_dir(dir) {
            if fs::symlink_metadata(dir).is_ok() {
                return Err(io(dir)(error));
            }
            warn!(dir = %dir.display(), %error, "cannot create the spool directory yet; trying again at each write");
            spool.created = false;
            spool.refresh_stats();
            return Ok(spool);
        }
        // A spool an older version made with the default mode.
        tighten_dir(dir).map_err(io(dir))?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") {
                // A write that never completed: its event was never acknowledged
                // to the pipeline, whose cursor still covers it. (Removing
                // never blocks, whatever the entry is.)
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if let Some(key) = name.strip_suffix(".event").and_then(|k| k.parse::<u64>().ok()) {
                // The entry itself, not what a link points to.
                let regular = entry.file_type().is_ok_and(|t| t.is_file());
                if !regular {
                    warn!(path = %entry.path().display(), "skipping a spool entry that is not a regular file");
                    // Never reuse its number.
                    spool.next = spool.next.max(key + 1);
                    continue;
                }
                keys.push(key);
            }
        }
        keys.sort_unstable();
        for key in keys {
            spool.next = spool.next.max(key + 1);
            let path = spool.path(key);
            match read_regular(&path).map_err(io(&path)).and_then(|bytes| {
                decode_file(&bytes)
                    .map(|event| (event, bytes.len()))
                    .map_err(|why| SpoolError::Corrupt {
                        path: path.clone(),
                        why,
                    })
            }) {
                Ok((event, bytes)) => {
                    spool.entries.insert(
                        key,
                        Entry {
                            id: event.id,
                            bytes: bytes as u64,
                            thinned: 0,
                        },
                    );
                }
                Err(error) => {
                    warn!(%error, "skipping a spool file; moved to corrupt/");
                    spool.quarantine(key, "corrupt");
                    spool.metrics.corrupt.inc();
                }
            }
        }
        spool.refresh_stats();
        Ok(spool)
    }

    fn path(&self, key: u64) -> PathBuf {
        self.dir.join(format!("{key:020}.{SUFFIX}"))
    }

    /// Sets the gauges of what the spool holds.
    fn refresh_stats(&mut self) {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.events.set(count(self.entries.len() as u64));
        self.metrics.bytes.set(count(self.used()));
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats::of(&self.metrics)
    }

    /// The spool's metrics (the shared spool counts write failures in them).
    pub fn metrics(&self) -> &SpoolMetrics {
        &self.metrics
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Moves a file aside (into `corrupt/` or `rejected/`) for inspection.
    fn quarantine(&mut self, key: u64, into: &str) {
        let from = self.path(key);
        let to_dir = self.dir.join(into);
        let moved = create_private_dir(&to_dir)
            .and_then(|()| fs::rename(&from, to_dir.join(format!("{key:020}.{SUFFIX}"))));
        if let Err(error) = moved {
            warn!(path = %from.display(), %error, "cannot move a spool file aside; deleting it");
            let _ = fs::remove_file(&from);
        }
        self.entries.remove(&key);
    }

    /// Writes and syncs a new temporary file (`.tmp-…`, removed at the
    /// next open if left behind), creating the directory first if needed.
    fn write_temporary(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf, SpoolError> {
        if !self.created {
            create_private_dir(&self.dir).map_err(io(&self.dir))?;
            self.created = true;
        }
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let written = create_new_private(&tmp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_all()
            })
            .map_err(io(&tmp));
        if let Err(error) = written {
            // A partial file on a full disk would only take more room.
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        Ok(tmp)
    }

    fn write_file(&mut self, key: u64, bytes: &[u8]) -> Result<(), SpoolError> {
        let tmp = self.write_temporary(&format!("{key:020}"), bytes)?;
        let path = self.path(key);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// Whether the directory takes a write now: a small file written,
    /// synced and removed as an event's would be, so a full or read-only
    /// disk fails it.
    pub fn probe(&mut self) -> Result<(), SpoolError> {
        // One a crash left behind.
        let _ = fs::remove_file(self.dir.join(".tmp-probe"));
        let tmp = self.write_temporary("probe", &[0; 512])?;
        let _ = fs::remove_file(&tmp);
        Ok(())
    }

    /// Writes `event` durably; returns its key. Makes room first if the
    /// spool is full (thinning, then dropping the oldest).
    pub fn append(&mut self, event: &OomEvent) -> Result<u64, SpoolError> {
        let key = self.next;
        self.append_as(key, event)?;
        Ok(key)
    }

    /// The key the next [`Spool::append`] takes; every key from here on
    /// is unused.
    pub fn next_key(&self) -> u64 {
        self.next
    }

    /// Writes `event` durably under `key`, a key given out from
    /// [`Spool::next_key`] on and not written yet (a failed write may be
    /// tried again with it).
    pub fn append_as(&mut self, key: u64, event: &OomEvent) -> Result<(), SpoolError> {
        let mut event = event.clone();
        // What the collector takes: thinned here, once, so it is sent as
        // spooled.
        if !fit_event(&mut event, oomlens_common::limits::MAX_EVENT_BYTES) {
            warn!(id = %event.id, bytes = prost::Message::encoded_len(&event), "an event larger than the collector takes, even thinned; the collector will refuse it");
        }
        let mut bytes = encode_file(&event);
        // An event alone above the budget keeps thinning its own history.
        while bytes.len() as u64 > self.max_bytes && thin_event(&mut event) {
            bytes = encode_file(&event);
        }
        self.make_room(bytes.len() as u64)?;
        self.next = self.next.max(key + 1);
        self.write_file(key, &bytes)?;
        self.entries.insert(
            key,
            Entry {
                id: event.id.clone(),
                bytes: bytes.len() as u64,
                thinned: 0,
            },
        );
        self.refresh_stats();
        Ok(())
    }

    fn used(&self) -> u64 {
        self.entries.values().map(|e| e.bytes).sum()
    }

    fn make_room(&mut self, wanted: u64) -> Result<(), SpoolError> {
        // Summed once, then kept current as events are thinned or dropped.
        let mut used = self.used();
        let bytes_of = |spool: &Self, key: u64| spool.entries.get(&key).map_or(0, |e| e.bytes);
        // Thin oldest first, one round at a time across the spool.
        for round in 0..16u8 {
            if used + wanted <= self.max_bytes {
                return Ok(());
            }
            let keys: Vec<u64> = self
                .entries
                .iter()
                .filter(|(_, e)| e.thinned == round)
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                if used + wanted <= self.max_bytes {
                    return Ok(());
                }
                let before = bytes_of(self, key);
                self.thin(key)?;
                used = used - before + bytes_of(self, key);
            }
        }
        while used + wanted > self.max_bytes {
            let Some((&key, entry)) = self.entries.iter().next() else {
                break;
            };
            warn!(id = %entry.id, "spool full: dropping the oldest unsent event");
            used -= entry.bytes;
            let path = self.path(key);
            fs::remove_file(&path).map_err(io(&path))?;
            self.entries.remove(&key);
            self.metrics.dropped.inc();
        }
        Ok(())
    }

    fn thin(&mut self, key: u64) -> Result<(), SpoolError> {
        let mut event = match self.read(key) {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(_) => return Ok(()), // quarantined by read
        };
        let entry_thinned = self.entries.get(&key).map_or(0, |e| e.thinned);
        let changed = thin_event(&mut event);
        let bytes = encode_file(&event);
        if changed {
            self.write_file(key, &bytes)?;
            if entry_thinned == 0 {
                self.metrics.thinned.inc();
            }
        }
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.bytes = bytes.len() as u64;
            // Nothing left to thin: never try this one again.
            entry.thinned = if changed { entry_thinned + 1 } else { u8::MAX };
        }
        Ok(())
    }

    /// Keys and ids waiting to be sent, oldest first.
    pub fn pending(&self) -> Vec<(u64, String)> {
        self.entries.iter().map(|(k, e)| (*k, e.id.clone())).collect()
    }

    /// Up to `limit` events not in `exclude`, oldest first, read back (a
    /// corrupt file is quarantined and counted by [`Spool::read`], and
    /// skipped).
    pub fn unsent(&mut self, exclude: &std::collections::HashSet<u64>, limit: usize) -> Vec<(u64, OomEvent)> {
        let keys: Vec<u64> = self
            .entries
            .keys()
            .filter(|key| !exclude.contains(key))
            .take(limit)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|key| Some((key, self.read(key).ok()??)))
            .collect()
    }

    /// Reads one event back. A corrupt file is quarantined and counted,
    /// and the error returned; a missing one is None.
    pub fn read(&mut self, key: u64) -> Result<Option<OomEvent>, SpoolError> {
        if !self.entries.contains_key(&key) {
            return Ok(None);
        }
        let path = self.path(key);
        let bytes = match read_regular(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.entries.remove(&key);
                self.refresh_stats();
                return Ok(None);
            }
            Err(error) => return Err(io(&path)(error)),
        };
        match decode_file(&bytes) {
            Ok(event) => Ok(Some(event)),
            Err(why) => {
                let error = SpoolError::Corrupt { path, why };
                warn!(%error, "skipping a spool file; moved to corrupt/");
                self.quarantine(key, "corrupt");
                self.metrics.corrupt.inc();
                self.refresh_stats();
                Err(error)
            }
        }
    }

    /// The collector stored it: forget it.
    pub fn remove(&mut self, key: u64) -> Result<(), SpoolError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(&path)(error)),
        }
        self.entries.remove(&key);
        self.refresh_stats();
        Ok(())
    }

    /// The collector refused it: keep it aside, never resend.
    pub fn reject(&mut self, key: u64) {
        self.quarantine(key, "rejected");
        self.metrics.rejected.inc();
        self.refresh_stats();
    }
}

#[cfg(test)]
mod tests;
