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
