//! The SQLite database created readable by the collector only: events
//! name pods, commands and cgroups, and a file created with the default
//! mode (0644) let every user of the host read them.

use std::path::Path;

use oomlens_common::secrets::create_private_file;
use tracing::debug;

/// Creates the database file at `path` (a SQLite path as the store takes
/// it) with mode 0600 if it does not exist yet. SQLite then keeps the
/// mode, and gives its `-wal` and `-shm` files the same one.
pub(crate) fn create_sqlite_file(path: &str) {
    // Options after `?`; in-memory and URI databases have no plain file.
    let file = path.split('?').next().unwrap_or(path);
    if file.is_empty() || file.contains(":memory:") || file.starts_with("file:") {
        return;
    }
    if let Err(error) = create_private_file("the database", Path::new(file)) {
        // SQLite meets the same problem (a missing directory, no
        // permission) when it opens the file, and reports it.
        debug!(%error, path = file, "cannot create the database file ahead of SQLite");
    }
}
