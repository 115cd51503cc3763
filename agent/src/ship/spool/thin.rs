//! Thinning histories to make room in a full spool: each round halves the
//! samples (keeping the newest) or, once one is left, the buckets.

use oomlens_proto::v1::{MemoryHistory, OomEvent};

/// Halves a history's samples (keeping the newest), then its buckets.
fn thin_history(history: &mut MemoryHistory) -> bool {
    if history.samples.len() > 1 {
        let newest = history.samples.len() - 1;
        let mut index = 0;
        history.samples.retain(|_| {
            let keep = (newest - index).is_multiple_of(2);
            index += 1;
            keep
        });
        true
    } else if history.buckets.len() > 1 {
        let mut index = 0usize;
        history.buckets.retain(|_| {
            index += 1;
            index.is_multiple_of(2)
        });
        true
    } else {
        false
    }
}

/// Thins both histories of `event`; false when nothing was left to thin.
pub fn thin_event(event: &mut OomEvent) -> bool {
    let a = event.history.as_mut().is_some_and(thin_history);
    let b = event.oom_memcg_history.as_mut().is_some_and(thin_history);
    a || b
}
