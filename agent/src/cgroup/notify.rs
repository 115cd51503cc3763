//! The kernel's own OOM notifications per cgroup, timed to the microsecond
//! on the clock the kernel log uses. They place a kill whose report the
//! kernel rate-limited (no cgroup path) in its cgroup, even in a storm
//! where kills are milliseconds apart: the counters the sampler reads each
//! second cannot tell those apart.
//!
//! - cgroup v1: an eventfd registered on `memory.oom_control` through
//!   `cgroup.event_control`. The kernel signals it right before it kills
//!   for an OOM of that cgroup or of an ancestor (and when the cgroup is
//!   removed, which is told apart by the cgroup being gone).
//! - cgroup v2: inotify on `memory.events`, which the kernel marks modified
//!   when any of its counters moves; a notice is kept when `oom_kill`
//!   stepped.
//!
//! One thread owns the descriptors and blocks in `epoll_wait`, so notices
//! are stamped when they happen, not at the sampler's next tick.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::time::{ClockId, clock_gettime};
use tracing::{debug, warn};

use super::files::parse_events_v2;
use super::reader::Version;
use crate::kmsg::KmsgHurry;

/// An OOM in a cgroup (or, on v1, in one of its ancestors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomNotice {
    /// Kernel-style path of the notified cgroup.
    pub path: String,
    /// CLOCK_MONOTONIC microseconds: comparable with kernel log stamps.
    pub monotonic_us: u64,
}

#[derive(Debug)]
enum Command {
    Register { path: String, dir: PathBuf },
    Unregister { path: String },
}

/// Handle to the notifier thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct OomNotifier {
    commands: mpsc::Sender<Command>,
    notices: mpsc::Receiver<OomNotice>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn monotonic_us() -> u64 {
    // The monotonic clock never reads negative.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000
    })
}

/// Token of the inotify descriptor in the epoll set (eventfds use their
/// own registration numbers, which start at 1).
const INOTIFY_TOKEN: u64 = 0;

struct V1Registration {
    path: String,
    dir: PathBuf,
    eventfd: EventFd,
    /// Kept open: the registration refers to it.
    _oom_control: File,
}

struct V2Registration {
    path: String,
    events_file: PathBuf,
    /// `oom` steps as the kernel starts an OOM (before its report),
    /// `oom_kill` as it kills.
    oom: Option<u64>,
    oom_kill: Option<u64>,
}

/// `memory.events`' `oom` and `oom_kill` (None: unreadable).
fn read_oom_counters(events_file: &Path) -> (Option<u64>, Option<u64>) {
    std::fs::read_to_string(events_file)
        .ok()
        .and_then(|t| parse_events_v2(&t).ok())
        .map_or((None, None), |c| (c.oom, c.oom_kill))
}

/// Whether a counter read `now` moved past `before`.
fn stepped(before: Option<u64>, now: Option<u64>) -> bool {
    matches!((before, now), (Some(before), Some(now)) if now > before)
}

struct Worker {
    version: Version,
    epoll: Epoll,
    inotify: Option<Inotify>,
    next_token: u64,
    v1: HashMap<u64, V1Registration>,
    v1_by_path: HashMap<String, u64>,
    v2: HashMap<WatchDescriptor, V2Registration>,
    v2_by_path: HashMap<String, WatchDescriptor>,
    notices: mpsc::Sender<OomNotice>,
    /// Told of each OOM at once, so the kernel log reader looks early.
    hurry: Option<KmsgHurry>,
}

impl Worker {
    fn register(&mut self, path: String, dir: &Path) {
        match self.version {
            Version::V1 => {
                if self.v1_by_path.contains_key(&path) {
                    return;
                }
                let result = (|| -> std::io::Result<V1Registration> {
                    let oom_control = File::open(dir.join("memory.oom_control"))?;
                    let eventfd =
                        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
                    let line = format!("{} {}", eventfd.as_fd().as_raw_fd(), oom_control.as_raw_fd());
                    std::fs::write(dir.join("cgroup.event_control"), line)?;
                    Ok(V1Registration {
                        path: path.clone(),
                        dir: dir.to_path_buf(),
                        eventfd,
                        _oom_control: oom_control,
                    })
                })();
                match result {
                    Ok(registration) => {
                        self.next_token += 1;
                        let token = self.next_token;
                        if let Err(errno) = self
                            .epoll
                            .add(&registration.eventfd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                        {
                            debug!(%errno, %path, "cannot poll the OOM eventfd");
                            return;
                        }
                        self.v1_by_path.insert(path, token);
                        self.v1.insert(token, registration);
                    }
                    Err(error) => debug!(%error, %path, "no OOM notifications for this cgroup"),
                }
            }
            Version::V2 => {
                let Some(inotify) = &self.inotify else { return };
                if self.v2_by_path.contains_key(&path) {
                    return;
                }
                let events_file = dir.join("memory.events");
                let (oom, oom_kill) = read_oom_counters(&events_file);
                match inotify.add_watch(&events_file, AddWatchFlags::IN_MODIFY) {
                    Ok(wd) => {
                        self.v2_by_path.insert(path.clone(), wd);
                        self.v2.insert(
                            wd,
                            V2Registration {
                                path,
                                events_file,
                                oom,
                                oom_kill,
                            },
                        );
                    }
                    Err(errno) => debug!(%errno, %path, "no OOM notifications for this cgroup"),
                }
            }
        }
    }

    fn unregister(&mut self, path: &str) {
        if let Some(token) = self.v1_by_path.remove(path)
            && let Some(registration) = self.v1.remove(&token)
        {
            let _ = self.epoll.delete(&registration.eventfd);
        }
        if let Some(wd) = self.v2_by_path.remove(path) {
            self.v2.remove(&wd);
            if let Some(inotify) = &self.inotify {
                let _ = inotify.rm_watch(wd);
            }
        }
    }

    fn fired(&mut self, token: u64, at: u64) {
        if token == INOTIFY_TOKEN {
            self.inotify_fired(at);
            return;
        }
        let Some(registration) = self.v1.get(&token) else {
            return;
        };
        let _ = registration.eventfd.read();
        if registration.dir.exists() {
            if let Some(hurry) = &self.hurry {
                hurry.oom();
            }
            let _ = self.notices.send(OomNotice {
                path: registration.path.clone(),
                monotonic_us: at,
            });
        } else {
            // Signalled because the cgroup was removed.
            let path = registration.path.clone();
            self.unregister(&path);
        }
    }

    fn inotify_fired(&mut self, at: u64) {
        let Some(inotify) = &self.inotify else { return };
        let Ok(events) = inotify.read_events() else { return };
        for event in events {
            let Some(registration) = self.v2.get_mut(&event.wd) else {
                continue;
            };
            let (oom, oom_kill) = read_oom_counters(&registration.events_file);
            let killed = stepped(registration.oom_kill, oom_kill);
            if (killed || stepped(registration.oom, oom))
                && let Some(hurry) = &self.hurry
            {
                hurry.oom();
            }
            if killed {
                let _ = self.notices.send(OomNotice {
                    path: registration.path.clone(),
                    monotonic_us: at,
                });
            }
            registration.oom = oom.or(registration.oom);
            registration.oom_kill = oom_kill.or(registration.oom_kill);
        }
    }
}

impl OomNotifier {
    /// Starts the notifier thread for cgroups of `version`; `hurry` is
    /// told of each OOM as it is noticed.
    pub fn start(version: Version, hurry: Option<KmsgHurry>) -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let inotify = match version {
            Version::V1 => None,
            Version::V2 => {
                let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
                epoll.add(&inotify, EpollEvent::new(EpollFlags::EPOLLIN, INOTIFY_TOKEN))?;
                Some(inotify)
            }
        };
        let (commands, command_rx) = mpsc::channel();
        let (notice_tx, notices) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let mut worker = Worker {
            version,
            epoll,
            inotify,
            next_token: 0,
            v1: HashMap::new(),
            v1_by_path: HashMap::new(),
            v2: HashMap::new(),
            v2_by_path: HashMap::new(),
            notices: notice_tx,
            hurry,
        };
        let thread = std::thread::Builder::new()
            .name("oom-notify".into())
            .spawn(move || {
                let mut events = [EpollEvent::empty(); 64];
                while !stopping.load(Ordering::Relaxed) {
                    while let Ok(command) = command_rx.try_recv() {
                        match command {
                            Command::Register { path, dir } => worker.register(path, &dir),
                            Command::Unregister { path } => worker.unregister(&path),
                        }
                    }
                    // Short waits: registrations arrive on a channel, not the fd set.
                    match worker.epoll.wait(&mut events, 50u16) {
                        Ok(count) => {
                            let at = monotonic_us();
                            for event in &events[..count] {
                                worker.fired(event.data(), at);
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(errno) => {
                            warn!(%errno, "OOM notifications stopped");
                            break;
                        }
                    }
                }
            })?;
        Ok(Self {
            commands,
            notices,
            stop,
            thread: Some(thread),
        })
    }

    pub fn register(&self, path: &str, dir: &Path) {
        let _ = self.commands.send(Command::Register {
            path: path.to_owned(),
            dir: dir.to_path_buf(),
        });
    }

    pub fn unregister(&self, path: &str) {
        let _ = self.commands.send(Command::Unregister {
            path: path.to_owned(),
        });
    }

    /// Notices received since the last call.
    pub fn drain(&self) -> Vec<OomNotice> {
        self.notices.try_iter().collect()
    }
}

impl Drop for OomNotifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn write_events(dir: &Path, oom: u64, oom_kill: u64) {
        std::fs::write(
            dir.join("memory.events"),
            format!("low 0\nhigh 0\nmax 3\noom {oom}\noom_kill {oom_kill}\noom_group_kill 0\n"),
        )
        .expect("write memory.events");
    }

    /// Waits up to `within` for the hurry's next wake-up.
    async fn hurried(hurry: &KmsgHurry, within: Duration) -> bool {
        tokio::time::timeout(within, hurry.woken()).await.is_ok()
    }

    /// Waits up to `within` for notices.
    fn notices_within(notifier: &OomNotifier, within: Duration) -> Vec<OomNotice> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let notices = notifier.drain();
            if !notices.is_empty() || std::time::Instant::now() >= deadline {
                return notices;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// cgroup v2 on a fixture `memory.events` (inotify works on any file):
    /// the `oom` step, which the kernel makes before it prints the report,
    /// hurries the log reader without a notice; the `oom_kill` step is a
    /// notice and hurries it too.
    #[tokio::test]
    async fn v2_oom_steps_hurry_the_log_reader_and_kill_steps_are_notices() {
        let root = tempfile::tempdir().expect("tempdir");
        let cgroup = root.path().join("kubepods/podx/c1");
        std::fs::create_dir_all(&cgroup).expect("mkdir");
        write_events(&cgroup, 0, 0);
        let hurry =
            KmsgHurry::start_with(Duration::from_millis(1), Duration::from_millis(100)).expect("hurry");
        let notifier = OomNotifier::start(Version::V2, Some(hurry.clone())).expect("notifier");
        let path = "/kubepods/podx/c1";
        notifier.register(path, &cgroup);
        // Registrations are taken between waits of at most 50 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !hurried(&hurry, Duration::from_millis(50)).await,
            "hurried before any OOM"
        );

        write_events(&cgroup, 1, 0);
        assert!(
            hurried(&hurry, Duration::from_secs(2)).await,
            "the oom step did not hurry the reader"
        );
        assert_eq!(
            notices_within(&notifier, Duration::from_millis(200)),
            [],
            "an oom step without a kill is no notice"
        );

        // The window ends; a stored wake-up may remain.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = hurried(&hurry, Duration::from_millis(10)).await;
        write_events(&cgroup, 1, 1);
        assert!(
            hurried(&hurry, Duration::from_secs(2)).await,
            "the kill step did not hurry the reader"
        );
        let notices = notices_within(&notifier, Duration::from_secs(2));
        assert_eq!(
            notices.iter().map(|n| n.path.as_str()).collect::<Vec<_>>(),
            [path],
            "{notices:?}"
        );

        // A write that steps nothing (another counter) does neither.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = hurried(&hurry, Duration::from_millis(10)).await;
        std::fs::write(
            cgroup.join("memory.events"),
            "low 0\nhigh 5\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .expect("write");
        assert!(
            !hurried(&hurry, Duration::from_millis(300)).await,
            "hurried by a max step"
        );
        assert_eq!(notices_within(&notifier, Duration::from_millis(100)), []);
    }
}
