//! Kubernetes Events on the pod: each stored kill of a pod's process
//! becomes an `events.k8s.io/v1` Event regarding the Pod (its container
//! in `fieldPath`), related to the Node, type Warning, so `kubectl
//! describe pod` and every tool that watches Events shows it
//! (docs/kubernetes-events.md).
//!
//! Written by the collector, from the store: one place per event, after
//! the store has deduplicated resends by id, and at least once across API
//! outages and restarts (a [`crate::outbound::Reader`] with its own cursor;
//! one replica at a time on PostgreSQL). An Event is named after its
//! kill's id, so a kill written again after a restart meets its own Event
//! (409) instead of making a second. Repeats aggregate into a series
//! ([`series`]); writes are bounded per series and per collector.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

mod api;
pub mod body;
pub mod series;

pub use api::{Answer, EventsApi};
pub use body::{Occurrence, Reason};
pub use series::{SeriesRules, WriteBudget};

use crate::outbound::{Destination, Reader, RetryPolicy, backoff};
use crate::service::Collector;
use crate::store::StoredEvent;
use series::{SeriesBook, Write};

/// The cursor's name in the store.
const READER: &str = "kubernetes-events";

/// What `--kubernetes-events` and its companions configure.
#[derive(Debug, Clone)]
pub struct KubeEventsConfig {
    /// A kubeconfig to use; otherwise the in-cluster service account, then
    /// `$KUBECONFIG` and `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `reportingInstance`: which collector (or standalone agent) wrote.
    pub reporting_instance: String,
    pub series: SeriesRules,
    /// The collector-wide bound on API writes.
    pub writes_per_second: f64,
    pub burst: u32,
    pub retry: RetryPolicy,
}

impl KubeEventsConfig {
    pub fn new(reporting_instance: impl Into<String>) -> Self {
        Self {
            kubeconfig: None,
            reporting_instance: reporting_instance.into(),
            series: SeriesRules::default(),
            writes_per_second: 10.0,
            burst: 50,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeEventsError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes API configuration (not in a cluster, no $KUBECONFIG, no ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot make a Kubernetes API client: {0}")]
    Client(#[from] kube::Error),
}

/// A configured Event writer.
#[derive(Debug, Clone)]
pub struct KubeEvents {
    api: EventsApi,
    config: KubeEventsConfig,
}

impl KubeEvents {
    /// Builds the client from the configuration (checked at start: a bad
    /// kubeconfig is a startup error, not a silent lack of Events).
    pub async fn connect(config: KubeEventsConfig) -> Result<Self, KubeEventsError> {
        let kube_config = match &config.kubeconfig {
            Some(path) => {
                let bad = |source| KubeEventsError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                };
                let file = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
                kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(bad)?
            }
            None => kube::Config::infer().await?,
        };
        info!(api = %kube_config.cluster_url, instance = %config.reporting_instance, "Kubernetes Events on: each kill of a pod's process becomes an Event on the pod");
        let client = kube::Client::try_from(kube_config)?;
        Ok(Self::with_client(client, config))
    }

    pub fn with_client(client: kube::Client, config: KubeEventsConfig) -> Self {
        Self {
            api: EventsApi::new(client),
            config,
        }
    }
}

/// Starts writing Events for kills stored from now on; runs until aborted.
pub async fn start(events: &KubeEvents, collector: &Collector) -> JoinHandle<()> {
    let metrics = collector.metrics().kube_events().clone();
    let cursor_metrics = metrics.clone();
    let reader = Reader {
        store: collector.store().clone(),
        hub: collector.hub().clone(),
        name: READER.to_owned(),
        label: READER.to_owned(),
        on_cursor: Arc::new(move |seq| {
            cursor_metrics.cursor.set(seq);
        }),
    };
    reader.start_from_now().await;
    let now = Instant::now();
    let emitter = Emitter {
        api: events.api.clone(),
        book: SeriesBook::new(events.config.series),
        budget: WriteBudget::new(events.config.writes_per_second, events.config.burst, now),
        config: events.config.clone(),
        metrics,
    };
    tokio::spawn(reader.run(emitter))
}

struct Emitter {
    api: EventsApi,
    book: SeriesBook,
    budget: WriteBudget,
    config: KubeEventsConfig,
    metrics: KubeEventMetrics,
}

impl Destination for Emitter {
    async fn deliver(&mut self, stored: &StoredEvent) {
        if stored.event.revision > 0 {
            // What was learned after a kill (the runtime's report) is not
            // another kill: its Event is written already.
            self.metrics.result(Outcome::Revision);
            return;
        }
        let Some(occurrence) = Occurrence::of(&stored.event) else {
            debug!(event = %stored.event.id, "no pod to put an Event on (not a pod's process, or its name is unknown)");
            self.metrics.result(Outcome::NotAPod);
            return;
        };
        match self.book.observe(occurrence, Instant::now()) {
            Some(write) => self.write(write).await,
            None => self.metrics.result(Outcome::Coalesced),
        }
    }

    async fn tick(&mut self) {
        for write in self.book.due(Instant::now()) {
            self.write(write).await;
        }
        self.metrics
            .series
            .set(i64::try_from(self.book.len()).unwrap_or(i64::MAX));
    }

    fn tick_within(&self) -> std::time::Duration {
        self.book
            .next_due(Instant::now())
            .unwrap_or(crate::outbound::RECHECK)
    }
}

impl Emitter {
    /// Waits for the collector-wide budget.
    async fn budget(&mut self) {
        while let Err(wait) = self.budget.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Makes one write, retried while the API is away; given up (counted,
    /// logged) after the policy's number of refusals.
    async fn write(&mut self, mut write: Write) {
        let (mut failures, mut refusals) = (0u32, 0u32);
        loop {
            self.budget().await;
            let answer = match &write {
                Write::Create(occurrence) => {
                    let body =
                        occurrence.create_body(&occurrence.event_name(), &self.config.reporting_instance);
                    self.api.create(&occurrence.namespace, &body).await
                }
                Write::Series {
                    name,
                    namespace,
                    count,
                    last,
                    ..
                } => {
                    let patch = body::series_patch(*count, &last.time, &last.event_id);
                    self.api.patch(namespace, name, &patch).await
                }
            };
            let reason = match (answer, &write) {
                (Answer::Done | Answer::AlreadyExists, Write::Create(occurrence)) => {
                    let count = occurrence.series_count;
                    self.book
                        .written(&occurrence.key(), &occurrence.event_name(), count, Instant::now());
                    self.metrics.result(Outcome::Created);
                    self.metrics.failing.set(0);
                    return;
                }
                (Answer::Done | Answer::AlreadyExists, Write::Series { key, name, count, .. }) => {
                    self.book.written(key, name, *count, Instant::now());
                    self.metrics.result(Outcome::SeriesUpdated);
                    self.metrics.failing.set(0);
                    return;
                }
                (Answer::NotFound, Write::Series { count, last, .. }) => {
                    // The Event expired: a new one carries the series on.
                    info!(pod = %last.pod, count, "the series' Event is gone from the API; creating a new one");
                    write = Write::Create(last.clone().with_series(*count));
                    continue;
                }
                (Answer::NotFound, Write::Create(_)) => "404 on create".to_owned(),
                (Answer::Refused(why), _) => {
                    refusals += 1;
                    if refusals >= self.config.retry.refused_attempts {
                        let (key, pod) = match &write {
                            Write::Create(o) => (o.key(), o.pod.clone()),
                            Write::Series { key, last, .. } => (key.clone(), last.pod.clone()),
                        };
                        self.book.forget(&key);
                        self.metrics.result(Outcome::Refused);
                        self.metrics.failing.set(0);
                        warn!(%pod, %why, "the Kubernetes API refuses this Event (check the collector's RBAC: create and patch events in events.k8s.io); skipped");
                        return;
                    }
                    why
                }
                (Answer::Retry(why), _) => why,
            };
            if failures == 0 {
                warn!(%reason, "cannot write a Kubernetes Event; retrying with backoff");
            }
            self.metrics.result(Outcome::Retried);
            self.metrics.failing.set(1);
            tokio::time::sleep(backoff(self.config.retry, failures)).await;
            failures = failures.saturating_add(1);
        }
    }
}

/// What became of a kill or a write.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Created,
    SeriesUpdated,
    /// Joined a series whose next write waits for its interval.
    Coalesced,
    /// Not a pod's process, or the pod's name is unknown.
    NotAPod,
    /// A later revision of a kill already written.
    Revision,
    Retried,
    /// Refused by the API too often: skipped.
    Refused,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::SeriesUpdated => "series_updated",
            Self::Coalesced => "coalesced",
            Self::NotAPod => "not_a_pod",
            Self::Revision => "revision",
            Self::Retried => "retried",
            Self::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: &'static str,
}

/// The Event writer's metrics, registered with the collector's.
#[derive(Debug, Clone, Default)]
pub struct KubeEventMetrics {
    results: Family<OutcomeLabels, Counter>,
    failing: Gauge,
    cursor: Gauge,
    series: Gauge,
}

impl KubeEventMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "kubernetes_events",
            "Kills and Kubernetes Event writes by result (created, series_updated, coalesced, \
             not_a_pod, revision, retried, refused)",
            metrics.results.clone(),
        );
        registry.register(
            "kubernetes_events_failing",
            "1 while the current Event write keeps failing (the API is unreachable or refusing)",
            metrics.failing.clone(),
        );
        registry.register(
            "kubernetes_events_cursor",
            "The store sequence number the Event writer has handled up to",
            metrics.cursor.clone(),
        );
        registry.register(
            "kubernetes_events_series",
            "Event series being tracked (repeats of a kill within the series window)",
            metrics.series.clone(),
        );
        metrics
    }

    fn result(&self, outcome: Outcome) {
        self.results
            .get_or_create(&OutcomeLabels {
                result: outcome.label(),
            })
            .inc();
    }

    /// How many kills or writes ended with `outcome` (for tests and the
    /// CLI's health view).
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.results
            .get_or_create(&OutcomeLabels {
                result: outcome.label(),
            })
            .get()
    }
}

/// The default `reportingInstance`: the collector's host (its pod name in
/// a cluster).
pub fn default_instance(role: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{role}-{host}")
}
