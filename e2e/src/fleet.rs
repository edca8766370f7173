//! Hosts of a fleet for the multi-host tests: network namespaces joined by a bridge (each
//! host with its own address and network stack), a Redis 7 Cluster of three primaries with a
//! replica each in a namespace of its own, and on each host a state daemon in fleet mode and
//! a gateway in front of it.
//!
//! Every address is inside namespaces the test creates (10.x.y.0/24, different per test
//! process); the bridge itself lives in a namespace too, so nothing of it shows in the
//! machine's own network. A client of a host runs on a thread that entered the host's
//! namespace ([`in_ns`]): it reaches the host's gateway and push API on that namespace's
//! loopback, as a local client would.
//!
//! Needs root and `ip` (iproute2), and `redis-server` / `redis-cli` (Debian's
//! `redis-server`); `cargo xtask test` installs them. [`Network::skip_reason`] says why a
//! test cannot run here.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::state::{temp_dir, SECRET};
use crate::Proc;

/// The Redis ACL user the daemons (and the cluster's replicas) authenticate as.
pub const REDIS_USER: &str = "tether";
/// Its password.
pub const REDIS_PASSWORD: &str = "e2e-fleet-redis-password";
/// First port of the Redis nodes (primaries first).
pub const REDIS_PORT: u16 = 7001;
/// Nodes of the cluster: 3 primaries, then their replicas.
pub const REDIS_NODES: u16 = 6;

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
    pub core: Netns,
    pub hosts: Vec<Netns>,
}

impl Network {
    /// Why the multi-host tests cannot run on this machine, if they cannot.
    pub fn skip_reason() -> Option<String> {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
        }
        for tool in ["ip", "redis-server", "redis-cli"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Some(format!(
                    "{tool} is not installed (iproute2, redis-server; cargo xtask test installs them)"
                ));
            }
        }
        None
    }

    /// A bridge, a core namespace (for Redis) and `hosts` host namespaces.
    pub fn create(hosts: usize) -> Network {
        let pid = std::process::id();
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("tf{}{}", pid % 100_000, n);
        let subnet = format!("10.{}.{}", 200 + (pid as usize / 256 + n) % 50, pid % 256);
        let bridge = format!("{tag}br");
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        let mut network = Network {
            bridge: bridge.clone(),
            core: Netns {
                name: String::new(),
                ip: String::new(),
                dev: String::new(),
            },
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
        let core = add("r", 10);
        let hosts: Vec<Netns> = (0..hosts)
            .map(|i| add(&((b'a' + i as u8) as char).to_string(), 11 + i))
            .collect();
        network.core = core;
        network.hosts = hosts;
        network
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let names = std::iter::once(&self.core.name)
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

/// One host of the fleet: a state daemon (fleet on) and a gateway, in namespace `ns`.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub id: String,
    pub dir: PathBuf,
    pub state: Option<Proc>,
    pub gateway: Option<Proc>,
    pub node: Option<Proc>,
    /// The gateway's client listener, on the namespace's loopback.
    pub listen: SocketAddr,
    /// The push API, on the namespace's loopback.
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
    seeds: String,
    extra: Vec<String>,
}

impl Host {
    /// Starts host `id` in `ns` against the cluster's `seeds`, with `extra` state flags.
    pub fn start(ns: &Netns, id: &str, seeds: &str, extra: &[&str]) -> Host {
        let dir = temp_dir(&format!("fleet-{id}"));
        let credentials = dir.join("redis-credentials");
        std::fs::write(&credentials, format!("{REDIS_USER} {REDIS_PASSWORD}\n")).expect("creds");
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
            seeds: seeds.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        host.launch();
        host
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
        let node: SocketAddr = "127.0.0.1:8890".parse().expect("addr");
        self.node = Some(spawn_in(
            &self.ns,
            &crate::binary("tether-echo-node"),
            &["--listen".into(), node.to_string()],
            &self.dir.join("node.log"),
        ));
        let gateway_args: Vec<String> = [
            "--listen",
            &self.listen.to_string(),
            "--admin",
            &self.admin.to_string(),
            "--node",
            &node.to_string(),
            "--reactors",
            "1",
            "--pin-cores",
            "false",
            "--state",
            &socket.display().to_string(),
            "--id",
            &format!("gw-{}", self.id),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
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
