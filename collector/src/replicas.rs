//! PostgreSQL replicas: every replica LISTENs on the store's channel and
//! relays events stored by any replica (itself included) to its own
//! subscribers, in `seq` order; and relays the other replicas' warnings
//! (their agents', sent on the warnings channel) to its subscribers.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tracing::{info, warn};

use crate::hub::{Hub, Published, SharedEvent};
use crate::store::{Histories, NOTIFY_CHANNEL, Store, WARNINGS_CHANNEL};

/// How often the relay also polls, in case a notification was lost while
/// the listening connection was being re-established.
const POLL: Duration = Duration::from_secs(1);

pub(crate) async fn relay(store: Store, hub: Hub, mut last: i64, replica: String) {
    let Some(pool) = store.postgres_pool().cloned() else {
        return;
    };
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen_all([NOTIFY_CHANNEL, WARNINGS_CHANNEL]).await {
                Ok(()) => break listener,
                Err(error) => warn!(%error, "cannot LISTEN for new events; retrying"),
            },
            Err(error) => warn!(%error, "cannot open the LISTEN connection; retrying"),
        }
        tokio::time::sleep(POLL).await;
    };
    info!(
        channel = NOTIFY_CHANNEL,
        "relaying events stored by every replica"
    );
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            notification = listener.try_recv() => match notification {
                Ok(Some(notification)) if notification.channel() == WARNINGS_CHANNEL => {
                    if let Some(warning) = crate::service::warning_from(notification.payload(), &replica) {
                        hub.publish(Published::Warning(Arc::new(warning)));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "LISTEN connection lost; it reconnects and polling covers the gap");
                    tokio::time::sleep(POLL).await;
                }
            },
            _ = poll.tick() => {}
        }
        // Whatever woke us, publish everything after `last`: seq order is
        // commit order (inserts hold one advisory lock).
        loop {
            match store.after_seq(last, None, 500, Histories::AsStored).await {
                Ok(page) => {
                    for stored in page.events {
                        last = stored.seq;
                        hub.publish(Published::Event(Arc::new(SharedEvent::new(stored))));
                    }
                    match page.more_after {
                        Some(seq) => last = last.max(seq),
                        None => break,
                    }
                }
                Err(error) => {
                    warn!(%error, "cannot read new events for subscribers");
                    break;
                }
            }
        }
    }
}
