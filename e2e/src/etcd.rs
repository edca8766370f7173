//! Real etcd servers for the discovery tests: one member or a cluster on free loopback
//! ports, each with a data directory of its own under the system temp dir, killed (and the
//! directory removed) when the test drops them. [`Cluster::start_in`] runs the members in a
//! network namespace instead (the multi-host tests' core namespace, `crate::fleet`), on the
//! namespace's bridge address and etcd's usual ports, and runs `etcdctl` and every probe
//! from inside it.
//!
//! `etcd` comes from Debian's `etcd-server` package; `cargo xtask test` installs it.
//! Keys are read through etcd's JSON gateway (`POST /v3/kv/range`), so the tests need no
//! client of their own. With authentication on, [`Cluster::etcdctl`] (Debian's
//! `etcd-client`) acts as a user, and [`Cluster::enable_auth`] and [`Cluster::add_user`] set
//! users and roles up the way doc/operations.md tells operators to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::fleet::{in_ns, Netns};
use crate::{free_addr, http_get, http_post, Proc};

/// How long a member may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One etcd member: its ports, its data directory, and its process while it runs.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub dir: PathBuf,
    proc: Option<Proc>,
}

/// An etcd cluster of one or more members, on loopback or in a network namespace.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    token: String,
    /// The namespace the members run in, and are probed from; None = the test's own.
    ns: Option<Netns>,
    /// `--bcrypt-cost`; None = etcd's default.
    bcrypt_cost: Option<u32>,
}

impl Cluster {
    /// A one-member cluster, started and answering.
    pub fn single() -> Cluster {
        Cluster::start(1)
    }

    /// A cluster of `n` members on free loopback ports, started and answering (with a
    /// leader).
    pub fn start(n: usize) -> Cluster {
        let ports = (0..n).map(|_| (free_addr(), free_addr())).collect();
        Cluster::launch(None, None, ports)
    }

    /// A cluster of `n` members in namespace `ns`, on its address (member `i` takes client
    /// port 2379 + 2i and peer port 2380 + 2i), started and answering. Reachable from every
    /// namespace on the same bridge.
    ///
    /// Its passwords are hashed with bcrypt's lowest cost (4, not etcd's 10): the multi-host
    /// tests make an etcd user per member, and every etcdctl call checks root's password. A
    /// two-host fleet took 7.0 s to set up at cost 10 and 3.3 s at 4 on the 2-core test
    /// machine. Only the time to check a password changes.
    pub fn start_in(ns: &Netns, n: usize) -> Cluster {
        let at = |port: usize| -> SocketAddr {
            format!("{}:{port}", ns.ip)
                .parse()
                .expect("the namespace's address")
        };
        let ports = (0..n)
            .map(|i| (at(2379 + 2 * i), at(2380 + 2 * i)))
            .collect();
        Cluster::launch(Some(ns.clone()), Some(4), ports)
    }

    /// Starts one member per (client, peer) address pair in `ns` and waits until all answer.
    fn launch(
        ns: Option<Netns>,
        bcrypt_cost: Option<u32>,
        ports: Vec<(SocketAddr, SocketAddr)>,
    ) -> Cluster {
        let run = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("tether-e2e-{}-{run}", std::process::id());
        let members = ports
            .into_iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = std::env::temp_dir().join(format!("{token}-m{i}"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("create the etcd data dir");
                Member {
                    name: format!("m{i}"),
                    client,
                    peer,
                    dir,
                    proc: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            members,
            token,
            ns,
            bcrypt_cost,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// `program`, to run where the members are (inside their namespace, if any).
    fn command(&self, program: &str) -> Command {
        match &self.ns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        }
    }

    /// Runs `f` where the members can be reached (on a thread inside their namespace, if
    /// any).
    fn reach<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match &self.ns {
            Some(ns) => in_ns(ns, f),
            None => f(),
        }
    }

    /// The client URLs, comma-separated: the value of `--etcd`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again) with its ports and data directory.
    pub fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let mut command = self.command("etcd");
        if let Some(cost) = self.bcrypt_cost {
            command.args(["--bcrypt-cost", &cost.to_string()]);
        }
        let m = &mut self.members[i];
        let log = std::fs::File::create(m.dir.join("etcd.log")).expect("etcd log file");
        command
            .args(["--name", &m.name])
            .args(["--data-dir", &m.dir.join("data").to_string_lossy()])
            .args(["--listen-client-urls", &format!("http://{}", m.client)])
            .args(["--advertise-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://{}", m.peer)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}", m.peer),
            ])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections, so a lost member is replaced in well under a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start etcd ({e}): install Debian's etcd-server (cargo xtask test does)")
        });
        m.proc = Some(Proc {
            child,
            name: format!("etcd {}", m.name),
        });
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut proc) = self.members[i].proc.take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    /// Kills every member, wipes every data directory (leases and keys are gone) and starts
    /// a new cluster on the same ports: what a total loss of etcd looks like to its clients.
    pub fn restart_empty(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(m.dir.join("data"));
        }
        self.token.push('x');
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        self.wait_healthy();
    }

    /// Waits until every running member says it is healthy (it has a leader).
    pub(crate) fn wait_healthy(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for m in self.members.iter().filter(|m| m.proc.is_some()) {
            let client = m.client;
            let healthy = self.reach(move || loop {
                let healthy =
                    std::net::TcpStream::connect_timeout(&client, Duration::from_millis(200))
                        .is_ok()
                        && http_get(client, "/health").1.contains("true");
                if healthy || Instant::now() > deadline {
                    return healthy;
                }
                std::thread::sleep(Duration::from_millis(50));
            });
            if !healthy {
                let log = std::fs::read_to_string(m.dir.join("etcd.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                panic!("etcd {} not healthy: {tail}", m.name);
            }
        }
    }

    /// The ids under `prefix` (e.g. `/tether/nodes/`) and their values, read from a running
    /// member; None when none answers.
    pub fn list(&self, prefix: &str) -> Option<Vec<(String, String)>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        let body = serde_json::json!({
            "key": b64.encode(prefix),
            "range_end": b64.encode(&end),
        })
        .to_string();
        let clients: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|m| m.proc.is_some())
            .map(|m| m.client)
            .collect();
        let prefix = prefix.to_string();
        self.reach(move || {
            for client in clients {
                if std::net::TcpStream::connect_timeout(&client, Duration::from_millis(200))
                    .is_err()
                {
                    continue;
                }
                let (status, text) = http_post(client, "/v3/kv/range", body.as_bytes());
                if status != 200 {
                    continue;
                }
                let json: serde_json::Value = serde_json::from_str(&text).ok()?;
                let kvs = json["kvs"].as_array().cloned().unwrap_or_default();
                let decode = |v: &serde_json::Value| {
                    String::from_utf8_lossy(
                        &b64.decode(v.as_str().unwrap_or("")).unwrap_or_default(),
                    )
                    .into_owned()
                };
                return Some(
                    kvs.iter()
                        .map(|kv| {
                            let key = decode(&kv["key"]);
                            let id = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
                            (id, decode(&kv["value"]))
                        })
                        .collect(),
                );
            }
            None
        })
    }

    /// The sorted ids registered under `prefix` (empty when no member answers).
    pub fn ids(&self, prefix: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .list(prefix)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }
}

impl Cluster {
    /// Runs `etcdctl ARGS` on this cluster as `user` (`name:password`), or as nobody, with
    /// `stdin` as its input; returns whether it succeeded, and what it printed (stdout, then
    /// stderr).
    pub fn etcdctl(
        &self,
        user: Option<&str>,
        args: &[&str],
        stdin: Option<&Path>,
    ) -> (bool, String) {
        let mut command = self.command("etcdctl");
        command.args(args);
        self.etcdctl_env(&mut command, user);
        run_with_stdin(command, stdin)
    }

    fn etcdctl_env(&self, command: &mut Command, user: Option<&str>) {
        command
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", self.endpoints())
            // etcdctl's defaults (2 s to dial, 5 s a command) are short for a loaded 2-core
            // machine where every command with authentication on also checks a bcrypt hash.
            .env("ETCDCTL_DIAL_TIMEOUT", "10s")
            .env("ETCDCTL_COMMAND_TIMEOUT", "20s")
            .env_remove("ETCDCTL_USER")
            .env_remove("ETCDCTL_PASSWORD");
        if let Some(user) = user {
            command.env("ETCDCTL_USER", user);
        }
    }

    /// Creates the `root` user with `password` and turns authentication on, as
    /// doc/operations.md says; afterwards `root:password` can do anything.
    pub fn enable_auth(&self, root_password_file: &Path) {
        for args in [
            &["user", "add", "root", "--interactive=false"][..],
            &["auth", "enable"],
        ] {
            let stdin = (args[0] == "user").then_some(root_password_file);
            let (ok, out) = self.etcdctl(None, args, stdin);
            assert!(ok, "etcdctl {args:?}: {out}");
        }
    }

    /// `deploy/etcd/tether-etcd-user.sh KIND ID PASSWORD_FILE` as `root` (`root:password`).
    pub fn add_user(&self, root: &str, kind: &str, id: &str, password_file: &Path) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/etcd/tether-etcd-user.sh");
        let mut command = self.command("sh");
        command.arg(script).args([kind, id]).arg(password_file);
        self.etcdctl_env(&mut command, Some(root));
        let (ok, out) = run_with_stdin(command, None);
        assert!(ok, "tether-etcd-user.sh {kind} {id}: {out}");
    }

    /// The sorted ids under `prefix`, read as `user` (`name:password`) with etcdctl.
    pub fn ids_as(&self, user: &str, prefix: &str) -> Vec<String> {
        let (ok, out) = self.etcdctl(
            Some(user),
            &["get", "--prefix", "--keys-only", prefix],
            None,
        );
        assert!(ok, "etcdctl get {prefix}: {out}");
        let mut ids: Vec<String> = out
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .map(String::from)
            .collect();
        ids.sort();
        ids
    }
}

/// Runs `command` to its end with `stdin` (or nothing) as input: (success, stdout + stderr).
fn run_with_stdin(mut command: Command, stdin: Option<&Path>) -> (bool, String) {
    let input = match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).expect("open the stdin file")),
        None => Stdio::null(),
    };
    let out = command.stdin(input).output().unwrap_or_else(|e| {
        panic!("cannot run {command:?} ({e}): install Debian's etcd-client (cargo xtask test does)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}

/// The node addresses a gateway's `/stats` lists.
pub fn gateway_nodes(admin: SocketAddr) -> Vec<String> {
    let mut nodes: Vec<String> = crate::stats(admin)["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["addr"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes
}
