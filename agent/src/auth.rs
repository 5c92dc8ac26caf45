//! API authentication: bearer tokens with a role each, checked before any handler runs.
//!
//! Two roles. `read` may ask (status, members, events, watches, reads, metrics); `write` may
//! also change things (writes, locks, sessions, elections, the keyring, a snapshot of the whole
//! store, leave, join, force-leave). With no token configured the API is open, as before, and the
//! agent says so loudly when it is bound beyond loopback. `/v1/health` is always open, for load
//! balancers.
//!
//! Tokens are compared in constant time against every configured token (no early exit), so the
//! time an answer takes says nothing about how much of a guess was right. Tokens are read from
//! files or systemd credentials, never from the configuration file itself, and never logged.

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::fmt;
use std::sync::Arc;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Ask.
    Read,
    /// Ask and change.
    Write,
}

impl Role {
    /// `read` or `write`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// A token's secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its role.
    pub role: Role,
    /// Its secret.
    pub secret: Secret,
    /// Where it was read from (for messages; the path, never the secret).
    pub source: String,
}

/// Shortest token accepted: 16 bytes leaves no room for guessing.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Equal in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The configured tokens; a SIGHUP replaces them.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: std::sync::RwLock<Vec<Token>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that matches none configured.
    Invalid,
    /// A valid token whose role may not do this.
    Forbidden {
        /// What it is.
        has: Role,
        /// What the request needs.
        needs: Role,
    },
}

impl Refusal {
    fn response(self) -> Response {
        let (status, code, message) = match self {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "token_missing",
                "this API needs a token: send `Authorization: Bearer TOKEN` (the CLI: --token-file, CHORUS_TOKEN_FILE or CHORUS_TOKEN)".to_string(),
            ),
            Refusal::Invalid => (
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "the token is not one this agent accepts".to_string(),
            ),
            Refusal::Forbidden { has, needs } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a {} token may not do this: it needs the {} role",
                    has.name(),
                    needs.name()
                ),
            ),
        };
        let mut r = (
            status,
            axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"chorus\""),
            );
        }
        r
    }
}

impl Tokens {
    /// These tokens.
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens {
            tokens: std::sync::RwLock::new(tokens),
        }
    }

    /// Replaces the tokens (a reload).
    pub fn set(&self, tokens: Vec<Token>) {
        *self.tokens.write().expect("tokens lock poisoned") = tokens;
    }

    /// True when no token is configured (the API is open).
    pub fn is_open(&self) -> bool {
        self.tokens.read().expect("tokens lock poisoned").is_empty()
    }

    /// The role of `presented`, checked against every token.
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut found = None;
        for t in self.tokens.read().expect("tokens lock poisoned").iter() {
            if ct_eq(&t.secret.0, presented) {
                found = found.max(Some(t.role));
            }
        }
        found
    }

    /// Whether a request of `method` to `path` with this `Authorization` header may go on.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        if self.is_open() || path == "/v1/health" {
            return Ok(());
        }
        let Some(h) = authorization else {
            return Err(Refusal::Missing);
        };
        let Some(presented) = h
            .strip_prefix(b"Bearer ")
            .or_else(|| h.strip_prefix(b"bearer "))
        else {
            return Err(Refusal::Missing);
        };
        let has = self
            .role_of(presented.trim_ascii())
            .ok_or(Refusal::Invalid)?;
        let needs = needed(method, path);
        if has < needs {
            return Err(Refusal::Forbidden { has, needs });
        }
        Ok(())
    }
}

/// The role a request needs: anything that is not a plain GET needs `write`, and so do the GETs
/// that reveal the whole store or the keyring.
pub fn needed(method: &Method, path: &str) -> Role {
    let reads = *method == Method::GET || *method == Method::HEAD;
    if !reads || path == "/v1/snapshot" || path.starts_with("/v1/keyring") {
        Role::Write
    } else {
        Role::Read
    }
}

/// The middleware: refuses a request its token does not allow, before any handler runs.
pub async fn guard(
    axum::extract::State(tokens): axum::extract::State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match tokens.check(req.method(), req.uri().path(), auth) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.response(),
    }
}

/// Reads a token from `path`: the first line, trimmed. Errors say which file and why, never
/// what it holds.
pub fn read_token(path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token in {} is {} bytes; at least {MIN_TOKEN_BYTES} are needed (e.g. `openssl rand -hex 32`)",
            path.display(),
            token.len()
        ));
    }
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "the token in {} has spaces or control characters; use printable ASCII",
            path.display()
        ));
    }
    Ok(Secret(token.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            Token {
                role: Role::Read,
                secret: Secret(b"reader-0123456789".to_vec()),
                source: "r".into(),
            },
            Token {
                role: Role::Write,
                secret: Secret(b"writer-0123456789".to_vec()),
                source: "w".into(),
            },
        ])
    }

    #[test]
    fn roles_and_refusals() {
        let t = tokens();
        let get = Method::GET;
        let put = Method::PUT;
        assert_eq!(t.check(&get, "/v1/health", None), Ok(()));
        assert_eq!(t.check(&get, "/v1/status", None), Err(Refusal::Missing));
        assert_eq!(
            t.check(&get, "/v1/status", Some(b"Basic abc")),
            Err(Refusal::Missing)
        );
        assert_eq!(
            t.check(&get, "/v1/status", Some(b"Bearer reader-012345678")),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            t.check(&get, "/v1/kv/default/a", Some(b"Bearer reader-0123456789")),
            Ok(())
        );
        let forbidden = Err(Refusal::Forbidden {
            has: Role::Read,
            needs: Role::Write,
        });
        assert_eq!(
            t.check(&put, "/v1/kv/default/a", Some(b"Bearer reader-0123456789")),
            forbidden
        );
        assert_eq!(
            t.check(&get, "/v1/snapshot", Some(b"Bearer reader-0123456789")),
            forbidden
        );
        assert_eq!(
            t.check(&get, "/v1/keyring", Some(b"Bearer reader-0123456789")),
            forbidden
        );
        for (m, p) in [
            (&put, "/v1/kv/default/a"),
            (&get, "/v1/snapshot"),
            (&get, "/v1/status"),
        ] {
            assert_eq!(t.check(m, p, Some(b"Bearer writer-0123456789")), Ok(()));
        }
        assert!(Tokens::default().check(&put, "/v1/kv/x/y", None).is_ok());
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn a_token_file_must_hold_a_long_printable_token() {
        let dir = std::env::temp_dir().join(format!("chorus-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "short\n").unwrap();
        let e = read_token(&f).unwrap_err();
        assert!(e.contains("at least 16") && !e.contains("short"), "{e}");
        std::fs::write(&f, "0123456789abcdef0123\nignored\n").unwrap();
        assert_eq!(read_token(&f).unwrap().0, b"0123456789abcdef0123");
        assert!(
            read_token(&dir.join("missing"))
                .unwrap_err()
                .contains("missing")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
