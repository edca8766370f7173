//! A secret (a JWT key) as a type, so that nothing prints it by accident.
//!
//! [`Secret`] deserializes from a string like any other key, and clap parses it from a flag
//! or env var. `Debug` and `Display` write `<redacted>`; serializing writes `"<redacted>"`, or
//! `""` for an empty secret (`<redacted>` would claim one is set): that is what `check` and
//! start-up logs show. The one serialization that needs the value is the layering in
//! [`crate::config::load`], which runs inside [`with_values`]. Code that needs the key asks
//! for it by name: [`Secret::expose`].

use std::cell::Cell;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a set secret shows instead of its value.
pub(crate) const REDACTED: &str = "<redacted>";

/// A key that never prints. Compare and clone it freely; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The key itself.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What clap builds a flag's value with.
impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text.into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if SERIALIZE_VALUES.get() {
            serializer.serialize_str(&String::from_utf8_lossy(&self.0))
        } else if self.0.is_empty() {
            serializer.serialize_str("")
        } else {
            serializer.serialize_str(REDACTED)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// A string; anything else is refused without echoing what it was.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer)
            .map(Secret::from)
            .map_err(|_| D::Error::custom("invalid value (not shown: secret)"))
    }
}

thread_local! {
    static SERIALIZE_VALUES: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every [`Secret`] serializing its value (on this thread only).
pub(crate) fn with_values<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIALIZE_VALUES.set(self.0);
        }
    }
    let _restore = Restore(SERIALIZE_VALUES.replace(true));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Holder {
        key: Secret,
    }

    #[test]
    fn it_never_prints_but_its_value_can_be_read() {
        let secret = Secret::from("hunter2".to_string());
        for text in [format!("{secret:?}"), secret.to_string()] {
            assert_eq!(text, REDACTED);
        }
        assert_eq!(secret.expose(), b"hunter2");
        let holder = Holder { key: secret };
        assert_eq!(toml::to_string(&holder).unwrap(), "key = \"<redacted>\"\n");
        let empty = Holder {
            key: Secret::default(),
        };
        assert_eq!(toml::to_string(&empty).unwrap(), "key = \"\"\n");
    }

    #[test]
    fn values_are_serialized_only_when_asked_for() {
        let holder = Holder {
            key: Secret::new(b"hunter2".to_vec()),
        };
        let text = with_values(|| toml::to_string(&holder)).unwrap();
        assert_eq!(text, "key = \"hunter2\"\n");
        let back: Holder = toml::from_str(&text).unwrap();
        assert_eq!(back.key.expose(), b"hunter2");
        assert!(!toml::to_string(&holder).unwrap().contains("hunter2"));
    }

    #[test]
    fn a_wrong_value_is_not_echoed() {
        // As `config::load` reads it: the file parsed to a table first, then deserialized.
        let table: toml::Table = "key = 12345\n".parse().unwrap();
        let err = Holder::deserialize(toml::Value::Table(table))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("12345"), "{err}");
    }
}
