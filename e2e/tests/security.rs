//! Trust boundaries (design.md, "Trust"): every control plane refuses a caller without the
//! credential for what it asks, each probe tried the way an attacker on the same host or
//! network would, and the legitimate path still works. One module per boundary.
//!
//! - [`reports`]: load reports to ipconfig (signed per gateway; replays, strangers, other
//!   gateways' ids refused), the loopback rule of `check`, key rotation by SIGHUP.
//! - [`etcd`]: etcd with authentication on, one role per member: a gateway registers with
//!   its own credential, nobody writes another member's key, no credential gets nothing.
//! - [`state`]: the state daemon's push API (bearer tokens with scopes, `/metrics` on its own
//!   listener), its socket (peer credentials, no HELLO taking over a live gateway's id).

#[path = "security/reports.rs"]
mod reports;

#[path = "security/etcd.rs"]
mod etcd;

#[path = "security/state.rs"]
mod state;

use std::path::PathBuf;

/// A directory for credential files (keys, passwords), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = tether_e2e::state::temp_dir(&format!("security-{name}"));
        Scratch(dir)
    }

    /// Writes `contents` to the file `name` in it; its path.
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a credential file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
