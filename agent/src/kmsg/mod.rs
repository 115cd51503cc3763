//! Reading the kernel log: [`record`] parses one `/dev/kmsg` record (pure),
//! [`reader`] reads them asynchronously with overrun accounting, [`cursor`]
//! persists the position across restarts.

pub mod cursor;
pub mod fragments;
pub mod hurry;
pub mod reader;
pub mod record;

pub use cursor::{Cursor, CursorError};
pub use fragments::LineJoiner;
pub use hurry::KmsgHurry;
pub use reader::{KmsgError, KmsgItem, KmsgReader, ReaderMetrics, ReaderStats, StartAt};
pub use record::{Record, RecordError, parse_record};
