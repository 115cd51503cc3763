//! Reading a kill's records as soon as they are printed.
//!
//! The kernel wakes `/dev/kmsg` readers from deferred work that runs at its
//! next timer tick: up to 4 ms after the record at HZ=250, 10 ms at HZ=100
//! (2.3–2.9 ms on average on the test VM, a third of a kill's way to a
//! subscriber). A record can be read as soon as it is stored. The cgroup
//! OOM notifications come sooner: the v1 eventfd is signalled, and v2's
//! `memory.events` `oom` counter steps, as the kernel starts an OOM kill,
//! before it prints the report. So whoever sees one
//! calls [`KmsgHurry::oom`], and a thread then wakes the reader every
//! [`POLL_EVERY`] for [`WINDOW`]: 100 non-blocking reads per OOM, instead
//! of polling all the time.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How often the reader looks while hurried.
pub const POLL_EVERY: Duration = Duration::from_micros(250);

/// How long after an OOM notification: the kernel prints a memcg kill's
/// report in well under a millisecond here, but a slow console or a long
/// task list can stretch it.
pub const WINDOW: Duration = Duration::from_millis(25);

/// Handle to the hurrying thread; clones share it. The thread ends when
/// the last handle is dropped.
#[derive(Debug, Clone)]
pub struct KmsgHurry {
    ooms: SyncSender<()>,
    wake: Arc<Notify>,
}

impl KmsgHurry {
    /// Starts the thread with the default period and window.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(POLL_EVERY, WINDOW)
    }

    pub fn start_with(every: Duration, window: Duration) -> std::io::Result<Self> {
        // One pending OOM is as good as many: the window restarts anyway.
        let (ooms, received) = sync_channel(1);
        let wake = Arc::new(Notify::new());
        let waking = Arc::clone(&wake);
        std::thread::Builder::new()
            .name("kmsg-hurry".into())
            .spawn(move || hurry(&received, &waking, every, window))?;
        Ok(Self { ooms, wake })
    }

    /// An OOM kill is starting: its records will be read within
    /// [`POLL_EVERY`] of being printed. Never blocks.
    pub fn oom(&self) {
        let _ = self.ooms.try_send(());
    }

    /// Completes at the thread's next wake-up (at once when one is
    /// pending): the reader then tries a read.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

fn hurry(ooms: &Receiver<()>, wake: &Notify, every: Duration, window: Duration) {
    while ooms.recv().is_ok() {
        let mut until = Instant::now() + window;
        while Instant::now() < until {
            std::thread::sleep(every);
            wake.notify_one();
            match ooms.try_recv() {
                Ok(()) => until = Instant::now() + window,
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the wake-ups that arrive within `span`.
    async fn wakes_within(hurry: &KmsgHurry, span: Duration) -> u32 {
        let deadline = tokio::time::Instant::now() + span;
        let mut wakes = 0;
        while tokio::time::timeout_at(deadline, hurry.woken()).await.is_ok() {
            wakes += 1;
        }
        wakes
    }

    #[tokio::test]
    async fn an_oom_wakes_the_reader_repeatedly_for_a_window_and_then_not_at_all() {
        let hurry =
            KmsgHurry::start_with(Duration::from_millis(2), Duration::from_millis(300)).expect("thread");
        assert_eq!(
            wakes_within(&hurry, Duration::from_millis(100)).await,
            0,
            "woken without an OOM"
        );
        hurry.oom();
        // At a 2 ms period, 150 wake-ups fit the window; a loaded machine
        // may lose many of them, but not all but two.
        let during = wakes_within(&hurry, Duration::from_millis(250)).await;
        assert!(during >= 3, "only {during} wake-ups during the window");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One wake-up may still be stored from the window's end.
        let _ = wakes_within(&hurry, Duration::from_millis(10)).await;
        assert_eq!(
            wakes_within(&hurry, Duration::from_millis(200)).await,
            0,
            "still woken after the window"
        );
        // A later OOM starts another window.
        hurry.oom();
        assert!(wakes_within(&hurry, Duration::from_millis(100)).await >= 1);
    }

    #[test]
    fn the_thread_ends_with_the_last_handle() {
        let (ooms, received) = sync_channel(1);
        let wake = Arc::new(Notify::new());
        let waking = Arc::clone(&wake);
        let thread = std::thread::spawn(move || {
            hurry(
                &received,
                &waking,
                Duration::from_millis(1),
                Duration::from_secs(3600),
            )
        });
        ooms.send(()).expect("send");
        std::thread::sleep(Duration::from_millis(10));
        // Dropped inside an hour-long window: the thread ends at its next wake-up.
        drop(ooms);
        thread.join().expect("the thread ended");
    }
}
