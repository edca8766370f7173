//! etcd authentication: the etcd user a daemon connects as. Declared here once for every
//! daemon that takes `--etcd` (gateway, ipconfig, echo node): each flattens [`EtcdAuth`]
//! into its config and [`EtcdAuthFlags`] into its flags.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `etcd_user` | `""` | the etcd user to authenticate as; empty = none |
//! | `etcd_password_file` | none | a file holding that user's password (one line) |
//!
//! `check` refuses one without the other, an unreadable or empty password file, and an
//! `etcd` endpoint off loopback with no user: etcd with authentication off lets anyone who
//! reaches it register as any gateway or node. With a user, etcd's roles decide what it may
//! read and write (doc/operations.md, Security, gives one role per member, so a member's
//! credential writes its own key only).
//!
//! The password is read when the daemon starts (and by `check`), and never printed. The
//! client authenticates on every connection and refreshes an expired token by itself.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether_daemon::config::validate::{etcd_endpoint, member_id, Checks};
use tether_daemon::secret::Secret;

use crate::endpoints::Endpoints;
use crate::error::DiscoveryError;

/// The etcd credential keys of a daemon's config (`#[serde(flatten)]` them in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcdAuth {
    /// The etcd user to authenticate as; empty = no authentication.
    pub etcd_user: String,
    /// A file holding that user's password.
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdAuth {
    /// Adds to `c` every problem with these keys, given the daemon's `etcd` URLs.
    pub fn check(&self, c: &mut Checks, etcd: &[String]) {
        let user = !self.etcd_user.is_empty();
        if user {
            c.check("etcd_user", member_id(&self.etcd_user));
        }
        c.need(
            user || self.etcd_password_file.is_none(),
            "etcd_password_file",
            "given without etcd_user",
        );
        c.need(
            !user || self.etcd_password_file.is_some(),
            "etcd_user",
            "needs etcd_password_file (the password is read from a file only)",
        );
        if let Some(path) = &self.etcd_password_file {
            c.check("etcd_password_file", read_password(path));
        }
        if !user {
            for url in etcd {
                c.need(
                    is_loopback(url) != Some(false),
                    "etcd",
                    format!(
                        "{url} is not a loopback address: set etcd_user and etcd_password_file \
                         (etcd authentication), or anyone who reaches etcd can register as any \
                         member (see doc/operations.md, Security)"
                    ),
                );
            }
        }
    }

    /// The cluster at `urls`, connected to as this user (the password read now).
    pub fn endpoints<S: AsRef<str>>(&self, urls: &[S]) -> Result<Endpoints, DiscoveryError> {
        let endpoints = Endpoints::parse(urls)?;
        match &self.etcd_password_file {
            Some(path) if !self.etcd_user.is_empty() => {
                let password = read_password(path).map_err(|why| DiscoveryError::Password {
                    path: path.display().to_string(),
                    why,
                })?;
                Ok(endpoints.with_user(self.etcd_user.clone(), password))
            }
            _ => Ok(endpoints),
        }
    }
}

/// The password in `path`: its text without the final line break; not empty.
fn read_password(path: &Path) -> Result<Secret, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::from(text))
}

/// Whether an etcd URL's host is a loopback address (`localhost` counts); None when the URL
/// is not an endpoint at all (its own check reports that).
fn is_loopback(url: &str) -> Option<bool> {
    let normalized = etcd_endpoint(url).ok()?;
    let host_port = normalized.strip_prefix("http://")?;
    Some(match host_port.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => host_port
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    })
}

/// The environment variables of one daemon's etcd credential flags.
pub trait EtcdAuthEnv {
    /// `TETHER_<DAEMON>_ETCD_USER`.
    const ETCD_USER: &'static str;
    /// `TETHER_<DAEMON>_ETCD_PASSWORD_FILE`.
    const ETCD_PASSWORD_FILE: &'static str;
}

/// The flags of [`EtcdAuth`]'s keys (`#[command(flatten)]` and `#[serde(flatten)]` them into
/// a daemon's flags), reading the environment variables `E` names.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct EtcdAuthFlags<E: EtcdAuthEnv + Send + Sync + 'static> {
    /// etcd user to authenticate as; empty = none.
    #[arg(long, env = E::ETCD_USER)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long, env = E::ETCD_PASSWORD_FILE)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_password_file: Option<PathBuf>,
    #[arg(skip)]
    #[serde(skip)]
    env: PhantomData<E>,
}

impl<E: EtcdAuthEnv + Send + Sync + 'static> Default for EtcdAuthFlags<E> {
    fn default() -> Self {
        EtcdAuthFlags {
            etcd_user: None,
            etcd_password_file: None,
            env: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(auth: &EtcdAuth, etcd: &[&str]) -> Vec<String> {
        let mut c = Checks::new();
        let etcd: Vec<String> = etcd.iter().map(|s| s.to_string()).collect();
        auth.check(&mut c, &etcd);
        c.into_errors().iter().map(ToString::to_string).collect()
    }

    fn scratch(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("discovery-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn off_loopback_etcd_needs_a_user() {
        let none = EtcdAuth::default();
        assert!(errors(&none, &[]).is_empty());
        assert!(errors(
            &none,
            &["127.0.0.1:2379", "http://localhost:2379", "[::1]:2379"]
        )
        .is_empty());
        let got = errors(&none, &["http://10.0.0.5:2379", "etcd-1:2379"]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0]
            .starts_with("etcd: http://10.0.0.5:2379 is not a loopback address: set etcd_user"));
        let with_user = EtcdAuth {
            etcd_user: "gw-1".into(),
            etcd_password_file: Some(scratch("ok", "pa55word\n")),
        };
        assert!(errors(&with_user, &["http://10.0.0.5:2379"]).is_empty());
    }

    #[test]
    fn user_and_password_file_go_together_and_the_password_is_not_shown() {
        let file = scratch("pw", "hunter2-password\r\n");
        let cases = [
            (
                EtcdAuth {
                    etcd_user: "gw-1".into(),
                    etcd_password_file: None,
                },
                "etcd_user: needs etcd_password_file",
            ),
            (
                EtcdAuth {
                    etcd_user: String::new(),
                    etcd_password_file: Some(file.clone()),
                },
                "etcd_password_file: given without etcd_user",
            ),
            (
                EtcdAuth {
                    etcd_user: "gw 1".into(),
                    etcd_password_file: Some(file.clone()),
                },
                "etcd_user: only printable ASCII",
            ),
            (
                EtcdAuth {
                    etcd_user: "gw-1".into(),
                    etcd_password_file: Some(scratch("empty", "\n")),
                },
                "etcd_password_file: ",
            ),
            (
                EtcdAuth {
                    etcd_user: "gw-1".into(),
                    etcd_password_file: Some("/nonexistent/pw".into()),
                },
                "etcd_password_file: cannot read /nonexistent/pw",
            ),
        ];
        for (auth, want) in cases {
            let got = errors(&auth, &["127.0.0.1:2379"]);
            assert_eq!(got.len(), 1, "{auth:?}: {got:?}");
            assert!(got[0].starts_with(want), "{got:?}");
        }
        let auth = EtcdAuth {
            etcd_user: "gw-1".into(),
            etcd_password_file: Some(file),
        };
        let endpoints = auth.endpoints(&["127.0.0.1:2379"]).unwrap();
        let (user, password) = endpoints.user().unwrap();
        assert_eq!(
            (user, password.expose()),
            ("gw-1", &b"hunter2-password"[..])
        );
        assert!(!format!("{endpoints:?}").contains("hunter2"));
    }
}
