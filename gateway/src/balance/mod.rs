//! Node selection: which echo node gets the next request.
//!
//! Every reactor owns one [`Balancer`] and one `Vec<Candidate>` (the echo nodes in config
//! order, with their health and in-flight counts). For each request it calls
//! [`Balancer::pick`] and forwards to the node at the returned index. Balancers are sans-IO:
//! they never read a clock or touch a socket, and any randomness comes from the `seed` given
//! to [`new`], so each reactor (and each test) is reproducible.
//!
//! One file per algorithm, all behind the same trait:
//!
//! - [`round_robin`]: cycles over the up nodes in config order.
//! - [`random`]: uniform over the up nodes.
//! - [`least_outstanding`]: power of two choices on the number of in-flight requests.
//! - [`ip_hash`]: rendezvous hashing of the client's IP, so a client sticks to one node on
//!   every reactor and across restarts, and losing a node moves only that node's clients.
//!
//! [`client_key`] turns a client IP into the stable 64-bit key the balancers receive.

pub(crate) mod ip_hash;
pub(crate) mod least_outstanding;
pub(crate) mod random;
mod rng;
pub(crate) mod round_robin;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// What a balancer sees of one node. The reactor keeps one `Vec<Candidate>` per reactor, in config order.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node's address; also its identity for [`ip_hash`].
    pub addr: std::net::SocketAddr,
    /// Whether the node is healthy; only up nodes are ever picked.
    pub up: bool,
    /// Requests this reactor has sent to the node and not yet seen answered.
    pub outstanding: u32,
}

/// A node-selection algorithm; one instance per reactor.
pub(crate) trait Balancer: Send {
    /// Index (into `nodes`) of the node for the next request from a client whose stable key is `client_key`;
    /// only nodes with `up == true` may be chosen; None when none is up.
    fn pick(&mut self, nodes: &[Candidate], client_key: u64) -> Option<usize>;
    /// Called after the node list changed (SIGHUP reload: nodes added/removed/reordered). Default: nothing.
    fn nodes_changed(&mut self, _nodes: &[Candidate]) {}
}

/// `--balance` values; serde and FromStr/Display use the kebab-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Cycle over the up nodes in config order.
    #[default]
    RoundRobin,
    /// Uniformly random up node.
    Random,
    /// Power of two choices on in-flight requests.
    LeastOutstanding,
    /// Rendezvous hashing of the client IP (sticky clients).
    IpHash,
}

impl Balance {
    /// Every variant, in declaration order.
    const ALL: [Balance; 4] = [
        Balance::RoundRobin,
        Balance::Random,
        Balance::LeastOutstanding,
        Balance::IpHash,
    ];

    /// The kebab-case name used by `--balance`, the config file and serde.
    fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::Random => "random",
            Balance::LeastOutstanding => "least-outstanding",
            Balance::IpHash => "ip-hash",
        }
    }
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Balance::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Balance::ALL.iter().map(|kind| kind.name()).collect();
                format!("unknown balance `{s}`; valid values: {}", valid.join(", "))
            })
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new balancer of that kind; `seed` seeds any randomness (each reactor passes its own).
pub(crate) fn new(kind: Balance, seed: u64) -> Box<dyn Balancer> {
    match kind {
        Balance::RoundRobin => Box::new(round_robin::RoundRobin::new(seed)),
        Balance::Random => Box::new(random::Random::new(seed)),
        Balance::LeastOutstanding => Box::new(least_outstanding::LeastOutstanding::new(seed)),
        Balance::IpHash => Box::new(ip_hash::IpHash::new()),
    }
}

/// A stable 64-bit key for a client IP: the same on every reactor, every process, every restart and
/// every Rust version (hand-written hash, not std's DefaultHasher/RandomState). IPv4 and IPv4-mapped IPv6
/// give the same key; IPv6 works (easyproxy's ip-hash broke on IPv6).
pub(crate) fn client_key(ip: IpAddr) -> u64 {
    let [hi, lo] = ip_words(ip);
    hash_words(CLIENT_KEY_SEED, &[hi, lo])
}

/// Domain separation for [`client_key`] (node identities use another seed in [`ip_hash`]).
const CLIENT_KEY_SEED: u64 = 0x7465_7468_6572_4b31; // "tetherK1"

/// The address as two big-endian u64 words of its 16-byte IPv6 form; an IPv4 address becomes
/// its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), so both spellings of one client are equal.
pub(crate) fn ip_words(ip: IpAddr) -> [u64; 2] {
    let octets = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&octets[..8]);
    lo.copy_from_slice(&octets[8..]);
    [u64::from_be_bytes(hi), u64::from_be_bytes(lo)]
}

/// Hashes a few words with [`mix64`], starting from `seed`. Hand-written and fixed forever:
/// its outputs are pinned by tests because they decide which node a client sticks to.
pub(crate) fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = mix64(seed);
    for &w in words {
        h = mix64(h ^ w).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    mix64(h ^ words.len() as u64)
}

/// The splitmix64 / MurmurHash3 `fmix64`-style finalizer (Stafford's variant 13): a bijection
/// on u64 in which every input bit affects every output bit.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How many nodes are up.
pub(crate) fn up_count(nodes: &[Candidate]) -> usize {
    nodes.iter().filter(|n| n.up).count()
}

/// Index into `nodes` of the `nth` up node (0-based), if there are that many.
pub(crate) fn nth_up(nodes: &[Candidate], nth: usize) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.up)
        .nth(nth)
        .map(|(i, _)| i)
}
