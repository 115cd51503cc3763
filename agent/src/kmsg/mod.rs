//! Reading the kernel log: [`record`] parses one `/dev/kmsg` record (pure),
//! [`reader`] reads them asynchronously with overrun accounting, [`cursor`]
//! persists the position across restarts.

pub mod cursor;
pub mod reader;
pub mod record;

pub use cursor::{Cursor, CursorError};
pub use reader::{KmsgError, KmsgItem, KmsgReader, ReaderStats, StartAt};
pub use record::{Record, RecordError, parse_record};

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn read_boot_id(proc_root: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))?;
    Ok(text.trim().to_owned())
}
