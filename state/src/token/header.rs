//! A token's JOSE header (RFC 7515 §4): which algorithm signed it and which key (`kid`).
//!
//! - `alg` must name one of [`Alg`] exactly (`none`, `HS512`, `hs256` are refused).
//! - `kid`, when present, is a string naming the key.
//! - `crit` present (any value, even `null` or `[]`) is refused: it lists extensions the
//!   recipient must understand, and the daemon understands none (RFC 7515 §4.1.11).
//! - Any other member (`typ`, `cty`, …) is ignored, and keys a token carries about itself
//!   (`jwk`, `jku`, `x5u`, `x5c`) are never used: keys come from the configuration only.
//! - A member given twice makes the header invalid.

use serde::{Deserialize, Deserializer};

use super::alg::Alg;
use super::TokenError;

/// What the daemon reads from a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Present,
}

/// Whether a member was there at all, whatever its value (`null` included).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Present, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

impl Header {
    /// Parses the decoded header JSON.
    pub(crate) fn parse(json: &[u8]) -> Result<Header, TokenError> {
        let raw: Raw = serde_json::from_slice(json).map_err(|_| TokenError::BadHeader)?;
        if raw.crit.0 {
            return Err(TokenError::Critical);
        }
        let alg = Alg::from_name(&raw.alg).ok_or(TokenError::BadHeader)?;
        Ok(Header { alg, kid: raw.kid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_and_kid_are_read() {
        assert_eq!(
            Header::parse(br#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#),
            Ok(Header {
                alg: Alg::Es256,
                kid: Some("k1".into())
            })
        );
        assert_eq!(
            Header::parse(br#"{"typ":"JWT","alg":"HS256"}"#),
            Ok(Header {
                alg: Alg::Hs256,
                kid: None
            })
        );
    }

    #[test]
    fn crit_is_refused_whatever_it_holds() {
        for header in [
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"alg":"ES256","crit":["b64"],"b64":false}"#,
        ] {
            assert_eq!(
                Header::parse(header.as_bytes()),
                Err(TokenError::Critical),
                "{header}"
            );
        }
    }

    #[test]
    fn unknown_algorithms_and_shapes_are_refused() {
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"PS256"}"#,
            r#"{"alg":7}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"HS256","kid":5}"#,
            r#"{"alg":"HS256","alg":"HS256"}"#,
            r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
            r#"["alg","HS256"]"#,
            "",
        ] {
            assert_eq!(
                Header::parse(header.as_bytes()),
                Err(TokenError::BadHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn embedded_keys_are_ignored_not_used() {
        let header = br#"{"alg":"RS256","kid":"k","jwk":{"kty":"oct","k":"AA"},"jku":"http://x"}"#;
        assert_eq!(
            Header::parse(header),
            Ok(Header {
                alg: Alg::Rs256,
                kid: Some("k".into())
            })
        );
    }
}
