//! Which cgroups are followed: inotify watches on the levels above the
//! containers, full rescans behind them, and the entries of removed
//! cgroups, kept for the grace period and then dropped.

use std::path::Path;
use std::time::Instant;

use nix::sys::inotify::AddWatchFlags;
use tracing::{debug, warn};

use super::Sampler;
use super::metrics::ReadFailed;
use super::tracked::Tracked;
use crate::cgroup::discovery::{Found, relative_path, scan};
use crate::cgroup::history::History;
use crate::cgroup::path::is_below;
use crate::cgroup::reader::{MemcgReader, ReadError};
use crate::pods::{Level, parse_cgroup_path};
use crate::telemetry::Happening as _;

impl Sampler {
    /// Follows a cgroup, due at once (`now` is the current tick's time).
    fn add(&mut self, found: Found, now: Instant) {
        let existing = self.index.get(&found.relative).copied();
        if existing.is_some_and(|i| self.tracked[i].removed_at.is_none()) {
            return;
        }
        let dir = self.config.root.path.join(found.relative.trim_start_matches('/'));
        let reader = match MemcgReader::open(&dir, self.config.root.version) {
            Ok(reader) => reader,
            Err(ReadError::Vanished(_)) => return,
            Err(error @ ReadError::NotMemoryCgroup(_)) => {
                debug!(%error, "skipping");
                return;
            }
            Err(error) => {
                ReadFailed {
                    error: &error,
                    what: "cannot follow cgroup",
                }
                .emit(&self.metrics);
                return;
            }
        };
        debug!(cgroup = %found.relative, "following cgroup");
        let fast_ms = u64::try_from(self.config.schedule.fast.as_millis()).unwrap_or(u64::MAX);
        let history = History::with_interval(self.config.windows, fast_ms);
        let entry = Tracked::new(found.relative.clone(), found.identity, reader, history, now);
        if let Some(notifier) = &self.notifier {
            notifier.register(&found.relative, &dir);
        }
        match existing {
            // A re-created cgroup with the same path starts afresh.
            Some(i) => {
                self.tracked[i] = entry;
                self.next_due[i] = Some(now);
            }
            None => {
                self.index.insert(found.relative, self.tracked.len());
                self.tracked.push(entry);
                self.next_due.push(Some(now));
                self.parents_stale = true;
            }
        }
    }

    /// Watches `dir` for cgroups created or removed in it.
    fn watch(&mut self, dir: &Path) {
        let Some(inotify) = &self.inotify else { return };
        // Container cgroups need no watch: what matters appears above them.
        if let Some(relative) = relative_path(&self.config.root.path, dir)
            && parse_cgroup_path(&relative).level == Level::Container
        {
            return;
        }
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        match inotify.add_watch(dir, flags) {
            Ok(wd) => {
                self.watches.insert(wd, dir.to_path_buf());
            }
            Err(errno) => debug!(%errno, dir = %dir.display(), "cannot watch"),
        }
    }

    /// Walks `start` and follows what it finds.
    fn discover(&mut self, start: &Path, now: Instant) {
        let (found, dirs) = scan(&self.config.root.path, start, self.config.selection);
        for dir in dirs {
            self.watch(&dir);
        }
        for found in found {
            self.add(found, now);
        }
    }

    /// Full rescan: new cgroups are followed, missing ones marked removed.
    pub fn rescan(&mut self, now: Instant) {
        self.rescans += 1;
        let root = self.config.root.path.clone();
        let (found, dirs) = scan(&root, &root, self.config.selection);
        if self.watches.is_empty() {
            for dir in &dirs {
                self.watch(dir);
            }
        }
        let present: std::collections::HashSet<&str> = found.iter().map(|f| f.relative.as_str()).collect();
        for tracked in &mut self.tracked {
            if !present.contains(tracked.path.as_str()) {
                tracked.mark_removed(now, &self.metrics);
            }
        }
        for found in found {
            self.add(found, now);
        }
        self.last_rescan = Some(now);
    }

    /// Marks the cgroup at `dir` and those below it removed.
    fn mark_removed(&mut self, dir: &Path, now: Instant) {
        let Some(relative) = relative_path(&self.config.root.path, dir) else {
            return;
        };
        for tracked in &mut self.tracked {
            if tracked.path == relative || is_below(&tracked.path, &relative) {
                tracked.mark_removed(now, &self.metrics);
            }
        }
    }

    /// Follows the cgroups created and marks those removed since the last
    /// tick, as inotify reported them.
    pub(super) fn drain_inotify(&mut self, now: Instant) {
        let Some(inotify) = &self.inotify else { return };
        let mut events = Vec::new();
        loop {
            match inotify.read_events() {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => events.extend(batch),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(errno) => {
                    warn!(%errno, "inotify read failed; relying on rescans");
                    break;
                }
            }
        }
        for event in events {
            self.inotify_events += 1;
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                self.rescan(now);
                continue;
            }
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                self.watches.remove(&event.wd);
                continue;
            }
            let (Some(dir), Some(name)) = (self.watches.get(&event.wd).cloned(), event.name) else {
                continue;
            };
            let path = dir.join(name);
            if event
                .mask
                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            {
                self.discover(&path, now);
            } else if event
                .mask
                .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
            {
                self.mark_removed(&path, now);
            }
        }
    }

    /// Drops the histories of cgroups removed longer than the grace period
    /// ago. Once a second, not every tick: it reads every entry.
    pub(super) fn forget_expired(&mut self, now: Instant) {
        let grace = self.config.grace;
        let expired = |t: &Tracked| t.removed_at.is_some_and(|at| now.duration_since(at) >= grace);
        if self.tracked.iter().any(expired) {
            if let Some(notifier) = &self.notifier {
                for tracked in self.tracked.iter().filter(|t| expired(t)) {
                    notifier.unregister(&tracked.path);
                }
            }
            (self.tracked, self.next_due) = std::mem::take(&mut self.tracked)
                .into_iter()
                .zip(std::mem::take(&mut self.next_due))
                .filter(|(t, _)| !expired(t))
                .unzip();
            self.index = self
                .tracked
                .iter()
                .enumerate()
                .map(|(i, t)| (t.path.clone(), i))
                .collect();
            self.parents_stale = true;
        }
    }
}
