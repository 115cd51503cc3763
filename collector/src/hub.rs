//! Fan-out of new events and warnings to this replica's subscribers.
//!
//! A bounded broadcast ring: a subscriber that falls more than its
//! capacity behind is told it lagged, and (for events) catches up from the
//! store, so lagging costs latency, not events. Warnings are not stored:
//! those a lagging subscriber skipped are gone, and it is told how many.

use std::sync::Arc;

use oomlens_proto::v1::MemoryWarning;
use tokio::sync::broadcast;

use crate::store::StoredEvent;

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum Published {
    Event(Arc<StoredEvent>),
    Warning(Arc<MemoryWarning>),
}

/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Published>,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }

    pub fn publish(&self, item: Published) {
        // No receivers is the ordinary case (nobody subscribed).
        let _ = self.sender.send(item);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}
