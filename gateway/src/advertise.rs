//! What this gateway tells ipconfig about itself, for clients: its id, the `addr` of every
//! report (what clients older than transports dial), and the `host:port` a client dials for
//! each transport it offers (the report's `transports`, listed by `/ip_list`).
//!
//! - `addr`: `advertise`, else the first listener (of any transport).
//! - `transports.tcp`: with a plain TCP listener, `advertise`, else the first TCP listener.
//!   (`advertise` alone does not add it: it is also `addr`, which every gateway reports.)
//! - `transports.tls`, `.ws`, `.wss`: `advertise_tls`, `advertise_ws`, `advertise_wss` when
//!   set — also without a listener of that kind, for a proxy in front (say one terminating
//!   TLS for `wss` before the gateway's `listen_ws`) — else the first listener of that kind,
//!   else not offered.
//!
//! A derived address is the listener's own, with `127.0.0.1` for one bound to every address
//! (`0.0.0.0` or `[::]` is nothing a client can dial): set the advertise keys on a real host.

use std::net::SocketAddr;

use serde::Serialize;

use crate::config::Config;
use crate::transport::Transport;

/// The `host:port` a client dials for each transport this gateway offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Transports {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wss: Option<String>,
}

/// What a gateway reports about where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advertised {
    pub id: String,
    pub addr: String,
    pub transports: Transports,
}

/// The address a client dials for listener `local`.
fn dialable(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    }
}

/// What `config` advertises for the bound `listeners` (in config order, real ports), with
/// `host` naming this machine (for a derived id).
pub(crate) fn advertised(
    config: &Config,
    listeners: &[(SocketAddr, Transport)],
    host: &str,
) -> Advertised {
    let first = |kind: Option<Transport>| {
        listeners
            .iter()
            .find(|(_, t)| kind.is_none_or(|k| *t == k))
            .map(|&(a, _)| a)
    };
    let explicit = |key: &str| (!key.is_empty()).then(|| key.to_string());
    let addr = explicit(&config.advertise).unwrap_or_else(|| {
        let listener = first(None).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8900)));
        if listener.ip().is_unspecified() {
            tracing::warn!(
                "listening on every address and no `advertise` set: reporting 127.0.0.1:{}",
                listener.port()
            );
        }
        dialable(listener)
    });
    let derived =
        |key: &str, kind: Transport| explicit(key).or_else(|| first(Some(kind)).map(dialable));
    let transports = Transports {
        tcp: first(Some(Transport::Tcp))
            .map(|tcp| explicit(&config.advertise).unwrap_or_else(|| dialable(tcp))),
        tls: derived(&config.advertise_tls, Transport::Tls),
        ws: derived(&config.advertise_ws, Transport::Ws),
        wss: derived(&config.advertise_wss, Transport::Wss),
    };
    Advertised {
        id: gateway_id(config, first(None), host),
        addr,
        transports,
    }
}

/// This gateway's id: `id`, or `<host>-<first listener's port>`.
pub(crate) fn gateway_id(config: &Config, first: Option<SocketAddr>, host: &str) -> String {
    if !config.id.is_empty() {
        return config.id.clone();
    }
    let port = first.map_or(8900, |a| a.port());
    format!("{host}-{port}")
}

/// This machine's name, for derived ids.
pub(crate) fn host_name() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "gateway".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn config(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        f(&mut c);
        c
    }

    #[test]
    fn every_transport_is_derived_from_its_first_listener() {
        let listeners = [
            (at("0.0.0.0:8900"), Transport::Tcp),
            (at("10.0.0.7:8901"), Transport::Tcp),
            (at("10.0.0.7:8910"), Transport::Tls),
            (at("[::]:8920"), Transport::Ws),
            (at("10.0.0.7:8921"), Transport::Ws),
        ];
        let a = advertised(&Config::default(), &listeners, "host");
        assert_eq!(a.id, "host-8900");
        assert_eq!(a.addr, "127.0.0.1:8900");
        assert_eq!(
            a.transports,
            Transports {
                tcp: Some("127.0.0.1:8900".into()),
                tls: Some("10.0.0.7:8910".into()),
                ws: Some("127.0.0.1:8920".into()),
                wss: None,
            }
        );
        assert_eq!(
            serde_json::to_value(&a.transports).unwrap(),
            serde_json::json!({"tcp": "127.0.0.1:8900", "tls": "10.0.0.7:8910", "ws": "127.0.0.1:8920"})
        );
    }

    #[test]
    fn advertise_keys_win_and_name_a_transport_behind_a_proxy() {
        let c = config(|c| {
            c.id = "gw-1".into();
            c.advertise = "gw-1.example:8900".into();
            c.advertise_wss = "gw-1.example:443".into();
        });
        let listeners = [
            (at("10.0.0.7:8900"), Transport::Tcp),
            (at("10.0.0.7:8920"), Transport::Ws),
        ];
        let a = advertised(&c, &listeners, "host");
        assert_eq!(
            (a.id.as_str(), a.addr.as_str()),
            ("gw-1", "gw-1.example:8900")
        );
        assert_eq!(
            a.transports,
            Transports {
                tcp: Some("gw-1.example:8900".into()),
                tls: None,
                ws: Some("10.0.0.7:8920".into()),
                wss: Some("gw-1.example:443".into()),
            }
        );
    }

    #[test]
    fn a_gateway_without_tcp_lists_no_tcp_but_keeps_its_addr() {
        let c = config(|c| c.advertise = "gw.example:8920".into());
        let a = advertised(&c, &[(at("127.0.0.1:8920"), Transport::Ws)], "h");
        assert_eq!(a.addr, "gw.example:8920");
        assert_eq!(a.id, "h-8920");
        assert_eq!(
            a.transports,
            Transports {
                ws: Some("127.0.0.1:8920".into()),
                ..Transports::default()
            }
        );
    }
}
