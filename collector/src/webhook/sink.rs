//! One sink's delivery task: lead (one replica per sink), read the store
//! after the sink's cursor a page at a time, deliver each event in order
//! until the receiver takes it (or has refused it too often), save the
//! cursor, and wait for the next stored event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Attempt, Outcome, RetryPolicy, Sink, WebhookMetrics, Webhooks};
use crate::hub::Hub;
use crate::service::Collector;
use crate::store::{Store, StoredEvent};

/// Events one read of the store takes (fewer past its byte budget).
const PAGE: u32 = 100;
/// How often a standby replica tries to take the lead, and how long an
/// idle sink waits before looking at the store without being woken (the
/// wake-up covers this replica's writes and, on PostgreSQL, others').
const RECHECK: Duration = Duration::from_secs(5);

/// Starts one task per sink; they run until aborted (an event being
/// delivered then is delivered again after a restart: at least once). A
/// sink never seen before starts after the last event stored when this
/// returns: a new receiver is not flooded with the past.
pub async fn start(webhooks: &Webhooks, collector: &Collector) -> Vec<JoinHandle<()>> {
    let (store, hub, metrics) = (collector.store(), collector.hub(), collector.metrics().webhooks());
    for sink in &webhooks.sinks {
        // A failure here is retried by the task (from the last event then).
        if let Err(error) = start_from_now(store, &sink.reader).await {
            warn!(sink = %sink.label, %error, "cannot record the new sink's starting point");
        }
    }
    webhooks
        .sinks
        .iter()
        .map(|sink| {
            let task = SinkTask {
                sink: sink.clone(),
                webhooks: webhooks.clone(),
                store: store.clone(),
                hub: hub.clone(),
                metrics: metrics.clone(),
            };
            info!(sink = %sink.label, "webhook sink started");
            tokio::spawn(task.run())
        })
        .collect()
}

struct SinkTask {
    sink: Sink,
    webhooks: Webhooks,
    store: Store,
    hub: Hub,
    metrics: WebhookMetrics,
}

/// A new sink's cursor: the last stored event, unless one is saved (the
/// first replica to get here sets it).
async fn start_from_now(store: &Store, reader: &str) -> Result<i64, crate::store::StoreError> {
    if let Some(saved) = store.reader_cursor(reader).await? {
        return Ok(saved);
    }
    let last = store.last_seq().await?;
    store.init_reader_cursor(reader, last).await?;
    Ok(store.reader_cursor(reader).await?.unwrap_or(last))
}

/// The wait before attempt `failures + 1`: doubling from the policy's
/// first wait to its longest, with ±25% jitter so that sinks do not retry
/// in step.
fn backoff(policy: RetryPolicy, failures: u32) -> Duration {
    let base = policy
        .first_backoff
        .saturating_mul(1 << failures.min(16))
        .min(policy.max_backoff);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // A value in [0.75, 1.25) from the clock's low bits: enough to spread.
    let jitter = 0.75 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(jitter)
}

impl SinkTask {
    async fn run(self) {
        let label = self.sink.label.clone();
        loop {
            let Some(mut lead) = self.lead().await else {
                continue;
            };
            let Some(mut cursor) = self.cursor().await else {
                tokio::time::sleep(RECHECK).await;
                continue;
            };
            self.metrics.cursor(&label, cursor);
            let mut live = self.hub.subscribe();
            loop {
                if !lead.still_held().await {
                    warn!(sink = %label, "lost the sink's lock (the database connection broke); taking it again");
                    break;
                }
                let page = match self.store.after_seq(cursor, None, PAGE).await {
                    Ok(page) => page,
                    Err(error) => {
                        warn!(sink = %label, %error, "cannot read events for the webhook; retrying");
                        tokio::time::sleep(RECHECK).await;
                        continue;
                    }
                };
                if page.events.is_empty() {
                    // Woken by the next stored event, or looks again soon.
                    let _ = tokio::time::timeout(RECHECK, live.recv()).await;
                    continue;
                }
                for stored in &page.events {
                    self.deliver(stored).await;
                    cursor = stored.seq;
                    self.metrics.cursor(&label, cursor);
                    self.save(cursor).await;
                }
            }
        }
    }

    /// The sink's lock; None after a wait when another replica holds it or
    /// the store cannot be asked.
    async fn lead(&self) -> Option<crate::store::Leadership> {
        match self.store.try_lead(&self.sink.reader).await {
            Ok(Some(lead)) => Some(lead),
            Ok(None) => {
                tokio::time::sleep(RECHECK).await;
                None
            }
            Err(error) => {
                warn!(sink = %self.sink.label, %error, "cannot take the sink's lock; retrying");
                tokio::time::sleep(RECHECK).await;
                None
            }
        }
    }

    /// Where to start: the saved cursor (see [`start_from_now`]).
    async fn cursor(&self) -> Option<i64> {
        match start_from_now(&self.store, &self.sink.reader).await {
            Ok(seq) => {
                info!(sink = %self.sink.label, after = seq, "webhook sink delivers events stored after this");
                Some(seq)
            }
            Err(error) => {
                warn!(sink = %self.sink.label, %error, "cannot read the sink's cursor; retrying");
                None
            }
        }
    }

    /// Saves the cursor; a failure is logged and the next save catches up
    /// (until then a restart delivers a few events again: at least once).
    async fn save(&self, seq: i64) {
        if let Err(error) = self.store.set_reader_cursor(&self.sink.reader, seq).await {
            warn!(sink = %self.sink.label, %error, seq, "cannot save the sink's cursor");
        }
    }

    /// Delivers one event: retried until the receiver takes it, or
    /// dead-lettered after the policy's number of refusals.
    async fn deliver(&self, stored: &StoredEvent) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        let backoff = |n| backoff(RetryPolicy::default(), n);
        let first = backoff(0);
        assert!(
            first >= Duration::from_millis(750) && first < Duration::from_millis(1250),
            "{first:?}"
        );
        let fourth = backoff(3);
        assert!(
            fourth >= Duration::from_secs(6) && fourth < Duration::from_secs(10),
            "{fourth:?}"
        );
        let late = backoff(40);
        assert!(
            late >= Duration::from_secs(45) && late < Duration::from_secs(75),
            "{late:?}"
        );
    }
}
