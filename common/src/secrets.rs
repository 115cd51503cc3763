//! Secrets and private state: what a bearer token may be, who may read a
//! token or key file, and state files (the database, the spool) created
//! readable by their owner only.
//!
//! Misconfiguration fails closed: a token outside the rules is refused
//! where it is read (with its line), never silently cut or ignored.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use tracing::warn;

/// Fewest characters in a token: 16 random base64 characters are 96 bits.
pub const TOKEN_MIN_CHARS: usize = 16;
/// Most characters in a token.
pub const TOKEN_MAX_CHARS: usize = 256;
/// The characters a token may hold: RFC 6750's `b64token` (base64,
/// base64url and hex all fit), never whitespace or `#`.
pub const TOKEN_CHARSET: &str = "ASCII letters, digits and - . _ ~ + / =";

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token may hold only {TOKEN_CHARSET}; character {at} is {found:?}")]
    Character { at: usize, found: char },
    #[error("a token must be at least {TOKEN_MIN_CHARS} characters (this one has {0})")]
    Short(usize),
    #[error("a token may be at most {TOKEN_MAX_CHARS} characters (this one has {0})")]
    Long(usize),
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

/// Checks a token against the documented rules.
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if let Some((at, found)) = token.chars().enumerate().find(|(_, c)| !token_char(*c)) {
        return Err(TokenError::Character { at: at + 1, found });
    }
    // All ASCII now: bytes are characters.
    match token.len() {
        n if n < TOKEN_MIN_CHARS => Err(TokenError::Short(n)),
        n if n > TOKEN_MAX_CHARS => Err(TokenError::Long(n)),
        _ => Ok(()),
    }
}

/// Why a client's token file (one token: the agent's `--token-file`)
/// cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(transparent)]
    Permissions(#[from] PermissionError),
    #[error("cannot read the token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the token file {path} holds no token")]
    Empty { path: String },
    #[error("{path}:{line}: a second token; the file holds one (lines starting with # are comments)")]
    Several { path: String, line: usize },
    #[error("{path}:{line}: {problem}")]
    Token {
        path: String,
        line: usize,
        problem: TokenError,
    },
}

/// Reads a file holding one token (blank lines and lines starting with
/// `#` aside), its permissions checked first as by [`check_private`].
pub fn read_token_file(path: &Path, strict: bool) -> Result<String, TokenFileError> {
    check_private("the token file", path, strict)?;
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: shown(),
        source,
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
    let Some((line, token)) = lines.next() else {
        return Err(TokenFileError::Empty { path: shown() });
    };
    if let Some((line, _)) = lines.next() {
        return Err(TokenFileError::Several { path: shown(), line });
    }
    check_token(token).map_err(|problem| TokenFileError::Token {
        path: shown(),
        line,
        problem,
    })?;
    Ok(token.to_owned())
}

/// A secret file others may read, or one that cannot be inspected.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    #[error("cannot read the permissions of {what} {path}: {source}")]
    Stat {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{what} {path} has mode {mode:04o}: other users may read it; chmod 600 it \
         (refused because of --strict-permissions)"
    )]
    TooOpen {
        what: &'static str,
        path: String,
        mode: u32,
    },
}

/// Whether a file with these owner, group and mode bits is private to
/// this process: nothing beyond 0600, or (how Kubernetes mounts a Secret
/// for a non-root container with `fsGroup`) owned by another user, in
/// this process's own group, readable by that group only.
fn is_private(mode: u32, owner: u32, group: u32, uid: u32, gid: u32) -> bool {
    let mode = mode & 0o7777;
    mode & !0o600 == 0 || (owner != uid && group == gid && mode & !0o640 == 0)
}

/// Checks that a token or key file is not open to other users: a warning
/// when it is, an error with `strict` (`--strict-permissions`). Follows
/// symbolic links (Kubernetes mounts Secrets through them).
pub fn check_private(what: &'static str, path: &Path, strict: bool) -> Result<(), PermissionError> {
    let meta = std::fs::metadata(path).map_err(|source| PermissionError::Stat {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    if is_private(meta.mode(), meta.uid(), meta.gid(), uid, gid) {
        return Ok(());
    }
    let mode = meta.mode() & 0o7777;
    if strict {
        return Err(PermissionError::TooOpen {
            what,
            path: path.display().to_string(),
            mode,
        });
    }
    warn!(
        path = %path.display(),
        mode = %format!("{mode:04o}"),
        "{what} may be read by other users: chmod 600 it (--strict-permissions refuses to start)"
    );
    Ok(())
}

/// Creates `path` (and missing parents) as a directory only its owner may
/// enter (0700). An existing directory is left as it is.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Makes a directory this process owns private (0700) if it is open to
/// others: a directory an older version created with the default mode.
pub fn tighten_dir(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates a new file for writing, readable by its owner only (0600).
/// Fails if anything is at `path` already (a file, a FIFO that would block
/// the writer, a symbolic link pointing elsewhere).
pub fn create_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Creates an empty file readable by its owner only (0600) if `path` does
/// not exist, so that what opens it next keeps that mode (SQLite gives its
/// `-wal` and `-shm` files the database file's mode). An existing file
/// open to others is only warned about: its owner chose that.
pub fn create_private_file(what: &'static str, path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.mode() & 0o7777;
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = %format!("{mode:04o}"), "{what} may be read by other users: chmod 600 it");
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_documented_rules() {
        assert_eq!(check_token("abcdefghijklmnop"), Ok(()));
        assert_eq!(check_token("Ab0-._~+/=Ab0-._~+/="), Ok(()));
        assert_eq!(check_token("short"), Err(TokenError::Short(5)));
        assert_eq!(check_token(&"a".repeat(257)), Err(TokenError::Long(257)));
        assert_eq!(
            check_token("abcdefgh#ijklmnopq"),
            Err(TokenError::Character { at: 9, found: '#' })
        );
        assert_eq!(
            check_token("abcdefghijklmnop\u{1b}"),
            Err(TokenError::Character {
                at: 17,
                found: '\u{1b}'
            })
        );
        assert!(check_token("abcdefghijklmnopé").is_err());
    }

    #[test]
    fn a_client_token_file_holds_exactly_one_valid_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            read_token_file(&file, true).map_err(|e| e.to_string())
        };
        assert_eq!(read("abcdefghijklmnopqr\n").unwrap(), "abcdefghijklmnopqr");
        assert_eq!(
            read("# ingest\n\n  abcdefghijklmnopqr  \n").unwrap(),
            "abcdefghijklmnopqr"
        );
        assert!(read("").unwrap_err().contains("holds no token"));
        assert!(read("# nothing\n").unwrap_err().contains("holds no token"));
        assert!(
            read("abcdefghijklmnopqr\nsecondsecondsecond\n")
                .unwrap_err()
                .ends_with(":2: a second token; the file holds one (lines starting with # are comments)")
        );
        assert!(
            read("abcdefghijklmnopqr # comment\n")
                .unwrap_err()
                .contains(":1: a token may hold only")
        );
    }

    #[test]
    fn private_means_0600_or_a_kubernetes_fsgroup_mount() {
        let (me, my_group, root) = (1000, 1000, 0);
        assert!(is_private(0o100600, me, my_group, me, my_group));
        assert!(is_private(0o100400, me, 0, me, my_group));
        assert!(!is_private(0o100644, me, my_group, me, my_group));
        assert!(!is_private(0o100604, me, my_group, me, my_group));
        assert!(!is_private(0o100700, me, my_group, me, my_group));
        // My own file, readable by my group (other users in it): open.
        assert!(!is_private(0o100640, me, my_group, me, my_group));
        // root:fsGroup 0440 (a Secret mounted for a non-root container).
        assert!(is_private(0o100440, root, my_group, me, my_group));
        assert!(!is_private(0o100460, root, my_group, me, my_group));
        assert!(!is_private(0o100444, root, my_group, me, my_group));
        assert!(!is_private(0o100440, root, 5, me, my_group));
    }

    #[test]
    fn open_files_warn_or_fail_and_state_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_private("the token file", &file, false).is_ok());
        let error = check_private("the token file", &file, true).unwrap_err();
        assert!(error.to_string().contains("has mode 0644"), "{error}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private("the token file", &file, true).is_ok());
        assert!(matches!(
            check_private("the token file", &dir.path().join("none"), true),
            Err(PermissionError::Stat { .. })
        ));

        let state = dir.path().join("a/b");
        create_private_dir(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        let db = state.join("events.db");
        create_private_file("the database", &db).unwrap();
        assert_eq!(mode(&db), 0o600);
        // An existing file keeps its mode and contents.
        std::fs::write(&db, "data").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
        create_private_file("the database", &db).unwrap();
        assert_eq!(mode(&db), 0o640);
        assert_eq!(std::fs::read(&db).unwrap(), b"data");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        let written = dir.path().join("spooled");
        create_new_private(&written).unwrap();
        assert_eq!(mode(&written), 0o600);
        assert!(
            create_new_private(&written).is_err(),
            "never reuses what is there"
        );
    }
}
