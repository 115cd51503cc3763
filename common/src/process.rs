//! Process plumbing shared by the oomlens binaries (agent, collector):
//! logging to standard error, the stop signals, the [`Shutdown`] every task
//! of a process watches, and the [`Drain`] a stopping process waits through.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// Logs to standard error, filtered by `OOMLENS_LOG` (default `info`), as
/// text or JSON lines. Colour only on a terminal: logs collected from a
/// pod or a file stay plain.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OOMLENS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or SIGINT (never, if they cannot be watched).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
            }
        }
        _ => std::future::pending().await,
    }
}

/// The stop every task of a process watches: cloned into each task, and
/// awaited with [`Shutdown::wait`].
#[derive(Debug, Clone)]
pub struct Shutdown {
    stopped: watch::Receiver<bool>,
}

/// Stops the [`Shutdown`] it was made with (and every clone). Dropping it
/// stops them too: nothing could stop them any more.
#[derive(Debug)]
pub struct Stopper {
    stop: watch::Sender<bool>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown and the one handle that stops it.
    pub fn new() -> (Stopper, Self) {
        let (stop, stopped) = watch::channel(false);
        (Stopper { stop }, Self { stopped })
    }

    /// A shutdown that stops on SIGTERM or SIGINT. Call inside a tokio
    /// runtime.
    pub fn on_signals() -> Self {
        let (stopper, shutdown) = Self::new();
        tokio::spawn(async move {
            shutdown_signal().await;
            stopper.stop();
        });
        shutdown
    }

    /// Completes once the stop was asked (at once if it already was). Owns
    /// what it needs, so it can move into a spawned task.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            // An error means the stopper is gone: stopped as well.
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow() || self.stopped.has_changed().is_err()
    }
}

/// The one deadline a stopping process waits for its tasks within, in
/// order: what has not finished when it passes is left behind and named in
/// the log, so a stuck task cannot keep a process from exiting.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    deadline: tokio::time::Instant,
}

impl Drain {
    pub fn within(limit: Duration) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + limit,
        }
    }

    /// Waits for `task` until the deadline; None if it did not finish.
    pub async fn wait<T>(&self, what: &'static str, task: impl Future<Output = T>) -> Option<T> {
        match tokio::time::timeout_at(self.deadline, task).await {
            Ok(value) => Some(value),
            Err(_) => {
                warn!(
                    task = what,
                    "still running at the shutdown deadline; stopping without it"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_stop() {
        let (stopper, shutdown) = Shutdown::new();
        let other = shutdown.clone();
        let waiting = tokio::spawn(other.wait());
        assert!(!shutdown.is_stopped());
        stopper.stop();
        waiting.await.expect("the waiting task ends");
        assert!(shutdown.is_stopped());
        // Asked after the stop: completes at once.
        shutdown.wait().await;
    }

    #[tokio::test]
    async fn a_dropped_stopper_stops() {
        let (stopper, shutdown) = Shutdown::new();
        drop(stopper);
        shutdown.wait().await;
        assert!(shutdown.is_stopped());
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_leaves_a_stuck_task_behind() {
        let drain = Drain::within(Duration::from_secs(5));
        assert_eq!(drain.wait("quick", async { 7 }).await, Some(7));
        let started = tokio::time::Instant::now();
        assert_eq!(drain.wait("stuck", std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // The deadline is shared: a later task gets no time of its own.
        assert_eq!(
            drain
                .wait("late", tokio::time::sleep(Duration::from_millis(1)))
                .await,
            None
        );
    }
}
