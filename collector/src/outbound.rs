//! Delivery of stored events to the outside (webhooks, Kubernetes
//! Events): one reader per destination leads (one replica at a time on
//! PostgreSQL), reads the store after its own cursor a page at a time,
//! hands each event to the destination in order, saves the cursor, and
//! waits for the next stored event. What waits is in the store, not in
//! memory: every stored event is handed over at least once, across
//! outages and restarts.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::hub::Hub;
use crate::store::{Histories, Leadership, Store, StoreError, StoredEvent};

/// Events one read of the store takes (fewer past its byte budget).
const PAGE: u32 = 100;
/// How often a standby replica tries to take the lead, and how long an
/// idle reader waits before looking at the store without being woken (the
/// wake-up covers this replica's writes and, on PostgreSQL, others').
pub const RECHECK: Duration = Duration::from_secs(5);

/// How a destination retries one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles from there.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts at an event the receiver refuses before it is
    /// dead-lettered.
    pub refused_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            refused_attempts: 5,
        }
    }
}

/// The wait before attempt `failures + 1`: doubling from the policy's
/// first wait to its longest, with ±25% jitter so that destinations do not
/// retry in step.
pub fn backoff(policy: RetryPolicy, failures: u32) -> Duration {
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

/// Where stored events go.
pub trait Destination: Send + 'static {
    /// Hands one event over; returns when the destination is done with it
    /// (taken, or given up on and counted). The cursor moves past it then.
    fn deliver(&mut self, stored: &StoredEvent) -> impl Future<Output = ()> + Send;

    /// Work that is due without a new event (deferred writes); called
    /// after each page and each idle wait, at least every [`RECHECK`].
    fn tick(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// How soon [`Destination::tick`] has work, if sooner than [`RECHECK`].
    fn tick_within(&self) -> Duration {
        RECHECK
    }
}

/// One destination's reader of the store.
#[derive(Clone)]
pub struct Reader {
    pub store: Store,
    pub hub: Hub,
    /// The cursor's name in the store.
    pub name: String,
    /// For logs and metrics.
    pub label: String,
    /// Told each cursor position handled (a gauge).
    pub on_cursor: Arc<dyn Fn(i64) + Send + Sync>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A new reader's cursor: the last stored event, unless one is saved (the
/// first replica to get here sets it). A new destination is not flooded
/// with the past.
pub async fn start_from_now(store: &Store, name: &str) -> Result<i64, StoreError> {
    if let Some(saved) = store.reader_cursor(name).await? {
        return Ok(saved);
    }
    let last = store.last_seq().await?;
    store.init_reader_cursor(name, last).await?;
    Ok(store.reader_cursor(name).await?.unwrap_or(last))
}

impl Reader {
    /// Records where a destination never seen before starts; a failure is
    /// retried by [`Reader::run`] (from the last event then).
    pub async fn start_from_now(&self) {
        if let Err(error) = start_from_now(&self.store, &self.name).await {
            warn!(destination = %self.label, %error, "cannot record the new destination's starting point");
        }
    }

    /// Runs until aborted (an event being handed over then is handed over
    /// again after a restart: at least once).
    pub async fn run(self, mut destination: impl Destination) {
        loop {
            let Some(mut lead) = self.lead().await else {
                continue;
            };
            let Some(mut cursor) = self.cursor().await else {
                tokio::time::sleep(RECHECK).await;
                continue;
            };
            (self.on_cursor)(cursor);
            let mut live = self.hub.subscribe();
            loop {
                if !lead.still_held().await {
                    warn!(destination = %self.label, "lost the destination's lock (the database connection broke); taking it again");
                    break;
                }
                let page = match self
                    .store
                    .after_seq(cursor, None, PAGE, Histories::Unpacked)
                    .await
                {
                    Ok(page) => page,
                    Err(error) => {
                        warn!(destination = %self.label, %error, "cannot read events to deliver; retrying");
                        tokio::time::sleep(RECHECK).await;
                        continue;
                    }
                };
                if page.events.is_empty() {
                    // Woken by the next stored event, or looks again soon.
                    let wait = destination.tick_within().min(RECHECK);
                    let _ = tokio::time::timeout(wait, live.recv()).await;
                    destination.tick().await;
                    continue;
                }
                for stored in &page.events {
                    destination.deliver(stored).await;
                    cursor = stored.seq;
                    (self.on_cursor)(cursor);
                    self.save(cursor).await;
                }
                destination.tick().await;
            }
        }
    }

    /// The destination's lock; None after a wait when another replica
    /// holds it or the store cannot be asked.
    async fn lead(&self) -> Option<Leadership> {
        match self.store.try_lead(&self.name).await {
            Ok(Some(lead)) => Some(lead),
            Ok(None) => {
                tokio::time::sleep(RECHECK).await;
                None
            }
            Err(error) => {
                warn!(destination = %self.label, %error, "cannot take the destination's lock; retrying");
                tokio::time::sleep(RECHECK).await;
                None
            }
        }
    }

    async fn cursor(&self) -> Option<i64> {
        match start_from_now(&self.store, &self.name).await {
            Ok(seq) => {
                info!(destination = %self.label, after = seq, "delivering events stored after this");
                Some(seq)
            }
            Err(error) => {
                warn!(destination = %self.label, %error, "cannot read the destination's cursor; retrying");
                None
            }
        }
    }

    /// Saves the cursor; a failure is logged and the next save catches up
    /// (until then a restart hands a few events over again: at least once).
    async fn save(&self, seq: i64) {
        if let Err(error) = self.store.set_reader_cursor(&self.name, seq).await {
            warn!(destination = %self.label, %error, seq, "cannot save the destination's cursor");
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
