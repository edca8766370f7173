//! Which gateways a connection tries, in which order: tether-ipconfig's `GET /ip_list`
//! answer parsed (`{"gateways":[{"id","addr","score"}…],"generated_at_ms"}`, best first),
//! or the `--target` list started at the connection's own target; minus the gateway that
//! just sent GOAWAY while another one is listed. Sans-IO.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;
use thiserror::Error;

/// The largest `/ip_list` answer read (a top_n of 100 entries is about 10 KB).
pub(crate) const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
struct Answer {
    gateways: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    addr: String,
}

/// Why an `/ip_list` answer gives no gateway to dial.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum IpListError {
    #[error("not the /ip_list JSON: {0}")]
    Json(String),
    #[error("no gateway listed")]
    Empty,
    #[error("no listed address resolves (first: {0:?})")]
    Addr(String),
}

/// The listed gateways' addresses, best first. An `addr` that is not an IP literal is
/// resolved here (blocking: ipconfig answers with what gateways advertise, normally IPs);
/// entries that do not resolve are skipped.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<SocketAddr>, IpListError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| IpListError::Json(e.to_string()))?;
    let first = match answer.gateways.first() {
        Some(entry) => entry.addr.clone(),
        None => return Err(IpListError::Empty),
    };
    let addrs: Vec<SocketAddr> = answer
        .gateways
        .iter()
        .filter_map(|entry| resolve(&entry.addr))
        .collect();
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
        assert_eq!(parse(body), Ok(vec![addr(3), addr(1)]));
        let named = br#"{"gateways":[{"id":"a","addr":"localhost:7"}]}"#;
        assert_eq!(parse(named).unwrap()[0].port(), 7);
    }

    #[test]
    fn bad_answers_are_errors() {
        assert!(matches!(parse(b"<html>"), Err(IpListError::Json(_))));
        assert!(matches!(
            parse(br#"{"error":"no gateway"}"#),
            Err(IpListError::Json(_))
        ));
        assert_eq!(parse(br#"{"gateways":[]}"#), Err(IpListError::Empty));
        assert_eq!(
            parse(
                br#"{"gateways":[{"id":"x","addr":"nowhere.invalid:1"},{"id":"y","addr":"bad"}]}"#
            ),
            Err(IpListError::Addr("nowhere.invalid:1".into()))
        );
        // One good entry is enough.
        assert_eq!(
            parse(br#"{"gateways":[{"id":"y","addr":"bad"},{"id":"z","addr":"127.0.0.1:2"}]}"#),
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
