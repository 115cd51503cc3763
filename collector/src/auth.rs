//! Bearer tokens and their roles.
//!
//! A token file holds one `ROLE TOKEN` pair per line (`#` starts a
//! comment). Roles: `read` (query, get, subscribe, summary, top), `ingest`
//! (agents sending events) and `admin` (both). Without a token file the
//! collector accepts every caller: keep it on loopback or behind mutual
//! TLS then.

use std::path::Path;

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
    #[error("{path}:{line}: expected `ROLE TOKEN` with ROLE read, ingest or admin")]
    Syntax { path: String, line: usize },
    #[error("{path}:{line}: a token must be at least 16 characters")]
    Short { path: String, line: usize },
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

    pub fn parse(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut tokens = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let syntax = || TokenFileError::Syntax {
                path: path.to_owned(),
                line: index + 1,
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
                return Err(syntax());
            }
            if token.len() < 16 {
                return Err(TokenFileError::Short {
                    path: path.to_owned(),
                    line: index + 1,
                });
            }
            tokens.insert(token, role);
        }
        Ok(tokens)
    }

    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
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

    /// A tonic interceptor admitting callers whose token allows `wanted`.
    pub fn interceptor(
        &self,
        wanted: Role,
    ) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |request: Request<()>| {
            if !tokens.is_enabled() {
                return Ok(request);
            }
            let header = request
                .metadata()
                .get("authorization")
                .ok_or_else(|| Status::unauthenticated("a bearer token is required (--token)"))?;
            let presented = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer TOKEN`"))?;
            match tokens.role_of(presented.trim()) {
                None => Err(Status::unauthenticated(
                    "the token is not known to this collector",
                )),
                Some(role) if role.allows(wanted) => Ok(request),
                Some(_) => Err(Status::permission_denied(match wanted {
                    Role::Ingest => "this token may not send events (it is not an ingest or admin token)",
                    _ => "this token may not read events (it is not a read or admin token)",
                })),
            }
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
            "# agents\ningest aaaaaaaaaaaaaaaaaaaa\nread  rrrrrrrrrrrrrrrrrrrr # dashboards\n\nadmin xxxxxxxxxxxxxxxxxxxx\n",
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
            Err(TokenFileError::Short { line: 1, .. })
        ));
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
