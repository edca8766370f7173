//! Who may call the push API: bearer tokens listed in `api_tokens_file`, each with its
//! scopes, and the decision for one request ([`Access::authorize`]). Sans-IO but for
//! [`Access::load`], which reads the file.
//!
//! The file holds one token per line, `NAME SHA256 SCOPES`, separated by spaces or tabs:
//!
//! ```text
//! # name     SHA-256 of the token, hex                                         scopes
//! backend    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  push,sessions:read
//! ops        60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752  sessions:read,kick
//! ```
//!
//! `NAME` (1–64 printable ASCII characters) names the token in logs; `SHA256` is the SHA-256
//! of the token itself (`printf %s "$TOKEN" | sha256sum`), so the file holds nothing a
//! reader could present; `SCOPES` is a comma-separated list of [`Scope`]s. Blank lines and
//! lines starting with `#` are ignored. A request presents the token itself in
//! `Authorization: Bearer <token>`; its hash is compared with every line's in constant time.
//!
//! Without a file the API is [`Access::Open`]: every request is allowed. `check` allows that
//! only while the push API listens on a loopback address.

use std::path::Path;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;
use thiserror::Error;

/// Longest token name.
const MAX_NAME: usize = 64;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST /v1/push`, `POST /v1/rooms/{room}/publish`, `POST /v1/broadcast`.
    Push,
    /// `GET /v1/sessions/{device_id}`, `GET /v1/rooms/{room}`.
    SessionsRead,
    /// `DELETE /v1/sessions/{device_id}`.
    Kick,
    /// `POST` and `DELETE /v1/rooms/{room}/members`.
    Rooms,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Push, Scope::SessionsRead, Scope::Kick, Scope::Rooms];

    /// The name in the file and in 403 answers.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Push => "push",
            Scope::SessionsRead => "sessions:read",
            Scope::Kick => "kick",
            Scope::Rooms => "rooms",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// One line of the file.
#[derive(Clone)]
struct Token {
    name: String,
    hash: [u8; 32],
    scopes: u8,
}

/// The tokens of one `api_tokens_file`.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<Token>,
}

/// Names only: the hashes are not secrets, but nothing needs them in a log.
impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| &t.name))
            .finish()
    }
}

/// A line of the file that is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {why}")]
pub struct LineError {
    pub line: usize,
    pub why: String,
}

/// Why the file could not be used.
#[derive(Debug, Error)]
pub enum TokensFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Lines {
        path: String,
        errors: Vec<LineError>,
    },
}

impl ApiTokens {
    /// Parses the file's text; every bad line is reported.
    pub fn parse(text: &str) -> Result<ApiTokens, Vec<LineError>> {
        let mut tokens: Vec<Token> = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(token) => {
                    let why = if tokens.iter().any(|t| t.name == token.name) {
                        Some(format!("the name {:?} is used twice", token.name))
                    } else if tokens.iter().any(|t| t.hash == token.hash) {
                        Some("the same token hash is listed twice".to_string())
                    } else {
                        None
                    };
                    match why {
                        Some(why) => errors.push(LineError { line: line_no, why }),
                        None => tokens.push(token),
                    }
                }
                Err(why) => errors.push(LineError { line: line_no, why }),
            }
        }
        if errors.is_empty() {
            Ok(ApiTokens { tokens })
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose hash is `presented`'s, compared with every line in constant time.
    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let hash = sha256(presented);
        let mut found = None;
        for token in &self.tokens {
            // No early exit: every line is compared, whichever matches.
            if bool::from(token.hash.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<Token, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, hash, scopes] = fields[..] else {
        return Err(format!(
            "expected NAME SHA256 SCOPES (3 fields), found {}",
            fields.len()
        ));
    };
    if name.len() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the name must be printable ASCII".into());
    }
    let hash = parse_hash(hash).ok_or_else(|| {
        "the second field must be the token's SHA-256 in hex (64 digits), not the token".to_string()
    })?;
    if hash == sha256(b"") {
        return Err("that is the SHA-256 of an empty token".into());
    }
    let mut bits = 0;
    for scope in scopes.split(',') {
        let scope = Scope::ALL
            .into_iter()
            .find(|s| s.name() == scope)
            .ok_or_else(|| {
                format!("unknown scope {scope:?} (scopes: push, sessions:read, kick)")
            })?;
        bits |= scope.bit();
    }
    Ok(Token {
        name: name.to_string(),
        hash,
        scopes: bits,
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of `token` in lowercase hex: what a line of the file holds.
pub fn hash_hex(token: &[u8]) -> String {
    sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// What requests are checked against.
#[derive(Debug, Clone)]
pub enum Access {
    /// No `api_tokens_file`: every request is allowed (loopback only, `check` says).
    Open,
    /// Only the bearer of one of these tokens, within its scopes.
    Tokens(ApiTokens),
}

/// Who a request was allowed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted<'a> {
    Open,
    Token(&'a str),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// A bearer token that no line of the file has (401).
    Unknown,
    /// A known token without the scope the endpoint needs (403).
    Scope { token: String, needed: Scope },
}

impl Denied {
    /// The HTTP status: 401 for who you are, 403 for what you may do.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Missing | Denied::Unknown => 401,
            Denied::Scope { .. } => 403,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750).
    pub fn challenge(&self) -> String {
        match self {
            Denied::Missing => r#"Bearer realm="tether-state""#.to_string(),
            Denied::Unknown => r#"Bearer realm="tether-state", error="invalid_token""#.to_string(),
            Denied::Scope { needed, .. } => format!(
                r#"Bearer realm="tether-state", error="insufficient_scope", scope="{}""#,
                needed.name()
            ),
        }
    }

    /// The JSON `error` text; it never holds the token.
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => "a bearer token is required (Authorization: Bearer <token>)".into(),
            Denied::Unknown => "unknown bearer token".into(),
            Denied::Scope { needed, .. } => {
                format!("this token lacks the scope {:?}", needed.name())
            }
        }
    }
}

impl Access {
    /// Reads `api_tokens_file`; `None` is [`Access::Open`].
    pub fn load(path: Option<&Path>) -> Result<Access, TokensFileError> {
        let Some(path) = path else {
            return Ok(Access::Open);
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
            path: shown.clone(),
            source,
        })?;
        ApiTokens::parse(&text)
            .map(Access::Tokens)
            .map_err(|errors| TokensFileError::Lines {
                path: shown,
                errors,
            })
    }

    /// Tokens loaded (0 when open).
    pub fn tokens(&self) -> usize {
        match self {
            Access::Open => 0,
            Access::Tokens(tokens) => tokens.len(),
        }
    }

    /// May the request whose `Authorization` header is `authorization` do `needed`?
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        needed: Scope,
    ) -> Result<Granted<'_>, Denied> {
        let tokens = match self {
            Access::Open => return Ok(Granted::Open),
            Access::Tokens(tokens) => tokens,
        };
        let presented = authorization.and_then(bearer).ok_or(Denied::Missing)?;
        let token = tokens.find(presented).ok_or(Denied::Unknown)?;
        if token.scopes & needed.bit() == 0 {
            return Err(Denied::Scope {
                token: token.name.clone(),
                needed,
            });
        }
        Ok(Granted::Token(&token.name))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive); `None` for another scheme or an
/// empty token.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let split = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(split);
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The access rules in force, shared by the HTTP thread (reading) and SIGHUP (replacing).
#[derive(Debug, Clone)]
pub struct AccessCell(Arc<RwLock<Arc<Access>>>);

impl AccessCell {
    pub fn new(access: Access) -> AccessCell {
        AccessCell(Arc::new(RwLock::new(Arc::new(access))))
    }

    pub fn get(&self) -> Arc<Access> {
        // A writer cannot panic while holding the lock (it only swaps an Arc).
        self.0
            .read()
            .map_or_else(|e| e.into_inner().clone(), |a| a.clone())
    }

    pub fn set(&self, access: Access) {
        let access = Arc::new(access);
        match self.0.write() {
            Ok(mut slot) => *slot = access,
            Err(e) => *e.into_inner() = access,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[(&str, &str, &str)]) -> ApiTokens {
        let text: String = lines
            .iter()
            .map(|(name, token, scopes)| {
                format!("{name} {} {scopes}\n", hash_hex(token.as_bytes()))
            })
            .collect();
        ApiTokens::parse(&text).unwrap()
    }

    fn header(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn a_token_is_allowed_what_its_scopes_say_and_nothing_else() {
        let access = Access::Tokens(file(&[
            ("backend", "tok-backend-1", "push,sessions:read"),
            ("ops", "tok-ops-1", "kick"),
        ]));
        let backend = header("tok-backend-1");
        assert_eq!(
            access.authorize(Some(&backend), Scope::Push),
            Ok(Granted::Token("backend"))
        );
        assert_eq!(
            access.authorize(Some(&backend), Scope::SessionsRead),
            Ok(Granted::Token("backend"))
        );
        let denied = access.authorize(Some(&backend), Scope::Kick).unwrap_err();
        assert_eq!(
            denied,
            Denied::Scope {
                token: "backend".into(),
                needed: Scope::Kick
            }
        );
        assert_eq!(denied.status(), 403);
        assert!(denied.challenge().contains(r#"scope="kick""#));
        assert!(!denied.message().contains("tok-backend-1"));
        let ops = header("tok-ops-1");
        assert_eq!(
            access.authorize(Some(&ops), Scope::Kick),
            Ok(Granted::Token("ops"))
        );
        assert!(matches!(
            access.authorize(Some(&ops), Scope::Push),
            Err(Denied::Scope { .. })
        ));
    }

    #[test]
    fn no_token_a_wrong_token_or_another_scheme_is_401() {
        let access = Access::Tokens(file(&[("backend", "right", "push")]));
        for value in [
            None,
            Some(b"".as_slice()),
            Some(b"Bearer".as_slice()),
            Some(b"Bearer   ".as_slice()),
            Some(b"Basic cmlnaHQ=".as_slice()),
            Some(b"right".as_slice()),
        ] {
            let denied = access.authorize(value, Scope::Push).unwrap_err();
            assert_eq!(denied, Denied::Missing, "{value:?}");
            assert_eq!(denied.status(), 401);
            assert_eq!(denied.challenge(), r#"Bearer realm="tether-state""#);
        }
        for value in [
            "Bearer wrong",
            "Bearer righ",
            "Bearer right2",
            "Bearer RIGHT",
        ] {
            let denied = access
                .authorize(Some(value.as_bytes()), Scope::Push)
                .unwrap_err();
            assert_eq!(denied, Denied::Unknown, "{value}");
            assert!(denied.challenge().contains("invalid_token"));
        }
        // The scheme is case-insensitive and spaces around the token do not count.
        for value in ["bearer right", "BEARER  right ", " Bearer right"] {
            assert_eq!(
                access.authorize(Some(value.as_bytes()), Scope::Push),
                Ok(Granted::Token("backend")),
                "{value}"
            );
        }
    }

    #[test]
    fn without_a_file_everything_is_allowed_and_an_empty_file_allows_nothing() {
        assert_eq!(Access::Open.authorize(None, Scope::Kick), Ok(Granted::Open));
        let empty = Access::Tokens(ApiTokens::parse("# no tokens yet\n\n").unwrap());
        assert_eq!(empty.tokens(), 0);
        assert_eq!(
            empty.authorize(Some(b"Bearer anything"), Scope::Push),
            Err(Denied::Unknown)
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let good = hash_hex(b"a-token");
        let text = format!(
            "# comment\n\
             ok {good} push\n\
             short {good}\n\
             plain a-token push\n\
             wrong {} pushh\n\
             ok {} kick\n\
             again {good} kick\n\
             empty {} push\n\
             {} {} push\n",
            hash_hex(b"b"),
            hash_hex(b"c"),
            hash_hex(b""),
            "n".repeat(65),
            hash_hex(b"d"),
        );
        let errors = ApiTokens::parse(&text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9], "{errors:?}");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("3 fields"), "{text:?}");
        assert!(text[1].contains("not the token"), "{text:?}");
        assert!(text[2].contains("unknown scope \"pushh\""), "{text:?}");
        assert!(text[3].contains("used twice"), "{text:?}");
        assert!(text[4].contains("listed twice"), "{text:?}");
        assert!(text[5].contains("empty token"), "{text:?}");
        assert!(text[6].contains("longer than 64"), "{text:?}");
        // The token itself never shows up in an error.
        assert!(!text.iter().any(|t| t.contains("a-token push")));
    }

    #[test]
    fn hashes_are_read_in_either_case_and_match_sha256sum() {
        // `printf %s test | sha256sum`
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(hash_hex(b"test"), hex);
        let tokens = ApiTokens::parse(&format!("upper {} push", hex.to_uppercase())).unwrap();
        assert_eq!(
            Access::Tokens(tokens).authorize(Some(b"Bearer test"), Scope::Push),
            Ok(Granted::Token("upper"))
        );
    }

    #[test]
    fn the_cell_swaps_the_rules_for_the_next_request() {
        let cell = AccessCell::new(Access::Tokens(file(&[("one", "t1", "push")])));
        assert!(cell
            .get()
            .authorize(Some(b"Bearer t1"), Scope::Push)
            .is_ok());
        cell.set(Access::Tokens(file(&[("two", "t2", "push")])));
        assert_eq!(
            cell.get().authorize(Some(b"Bearer t1"), Scope::Push),
            Err(Denied::Unknown)
        );
        assert!(cell
            .get()
            .authorize(Some(b"Bearer t2"), Scope::Push)
            .is_ok());
    }
}
