//! Starting, reloading and draining a gateway: binds the listeners, starts the admin
//! listener, one reactor per core (pinned), the acceptor threads, and ties them together.
//!
//! With `etcd` set the gateway is also a member of an etcd fleet: it registers itself under
//! `/tether/gateways/{id}` (its load report as the value, under a lease, revoked first thing
//! when it drains) and takes its echo nodes from `/tether/nodes/` ([`Fleet`]).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::acceptor::{Acceptor, ReactorDoor};
use crate::admin::{Admin, AdminError};
use crate::advertise;
use crate::config::{Config, Opts};
use crate::fleet::Fleet;
use crate::metrics::{GatewayInfo, Metrics};
use crate::reactor::{self, Command, Reactor, Setup};
use crate::reporter::{self, Endpoint, Reporter};
use crate::transport::{self, CertError, Resumption, Transport};
use tether_discovery::{DiscoveryError, Registration, Role, LEASE_TTL};

/// How long start-up waits for etcd's node list before starting with none.
const ETCD_SYNC_WAIT: Duration = Duration::from_secs(2);

/// How long a drain waits for etcd to confirm the lease is revoked.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub(crate) enum GatewayError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cannot set up an event loop: {0}")]
    Poll(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
    #[error("etcd: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("TLS: {0}")]
    Tls(#[from] CertError),
    #[error("ipconfig_key_file {0}")]
    Key(String),
}

struct ReactorHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

/// A running gateway.
pub(crate) struct Gateway {
    config: Config,
    /// Session tickets and cache, kept across certificate reloads (with a TLS listener).
    resumption: Option<Resumption>,
    listeners: Vec<(Arc<std::net::TcpListener>, Transport)>,
    local_addrs: Vec<SocketAddr>,
    acceptors: Vec<JoinHandle<()>>,
    reactors: Vec<ReactorHandle>,
    metrics: Vec<Arc<Metrics>>,
    admin: Admin,
    reporter: Option<Reporter>,
    /// The echo nodes: the `nodes` list, or etcd's.
    fleet: Fleet,
    /// This gateway's key in etcd, with `etcd` set.
    registration: Option<Arc<Registration>>,
    /// Signs reports to ipconfig, with `ipconfig_key_file`.
    signer: Option<Arc<reporter::Signer>>,
    info: Arc<GatewayInfo>,
    stop_accepting: Arc<AtomicBool>,
}

impl Gateway {
    /// Binds everything and starts every thread. Returns once the listeners accept and every
    /// reactor has tried its nodes once (up to the health timeout), so the first client is
    /// not refused NO_BACKEND only because links were still connecting.
    pub(crate) fn start(config: Config) -> Result<Gateway, GatewayError> {
        let (resumption, tls) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) if config.uses_tls() => {
                let resumption = Resumption::new()?;
                let tls = transport::server_config(cert, key, &resumption)?;
                (Some(resumption), Some(tls))
            }
            _ => (None, None),
        };
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        let mut listen_names = Vec::new();
        for (addr, transport) in config.listeners() {
            let listener = listen(addr, config.backlog, config.reuse_port)
                .map_err(|source| GatewayError::Listen { addr, source })?;
            let local = listener.local_addr().map_err(GatewayError::Poll)?;
            local_addrs.push(local);
            listen_names.push(match transport {
                Transport::Tcp => local.to_string(),
                other => format!("{}://{local}", other.name()),
            });
            listeners.push((Arc::new(listener), transport));
        }

        let reactor_count = config.reactor_count();
        let metrics: Vec<Arc<Metrics>> = (0..reactor_count)
            .map(|_| Arc::new(Metrics::new()))
            .collect();
        let info = Arc::new(GatewayInfo::new(
            env!("CARGO_PKG_VERSION"),
            listen_names,
            reactor_count,
            config.max_connections as u64,
        ));
        let admin = Admin::start(config.admin, metrics.clone(), info.clone())?;

        let etcd = if config.etcd.is_empty() {
            None
        } else {
            Some(config.etcd_auth.endpoints(&config.etcd)?)
        };
        let fleet = match &etcd {
            None => Fleet::fixed(Arc::new(config.settings()))?,
            Some(endpoints) => {
                let fleet = Fleet::etcd(endpoints.clone(), Arc::new(config.settings()))?;
                if !fleet.wait_synced(ETCD_SYNC_WAIT) {
                    tracing::warn!(etcd = ?config.etcd, "etcd did not answer: starting with no node, they come as soon as it does");
                }
                fleet
            }
        };
        let settings = fleet.settings();
        let cores = if config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let capacity = config.max_connections.div_ceil(reactor_count).min(1 << 20);
        let host = advertise::host_name();
        let gateway_id = advertise::gateway_id(&config, local_addrs.first().copied(), &host);
        let mut doors = Vec::with_capacity(reactor_count);
        let mut reactors = Vec::with_capacity(reactor_count);
        for (index, metrics) in metrics.iter().enumerate() {
            let poll = Poll::new().map_err(GatewayError::Poll)?;
            let waker =
                Arc::new(Waker::new(poll.registry(), reactor::WAKER).map_err(GatewayError::Poll)?);
            let (incoming_tx, incoming_rx) = crossbeam_channel::unbounded();
            let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
            let open = Arc::new(AtomicUsize::new(0));
            doors.push(ReactorDoor {
                incoming: incoming_tx,
                waker: waker.clone(),
                open: open.clone(),
            });
            let setup = Setup {
                index,
                poll,
                incoming: incoming_rx,
                commands: commands_rx,
                tls: tls.clone(),
                open,
                metrics: metrics.clone(),
                settings: settings.clone(),
                capacity,
                state: config
                    .state
                    .clone()
                    .map(|path| (path, format!("{gateway_id}/{index}"))),
            };
            let core = cores.get(index % cores.len().max(1)).copied();
            let thread = thread::Builder::new()
                .name(format!("reactor-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    Reactor::new(setup).run();
                })
                .map_err(GatewayError::Spawn)?;
            reactors.push(ReactorHandle {
                commands: commands_tx,
                waker,
                thread,
            });
        }

        fleet.attach(
            reactors
                .iter()
                .map(|r| (r.commands.clone(), r.waker.clone()))
                .collect(),
            &settings,
        );
        wait_for_nodes(&metrics, Duration::from_millis(config.health_timeout_ms));

        let stop_accepting = Arc::new(AtomicBool::new(false));
        let mut acceptors = Vec::new();
        for (listener, transport) in &listeners {
            for n in 0..config.acceptors {
                let acceptor = Acceptor {
                    listener: listener.clone(),
                    transport: *transport,
                    reactors: doors.clone(),
                    stop: stop_accepting.clone(),
                    info: info.clone(),
                };
                acceptors.push(
                    thread::Builder::new()
                        .name(format!("acceptor-{n}"))
                        .spawn(move || acceptor.run())
                        .map_err(GatewayError::Spawn)?,
                );
            }
        }

        let mut registration = None;
        let signer = match &config.ipconfig_key_file {
            Some(path) => Some(Arc::new(reporter::Signer::new(
                reporter::load_key(path).map_err(GatewayError::Key)?,
            ))),
            None => None,
        };
        if signer.is_none() && !config.ipconfig.is_empty() {
            tracing::info!("no ipconfig_key_file: reports are unsigned, which only an ipconfig on loopback without report_keys_file accepts");
        }
        let reporter = if config.ipconfig.is_empty() && etcd.is_none() {
            None
        } else {
            let endpoints = config
                .ipconfig
                .iter()
                .filter_map(|url| Endpoint::parse(url).ok())
                .collect();
            let bound: Vec<(SocketAddr, Transport)> = local_addrs
                .iter()
                .zip(&listeners)
                .map(|(&addr, (_, transport))| (addr, *transport))
                .collect();
            let advertised = advertise::advertised(&config, &bound, &host);
            if !config.ipconfig.is_empty() {
                tracing::info!(id = %advertised.id, addr = %advertised.addr, transports = ?advertised.transports, ipconfig = ?config.ipconfig, "reporting load");
            }
            let mut setup = reporter::Setup {
                endpoints,
                id: advertised.id,
                addr: advertised.addr,
                transports: advertised.transports,
                bandwidth_bytes_per_s: config.bandwidth_bytes_per_s,
                interval: Duration::from_millis(config.report_interval_ms),
                metrics: metrics.clone(),
                info: info.clone(),
                registration: None,
                signer: signer.clone(),
            };
            if let Some(endpoints) = etcd {
                let key = Role::Gateway.key(&setup.id);
                let value = serde_json::to_vec(&setup.idle_report()).unwrap_or_default();
                tracing::info!(%key, addr = %setup.addr, etcd = ?config.etcd, "registering in etcd");
                let r = Arc::new(Registration::start(endpoints, key, value, LEASE_TTL)?);
                setup.registration = Some(r.clone());
                registration = Some(r);
            }
            Some(Reporter::start(setup).map_err(GatewayError::Spawn)?)
        };

        Ok(Gateway {
            config,
            resumption,
            listeners,
            local_addrs,
            acceptors,
            reactors,
            metrics,
            admin,
            reporter,
            fleet,
            registration,
            signer,
            info,
            stop_accepting,
        })
    }

    /// The addresses clients connect to (real ports when configured with port 0).
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The echo nodes the reactors were last given (the `nodes` list, or etcd's).
    pub(crate) fn nodes(&self) -> Vec<SocketAddr> {
        self.fleet.nodes()
    }

    /// Applies what a new config may change without dropping clients: nodes, balancing,
    /// health checking, limits. Keys that need a restart are reported and left as they are.
    pub(crate) fn reload(&mut self, config: Config) -> Vec<&'static str> {
        let ignored = config.restart_only_changes(&self.config);
        self.reload_certificate(&config);
        // The key file's path is restart-only; its contents (a new key) apply now.
        if let (Some(signer), Some(path)) = (&self.signer, &self.config.ipconfig_key_file) {
            match reporter::load_key(path) {
                Ok(key) => {
                    signer.replace(key);
                    tracing::info!(path = %path.display(), "report key reloaded");
                }
                Err(e) => tracing::error!("report key not reloaded, the old one stays: {e}"),
            }
        }
        // Through the fleet: with etcd, the nodes stay the discovered ones.
        self.fleet.reload(Arc::new(config.settings()));
        self.info
            .max_connections
            .store(config.max_connections as u64, Ordering::Relaxed);
        let mut kept = config;
        // Restart-only keys keep their running values, so a later reload compares right.
        kept.listen = self.config.listen.clone();
        kept.backlog = self.config.backlog;
        kept.reuse_port = self.config.reuse_port;
        kept.acceptors = self.config.acceptors;
        kept.reactors = self.config.reactors;
        kept.pin_cores = self.config.pin_cores;
        kept.admin = self.config.admin;
        kept.log_format = self.config.log_format;
        kept.state = self.config.state.clone();
        kept.ipconfig = self.config.ipconfig.clone();
        kept.ipconfig_key_file = self.config.ipconfig_key_file.clone();
        kept.id = self.config.id.clone();
        kept.advertise = self.config.advertise.clone();
        kept.advertise_tls = self.config.advertise_tls.clone();
        kept.advertise_ws = self.config.advertise_ws.clone();
        kept.advertise_wss = self.config.advertise_wss.clone();
        kept.bandwidth_bytes_per_s = self.config.bandwidth_bytes_per_s;
        kept.report_interval_ms = self.config.report_interval_ms;
        kept.etcd = self.config.etcd.clone();
        kept.etcd_auth = self.config.etcd_auth.clone();
        self.config = kept;
        ignored
    }

    /// Re-reads the certificate chain and key (rotated files, or new paths) and hands the
    /// new configuration to every reactor: connections from now on use it, open ones keep
    /// theirs, and session tickets stay valid. A certificate that does not load is logged and
    /// the running one kept.
    fn reload_certificate(&self, config: &Config) {
        let (Some(resumption), Some(cert), Some(key)) =
            (&self.resumption, &config.tls_cert, &config.tls_key)
        else {
            return;
        };
        match transport::server_config(cert, key, resumption) {
            Ok(tls) => {
                for reactor in &self.reactors {
                    let _ = reactor.commands.send(Command::Tls(tls.clone()));
                    let _ = reactor.waker.wake();
                }
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; keeping the running one")
            }
        }
    }

    /// Stops accepting, sends GOAWAY to every client, waits up to `drain_timeout` for them
    /// to leave, then closes what is left and stops.
    pub(crate) fn drain(self) {
        self.info.draining.store(true, Ordering::Release);
        // Out of etcd first: every ipconfig replica drops this gateway at once.
        if let Some(registration) = &self.registration {
            registration.revoke(REVOKE_TIMEOUT);
        }
        // Off the ip list before clients are told to reconnect through it.
        if let Some(reporter) = &self.reporter {
            reporter.report_now(Duration::from_secs(2));
        }
        self.stop_accepting.store(true, Ordering::Release);
        for (listener, _) in &self.listeners {
            // Wakes the acceptors blocked in accept(2).
            // SAFETY: shutdown(2) on a listening socket this process owns.
            unsafe {
                libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        for acceptor in self.acceptors {
            let _ = acceptor.join();
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.drain_timeout_ms);
        for reactor in &self.reactors {
            let _ = reactor.commands.send(Command::Drain { deadline });
            let _ = reactor.waker.wake();
        }
        for reactor in self.reactors {
            let _ = reactor.thread.join();
        }
        let open: u64 = self.metrics.iter().map(|m| m.open()).sum();
        tracing::info!(open, "drained");
        if let Some(reporter) = self.reporter {
            reporter.stop();
        }
        self.fleet.stop();
        self.admin.stop();
    }
}

/// Runs a gateway until SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads the config file
/// (`opts` say where it is and which flags override it).
pub fn run(opts: &Opts, config: Config) -> anyhow::Result<()> {
    tether_daemon::rlimit::raise_and_log();
    // Signals first: a SIGTERM that arrives while starting (clients are served before
    // `start` returns) drains once started instead of killing the process.
    let (tx, rx) = crossbeam_channel::unbounded();
    tether_daemon::signals::spawn(move |event| {
        let _ = tx.send(event);
    })?;
    let mut gateway = Gateway::start(config.clone())?;
    tracing::info!(
        listen = ?gateway.local_addrs(),
        admin = %gateway.admin_addr(),
        reactors = config.reactor_count(),
        nodes = ?gateway.nodes(),
        etcd = ?config.etcd,
        balance = %config.balance,
        "gateway accepting"
    );
    tether_daemon::notify::ready();
    let watchdog = watchdog(&gateway.metrics);
    for event in rx.iter() {
        match event {
            tether_daemon::signals::SignalEvent::Stop => break,
            tether_daemon::signals::SignalEvent::Reload => match opts.load() {
                Ok(new) => {
                    let ignored = gateway.reload(new);
                    if ignored.is_empty() {
                        tracing::info!("configuration reloaded");
                    } else {
                        tracing::warn!(
                            ?ignored,
                            "configuration reloaded; these keys need a restart"
                        );
                    }
                }
                Err(errors) => {
                    tracing::error!("reload rejected, keeping the running config:\n{errors}")
                }
            },
        }
    }
    tracing::info!("draining");
    tether_daemon::notify::stopping();
    drop(watchdog); // systemd stops watching at STOPPING=1; the drain may outlast an interval
    gateway.drain();
    Ok(())
}

/// Under systemd with `WatchdogSec=`: WATCHDOG=1 only while every reactor has run its timer
/// tick (every 50 ms, busy or idle) since the last ping, so one stuck reactor is enough for
/// systemd to restart the gateway. `WatchdogSec=` must be well above 100 ms.
fn watchdog(metrics: &[Arc<Metrics>]) -> Option<tether_daemon::watchdog::Watchdog> {
    use tether_daemon::watchdog::{Progress, Watchdog};
    let metrics = metrics.to_vec();
    let ticks = move || metrics.iter().map(|m| m.ticks.get()).collect::<Vec<_>>();
    let mut progress = Progress::new(ticks());
    Watchdog::start("every reactor ticked since the last ping", move || {
        progress.moved(ticks())
    })
}

/// Waits until every reactor sees at least one node up, or `timeout`.
fn wait_for_nodes(metrics: &[Arc<Metrics>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if metrics.iter().all(|m| m.nodes().iter().any(|n| n.up)) {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn listen(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // The kernel spreads connections over every listener of the port's group; a draining
    // process's shutdown(2) takes its listener out of the group (doc/operations.md).
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}
