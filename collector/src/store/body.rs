//! How an event is stored: its protobuf, with both memory histories
//! packed (`oomlens_proto::history`), a quarter of the bytes to write,
//! sync and read back. Bodies stored unpacked, before, decode the same.

use oomlens_proto::history::{self, HistoryError};
use oomlens_proto::v1::OomEvent;
use prost::Message as _;

/// Why a stored body does not decode.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("{0}")]
    History(#[from] HistoryError),
}

/// The bytes to store for `event`.
pub(super) fn encode(event: &OomEvent) -> Vec<u8> {
    if !history::has_plain_history(event) {
        // Packed already (as the ingest queues events): nothing to copy.
        return event.encode_to_vec();
    }
    let mut stored = event.clone();
    history::pack_event(&mut stored);
    stored.encode_to_vec()
}

/// The event stored as `body`, its histories as `histories` says.
pub(super) fn decode_as(body: &[u8], histories: Histories) -> Result<OomEvent, BodyError> {
    let mut event = OomEvent::decode(body)?;
    if histories == Histories::Unpacked {
        history::unpack_event(&mut event)?;
    }
    Ok(event)
}

/// How a read returns events' memory histories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Histories {
    /// Samples and buckets, for what reads them.
    Unpacked,
    /// As stored, packed where they were (all but the few too long to
    /// pack): for what passes events on, subscriptions and the replica
    /// relay, which keep them so and unpack only for a subscriber that
    /// reads them plain.
    AsStored,
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::{MemoryHistory, MemorySample};
    use prost_types::Timestamp;

    fn kill() -> OomEvent {
        let history = MemoryHistory {
            cgroup: "/kubepods/pod1/c".into(),
            samples: (0..600u64)
                .map(|i| MemorySample {
                    time: Some(Timestamp {
                        seconds: 1_795_000_000 + i64::try_from(i / 10).expect("small"),
                        nanos: i32::try_from(i % 10).expect("small") * 100_000_000,
                    }),
                    working_set_bytes: Some(100_000_000 + i * 91_111),
                    ..MemorySample::default()
                })
                .collect(),
            ..MemoryHistory::default()
        };
        OomEvent {
            id: "abc".into(),
            history: Some(history.clone()),
            oom_memcg_history: Some(MemoryHistory {
                cgroup: "/kubepods/pod1".into(),
                ..history
            }),
            ..OomEvent::default()
        }
    }

    #[test]
    fn a_kill_is_stored_packed_and_read_back_whole() {
        let event = kill();
        let body = encode(&event);
        assert!(
            body.len() * 3 < event.encoded_len(),
            "{} bytes stored",
            body.len()
        );
        assert_eq!(decode_as(&body, Histories::Unpacked).expect("decodes"), event);
    }

    #[test]
    fn read_as_stored_a_kill_keeps_its_histories_packed() {
        let event = kill();
        let kept = decode_as(&encode(&event), Histories::AsStored).expect("decodes");
        assert!(oomlens_proto::history::has_packed_history(&kept));
        assert!(!oomlens_proto::history::has_plain_history(&kept));
        let mut unpacked = kept;
        history::unpack_event(&mut unpacked).expect("unpacks");
        assert_eq!(unpacked, event);
    }

    #[test]
    fn bodies_stored_unpacked_still_decode() {
        let event = kill();
        assert_eq!(
            decode_as(&event.encode_to_vec(), Histories::Unpacked).expect("decodes"),
            event
        );
    }

    #[test]
    fn a_damaged_packed_history_is_an_error() {
        let mut event = kill();
        event.history.as_mut().expect("history").packed = vec![0xff; 3];
        event.history.as_mut().expect("history").samples.clear();
        assert!(matches!(
            decode_as(&event.encode_to_vec(), Histories::Unpacked),
            Err(BodyError::History(_))
        ));
    }
}
