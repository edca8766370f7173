//! Who may connect to the state socket: the credentials the kernel gives for a connecting
//! process (`SO_PEERCRED`: pid, uid, primary gid; `SO_PEERGROUPS`: its supplementary
//! groups; read in `socket.rs`) against `allow_uids` and `allow_gids`. Sans-IO.
//!
//! A peer is allowed when its uid is in the uid list, or its primary gid or any of its
//! supplementary groups is in the gid list. Unset, the lists are the daemon's own uid and
//! the socket file's group: the same processes the file's mode 0660 lets in, so a peer that
//! passes the file permissions but is neither (a socket directory opened up, a mode widened
//! by hand) is still refused. A gateway under systemd with `DynamicUser=yes` and
//! `SupplementaryGroups=tether` is allowed through its supplementary group.

use std::fmt;

use crate::config::Config;

/// A connecting process, as the kernel reports it at `connect(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (empty where the kernel does not report them).
    pub groups: Vec<u32>,
}

/// The allow-list in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peers {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Peers {
    /// `allow_uids` and `allow_gids`, or their defaults: `own_uid` and `socket_gid`.
    pub(crate) fn new(config: &Config, own_uid: u32, socket_gid: u32) -> Peers {
        Peers {
            uids: config.allow_uids.clone().unwrap_or_else(|| vec![own_uid]),
            gids: config
                .allow_gids
                .clone()
                .unwrap_or_else(|| vec![socket_gid]),
        }
    }

    pub(crate) fn allows(&self, peer: &PeerCred) -> bool {
        self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.gids.contains(g))
    }
}

/// `uids [..] gids [..]`, for the start-up log.
impl fmt::Display for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uids {:?} gids {:?}", self.uids, self.gids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerCred {
        PeerCred {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn by_default_the_daemons_uid_and_the_sockets_group_are_allowed() {
        let peers = Peers::new(&Config::default(), 1000, 2000);
        assert!(peers.allows(&peer(1000, 1000, &[])), "the daemon's own uid");
        assert!(peers.allows(&peer(3000, 2000, &[])), "primary group");
        assert!(
            peers.allows(&peer(61234, 61234, &[5, 2000])),
            "supplementary group (DynamicUser + SupplementaryGroups)"
        );
        assert!(!peers.allows(&peer(65534, 65534, &[])), "anyone else");
        assert!(!peers.allows(&peer(0, 0, &[])), "root is not special");
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let config = Config {
            allow_uids: Some(vec![4000, 4001]),
            allow_gids: Some(Vec::new()),
            ..Config::default()
        };
        let peers = Peers::new(&config, 1000, 2000);
        assert!(peers.allows(&peer(4001, 9, &[])));
        assert!(!peers.allows(&peer(1000, 1000, &[])), "own uid not listed");
        assert!(
            !peers.allows(&peer(5000, 2000, &[2000])),
            "no group allowed"
        );
        assert_eq!(peers.to_string(), "uids [4000, 4001] gids []");
    }
}
