//! The persisted read position: `(boot id, last sequence number)`, so a
//! restarted agent replays exactly the records it has not processed.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reader::StartAt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub boot_id: String,
    /// Every record up to and including this one has been fully processed.
    pub seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cannot read kmsg cursor {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("kmsg cursor {path} is corrupt ({source}); it is ignored")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write kmsg cursor {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl Cursor {
    /// Loads the cursor; Ok(None) when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, CursorError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CursorError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| CursorError::Corrupt {
                path: path.into(),
                source,
            })
    }

    /// Writes the cursor atomically (temporary file, fsync, rename), so a
    /// crash leaves the old cursor or the new one, never a torn one.
    pub fn save(&self, path: &Path) -> Result<(), CursorError> {
        use std::io::Write as _;
        let error = |source| CursorError::Write {
            path: path.into(),
            source,
        };
        let tmp = path.with_extension("tmp");
        // A struct of a string and a number always serialises.
        let text = serde_json::to_vec(self).unwrap_or_default();
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            file.write_all(&text)?;
            file.sync_all()
        });
        if let Err(source) = written {
            // A partial file on a full disk would only take more room.
            let _ = std::fs::remove_file(&tmp);
            return Err(error(source));
        }
        std::fs::rename(&tmp, path).map_err(error)
    }

    /// Where to start reading given this boot's id: after the cursor in the
    /// same boot; from the oldest record after a reboot (nothing of this
    /// boot was processed yet).
    pub fn start_for(cursor: Option<&Cursor>, boot_id: &str, default: StartAt) -> StartAt {
        match cursor {
            Some(c) if c.boot_id == boot_id => StartAt::After(c.seq),
            Some(_) => StartAt::Oldest,
            None => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_reports_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kmsg.cursor");
        assert_eq!(Cursor::load(&path).expect("missing is fine"), None);
        let cursor = Cursor {
            boot_id: "b1".into(),
            seq: 42,
        };
        cursor.save(&path).expect("saves");
        assert_eq!(Cursor::load(&path).expect("loads"), Some(cursor.clone()));
        assert_eq!(
            Cursor::start_for(Some(&cursor), "b1", StartAt::End),
            StartAt::After(42)
        );
        assert_eq!(
            Cursor::start_for(Some(&cursor), "b2", StartAt::End),
            StartAt::Oldest
        );
        assert_eq!(Cursor::start_for(None, "b2", StartAt::End), StartAt::End);
        std::fs::write(&path, b"{\"boot_id\": \"b1\", \"se").expect("write");
        let err = Cursor::load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }
}
