//! The rules for values several daemons take, each judged in one place: member ids,
//! addresses clients dial, etcd endpoints, Unix socket paths and browser origins; and
//! [`Checks`], which every daemon's [`Validate`](super::Validate) collects its errors in.
//!
//! ipconfig judges a report's `id` and `addr` with [`member_id`] and [`dial_addr`], and
//! discovery judges etcd records with them, so a gateway or node whose `check` passes never
//! registers or reports an id or address the other side refuses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use thiserror::Error;

use super::ConfigError;

/// Longest member id, in bytes (= characters: ids are ASCII).
pub(crate) const MAX_MEMBER_ID: usize = 128;
/// Longest Unix socket path: `sun_path` holds 108 bytes including the terminating NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Why a value is refused; the text is what `check` and ipconfig's 400 answers say.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {MAX_MEMBER_ID} characters")]
    TooLong,
    #[error("only printable ASCII characters, no spaces")]
    NotPrintable,
    #[error("port must be 1-65535")]
    Port,
    #[error("{0} is not an address clients can dial")]
    Unspecified(IpAddr),
    #[error("a multicast address")]
    Multicast,
    #[error("not a valid [IPv6]:port")]
    BadIpv6,
    #[error("must be host:port")]
    NotHostPort,
    #[error("must be host:port, without a scheme")]
    Scheme,
    #[error("an IPv6 address must be in brackets, e.g. [2001:db8::1]:8900")]
    BareIpv6,
    #[error("host is not a valid IP address or DNS name")]
    Host,
    #[error("TLS is not supported: use http:// on a private network")]
    Tls,
    #[error("expected http://host:port, with no path")]
    Path,
    #[error("a socket path of 1 to {MAX_SOCKET_PATH} bytes")]
    SocketPath,
    #[error("{0:?} is not `*` or scheme://host[:port] (no path)")]
    Origin(String),
}

/// An etcd endpoint that [`etcd_endpoint`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{url:?} is not an etcd endpoint (http://host:port): {why}")]
pub struct BadEndpoint {
    pub url: String,
    pub why: Invalid,
}

/// A gateway's or node's id: 1–128 printable ASCII characters, no spaces.
pub fn member_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(Invalid::Empty);
    }
    if id.len() > MAX_MEMBER_ID {
        return Err(Invalid::TooLong);
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::NotPrintable);
    }
    Ok(())
}

/// `host:port` a client can dial: IPv4, `[IPv6]` or a DNS name, port 1–65535; not an
/// unspecified (`0.0.0.0`, `[::]`) or multicast address.
pub fn dial_addr(addr: &str) -> Result<(), Invalid> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        if socket.port() == 0 {
            return Err(Invalid::Port);
        }
        if socket.ip().is_unspecified() {
            return Err(Invalid::Unspecified(socket.ip()));
        }
        if socket.ip().is_multicast() {
            return Err(Invalid::Multicast);
        }
        return Ok(());
    }
    if addr.starts_with('[') {
        return Err(Invalid::BadIpv6);
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(Invalid::NotHostPort);
    };
    if host.contains("://") {
        return Err(Invalid::Scheme);
    }
    if host.contains(':') {
        return Err(Invalid::BareIpv6);
    }
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    if !port_ok {
        return Err(Invalid::Port);
    }
    dns_name(host)
}

/// A DNS host name: labels of letters, digits and hyphens (not at either end), 1–63
/// characters each, 253 in all; a final dot is allowed; the last label is not all digits
/// (that would be a mistyped IPv4 address).
fn dns_name(host: &str) -> Result<(), Invalid> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(Invalid::Host);
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(Invalid::Host);
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) && name.parse::<Ipv4Addr>().is_err() {
        return Err(Invalid::Host);
    }
    Ok(())
}

/// An etcd client URL, `http://host:port` or a bare `host:port` (a trailing `/` is
/// allowed), with a [dialable](dial_addr) `host:port`; returned as `http://host:port`.
pub fn etcd_endpoint(url: &str) -> Result<String, BadEndpoint> {
    let bad = |why| BadEndpoint {
        url: url.to_string(),
        why,
    };
    if url.starts_with("https://") {
        return Err(bad(Invalid::Tls));
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.contains('/') {
        return Err(bad(Invalid::Path));
    }
    dial_addr(host_port).map_err(bad)?;
    Ok(format!("http://{host_port}"))
}

/// A path a Unix socket can be bound to or connected at: 1–107 bytes.
pub fn socket_path(path: &Path) -> Result<(), Invalid> {
    let len = path.as_os_str().len();
    if (1..=MAX_SOCKET_PATH).contains(&len) {
        Ok(())
    } else {
        Err(Invalid::SocketPath)
    }
}

/// An entry of a browser-origin allow-list (the gateway's `ws_origins`, ipconfig's
/// `cors_origins`): `*` for any, or `http://host[:port]` / `https://host[:port]` with no
/// path, as a browser writes its `Origin` header.
pub fn web_origin(origin: &str) -> Result<(), Invalid> {
    let ok = origin == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|host| !host.is_empty() && !host.contains(['/', ' ']))
        });
    if ok {
        Ok(())
    } else {
        Err(Invalid::Origin(origin.to_string()))
    }
}

/// The errors a [`Validate`](super::Validate) finds, in the order it looks.
#[derive(Debug, Default)]
pub struct Checks(Vec<ConfigError>);

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// `key` is wrong, as `message` says, unless `ok`.
    pub fn need(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.0.push(ConfigError::new(key, message));
        }
    }

    /// `key` is wrong, as the error says, if `result` is one.
    pub fn check<T, E: std::fmt::Display>(&mut self, key: &str, result: Result<T, E>) {
        if let Err(e) = result {
            self.0.push(ConfigError::new(key, e.to_string()));
        }
    }

    /// Every URL of an etcd list is an [`etcd_endpoint`] (an empty list: no etcd).
    pub fn etcd(&mut self, key: &str, urls: &[String]) {
        for url in urls {
            self.check(key, etcd_endpoint(url));
        }
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_a_star_or_scheme_and_host() {
        for good in [
            "*",
            "https://app.example",
            "http://127.0.0.1:8080",
            "https://[::1]:443",
        ] {
            assert_eq!(web_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "app.example",
            "https://",
            "https://app.example/",
            "ftp://x",
            "http://a b",
        ] {
            assert_eq!(
                web_origin(bad).map_err(|e| e.to_string()),
                Err(format!(
                    "{bad:?} is not `*` or scheme://host[:port] (no path)"
                ))
            );
        }
    }

    #[test]
    fn ids_are_printable_ascii_without_spaces() {
        assert_eq!(member_id("gw-1"), Ok(()));
        assert_eq!(member_id(&"x".repeat(128)), Ok(()));
        assert_eq!(member_id("!~\"\\/"), Ok(()));
        assert_eq!(member_id(""), Err(Invalid::Empty));
        assert_eq!(member_id(&"x".repeat(129)), Err(Invalid::TooLong));
        for bad in ["gw 1", "gw-é", "gw\n1"] {
            assert_eq!(member_id(bad), Err(Invalid::NotPrintable), "{bad:?}");
        }
    }

    #[test]
    fn good_addresses_pass() {
        for addr in [
            "127.0.0.1:8900",
            "10.0.0.7:1",
            "[::1]:8900",
            "[2001:db8::7]:65535",
            "gw-1.example.com:8900",
            "gw-1.example.com.:8900",
            "localhost:8900",
            "x:1",
            "1gw.example:8900",
        ] {
            assert_eq!(dial_addr(addr), Ok(()), "{addr}");
        }
        let label63 = "a".repeat(63);
        assert_eq!(dial_addr(&format!("{label63}.example:1")), Ok(()));
        assert!(dial_addr(&format!("{}a.example:1", label63)).is_err());
    }

    #[test]
    fn bad_addresses_say_why() {
        for (addr, why) in [
            ("10.0.0.1", Invalid::NotHostPort),
            ("10.0.0.1:0", Invalid::Port),
            ("10.0.0.1:65536", Invalid::Port),
            ("gw.example:+80", Invalid::Port),
            ("0.0.0.0:8900", Invalid::Unspecified([0, 0, 0, 0].into())),
            ("[::]:8900", Invalid::Unspecified([0u16; 8].into())),
            ("224.0.0.1:8900", Invalid::Multicast),
            ("::1:8900", Invalid::BareIpv6),
            ("[::g]:8900", Invalid::BadIpv6),
            ("1.2.3:8900", Invalid::Host),
            ("gw_1.example:8900", Invalid::Host),
            ("gw..example:8900", Invalid::Host),
            (":8900", Invalid::Host),
            ("http://gw:8900", Invalid::Scheme),
        ] {
            assert_eq!(dial_addr(addr), Err(why), "{addr}");
        }
        assert_eq!(
            Invalid::Unspecified([0, 0, 0, 0].into()).to_string(),
            "0.0.0.0 is not an address clients can dial"
        );
    }

    #[test]
    fn etcd_urls_are_normalized_and_bad_ones_refused() {
        assert_eq!(
            etcd_endpoint("127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(
            etcd_endpoint("http://etcd-2:2379/").as_deref(),
            Ok("http://etcd-2:2379")
        );
        for (url, why) in [
            ("https://a:1", Invalid::Tls),
            ("http://a", Invalid::NotHostPort),
            ("a:0", Invalid::Port),
            (":2379", Invalid::Host),
            ("http://a:1/x", Invalid::Path),
            ("ftp://a:1", Invalid::Path),
            (
                "http://0.0.0.0:2379",
                Invalid::Unspecified([0, 0, 0, 0].into()),
            ),
        ] {
            let err = etcd_endpoint(url).unwrap_err();
            assert_eq!(err.why, why, "{url}");
            assert!(err
                .to_string()
                .starts_with(&format!("{url:?} is not an etcd endpoint")));
        }
    }

    #[test]
    fn socket_paths_fit_sun_path() {
        assert_eq!(socket_path(Path::new("/run/tether/state.sock")), Ok(()));
        assert_eq!(socket_path(Path::new(&"s".repeat(107))), Ok(()));
        for bad in [String::new(), "s".repeat(108)] {
            assert_eq!(socket_path(Path::new(&bad)), Err(Invalid::SocketPath));
        }
    }

    #[test]
    fn checks_keep_their_order() {
        let mut checks = Checks::new();
        checks.need(false, "a", "first");
        checks.need(true, "b", "never");
        checks.check("c", member_id(""));
        checks.etcd("etcd", &["a:1".into(), "https://b:1".into(), "c:0".into()]);
        let keys: Vec<String> = checks
            .into_errors()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "a: first",
                "c: must not be empty",
                "etcd: \"https://b:1\" is not an etcd endpoint (http://host:port): TLS is not \
                 supported: use http:// on a private network",
                "etcd: \"c:0\" is not an etcd endpoint (http://host:port): port must be 1-65535",
            ]
        );
    }
}
