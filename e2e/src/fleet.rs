//! Hosts of a fleet for the multi-host tests, deployed as doc/fleet.md and doc/operations.md
//! ("A fleet across hosts") tell an operator to: network namespaces joined by a bridge (each
//! host with its own address and network stack); in a core namespace, a Redis 7 Cluster of
//! three primaries with a replica each, an etcd with authentication on (one etcd user per
//! member, made with `deploy/etcd/tether-etcd-user.sh`) and, when a test asks, a
//! tether-ipconfig that takes the gateways from etcd only; on each host a state daemon in
//! fleet mode, an echo node and a gateway. The echo node and the gateway register in etcd
//! under the host's bridge address, and every gateway takes its nodes (every host's) from
//! etcd: no member list is written anywhere.
//!
//! Every address is inside namespaces the test creates (10.x.y.0/24, different per test
//! process); the bridge itself lives in a namespace too, so nothing of it shows in the
//! machine's own network. A client of a host runs on a thread that entered the host's
//! namespace ([`in_ns`]): it reaches the host's gateway and push API on that namespace's
//! loopback, as a local client would. A client from elsewhere runs in the client namespace
//! ([`Network::client`]) and dials what ipconfig lists.
//!
//! Needs root and `ip` (iproute2), `redis-server` / `redis-cli` (Debian's `redis-server`,
//! `redis-tools`) and `etcd` / `etcdctl` (Debian's `etcd-server`, `etcd-client`); `cargo
//! xtask test` installs them. [`Network::skip_reason`] says why a test cannot run here.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::state::{temp_dir, SECRET};
use crate::{Cluster, Proc};

/// The Redis ACL user the daemons (and the cluster's replicas) authenticate as.
pub const REDIS_USER: &str = "tether";
/// Its password.
pub const REDIS_PASSWORD: &str = "e2e-fleet-redis-password";
/// First port of the Redis nodes (primaries first).
pub const REDIS_PORT: u16 = 7001;
/// Nodes of the cluster: 3 primaries, then their replicas.
pub const REDIS_NODES: u16 = 6;
/// etcd's `root` user and its password, as `etcdctl` takes them.
pub const ETCD_ROOT: &str = "root:e2e-fleet-etcd-root-password";
/// Where echo nodes register in etcd.
pub const ETCD_NODES: &str = "/tether/nodes/";
/// Where gateways register in etcd.
pub const ETCD_GATEWAYS: &str = "/tether/gateways/";
/// The lease TTL of a registration (tether_discovery::LEASE_TTL): a member SIGKILLed is
/// out of etcd at most this long after.
pub const ETCD_TTL: Duration = Duration::from_secs(10);

static NETWORKS: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One network namespace with one address on the bridge.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
    pub ip: String,
    /// Its end of the veth pair.
    pub dev: String,
}

impl Netns {
    /// A command run inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts this namespace off the bridge (`up` false) or joins it again.
    pub fn link(&self, up: bool) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            &self.dev,
            if up { "up" } else { "down" },
        ]);
    }
}

/// The bridge and the namespaces on it; all are deleted when dropped.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    /// Redis, etcd and ipconfig.
    pub core: Netns,
    /// A machine of clients: on the bridge, no host's.
    pub client: Netns,
    pub hosts: Vec<Netns>,
}

impl Network {
    /// Why the multi-host tests cannot run on this machine, if they cannot.
    pub fn skip_reason() -> Option<String> {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
        }
        for tool in ["ip", "redis-server", "redis-cli", "etcd", "etcdctl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Some(format!(
                    "{tool} is not installed (iproute2, redis-server, redis-tools, etcd-server, \
                     etcd-client; cargo xtask test installs them)"
                ));
            }
        }
        None
    }

    /// A bridge, a core namespace (for Redis, etcd, ipconfig), a client namespace and
    /// `hosts` host namespaces.
    pub fn create(hosts: usize) -> Network {
        let pid = std::process::id();
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("tf{}{}", pid % 100_000, n);
        let subnet = format!("10.{}.{}", 200 + (pid as usize / 256 + n) % 50, pid % 256);
        let bridge = format!("{tag}br");
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        let unset = Netns {
            name: String::new(),
            ip: String::new(),
            dev: String::new(),
        };
        let mut network = Network {
            bridge: bridge.clone(),
            core: unset.clone(),
            client: unset,
            hosts: Vec::new(),
        };
        let add = |suffix: &str, octet: usize| -> Netns {
            let name = format!("{tag}{suffix}");
            let dev = format!("v{tag}{suffix}");
            let peer = format!("p{tag}{suffix}");
            let addr = format!("{subnet}.{octet}");
            ip(&["netns", "add", &name]);
            ip(&[
                "-n", &name, "link", "add", &dev, "type", "veth", "peer", "name", &peer, "netns",
                &bridge,
            ]);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &dev,
            ]);
            ip(&["-n", &name, "link", "set", &dev, "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            ip(&["-n", &bridge, "link", "set", &peer, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", &peer, "up"]);
            Netns {
                name,
                ip: addr,
                dev,
            }
        };
        // Each namespace joins `network` once made, so a later failure deletes it too.
        network.core = add("r", 10);
        network.client = add("x", 9);
        for i in 0..hosts {
            let ns = add(&((b'a' + i as u8) as char).to_string(), 11 + i);
            network.hosts.push(ns);
        }
        network
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let names = [&self.core.name, &self.client.name]
            .into_iter()
            .chain(self.hosts.iter().map(|h| &h.name))
            .chain(std::iter::once(&self.bridge));
        for name in names {
            if !name.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`: the sockets it opens live there (and keep
/// working from any thread after).
pub fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from("/run/netns").join(&ns.name);
    thread::spawn(move || {
        let file =
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: setns on a namespace file we hold open; it changes this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .expect("the thread inside the namespace panicked")
}

/// Spawns `program` (a path) in `ns`, quietly, as a [`Proc`] killed on drop.
pub fn spawn_in(ns: &Netns, program: &Path, args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Proc {
        child,
        name: program.display().to_string(),
    }
}

/// Waits until `addr` accepts inside `ns`.
pub fn wait_port_in(ns: &Netns, addr: SocketAddr, timeout: Duration) {
    let ok = in_ns(ns, move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    });
    assert!(
        ok,
        "nothing listens on {addr} in {} after {timeout:?}",
        ns.name
    );
}

/// A Redis 7 Cluster of three primaries and three replicas in the core namespace, with ACL
/// user [`REDIS_USER`] (the default user off), AOF on.
#[derive(Debug)]
pub struct RedisCluster {
    pub ns: Netns,
    pub dir: PathBuf,
    pub nodes: Vec<Option<Proc>>,
}

impl RedisCluster {
    pub fn start(ns: &Netns) -> RedisCluster {
        let dir = temp_dir("redis");
        let mut cluster = RedisCluster {
            ns: ns.clone(),
            dir,
            nodes: (0..REDIS_NODES).map(|_| None).collect(),
        };
        for i in 0..REDIS_NODES {
            cluster.start_node(i, false);
        }
        let mut args: Vec<String> = vec![
            "--user".into(),
            REDIS_USER.into(),
            "--pass".into(),
            REDIS_PASSWORD.into(),
            "--no-auth-warning".into(),
            "--cluster".into(),
            "create".into(),
        ];
        args.extend((0..REDIS_NODES).map(|i| cluster.addr(i)));
        args.extend([
            "--cluster-replicas".into(),
            "1".into(),
            "--cluster-yes".into(),
        ]);
        let out = ns
            .command("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// `IP:PORT` of node `i`.
    pub fn addr(&self, i: u16) -> String {
        format!("{}:{}", self.ns.ip, REDIS_PORT + i)
    }

    /// The primaries' addresses: the daemons' seeds.
    pub fn seeds(&self) -> String {
        (0..3).map(|i| self.addr(i)).collect::<Vec<_>>().join(",")
    }

    /// Starts node `i` (again); `empty` wipes its data first (a Redis restarted empty).
    pub fn start_node(&mut self, i: u16, empty: bool) {
        let port = REDIS_PORT + i;
        let dir = self.dir.join(format!("n{port}"));
        if empty {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir).expect("redis dir");
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind {ip}\nprotected-mode no\ndir {dir}\ncluster-enabled yes\n\
                 cluster-config-file nodes.conf\ncluster-node-timeout 1000\nappendonly yes\n\
                 appendfsync everysec\nsave \"\"\nlogfile {dir}/redis.log\n\
                 cluster-replica-validity-factor 0\nrepl-diskless-sync-delay 0\nuser default off\n\
                 user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n\
                 masteruser {REDIS_USER}\nmasterauth {REDIS_PASSWORD}\n",
                ip = self.ns.ip,
                dir = dir.display(),
            ),
        )
        .expect("redis.conf");
        let proc = spawn_in(
            &self.ns,
            Path::new("redis-server"),
            &[conf.display().to_string()],
            &dir.join("stderr.log"),
        );
        self.nodes[i as usize] = Some(proc);
        let addr: SocketAddr = self.addr(i).parse().expect("redis addr");
        wait_port_in(&self.ns, addr, Duration::from_secs(10));
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: u16) {
        if let Some(mut proc) = self.nodes[i as usize].take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    /// `redis-cli` against node `i`; its stdout.
    pub fn cli(&self, i: u16, args: &[&str]) -> String {
        let out = self
            .ns
            .command("redis-cli")
            .args(["-h", &self.ns.ip, "-p", &(REDIS_PORT + i).to_string()])
            .args([
                "--user",
                REDIS_USER,
                "--pass",
                REDIS_PASSWORD,
                "--no-auth-warning",
            ])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every running node says `cluster_state:ok`, and every replica that its
    /// link to its primary is up.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let all_ok = (0..REDIS_NODES)
                .filter(|i| self.nodes[*i as usize].is_some())
                .all(|i| {
                    let replication = self.cli(i, &["info", "replication"]);
                    self.cli(i, &["cluster", "info"])
                        .contains("cluster_state:ok")
                        && (!replication.contains("role:slave")
                            || replication.contains("master_link_status:up"))
                });
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis cluster is not ok after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node (index) serving `key`'s slot as primary now.
    pub fn primary_of(&self, key: &str) -> u16 {
        let alive = (0..REDIS_NODES)
            .find(|i| self.nodes[*i as usize].is_some())
            .expect("a running node");
        let slot: u16 = self
            .cli(alive, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("keyslot");
        let nodes = self.cli(alive, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                    if (lo..=hi).contains(&slot) {
                        let port: u16 = f[1]
                            .split('@')
                            .next()
                            .and_then(|a| a.rsplit(':').next())
                            .and_then(|p| p.parse().ok())
                            .expect("node port");
                        return port - REDIS_PORT;
                    }
                }
            }
        }
        panic!("no primary serves slot {slot}:\n{nodes}");
    }
}

/// etcd in the core namespace with authentication on, as doc/operations.md (Security) sets
/// it up: a `root` user ([`ETCD_ROOT`]), and one user per member, with a role that lets it
/// write its own key only, made by `deploy/etcd/tether-etcd-user.sh`.
#[derive(Debug)]
pub struct Etcd {
    pub cluster: Cluster,
    /// The password files.
    dir: PathBuf,
}

impl Etcd {
    /// One member in `ns`, on its bridge address, with authentication on.
    pub fn start(ns: &Netns) -> Etcd {
        let cluster = Cluster::start_in(ns, 1);
        let dir = temp_dir("etcd-users");
        let root = dir.join("root.password");
        let password = ETCD_ROOT.split_once(':').expect("user:password").1;
        std::fs::write(&root, format!("{password}\n")).expect("root password file");
        cluster.enable_auth(&root);
        Etcd { cluster, dir }
    }

    /// The client URLs: every daemon's `--etcd`.
    pub fn endpoints(&self) -> String {
        self.cluster.endpoints()
    }

    /// Makes etcd user `id` for a member of `kind` (`gateway`, `node` or `ipconfig`) with
    /// a password of its own; returns the member's etcd flags (`--etcd`, `--etcd-user`,
    /// `--etcd-password-file`).
    pub fn member(&self, kind: &str, id: &str) -> Vec<String> {
        let password = self.dir.join(format!("{id}.password"));
        std::fs::write(&password, format!("{id}-e2e-fleet-password\n")).expect("password file");
        self.cluster.add_user(ETCD_ROOT, kind, id, &password);
        [
            "--etcd",
            &self.endpoints(),
            "--etcd-user",
            id,
            "--etcd-password-file",
            &password.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The ids registered under `prefix` now, sorted (read as root with etcdctl).
    pub fn ids(&self, prefix: &str) -> Vec<String> {
        self.cluster.ids_as(ETCD_ROOT, prefix)
    }

    /// Waits until every one of `hosts` is registered (its gateway and its echo node) and
    /// every host's gateway has every host's node, taken from etcd, up.
    pub fn wait_registered(&self, hosts: &[Host], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut gateways: Vec<String> = hosts.iter().map(|h| h.gateway_id()).collect();
        let mut nodes: Vec<String> = hosts.iter().map(|h| h.node_id()).collect();
        let mut addrs: Vec<String> = hosts.iter().map(|h| h.node_addr.to_string()).collect();
        gateways.sort();
        nodes.sort();
        addrs.sort();
        loop {
            let registered = self.ids(ETCD_GATEWAYS) == gateways
                && self.ids(ETCD_NODES) == nodes
                && hosts.iter().all(|h| h.nodes_up() == addrs);
            if registered {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not within {timeout:?}: gateways {gateways:?} and nodes {nodes:?} in etcd \
                 (there: {:?}, {:?}), every gateway with nodes {addrs:?} up (there: {:?})",
                self.ids(ETCD_GATEWAYS),
                self.ids(ETCD_NODES),
                hosts.iter().map(Host::nodes_up).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tether-ipconfig in the core namespace that takes the gateways from etcd only (its
/// report keys file is empty, so it refuses every HTTP report), as doc/operations.md runs
/// one on a host of its own.
#[derive(Debug)]
pub struct Ipconfig {
    /// Where clients ask `/ip_list`, on the core namespace's bridge address.
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _proc: Proc,
}

impl Ipconfig {
    /// Starts one in `ns`, watching `etcd` as its own etcd user.
    pub fn start(ns: &Netns, etcd: &Etcd) -> Ipconfig {
        let dir = temp_dir("ipconfig");
        let keys = dir.join("report-keys");
        std::fs::write(&keys, "").expect("report keys file");
        let addr: SocketAddr = format!("{}:6789", ns.ip).parse().expect("addr");
        let mut args: Vec<String> = [
            "--listen",
            &addr.to_string(),
            "--report-keys-file",
            &keys.display().to_string(),
            "--workers",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(etcd.member("ipconfig", "ipconfig-1"));
        let proc = spawn_in(
            ns,
            &crate::binary("tether-ipconfig"),
            &args,
            &dir.join("ipconfig.log"),
        );
        wait_port_in(ns, addr, Duration::from_secs(10));
        Ipconfig {
            addr,
            dir,
            _proc: proc,
        }
    }

    /// `GET /ip_list` from namespace `from`, as a client there asks it: each listed
    /// gateway's id and the address to dial, best first (empty on a 503).
    pub fn gateways(&self, from: &Netns) -> Vec<(String, SocketAddr)> {
        let addr = self.addr;
        let (status, body) = in_ns(from, move || crate::http_get(addr, "/ip_list"));
        if status != 200 {
            return Vec::new();
        }
        let list: serde_json::Value = serde_json::from_str(&body).expect("ip_list is JSON");
        list["gateways"]
            .as_array()
            .expect("gateways")
            .iter()
            .map(|g| {
                let id = g["id"].as_str().expect("id").to_string();
                let addr = g["addr"]
                    .as_str()
                    .expect("addr")
                    .parse()
                    .expect("host:port");
                (id, addr)
            })
            .collect()
    }

    /// The gateway ids listed now, sorted, asked from `from`.
    pub fn listed(&self, from: &Netns) -> Vec<String> {
        let mut ids: Vec<String> = self.gateways(from).into_iter().map(|(id, _)| id).collect();
        ids.sort();
        ids
    }
}

/// One host of the fleet: a state daemon (fleet on), an echo node and a gateway, in
/// namespace `ns`; the node and the gateway register in etcd.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub id: String,
    pub dir: PathBuf,
    pub state: Option<Proc>,
    pub gateway: Option<Proc>,
    pub node: Option<Proc>,
    /// Where a client on the host itself dials the gateway (it listens on every address of
    /// the namespace).
    pub listen: SocketAddr,
    /// What the gateway registers in etcd for clients elsewhere: the bridge address.
    pub advertise: SocketAddr,
    /// What the echo node registers in etcd for every gateway: the bridge address.
    pub node_addr: SocketAddr,
    /// The push API, on the namespace's loopback.
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
    seeds: String,
    extra: Vec<String>,
    /// The etcd flags of the gateway and of the echo node (their own etcd users).
    etcd_gateway: Vec<String>,
    etcd_node: Vec<String>,
}

impl Host {
    /// Starts host `id` in `ns` against the Redis cluster's `seeds` and `etcd` (where its
    /// members get their etcd users), with `extra` state flags.
    pub fn start(ns: &Netns, id: &str, seeds: &str, etcd: &Etcd, extra: &[&str]) -> Host {
        let dir = temp_dir(&format!("fleet-{id}"));
        let credentials = dir.join("redis-credentials");
        std::fs::write(&credentials, format!("{REDIS_USER} {REDIS_PASSWORD}\n")).expect("creds");
        let at = |port: u16| -> SocketAddr {
            format!("{}:{port}", ns.ip)
                .parse()
                .expect("the namespace's address")
        };
        let mut host = Host {
            ns: ns.clone(),
            id: id.to_string(),
            dir,
            state: None,
            gateway: None,
            node: None,
            listen: "127.0.0.1:8900".parse().expect("addr"),
            http: "127.0.0.1:8902".parse().expect("addr"),
            metrics: "127.0.0.1:8903".parse().expect("addr"),
            admin: "127.0.0.1:8901".parse().expect("addr"),
            advertise: at(8900),
            node_addr: at(8890),
            seeds: seeds.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            etcd_gateway: etcd.member("gateway", &format!("gw-{id}")),
            etcd_node: etcd.member("node", &format!("node-{id}")),
        };
        host.launch();
        host
    }

    /// The gateway's id, in etcd and in ipconfig's list.
    pub fn gateway_id(&self) -> String {
        format!("gw-{}", self.id)
    }

    /// The echo node's id in etcd.
    pub fn node_id(&self) -> String {
        format!("node-{}", self.id)
    }

    fn launch(&mut self) {
        let socket = self.dir.join("state.sock");
        let _ = std::fs::remove_file(&socket);
        let mut args: Vec<String> = [
            "--socket",
            &socket.display().to_string(),
            "--http",
            &self.http.to_string(),
            "--metrics",
            &self.metrics.to_string(),
            "--journal",
            &self.dir.join("journal").display().to_string(),
            "--jwt-secret",
            SECRET,
            "--fleet",
            "--fleet-redis",
            &self.seeds,
            "--fleet-host",
            &self.id,
            "--fleet-credentials-file",
            &self.dir.join("redis-credentials").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        self.state = Some(spawn_in(
            &self.ns,
            &crate::binary("tether-state"),
            &args,
            &self.dir.join("state.log"),
        ));
        wait_port_in(&self.ns, self.http, Duration::from_secs(10));
        let every = |port: u16| SocketAddr::from(([0, 0, 0, 0], port)).to_string();
        let mut node_args: Vec<String> = vec![
            "--listen".into(),
            every(self.node_addr.port()),
            "--advertise".into(),
            self.node_addr.to_string(),
            "--id".into(),
            self.node_id(),
        ];
        node_args.extend(self.etcd_node.iter().cloned());
        self.node = Some(spawn_in(
            &self.ns,
            &crate::binary("tether-echo-node"),
            &node_args,
            &self.dir.join("node.log"),
        ));
        // No `--node`: with `--etcd` the gateway takes its nodes from etcd.
        let mut gateway_args: Vec<String> = [
            "--listen",
            &every(self.listen.port()),
            "--advertise",
            &self.advertise.to_string(),
            "--admin",
            &self.admin.to_string(),
            "--reactors",
            "1",
            "--pin-cores",
            "false",
            "--state",
            &socket.display().to_string(),
            "--id",
            &self.gateway_id(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        gateway_args.extend(self.etcd_gateway.iter().cloned());
        self.gateway = Some(spawn_in(
            &self.ns,
            &crate::binary("tether-gateway"),
            &gateway_args,
            &self.dir.join("gateway.log"),
        ));
        wait_port_in(&self.ns, self.listen, Duration::from_secs(10));
        let admin = self.admin;
        in_ns(&self.ns, move || {
            crate::wait_for_state_links(admin, 1, Duration::from_secs(10))
        });
    }

    /// SIGKILLs the whole host: state daemon, gateway, echo node.
    pub fn kill(&mut self) {
        for proc in [self.state.take(), self.gateway.take(), self.node.take()]
            .into_iter()
            .flatten()
        {
            let mut proc = proc;
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    /// A client of this host's gateway logged in as `device`; its LOGIN_OK JSON.
    pub fn login(&self, device: &str) -> (crate::Client, serde_json::Value) {
        let (listen, device) = (self.listen, device.to_string());
        in_ns(&self.ns, move || {
            crate::state::gateway_login(listen, &device)
        })
    }

    /// The addresses of the nodes this host's gateway has now, up or not (its `/stats`),
    /// sorted.
    pub fn nodes(&self) -> Vec<String> {
        let admin = self.admin;
        in_ns(&self.ns, move || crate::gateway_nodes(admin))
    }

    /// The addresses of the nodes this host's gateway has up now (its `/stats`), sorted.
    pub fn nodes_up(&self) -> Vec<String> {
        let admin = self.admin;
        let stats = in_ns(&self.ns, move || crate::stats(admin));
        let mut up: Vec<String> = stats["nodes"]
            .as_array()
            .expect("nodes in /stats")
            .iter()
            .filter(|n| n["up"] == true)
            .filter_map(|n| n["addr"].as_str().map(String::from))
            .collect();
        up.sort();
        up
    }

    /// A client connected to this host's gateway.
    pub fn connect(&self) -> crate::Client {
        let listen = self.listen;
        in_ns(&self.ns, move || crate::Client::connect(listen))
    }

    /// `POST /v1/push` on this host's daemon: (status, JSON).
    pub fn push(&self, device: &str, payload: &[u8]) -> (u16, serde_json::Value) {
        use base64::Engine;
        let body = serde_json::json!({
            "device_id": device,
            "payload": base64::engine::general_purpose::STANDARD.encode(payload),
        })
        .to_string();
        let http = self.http;
        let (code, text) = in_ns(&self.ns, move || {
            crate::http_post(http, "/v1/push", body.as_bytes())
        });
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `METHOD /v1/sessions/{device}` (GET or DELETE) on this host's daemon: (status, JSON).
    pub fn session(&self, method: &str, device: &str) -> (u16, serde_json::Value) {
        let (http, method, path) = (
            self.http,
            method.to_string(),
            format!("/v1/sessions/{device}"),
        );
        let answer = in_ns(&self.ns, move || {
            crate::http_request(http, &method, &path, &[], b"")
        });
        (answer.status, answer.json())
    }

    /// `METHOD path` with a JSON `body` on this host's push API: (status, JSON).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (http, method, path, body) = (
            self.http,
            method.to_string(),
            path.to_string(),
            body.to_string(),
        );
        let answer = in_ns(&self.ns, move || {
            crate::http_request(http, &method, &path, &[], body.as_bytes())
        });
        (answer.status, answer.json())
    }

    /// A metric of this host's state daemon.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (metrics, series) = (self.metrics, series.to_string());
        in_ns(&self.ns, move || crate::metric(metrics, &series))
    }

    /// The state daemon's log so far.
    pub fn state_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("state.log")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}
