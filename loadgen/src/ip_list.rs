//! Which gateways a connection tries, in which order: tether-ipconfig's `GET /ip_list`
//! answer parsed (`{"gateways":[{"id","addr","transports","score"}…],"generated_at_ms"}`,
//! best first), or the `--target` list started at the connection's own target; minus the
//! gateway that just sent GOAWAY while another one is listed. Sans-IO.
//!
//! From `/ip_list` a connection dials the address of its own transport: `transports.ws`
//! for `--ws`, and so on. A gateway without that transport is skipped; `addr` stands in for
//! `transports.tcp`, and for every transport when the answer has no `transports` at all (an
//! ipconfig older than them).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;
use thiserror::Error;

use crate::link::Transport;

/// The largest `/ip_list` answer read (a top_n of 100 entries is about 10 KB).
pub(crate) const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
struct Answer {
    gateways: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    addr: String,
    transports: Option<HashMap<String, String>>,
}

impl Entry {
    /// The address to dial over `transport`, if the gateway offers it.
    fn dial(&self, transport: Transport) -> Option<&str> {
        match &self.transports {
            None => Some(&self.addr),
            Some(offered) => offered
                .get(transport.name())
                .map(String::as_str)
                .or((transport == Transport::Tcp).then_some(self.addr.as_str())),
        }
    }
}

/// Why an `/ip_list` answer gives no gateway to dial.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum IpListError {
    #[error("not the /ip_list JSON: {0}")]
    Json(String),
    #[error("no gateway listed")]
    Empty,
    #[error("no listed gateway offers {0}")]
    NoTransport(&'static str),
    #[error("no listed address resolves (first: {0:?})")]
    Addr(String),
}

/// The listed gateways' addresses for `transport`, best first. An address that is not an IP
/// literal is resolved here (blocking: ipconfig answers with what gateways advertise,
/// normally IPs); entries that do not resolve are skipped.
pub(crate) fn parse(body: &[u8], transport: Transport) -> Result<Vec<SocketAddr>, IpListError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| IpListError::Json(e.to_string()))?;
    if answer.gateways.is_empty() {
        return Err(IpListError::Empty);
    }
    let offered: Vec<&str> = answer
        .gateways
        .iter()
        .filter_map(|entry| entry.dial(transport))
        .collect();
    let Some(first) = offered.first().map(|a| a.to_string()) else {
        return Err(IpListError::NoTransport(transport.name()));
    };
    let addrs: Vec<SocketAddr> = offered.iter().filter_map(|a| resolve(a)).collect();
    if addrs.is_empty() {
        return Err(IpListError::Addr(first));
    }
    Ok(addrs)
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    match addr.parse() {
        Ok(addr) => Some(addr),
        Err(_) => addr.to_socket_addrs().ok()?.next(),
    }
}

/// `targets` starting at `first` (the connection's own target) and wrapping around, so
/// connections spread over the targets and each falls back to the next.
pub(crate) fn from_targets(targets: &[SocketAddr], first: Option<SocketAddr>) -> Vec<SocketAddr> {
    let at = first
        .and_then(|f| targets.iter().position(|&t| t == f))
        .unwrap_or(0);
    let mut order = Vec::with_capacity(targets.len());
    order.extend_from_slice(targets.get(at..).unwrap_or_default());
    order.extend_from_slice(targets.get(..at).unwrap_or_default());
    order
}

/// The gateways to try, in order: `listed` without `avoid` (the gateway that sent GOAWAY).
/// When `avoid` is the only one listed, it is kept if `allow_avoided` (after a backoff: it
/// may be a restarted gateway on the same address), else the answer is empty and the caller
/// backs off before asking again.
pub(crate) fn candidates(
    listed: &[SocketAddr],
    avoid: Option<SocketAddr>,
    allow_avoided: bool,
) -> Vec<SocketAddr> {
    let others: Vec<SocketAddr> = listed
        .iter()
        .copied()
        .filter(|&a| Some(a) != avoid)
        .collect();
    if others.is_empty() && allow_avoided {
        listed.to_vec()
    } else {
        others
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn parses_ipconfigs_answer_best_first() {
        let body = br#"{"gateways":[{"id":"gw-3","addr":"127.0.0.1:3","score":{"dynamic":1.16,"static":98800.0}},
            {"id":"gw-1","addr":"127.0.0.1:1","score":{"dynamic":1.15,"static":98800.0}}],
            "generated_at_ms":1763712000123}"#;
        assert_eq!(parse(body, Transport::Tcp), Ok(vec![addr(3), addr(1)]));
        let named = br#"{"gateways":[{"id":"a","addr":"localhost:7"}]}"#;
        assert_eq!(parse(named, Transport::Tcp).unwrap()[0].port(), 7);
        // No `transports` at all (an older ipconfig): `addr`, whatever the transport.
        assert_eq!(parse(body, Transport::Ws), Ok(vec![addr(3), addr(1)]));
    }

    #[test]
    fn each_transport_dials_its_own_address_and_skips_gateways_without_it() {
        let body = br#"{"gateways":[
            {"id":"old","addr":"127.0.0.1:1","transports":{}},
            {"id":"web","addr":"127.0.0.1:2","transports":{"tcp":"127.0.0.1:2","ws":"127.0.0.1:22","wss":"127.0.0.1:23"}},
            {"id":"tls","addr":"127.0.0.1:3","transports":{"tls":"127.0.0.1:33","quic":"x"}}]}"#;
        assert_eq!(
            parse(body, Transport::Tcp),
            Ok(vec![addr(1), addr(2), addr(3)])
        );
        assert_eq!(parse(body, Transport::Ws), Ok(vec![addr(22)]));
        assert_eq!(parse(body, Transport::Wss), Ok(vec![addr(23)]));
        assert_eq!(parse(body, Transport::Tls), Ok(vec![addr(33)]));
        let tcp_only =
            br#"{"gateways":[{"id":"a","addr":"127.0.0.1:1","transports":{"tcp":"127.0.0.1:1"}}]}"#;
        assert_eq!(
            parse(tcp_only, Transport::Ws),
            Err(IpListError::NoTransport("ws"))
        );
    }

    #[test]
    fn bad_answers_are_errors() {
        let tcp = |body: &[u8]| parse(body, Transport::Tcp);
        assert!(matches!(tcp(b"<html>"), Err(IpListError::Json(_))));
        assert!(matches!(
            tcp(br#"{"error":"no gateway"}"#),
            Err(IpListError::Json(_))
        ));
        assert_eq!(tcp(br#"{"gateways":[]}"#), Err(IpListError::Empty));
        assert_eq!(
            tcp(br#"{"gateways":[{"id":"x","addr":"nowhere.invalid:1"},{"id":"y","addr":"bad"}]}"#),
            Err(IpListError::Addr("nowhere.invalid:1".into()))
        );
        // One good entry is enough.
        assert_eq!(
            tcp(br#"{"gateways":[{"id":"y","addr":"bad"},{"id":"z","addr":"127.0.0.1:2"}]}"#),
            Ok(vec![addr(2)])
        );
    }

    #[test]
    fn targets_start_at_the_connections_own() {
        let targets = [addr(1), addr(2), addr(3)];
        assert_eq!(
            from_targets(&targets, Some(addr(2))),
            vec![addr(2), addr(3), addr(1)]
        );
        assert_eq!(from_targets(&targets, None), targets.to_vec());
        assert_eq!(from_targets(&targets, Some(addr(9))), targets.to_vec());
    }

    #[test]
    fn the_gateway_that_said_goaway_is_skipped_while_another_is_listed() {
        let listed = [addr(1), addr(2)];
        assert_eq!(candidates(&listed, Some(addr(1)), false), vec![addr(2)]);
        assert_eq!(candidates(&listed, None, false), listed.to_vec());
        assert!(candidates(&[addr(1)], Some(addr(1)), false).is_empty());
        assert_eq!(candidates(&[addr(1)], Some(addr(1)), true), vec![addr(1)]);
        // Even when allowed, another gateway is preferred.
        assert_eq!(candidates(&listed, Some(addr(2)), true), vec![addr(1)]);
    }
}
