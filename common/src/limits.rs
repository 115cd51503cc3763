//! Size limits shared by the agent, the collector and the CLI, so that
//! every event an agent sends can also be stored, queried, shown and
//! streamed (documented in docs/reliability.md).

/// gRPC messages between oomlens programs, at most, either way.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The largest event an agent sends (encoded). Half of [`MAX_MESSAGE`]:
/// the collector adds its analysis (a few KiB) and responses wrap events,
/// and both must still fit. Agents thin an event's memory history, then
/// its task table and kernel lines, to fit.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// The largest ingest message the collector reads: one event of
/// [`MAX_EVENT_BYTES`] and its envelope. Larger ones end the stream with
/// `RESOURCE_EXHAUSTED`, before they take memory.
pub const MAX_INGEST_MESSAGE: usize = MAX_EVENT_BYTES + (64 << 10);

/// About what `event` takes in memory once decoded: its encoded size plus
/// the fixed size of each repeated message, which is what dominates (a
/// memory sample is ~45 bytes on the wire and ~140 in memory). The
/// collector's budgets (events waiting for the store, the subscription
/// ring, subscribers' outboxes) count this, so that they bound memory.
pub fn resident_bytes(event: &oomlens_proto::v1::OomEvent) -> usize {
    use prost::Message as _;

    resident_bytes_encoded(event, event.encoded_len())
}

/// [`resident_bytes`] for an event whose `encoded_len` is known.
pub fn resident_bytes_encoded(event: &oomlens_proto::v1::OomEvent, encoded_len: usize) -> usize {
    use std::mem::size_of;

    use oomlens_proto::v1::{KernelLine, MemoryBucket, MemoryHistory, MemorySample, TaskEntry};

    let history = |h: Option<&MemoryHistory>| {
        h.map_or(0, |h| {
            h.samples.len() * size_of::<MemorySample>() + h.buckets.len() * size_of::<MemoryBucket>()
        })
    };
    size_of::<oomlens_proto::v1::OomEvent>()
        + encoded_len
        + history(event.history.as_ref())
        + history(event.oom_memcg_history.as_ref())
        + event.tasks.len() * size_of::<TaskEntry>()
        + event.kernel_lines.len() * size_of::<KernelLine>()
}

/// The most memory believed: more than the largest machines have (a few
/// dozen TiB). A limit above it is "unlimited" (cgroup v1 reports about
/// 8 EiB), and a peak or a recommendation above it is a broken number.
pub const MAX_PLAUSIBLE_BYTES: u64 = 256 << 40;

#[cfg(test)]
mod tests {
    use oomlens_proto::v1::{MemoryHistory, MemorySample, OomEvent};
    use prost::Message as _;

    use super::resident_bytes;

    #[test]
    fn a_sample_heavy_event_weighs_more_than_its_encoding() {
        let event = OomEvent {
            id: "x".into(),
            history: Some(MemoryHistory {
                samples: vec![
                    MemorySample {
                        working_set_bytes: Some(1 << 30),
                        ..MemorySample::default()
                    };
                    10_000
                ],
                ..MemoryHistory::default()
            }),
            ..OomEvent::default()
        };
        let encoded = event.encoded_len();
        assert!(
            resident_bytes(&event) > 3 * encoded,
            "{} vs {encoded}",
            resident_bytes(&event)
        );
        assert!(resident_bytes(&OomEvent::default()) < 4096);
    }
}
