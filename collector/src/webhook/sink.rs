//! One sink's delivery: each stored event, in order, POSTed until the
//! receiver takes it (or has refused it too often). The store reading,
//! the cursor and the leadership are [`crate::outbound::Reader`]'s.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Attempt, Outcome, Sink, WebhookMetrics, Webhooks};
use crate::outbound::{Destination, Reader, backoff};
use crate::service::Collector;
use crate::store::StoredEvent;

/// Starts one task per sink; they run until aborted. A sink never seen
/// before starts after the last event stored when this returns: a new
/// receiver is not flooded with the past.
pub async fn start(webhooks: &Webhooks, collector: &Collector) -> Vec<JoinHandle<()>> {
    let metrics = collector.metrics().webhooks().clone();
    let mut tasks = Vec::new();
    for sink in &webhooks.sinks {
        let cursor_metrics = metrics.clone();
        let label = sink.label.clone();
        let reader = Reader {
            store: collector.store().clone(),
            hub: collector.hub().clone(),
            name: sink.reader.clone(),
            label: format!("webhook {}", sink.label),
            on_cursor: Arc::new(move |seq| cursor_metrics.cursor(&label, seq)),
        };
        reader.start_from_now().await;
        let task = SinkTask {
            sink: sink.clone(),
            webhooks: webhooks.clone(),
            metrics: metrics.clone(),
        };
        info!(sink = %sink.label, "webhook sink started");
        tasks.push(tokio::spawn(reader.run(task)));
    }
    tasks
}

struct SinkTask {
    sink: Sink,
    webhooks: Webhooks,
    metrics: WebhookMetrics,
}

impl Destination for SinkTask {
    async fn deliver(&mut self, stored: &StoredEvent) {
        self.post(stored).await;
    }
}

impl SinkTask {
    /// Delivers one event: retried until the receiver takes it, or
    /// dead-lettered after the policy's number of refusals.
    async fn post(&self, stored: &StoredEvent) {
        let label = &self.sink.label;
        let id = &stored.event.id;
        let body = super::body(self.webhooks.format, stored.seq, &stored.event);
        let mut failures = 0u32;
        let mut refusals = 0u32;
        loop {
            let mut headers = vec![
                ("x-oomlens-event-id", id.clone()),
                ("x-oomlens-cursor", stored.seq.to_string()),
                ("x-oomlens-attempt", (failures + 1).to_string()),
            ];
            if let Some(secret) = &self.webhooks.secret {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                headers.push(("x-oomlens-signature", super::signature(secret, now, &body)));
            }
            let outcome = self
                .webhooks
                .poster
                .post(&self.sink.url, &headers, body.clone())
                .await;
            let wait = match outcome {
                Outcome::Delivered => {
                    self.metrics.attempt(label, Attempt::Delivered);
                    self.metrics.failing(label, false);
                    if failures > 0 {
                        info!(sink = %label, event = %id, attempts = failures + 1, "webhook delivered after retries");
                    }
                    return;
                }
                Outcome::Refused { reason } => {
                    refusals += 1;
                    if refusals >= self.webhooks.retry.refused_attempts {
                        self.metrics.attempt(label, Attempt::DeadLetter);
                        self.metrics.failing(label, false);
                        warn!(sink = %label, event = %id, %reason, attempts = refusals, "webhook receiver refuses this event; dead-lettered, going on");
                        return;
                    }
                    warn!(sink = %label, event = %id, %reason, "webhook receiver refused the event; will try again");
                    backoff(self.webhooks.retry, failures)
                }
                Outcome::Retry { reason, after } => {
                    if failures == 0 {
                        warn!(sink = %label, event = %id, %reason, "webhook delivery failed; retrying with backoff");
                    }
                    after.unwrap_or_else(|| backoff(self.webhooks.retry, failures))
                }
            };
            self.metrics.attempt(label, Attempt::Retried);
            self.metrics.failing(label, true);
            failures = failures.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }
}
