//! The registration record and where it lives in etcd.
//!
//! | key | value (JSON) | written by |
//! |---|---|---|
//! | `/tether/gateways/{id}` | ipconfig's report: `{"id","addr","connections","max_connections","bytes_in_per_s","bytes_out_per_s","bandwidth_bytes_per_s","cpu","draining"}`, refreshed every report interval | each gateway |
//! | `/tether/nodes/{id}` | `{"id","addr"}` | each echo node |
//!
//! Every key is put under its writer's lease, so it disappears when the writer stops (the
//! lease is revoked) or dies (the lease expires, at most [`LEASE_TTL`](crate::LEASE_TTL)
//! later). Readers need only `addr`; other fields are carried as they are.

use serde::Deserialize;
use tether_daemon::config::validate::{dial_addr, member_id};

use crate::error::DiscoveryError;

/// What kind of member a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `/tether/gateways/{id}`: a gateway clients may dial.
    Gateway,
    /// `/tether/nodes/{id}`: an echo node gateways may forward to.
    Node,
}

impl Role {
    /// The prefix under which members of this role register, ending in `/`.
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Gateway => "/tether/gateways/",
            Role::Node => "/tether/nodes/",
        }
    }

    /// The key of member `id`.
    pub fn key(self, id: &str) -> String {
        format!("{}{id}", self.prefix())
    }
}

/// One registered member: its id (the key's last part), the address peers reach it on, and
/// its whole record (the JSON value, for readers that want more than `addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub addr: String,
    pub value: Vec<u8>,
}

#[derive(Deserialize)]
struct Addr {
    addr: String,
}

impl Member {
    /// A member with a record of just `{"id","addr"}`.
    pub fn new(id: &str, addr: &str) -> Member {
        let value = serde_json::json!({ "id": id, "addr": addr }).to_string();
        Member {
            id: id.to_string(),
            addr: addr.to_string(),
            value: value.into_bytes(),
        }
    }

    /// The member a key under `prefix` and its value describe; its id and `addr` must be
    /// what ipconfig accepts in a report ([`member_id`], [`dial_addr`]).
    pub(crate) fn from_kv(
        prefix: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Member, DiscoveryError> {
        let id = id_of(prefix, key)?;
        let parsed: Addr = serde_json::from_slice(value).map_err(|e| DiscoveryError::Record {
            id: id.clone(),
            why: e.to_string(),
        })?;
        let invalid = |field, why| DiscoveryError::Invalid {
            id: id.clone(),
            field,
            why,
        };
        member_id(&id).map_err(|why| invalid("id", why))?;
        dial_addr(&parsed.addr).map_err(|why| invalid("addr", why))?;
        Ok(Member {
            id,
            addr: parsed.addr,
            value: value.to_vec(),
        })
    }
}

/// The member id of `key` under `prefix`.
pub(crate) fn id_of(prefix: &str, key: &[u8]) -> Result<String, DiscoveryError> {
    let key = String::from_utf8_lossy(key);
    match key.strip_prefix(prefix) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(DiscoveryError::Key(key.into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_records_round_trip() {
        assert_eq!(Role::Node.key("n1"), "/tether/nodes/n1");
        assert_eq!(Role::Gateway.prefix(), "/tether/gateways/");
        let m = Member::new("n1", "10.0.0.2:8890");
        let back = Member::from_kv(Role::Node.prefix(), b"/tether/nodes/n1", &m.value).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let p = Role::Node.prefix();
        assert!(Member::from_kv(p, b"/tether/nodes/", b"{\"addr\":\"a:1\"}").is_err());
        assert!(Member::from_kv(p, b"/other/n1", b"{\"addr\":\"a:1\"}").is_err());
        assert!(Member::from_kv(p, b"/tether/nodes/n1", b"not json").is_err());
        assert!(Member::from_kv(p, b"/tether/nodes/n1", b"{\"addr\":\"\"}").is_err());
        assert!(Member::from_kv(p, b"/tether/nodes/n1", b"{\"id\":\"n1\"}").is_err());
        assert!(Member::from_kv(p, b"/tether/nodes/n1", b"{\"addr\":\"0.0.0.0:1\"}").is_err());
        assert!(Member::from_kv(p, b"/tether/nodes/n 1", b"{\"addr\":\"a:1\"}").is_err());
        let extra = br#"{"addr":"a:1","connections":3}"#;
        let m = Member::from_kv(p, b"/tether/nodes/n1", extra).unwrap();
        assert_eq!((m.id.as_str(), m.addr.as_str()), ("n1", "a:1"));
        assert_eq!(m.value, extra);
    }
}
