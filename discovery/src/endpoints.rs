//! `--etcd URL[,URL…]`: the etcd cluster's client URLs.

use tether_daemon::config::validate::etcd_endpoint;

use crate::error::DiscoveryError;

/// The client URLs of one etcd cluster (`http://host:port`; a bare `host:port` means http).
/// Any one member is enough to work: the client balances over all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

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
        Ok(Endpoints(out))
    }

    /// The URLs, normalized to `http://host:port`.
    pub fn urls(&self) -> &[String] {
        &self.0
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
