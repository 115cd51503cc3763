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

/// Makes `event` encode to at most `max` bytes by halving, round after
/// round, whichever of its memory histories (newest samples kept), task
/// table (largest processes kept) and kernel lines (the end of the
/// report, with the kill line, kept) is the largest. False if even the
/// rest is too large (no real event: what remains is ids, names, paths).
pub fn fit_event(event: &mut OomEvent, max: usize) -> bool {
    use prost::Message;
    let halve_tasks = |event: &mut OomEvent| {
        event
            .tasks
            .sort_by_key(|task| std::cmp::Reverse(task.rss_pages.unwrap_or(0)));
        event.tasks.truncate(event.tasks.len() / 2);
    };
    while event.encoded_len() > max {
        let histories = event.history.as_ref().map_or(0, Message::encoded_len)
            + event.oom_memcg_history.as_ref().map_or(0, Message::encoded_len);
        let tasks: usize = event.tasks.iter().map(Message::encoded_len).sum();
        let lines: usize = event.kernel_lines.iter().map(Message::encoded_len).sum();
        let shrunk = if histories >= tasks && histories >= lines && thin_event(event) {
            true
        } else if tasks >= lines && !event.tasks.is_empty() {
            halve_tasks(event);
            true
        } else if !event.kernel_lines.is_empty() {
            let drop = event.kernel_lines.len().div_ceil(2);
            event.kernel_lines.drain(..drop);
            true
        } else if !event.tasks.is_empty() {
            halve_tasks(event);
            true
        } else {
            thin_event(event)
        };
        if !shrunk {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use oomlens_proto::v1::{KernelLine, MemorySample, TaskEntry};
    use prost::Message as _;

    use super::*;

    #[test]
    fn an_event_too_large_to_send_keeps_its_newest_history_largest_tasks_and_kill_line() {
        let mut event = OomEvent {
            id: "big".into(),
            history: Some(MemoryHistory {
                samples: (0..200_000)
                    .map(|i| MemorySample {
                        working_set_bytes: Some(i),
                        ..MemorySample::default()
                    })
                    .collect(),
                ..MemoryHistory::default()
            }),
            tasks: (0..100_000)
                .map(|pid| TaskEntry {
                    pid,
                    rss_pages: Some(u64::try_from(pid).unwrap_or(0)),
                    comm: "worker-process".into(),
                    ..TaskEntry::default()
                })
                .collect(),
            kernel_lines: (0..50_000)
                .map(|seq| KernelLine {
                    seq: Some(seq),
                    text: format!("line {seq} of a very long report"),
                    ..KernelLine::default()
                })
                .collect(),
            ..OomEvent::default()
        };
        assert!(event.encoded_len() > 4 << 20);
        assert!(fit_event(&mut event, 1 << 20));
        assert!(event.encoded_len() <= 1 << 20);
        let samples = &event.history.as_ref().unwrap().samples;
        assert!(samples.len() > 1 && samples.len() < 200_000);
        assert_eq!(samples.last().unwrap().working_set_bytes, Some(199_999));
        assert_eq!(
            event.tasks.first().unwrap().pid,
            99_999,
            "the largest process stays"
        );
        assert_eq!(
            event.kernel_lines.last().unwrap().seq,
            Some(49_999),
            "the kill line stays"
        );
    }
}
