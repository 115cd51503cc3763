//! Async reader of `/dev/kmsg`.
//!
//! One `read()` returns exactly one record; the buffer must hold the whole
//! record or the kernel answers EINVAL, hence [`RECORD_BUFFER`]. EPIPE means
//! the ring overwrote records at our position: the next read continues at
//! the oldest record, and the sequence-number gap says how many were lost.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{Whence, lseek};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::hurry::KmsgHurry;
use super::record::{Record, RecordError, parse_record};
use crate::telemetry::Happening;

/// Large enough for any record (the kernel caps records near 1 KiB of text,
/// plus escapes and dictionary lines).
pub const RECORD_BUFFER: usize = 16 * 1024;

/// Where a freshly opened reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only records logged from now on.
    End,
    /// Every record still in the ring.
    Oldest,
    /// Records after this sequence number (a cursor from the same boot).
    /// Earlier ones are skipped; if the ring no longer holds the next one,
    /// the loss is reported as a gap.
    After(u64),
}

/// What one step of the reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsgItem {
    Record(Record),
    /// Records between the previous one and the next were lost (ring
    /// overrun while we were slow or stopped).
    Gap {
        lost: u64,
        after_seq: Option<u64>,
    },
    /// A record that could not be parsed; the reader goes on.
    Malformed(RecordError),
}

#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot seek {path} to its end: {source}")]
    Seek { path: PathBuf, source: Errno },
    #[error("reading {path} failed: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// The reader's counters, exported as `oomlens_agent_kmsg_*`. Clones share
/// the counts; an unregistered set still counts (for [`KmsgReader::stats`]).
#[derive(Debug, Clone, Default)]
pub struct ReaderMetrics {
    records: Counter,
    lost: Counter,
    overruns: Counter,
    malformed: Counter,
    cursor_resets: Counter,
    hurried_reads: Counter,
}

impl ReaderMetrics {
    /// The counts so far (`skipped` is the reader's own: see
    /// [`KmsgReader::stats`]).
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            records: self.records.get(),
            malformed: self.malformed.get(),
            overruns: self.overruns.get(),
            lost: self.lost.get(),
            skipped: 0,
            cursor_resets: self.cursor_resets.get(),
            hurried_reads: self.hurried_reads.get(),
        }
    }

    /// Counts records read by a reader outside this crate's (tests of the
    /// export).
    #[cfg(test)]
    pub(crate) fn count(&self, records: u64, lost: u64) {
        self.records.inc_by(records);
        self.lost.inc_by(lost);
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register("kmsg_records", "Kernel log records read", self.records.clone());
        registry.register(
            "kmsg_lost_records",
            "Kernel log records overwritten before they were read",
            self.lost.clone(),
        );
        registry.register(
            "kmsg_overruns",
            "Kernel log ring overruns noticed (EPIPE)",
            self.overruns.clone(),
        );
        registry.register(
            "kmsg_malformed_records",
            "Kernel log records that could not be parsed",
            self.malformed.clone(),
        );
        registry.register(
            "kmsg_cursor_resets",
            "Resume cursors ahead of the kernel log (read again from its oldest record)",
            self.cursor_resets.clone(),
        );
        registry.register(
            "kmsg_hurried_reads",
            "Wake-ups after an OOM notification that found new records before the kernel woke the reader",
            self.hurried_reads.clone(),
        );
    }
}

/// The resume cursor names a record the log has not reached: read from
/// the oldest record instead of waiting for it forever.
#[derive(Debug)]
struct CursorAhead {
    cursor: u64,
    newest: u64,
}

impl Happening for CursorAhead {
    type Metrics = ReaderMetrics;
    fn emit(self, metrics: &ReaderMetrics) {
        warn!(
            cursor = self.cursor,
            newest = self.newest,
            "the resume cursor is ahead of the kernel log; reading this boot's log from its oldest record (kills already sent are stored once)"
        );
        metrics.cursor_resets.inc();
    }
}

/// Records were overwritten by the ring before the reader got to them.
#[derive(Debug)]
struct RecordsLost {
    lost: u64,
    after_seq: Option<u64>,
}

impl Happening for RecordsLost {
    type Metrics = ReaderMetrics;
    fn emit(self, metrics: &ReaderMetrics) {
        warn!(
            lost = self.lost,
            after_seq = self.after_seq,
            "kernel log overrun: records were overwritten before they were read"
        );
        metrics.lost.inc_by(self.lost);
    }
}

/// A record that could not be parsed; the reader goes on.
#[derive(Debug)]
struct MalformedRecord<'a>(&'a RecordError);

impl Happening for MalformedRecord<'_> {
    type Metrics = ReaderMetrics;
    fn emit(self, metrics: &ReaderMetrics) {
        warn!(error = %self.0, "skipping a kernel log record");
        metrics.malformed.inc();
    }
}

/// Counters of the reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    pub records: u64,
    pub malformed: u64,
    /// EPIPE answers (ring overruns noticed).
    pub overruns: u64,
    /// Records lost to overruns, from sequence gaps.
    pub lost: u64,
    /// Records skipped because a resume cursor had already covered them.
    pub skipped: u64,
    /// Resume cursors found ahead of the log (read from its oldest record).
    pub cursor_resets: u64,
    /// Wake-ups after an OOM notification that found records waiting.
    pub hurried_reads: u64,
}

#[derive(Debug)]
pub struct KmsgReader {
    path: PathBuf,
    fd: AsyncFd<File>,
    buf: Box<[u8]>,
    last_seq: Option<u64>,
    skip_through: Option<u64>,
    /// A record read right after a gap, returned after the gap itself.
    pending: Option<Record>,
    metrics: ReaderMetrics,
    skipped: u64,
    hurry: Option<KmsgHurry>,
}

/// Reads every record available now; returns the last one's sequence
/// number. Leaves the file positioned after it.
fn last_record_seq(file: &File, path: &Path) -> Result<Option<u64>, KmsgError> {
    let mut buf = vec![0; RECORD_BUFFER];
    let mut last = None;
    loop {
        match nix::unistd::read(file, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => return Ok(last),
            Ok(len) => {
                if let Ok(record) = parse_record(&buf[..len]) {
                    last = Some(record.seq);
                }
            }
            Err(Errno::EINTR | Errno::EPIPE) => {}
            Err(errno) => {
                return Err(KmsgError::Read {
                    path: path.to_path_buf(),
                    source: io::Error::from(errno),
                });
            }
        }
    }
}

impl KmsgReader {
    /// Opens `path` (normally `/dev/kmsg`) non-blocking. Must be called
    /// inside a tokio runtime.
    pub fn open(path: impl AsRef<Path>, start: StartAt) -> Result<Self, KmsgError> {
        Self::open_with(path, start, ReaderMetrics::default())
    }

    /// [`KmsgReader::open`], counting into `metrics` (registered by the
    /// caller) from the start.
    pub fn open_with(
        path: impl AsRef<Path>,
        start: StartAt,
        metrics: ReaderMetrics,
    ) -> Result<Self, KmsgError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(&path)
            .map_err(|source| KmsgError::Open {
                path: path.clone(),
                source,
            })?;
        let mut cursor_reset = None;
        let (last_seq, skip_through) = match start {
            // Reading what the ring holds (instead of only seeking to its
            // end) tells the sequence number we start after, without which an
            // overrun before our first read could not be measured.
            StartAt::End => match last_record_seq(&file, &path)? {
                Some(seq) => (Some(seq), None),
                None => {
                    lseek(&file, 0, Whence::SeekEnd).map_err(|source| KmsgError::Seek {
                        path: path.clone(),
                        source,
                    })?;
                    (None, None)
                }
            },
            StartAt::Oldest => (None, None),
            StartAt::After(seq) => {
                // A cursor past the newest record (a log reset the boot id
                // did not show, a cursor from elsewhere) would skip every
                // record to come: read this boot's log again instead (the
                // collector keeps one copy of each kill, by id).
                let newest = last_record_seq(&file, &path)?;
                lseek(&file, 0, Whence::SeekSet).map_err(|source| KmsgError::Seek {
                    path: path.clone(),
                    source,
                })?;
                match newest {
                    Some(newest) if newest < seq => {
                        cursor_reset = Some((seq, newest));
                        (None, None)
                    }
                    _ => (Some(seq), Some(seq)),
                }
            }
        };
        // One of the workspace's two unsafe expressions (see Cargo.toml).
        // SAFETY: `register` needs the descriptor to stay open and unchanged
        // while registered. The `File` is moved into the `AsyncFd`, which owns
        // it until the reader is dropped; nothing else can close or replace it.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(file) }.map_err(|source| KmsgError::Open {
            path: path.clone(),
            source: source.into(),
        })?;
        if let Some((cursor, newest)) = cursor_reset {
            CursorAhead { cursor, newest }.emit(&metrics);
        }
        Ok(Self {
            path,
            fd,
            buf: vec![0; RECORD_BUFFER].into_boxed_slice(),
            last_seq,
            skip_through,
            pending: None,
            metrics,
            skipped: 0,
            hurry: None,
        })
    }

    /// Also tries a read at each wake-up of `hurry` (after an OOM
    /// notification), not only when the kernel wakes the reader.
    #[must_use]
    pub fn hurried_by(mut self, hurry: KmsgHurry) -> Self {
        self.hurry = Some(hurry);
        self
    }

    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            skipped: self.skipped,
            ..self.metrics.stats()
        }
    }

    /// The reader as a stream of items, for the pipeline (which takes any
    /// stream, so tests can feed it fixture records).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<KmsgItem, KmsgError>> {
        futures_util::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await;
            Some((item, reader))
        })
    }

    /// Sequence number of the last record returned.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The next item, waiting for one if none is available.
    pub async fn next(&mut self) -> Result<KmsgItem, KmsgError> {
        let mut hurried = false;
        loop {
            if let Some(item) = self.try_next()? {
                if hurried {
                    self.metrics.hurried_reads.inc();
                }
                return Ok(item);
            }
            let readable = match &self.hurry {
                None => Some(self.fd.readable().await),
                Some(hurry) => tokio::select! {
                    readable = self.fd.readable() => Some(readable),
                    () = hurry.woken() => None,
                },
            };
            hurried = readable.is_none();
            if let Some(readable) = readable {
                let mut guard = readable.map_err(|source| KmsgError::Read {
                    path: self.path.clone(),
                    source,
                })?;
                guard.clear_ready();
            }
        }
    }

    /// The next item if one is available now, without waiting.
    pub fn try_next(&mut self) -> Result<Option<KmsgItem>, KmsgError> {
        if let Some(record) = self.pending.take() {
            self.metrics.records.inc();
            return Ok(Some(KmsgItem::Record(record)));
        }
        loop {
            let read = nix::unistd::read(self.fd.get_ref(), &mut self.buf);
            let len = match read {
                Ok(len) => len,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => {
                    // Overwritten under us; the gap shows in the next seq.
                    self.metrics.overruns.inc();
                    continue;
                }
                Err(errno) => {
                    return Err(KmsgError::Read {
                        path: self.path.clone(),
                        source: io::Error::from(errno),
                    });
                }
            };
            if len == 0 {
                return Ok(None);
            }
            let record = match parse_record(&self.buf[..len]) {
                Ok(record) => record,
                Err(error) => {
                    MalformedRecord(&error).emit(&self.metrics);
                    return Ok(Some(KmsgItem::Malformed(error)));
                }
            };
            if let Some(through) = self.skip_through {
                if record.seq <= through {
                    self.skipped += 1;
                    continue;
                }
                self.skip_through = None;
            }
            let previous = self.last_seq.replace(record.seq);
            if let Some(previous) = previous {
                let lost = record.seq.saturating_sub(previous + 1);
                if lost > 0 {
                    RecordsLost {
                        lost,
                        after_seq: Some(previous),
                    }
                    .emit(&self.metrics);
                    self.pending = Some(record);
                    return Ok(Some(KmsgItem::Gap {
                        lost,
                        after_seq: Some(previous),
                    }));
                }
            }
            self.metrics.records.inc();
            return Ok(Some(KmsgItem::Record(record)));
        }
    }
}
