//! What the runtime (and so Kubernetes) reports for a container after a
//! kill, sent as a revision of the kill's event: the collector compares it
//! with what happened (docs/event-schema.md#revisions).
//!
//! After a kill of a container's process, the runtime is asked every
//! [`WatchRules::poll`] until the container's state settles (exited, or
//! gone) or [`WatchRules::settle_within`] passes: revision 1 carries that
//! report. A container still running then (a child process was killed)
//! is followed every [`WatchRules::follow_every`] for up to
//! [`WatchRules::follow_for`]; when it exits, revision 2 carries what the
//! runtime says of that exit (it may say `OOMKilled` of an exit that was
//! not a kill). Revisions are spooled like kills and delivered the same
//! way; a watch does not survive an agent restart.

use std::sync::Arc;
use std::time::Duration;

use oomlens_proto::v1::{OomEvent, RuntimeStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::pods::cri::CriClient;
use crate::ship::SharedSpool;

#[derive(Debug, Clone, Copy)]
pub struct WatchRules {
    pub poll: Duration,
    pub settle_within: Duration,
    pub follow_every: Duration,
    pub follow_for: Duration,
    /// Containers watched at once; kills beyond are not watched (counted).
    pub max_watched: usize,
}

impl Default for WatchRules {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            settle_within: Duration::from_secs(5),
            follow_every: Duration::from_secs(5),
            follow_for: Duration::from_secs(10 * 60),
            max_watched: 256,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `runtime_reports_total{result}`.
#[derive(Debug, Clone, Default)]
pub struct RuntimeWatchMetrics {
    results: Family<ResultLabels, Counter>,
}

impl RuntimeWatchMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "runtime_reports",
            "What the runtime reported after kills, sent as revisions: reported, followed \
             (a later exit reported too), unanswered, not_watched (too many at once), unspooled",
            self.results.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.results.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn get(&self, result: &'static str) -> u64 {
        self.results.get_or_create(&ResultLabels { result }).get()
    }
}

/// Starts a watch for each kill of a container's process.
#[derive(Debug, Clone)]
pub struct RuntimeWatcher {
    /// A client of its own: the resolver's queue is for the kills being
    /// named now, and must not wait behind these polls.
    cri: CriClient,
    spool: SharedSpool,
    rules: WatchRules,
    metrics: RuntimeWatchMetrics,
    slots: Arc<Semaphore>,
}

impl RuntimeWatcher {
    pub fn new(cri: CriClient, spool: SharedSpool, rules: WatchRules, metrics: RuntimeWatchMetrics) -> Self {
        Self {
            cri,
            spool,
            slots: Arc::new(Semaphore::new(rules.max_watched)),
            rules,
            metrics,
        }
    }

    /// Watches the container of `event`, if it names one; returns at once.
    pub fn watch(&self, event: &OomEvent) {
        let Some(id) = event
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .filter(|id| !id.is_empty())
        else {
            return;
        };
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.count("not_watched");
            return;
        };
        let mut watcher = self.clone();
        let event = event.clone();
        tokio::spawn(async move {
            watcher.follow(event, &id).await;
            drop(slot);
        });
    }

    async fn follow(&mut self, event: OomEvent, id: &str) {
        let rules = self.rules;
        let started = tokio::time::Instant::now();
        let mut latest: Option<RuntimeStatus> = None;
        loop {
            if let Some(report) = self.ask(id).await {
                let settled = report.settled;
                latest = Some(report);
                if settled {
                    break;
                }
            }
            if started.elapsed() >= rules.settle_within {
                break;
            }
            tokio::time::sleep(rules.poll).await;
        }
        let Some(first) = latest else {
            self.metrics.count("unanswered");
            debug!(id = %event.id, "the runtime did not report on the killed container");
            return;
        };
        let settled = first.settled;
        if !self.send(&event, 1, first).await {
            return;
        }
        self.metrics.count("reported");
        if settled {
            return;
        }
        let deadline = started + rules.follow_for;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(rules.follow_every).await;
            if let Some(report) = self.ask(id).await
                && report.settled
            {
                // Removed while running (the pod deleted): nothing the
                // kubelet would show of an exit; revision 1 stands.
                if report.state == oomlens_proto::v1::ContainerState::Gone as i32 {
                    return;
                }
                if self.send(&event, 2, report).await {
                    self.metrics.count("followed");
                }
                return;
            }
        }
    }

    async fn ask(&mut self, id: &str) -> Option<RuntimeStatus> {
        match self.cri.report(id).await {
            Ok(report) => Some(report),
            Err(error) => {
                debug!(%error, "no runtime report");
                None
            }
        }
    }

    /// Spools revision `revision` of `event` with `status`.
    async fn send(&self, event: &OomEvent, revision: u32, status: RuntimeStatus) -> bool {
        let revised = revised(event, revision, status);
        match self.spool.append_retrying(&revised).await {
            Ok(_) => true,
            Err(error) => {
                self.metrics.count("unspooled");
                warn!(id = %event.id, %error, "the runtime's report on a killed container was not spooled; the kill itself was");
                false
            }
        }
    }
}

/// `event` as revision `revision`, with the runtime's report.
pub fn revised(event: &OomEvent, revision: u32, status: RuntimeStatus) -> OomEvent {
    OomEvent {
        revision,
        runtime_status: Some(status),
        ..event.clone()
    }
}
