//! Cross-origin reads of `GET /ip_list` (CORS), sans-IO: which headers answer a browser page
//! served from another origin, under `cors_origins`.
//!
//! A page on `https://app.example` that fetches `https://ipconfig.example/ip_list` gets the
//! answer only if it carries `Access-Control-Allow-Origin` for that origin. With
//! `cors_origins` empty (the default) ipconfig adds no CORS header at all and answers a
//! preflight `OPTIONS` 405, as before CORS existed. With a list:
//!
//! - `GET`/`HEAD /ip_list` with an allowed `Origin` gets `Access-Control-Allow-Origin` (the
//!   origin itself, or `*` when the list has `*`); every answer of `/ip_list` gets
//!   `Vary: Origin`, so a cache never hands one origin's answer to another;
//! - a preflight `OPTIONS /ip_list` from an allowed origin is answered 204 with the methods
//!   a page may use (GET, HEAD) and how long the browser may remember that; from any other
//!   origin, or without one, 403 and no CORS header;
//! - the list only ever covers `/ip_list`: reports (`POST /v1/report`), `/metrics` and
//!   `/healthz` never carry a CORS header, so no page can post a report from a browser.
//!
//! Origins are matched whole and case-insensitively, by the rule the gateway's `ws_origins`
//! uses ([`tether_proto::ws::origin_allowed`]).

use tether_proto::ws::origin_allowed;

/// Methods a page may use on `/ip_list`.
pub(crate) const ALLOW_METHODS: &str = "GET, HEAD";
/// How long (s) a browser may cache a preflight's answer.
pub(crate) const MAX_AGE_S: &str = "600";

/// The origins allowed to read `/ip_list` from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cors {
    origins: Vec<String>,
}

/// How to answer a preflight `OPTIONS /ip_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Preflight {
    /// CORS is off: the method is not allowed (405), as without CORS.
    Off,
    /// 204 with the allowed methods (and [`Cors::allow_origin`]'s header).
    Allowed,
    /// 403: the origin is not on the list (or the request has none).
    Refused,
}

impl Cors {
    /// The policy of `cors_origins` (entries already checked by the config).
    pub(crate) fn new(origins: &[String]) -> Cors {
        Cors {
            origins: origins.to_vec(),
        }
    }

    /// Whether any origin is allowed: answers then vary by `Origin`.
    pub(crate) fn is_on(&self) -> bool {
        !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request whose `Origin` header is
    /// `origin`, or None when the answer must carry none.
    pub(crate) fn allow_origin(&self, origin: Option<&[u8]>) -> Option<Vec<u8>> {
        let origin = origin?;
        if !origin_allowed(&self.origins, origin) {
            return None;
        }
        if self.origins.iter().any(|o| o == "*") {
            Some(b"*".to_vec())
        } else {
            Some(origin.to_vec())
        }
    }

    /// How to answer a preflight from `origin`.
    pub(crate) fn preflight(&self, origin: Option<&[u8]>) -> Preflight {
        if !self.is_on() {
            return Preflight::Off;
        }
        match self.allow_origin(origin) {
            Some(_) => Preflight::Allowed,
            None => Preflight::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::new(&origins.iter().map(|o| o.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn off_by_default_adds_nothing() {
        let c = Cors::default();
        assert!(!c.is_on());
        assert_eq!(c.allow_origin(Some(b"https://app.example")), None);
        assert_eq!(c.preflight(Some(b"https://app.example")), Preflight::Off);
        assert_eq!(c.preflight(None), Preflight::Off);
    }

    /// (allow-list, request origin, Access-Control-Allow-Origin)
    type Case<'a> = (&'a [&'a str], Option<&'a [u8]>, Option<&'a [u8]>);

    /// Table: allow-list, request origin → Access-Control-Allow-Origin, preflight.
    #[test]
    fn listed_origins_are_echoed_and_others_refused() {
        let app = b"https://app.example".as_slice();
        let cases: &[Case] = &[
            (&["https://app.example"], Some(app), Some(app)),
            (
                &["https://app.example"],
                Some(b"HTTPS://APP.EXAMPLE"),
                Some(b"HTTPS://APP.EXAMPLE"),
            ),
            (
                &["https://app.example"],
                Some(b"https://evil.example"),
                None,
            ),
            (
                &["https://app.example"],
                Some(b"https://app.example:8443"),
                None,
            ),
            (&["https://app.example"], Some(b"http://app.example"), None),
            (&["https://app.example"], None, None),
            (&["http://a:1", "https://app.example"], Some(app), Some(app)),
            (&["*"], Some(b"https://anything.example"), Some(b"*")),
            (&["*"], None, None),
        ];
        for (list, origin, want) in cases {
            let c = cors(list);
            assert!(c.is_on());
            assert_eq!(
                c.allow_origin(*origin).as_deref(),
                *want,
                "{list:?} {origin:?}"
            );
            let preflight = match want {
                Some(_) => Preflight::Allowed,
                None => Preflight::Refused,
            };
            assert_eq!(c.preflight(*origin), preflight, "{list:?} {origin:?}");
        }
    }
}
