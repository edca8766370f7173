//! `--etcd URL[,URL…]`: the etcd cluster's client URLs, and the user to connect as.

use tether_daemon::config::validate::etcd_endpoint;
use tether_daemon::secret::Secret;

use crate::error::DiscoveryError;

/// The client URLs of one etcd cluster (`http://host:port`; a bare `host:port` means http),
/// and the etcd user to authenticate as, if any. Any one member is enough to work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    urls: Vec<String>,
    user: Option<(String, Secret)>,
}

impl Endpoints {
    /// Parses each URL; every one must be an
    /// [`etcd_endpoint`]: `http://host:port`
    /// or `host:port`.
    pub fn parse<S: AsRef<str>>(urls: &[S]) -> Result<Endpoints, DiscoveryError> {
        if urls.is_empty() {
            return Err(DiscoveryError::NoEndpoint);
        }
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            out.push(etcd_endpoint(url.as_ref())?);
        }
        Ok(Endpoints {
            urls: out,
            user: None,
        })
    }

    /// The same cluster, connected to as etcd user `name` with `password`.
    pub fn with_user(self, name: String, password: Secret) -> Endpoints {
        Endpoints {
            user: Some((name, password)),
            ..self
        }
    }

    /// The URLs, normalized to `http://host:port`.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The etcd user and password to authenticate with; None = no authentication.
    pub fn user(&self) -> Option<(&str, &Secret)> {
        self.user
            .as_ref()
            .map(|(name, password)| (name.as_str(), password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized_and_bad_ones_refused() {
        let e = Endpoints::parse(&["127.0.0.1:2379", "http://etcd-2:2379/"]).unwrap();
        assert_eq!(e.urls(), ["http://127.0.0.1:2379", "http://etcd-2:2379"]);
        for bad in [
            "https://a:1",
            "http://a",
            "a:0",
            ":2379",
            "http://a:1/x",
            "ftp://a:1",
        ] {
            assert!(Endpoints::parse(&[bad]).is_err(), "{bad}");
        }
        assert!(matches!(
            Endpoints::parse::<&str>(&[]),
            Err(DiscoveryError::NoEndpoint)
        ));
    }
}
