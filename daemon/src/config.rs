//! Layered configuration: defaults < TOML file < `TETHER_*` env vars < command-line flags.
//!
//! A daemon declares its config as one serde struct (`#[serde(default, deny_unknown_fields)]`)
//! and its flags as a clap struct whose fields are all `Option`s with the same names, each
//! with an `env = "TETHER_…"`. clap already lets a flag win over its env var; [`load`] lays
//! the flags that were given over the file's table and deserializes the result once.
//!
//! When that fails, [`load`] finds *every* bad key instead of stopping at the first: it tries
//! each key on its own, then asks the config's [`Validate`] for cross-field problems. The
//! `check` subcommand prints the whole list. Secrets are a type,
//! [`Secret`](crate::secret::Secret), whose values never appear in messages or renderings.
//!
//! - [`validate`]: the rules for values several daemons take (ids, dial addresses, etcd
//!   endpoints, socket paths) and [`Checks`](validate::Checks), which collects errors.
//! - [`help`]: `--help`'s `[default: …]`, generated from the config's `Default`.

pub mod help;
pub mod validate;

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Semantic checks that serde cannot express (ranges, combinations).
pub trait Validate {
    /// Every problem found, each as `(key, message)`.
    fn validate(&self) -> Vec<ConfigError>;
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found while loading a config.
#[derive(Debug, Error)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} error(s) in the configuration ({}):",
            self.errors.len(),
            self.source_name
        )?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Loads a config from an optional TOML file with `overrides` (the clap flags and env vars
/// that were given) laid over it.
pub fn load<C, O>(file: Option<&Path>, overrides: &O) -> Result<C, ConfigErrors>
where
    C: DeserializeOwned + Validate,
    O: Serialize,
{
    let source_name = match file {
        Some(path) => format!("{} + flags + env", path.display()),
        None => "defaults + flags + env".to_string(),
    };
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        source_name: source_name.clone(),
        errors,
    };

    let mut table = match file {
        Some(path) => read_table(path).map_err(|e| fail(vec![e]))?,
        None => toml::Table::new(),
    };
    // The flags' secrets are laid over the file's as values, not as "<redacted>".
    let flags = crate::secret::with_values(|| toml::Table::try_from(overrides))
        .map_err(|e| fail(vec![ConfigError::new("", format!("flags: {e}"))]))?;
    table.extend(flags);

    let config: C = match C::deserialize(toml::Value::Table(table.clone())) {
        Ok(config) => config,
        Err(whole) => {
            let mut errors = per_key_errors::<C>(&table);
            if errors.is_empty() {
                errors.push(ConfigError::new("", whole.to_string()));
            } else {
                // Range and cross-key checks on what did parse, so one run lists everything.
                let mut good = table.clone();
                for e in &errors {
                    good.remove(&e.key);
                }
                if let Ok(partial) = C::deserialize(toml::Value::Table(good)) {
                    errors.extend(partial.validate());
                }
            }
            return Err(fail(errors));
        }
    };
    let errors = config.validate();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(fail(errors))
    }
}

/// Renders a config as TOML, for `check` and startup logs (secrets show as `<redacted>`).
pub fn render<C: Serialize>(config: &C) -> String {
    let Ok(table) = toml::Table::try_from(config) else {
        return String::from("# (config could not be rendered)\n");
    };
    toml::to_string(&table).unwrap_or_default()
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::new("", format!("{} is not valid TOML: {e}", path.display())))
}

/// Tries each key alone (every other key at its default) to name every key that is wrong.
fn per_key_errors<C: DeserializeOwned>(table: &toml::Table) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (key, value) in table {
        let mut single = toml::Table::new();
        single.insert(key.clone(), value.clone());
        if let Err(e) = C::deserialize(toml::Value::Table(single)) {
            errors.push(ConfigError::new(key.clone(), e.message()));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        port: u16,
        workers: usize,
        secret: Secret,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                port: 80,
                workers: 1,
                secret: Secret::default(),
            }
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Vec<ConfigError> {
            let mut errors = Vec::new();
            if self.workers == 0 {
                errors.push(ConfigError::new("workers", "must be at least 1"));
            }
            errors
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        port: Option<u16>,
        workers: Option<usize>,
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    mod tempfile_path {
        use std::path::PathBuf;
        pub(super) struct TempPath(pub PathBuf);
        impl TempPath {
            pub(super) fn with(text: &str) -> TempPath {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!(
                    "tether-config-test-{}-{n}.toml",
                    std::process::id()
                ));
                std::fs::write(&path, text).unwrap();
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let file = write("port = 81\nworkers = 4\n");
        let flags = Flags {
            port: Some(82),
            workers: None,
        };
        let c: Sample = load(Some(&file.0), &flags).unwrap();
        assert_eq!((c.port, c.workers), (82, 4));
        let c: Sample = load(None, &Flags::default()).unwrap();
        assert_eq!(c, Sample::default());
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let file = write("port = \"eighty\"\ncolour = \"blue\"\nworkers = -1\n");
        let err = load::<Sample, _>(Some(&file.0), &Flags::default()).unwrap_err();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["colour", "port", "workers"], "{err}");
    }

    #[test]
    fn type_errors_and_range_errors_are_listed_together() {
        let file = write("port = \"eighty\"\nworkers = 0\n");
        let err = load::<Sample, _>(Some(&file.0), &Flags::default()).unwrap_err();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["port", "workers"], "{err}");
    }

    #[test]
    fn semantic_errors_come_from_validate() {
        let flags = Flags {
            port: None,
            workers: Some(0),
        };
        let err = load::<Sample, _>(None, &flags).unwrap_err();
        assert_eq!(
            err.errors,
            vec![ConfigError::new("workers", "must be at least 1")]
        );
    }

    #[test]
    fn secrets_are_never_echoed() {
        let file = write("secret = 12345\n");
        let err = load::<Sample, _>(Some(&file.0), &Flags::default()).unwrap_err();
        assert!(!err.to_string().contains("12345"), "{err}");
        let rendered = render(&Sample {
            secret: Secret::from("hunter2".to_string()),
            ..Sample::default()
        });
        assert!(!rendered.contains("hunter2"));
        assert!(rendered.contains("<redacted>"));
    }

    #[test]
    fn unreadable_or_invalid_files_are_errors() {
        let missing = Path::new("/nonexistent/tether.toml");
        assert!(load::<Sample, _>(Some(missing), &Flags::default()).is_err());
        let file = write("port = [");
        assert!(load::<Sample, _>(Some(&file.0), &Flags::default()).is_err());
    }
}
