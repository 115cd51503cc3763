//! Bearer tokens and their roles.
//!
//! A token file holds one `ROLE TOKEN` pair per line; a line starting
//! with `#` is a comment (a `#` anywhere else is an error, never the start
//! of a comment that silently cuts a token). Roles: `read` (query, get,
//! subscribe, summary, top), `ingest` (agents sending events) and `admin`
//! (both). Tokens follow [`oomlens_common::secrets::check_token`]. A token
//! file with no token is an error: authentication is on exactly when a
//! token file is given. Without one the collector accepts every caller:
//! keep it on loopback or behind mutual TLS then.

use std::path::Path;

use oomlens_common::secrets::{PermissionError, TokenError, check_private, check_token};
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Ingest,
    Admin,
}

impl Role {
    fn allows(self, wanted: Role) -> bool {
        self == Role::Admin || self == wanted
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Permissions(#[from] PermissionError),
    #[error("{path}:{line}: expected `ROLE TOKEN` with ROLE read, ingest or admin")]
    Syntax { path: String, line: usize },
    #[error("{path}:{line}: text after the token; a comment is a line of its own, starting with #")]
    Trailing { path: String, line: usize },
    #[error("{path}:{line}: {problem}")]
    Token {
        path: String,
        line: usize,
        problem: TokenError,
    },
    #[error("{path}:{line}: the same token as line {first}")]
    Repeated { path: String, line: usize, first: usize },
    #[error(
        "the token file {path} holds no token: every caller would be let in;          add `ROLE TOKEN` lines, or drop --token-file to run without authentication"
    )]
    Empty { path: String },
}

/// The accepted tokens; empty: authentication off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Role)>,
}

impl Tokens {
    pub fn is_enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    pub fn insert(&mut self, token: impl Into<String>, role: Role) {
        self.entries.push((token.into(), role));
    }

    /// Reads a token file's text (`path` names it in errors). Fails on the
    /// first line that breaks a rule, and when no token is left.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut tokens = Self::default();
        // Line of each token, to report a repeat.
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = || TokenFileError::Syntax {
                path: path.to_owned(),
                line: line_number,
            };
            let mut words = line.split_whitespace();
            let role = match words.next() {
                Some("read") => Role::Read,
                Some("ingest") => Role::Ingest,
                Some("admin") => Role::Admin,
                _ => return Err(syntax()),
            };
            let token = words.next().ok_or_else(syntax)?;
            if words.next().is_some() {
                return Err(TokenFileError::Trailing {
                    path: path.to_owned(),
                    line: line_number,
                });
            }
            check_token(token).map_err(|problem| TokenFileError::Token {
                path: path.to_owned(),
                line: line_number,
                problem,
            })?;
            if let Some(at) = tokens.entries.iter().position(|(known, _)| known == token) {
                return Err(TokenFileError::Repeated {
                    path: path.to_owned(),
                    line: line_number,
                    first: lines[at],
                });
            }
            tokens.insert(token, role);
            lines.push(line_number);
        }
        if !tokens.is_enabled() {
            return Err(TokenFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(tokens)
    }

    /// Loads a token file: its permissions checked first (others able to
    /// read it: a warning, an error with `strict_permissions`).
    pub fn load(path: &Path, strict_permissions: bool) -> Result<Self, TokenFileError> {
        check_private("the token file", path, strict_permissions)?;
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The role of `presented`, comparing against every token in constant
    /// time per token.
    fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.entries {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }

    /// Admits a caller presenting `authorization` (the header's value,
    /// `Bearer TOKEN`) when its token allows `wanted`; everyone when no
    /// tokens are configured. gRPC and the HTTP API share this check.
    pub fn admit(&self, authorization: Option<&[u8]>, wanted: Role) -> Result<(), Status> {
        if !self.is_enabled() {
            return Ok(());
        }
        let header =
            authorization.ok_or_else(|| Status::unauthenticated("a bearer token is required (--token)"))?;
        let presented = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer TOKEN`"))?;
        match self.role_of(presented.trim()) {
            None => Err(Status::unauthenticated(
                "the token is not known to this collector",
            )),
            Some(role) if role.allows(wanted) => Ok(()),
            Some(_) => Err(Status::permission_denied(match wanted {
                Role::Ingest => "this token may not send events (it is not an ingest or admin token)",
                _ => "this token may not read events (it is not a read or admin token)",
            })),
        }
    }

    /// A tonic interceptor admitting callers whose token allows `wanted`.
    pub fn interceptor(
        &self,
        wanted: Role,
    ) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |request: Request<()>| {
            let header = request.metadata().get("authorization").map(|v| v.as_bytes());
            tokens.admit(header, wanted)?;
            Ok(request)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_parse_roles_and_reject_mistakes() {
        let tokens = Tokens::parse(
            "# agents\ningest aaaaaaaaaaaaaaaaaaaa\n  # dashboards\nread  rrrrrrrrrrrrrrrrrrrr\n\nadmin xxxxxxxxxxxxxxxxxxxx\n",
            "t",
        )
        .unwrap();
        assert_eq!(tokens.role_of("rrrrrrrrrrrrrrrrrrrr"), Some(Role::Read));
        assert_eq!(tokens.role_of("aaaaaaaaaaaaaaaaaaaa"), Some(Role::Ingest));
        assert_eq!(tokens.role_of("nope"), None);
        let error = Tokens::parse("writer abcdefghijklmnopq", "/etc/t").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/t:1: expected `ROLE TOKEN` with ROLE read, ingest or admin"
        );
        assert!(matches!(
            Tokens::parse("read short", "t"),
            Err(TokenFileError::Token {
                line: 1,
                problem: TokenError::Short(5),
                ..
            })
        ));
    }

    /// A file with no token once turned authentication off (`tokens=false`
    /// in the log, every caller admitted).
    #[test]
    fn a_token_file_without_tokens_is_an_error() {
        for text in ["", "\n\n", "# no tokens yet\n  # indented comment\n"] {
            let error = Tokens::parse(text, "/etc/oomlens/tokens").unwrap_err();
            assert!(matches!(error, TokenFileError::Empty { .. }), "{text:?}: {error}");
            assert!(error.to_string().contains("holds no token"), "{error}");
        }
    }

    /// `#` inside a line once started a comment: `read abcdefghijklmnop#qr`
    /// became the token `abcdefghijklmnop`.
    #[test]
    fn a_hash_inside_a_line_is_an_error_not_a_comment() {
        let error = Tokens::parse("# ok\nread abcdefghijklmnop#qrstu\n", "t").unwrap_err();
        assert_eq!(
            error.to_string(),
            "t:2: a token may hold only ASCII letters, digits and - . _ ~ + / =; character 17 is '#'"
        );
        let error = Tokens::parse("read abcdefghijklmnopqr # dashboards\n", "t").unwrap_err();
        assert!(
            matches!(error, TokenFileError::Trailing { line: 1, .. }),
            "{error}"
        );
        let error = Tokens::parse("read abcdefghijklmnopqr\nadmin abcdefghijklmnopqr\n", "t").unwrap_err();
        assert_eq!(error.to_string(), "t:2: the same token as line 1");
        let error = Tokens::parse(&format!("admin {}\n", "x".repeat(300)), "t").unwrap_err();
        assert!(error.to_string().contains("at most 256"), "{error}");
    }

    #[test]
    fn loading_checks_the_file_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "read rrrrrrrrrrrrrrrrrrrr\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Tokens::load(&path, false).unwrap().is_enabled());
        let error = Tokens::load(&path, true).unwrap_err();
        assert!(error.to_string().contains("mode 0644"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Tokens::load(&path, true).unwrap().is_enabled());
    }

    #[test]
    fn the_interceptor_tells_unknown_from_forbidden() {
        let mut tokens = Tokens::default();
        tokens.insert("rrrrrrrrrrrrrrrrrrrr", Role::Read);
        let ingest = tokens.interceptor(Role::Ingest);
        let read = tokens.interceptor(Role::Read);
        let with = |token: &str| {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            request
        };
        assert_eq!(
            ingest(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            ingest(with("wrongwrongwrongwrong")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            ingest(with("rrrrrrrrrrrrrrrrrrrr")).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(read(with("rrrrrrrrrrrrrrrrrrrr")).is_ok());
        // Off without tokens.
        assert!(Tokens::default().interceptor(Role::Ingest)(Request::new(())).is_ok());
    }
}
