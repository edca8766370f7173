//! Starting and stopping a node: binds the listener, spawns the acceptor, the reactors and
//! the compute pool, and tears them down on stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tether_daemon::metrics::{Counter, Gauge};
use tether_discovery::{DiscoveryError, Member, Registration, Role, LEASE_TTL};
use tether_proto::Decoder;
use thiserror::Error;

use crate::acceptor::{self, ReactorHandle};
use crate::config::Config;
use crate::pool::{self, Returns};
use crate::reactor::{self, Reactor};

#[derive(Debug, Error)]
pub(crate) enum NodeError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up an event loop: {0}")]
    Poll(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
}

/// A running node. Dropping it does not stop it; call [`Node::stop`].
pub(crate) struct Node {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    /// Loop iterations of each reactor, then of the acceptor (same order as `wakers`).
    loops: Vec<Arc<Counter>>,
    threads: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds and starts every thread; the node accepts once this returns.
    pub(crate) fn start(config: &Config) -> Result<Node, NodeError> {
        let listener =
            listen(config.listen, config.backlog).map_err(|source| NodeError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(NodeError::Poll)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reactor_count = config.reactor_count();

        let mut polls = Vec::with_capacity(reactor_count);
        let mut wakers = Vec::with_capacity(reactor_count + 1);
        for _ in 0..reactor_count {
            let poll = Poll::new().map_err(NodeError::Poll)?;
            let waker = Waker::new(poll.registry(), reactor::WAKER).map_err(NodeError::Poll)?;
            wakers.push(Arc::new(waker));
            polls.push(poll);
        }

        let (result_senders, result_receivers): (Vec<_>, Vec<_>) = (0..reactor_count)
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let (pool, workers) = if config.work_us > 0 {
            let returns = Returns {
                senders: result_senders,
                wakers: wakers.clone(),
            };
            let (handle, threads) = pool::start(
                config.worker_count(),
                config.queue,
                Duration::from_micros(config.work_us),
                returns,
            )
            .map_err(NodeError::Spawn)?;
            (Some(handle), threads)
        } else {
            (None, Vec::new())
        };

        let mut handles = Vec::with_capacity(reactor_count);
        let mut threads = Vec::with_capacity(reactor_count + 1);
        let mut loops = Vec::with_capacity(reactor_count + 1);
        let decoder = Decoder::new(config.max_body);
        for (index, (poll, results)) in polls.into_iter().zip(result_receivers).enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let open = Arc::new(Gauge::default());
            handles.push(ReactorHandle {
                incoming: tx,
                waker: wakers[index].clone(),
                open: open.clone(),
            });
            let reactor = Reactor::new(
                index,
                poll,
                rx,
                results,
                pool.clone(),
                open,
                stop.clone(),
                decoder,
                config.max_queued_bytes,
                Some(config.publish_room.clone()).filter(|room| !room.is_empty()),
                config.max_body,
            );
            loops.push(reactor.loops.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("reactor-{index}"))
                    .spawn(move || reactor.run())
                    .map_err(NodeError::Spawn)?,
            );
        }
        drop(pool);

        let accept_poll = Poll::new().map_err(NodeError::Poll)?;
        let accept_waker =
            Waker::new(accept_poll.registry(), acceptor::STOP).map_err(NodeError::Poll)?;
        wakers.push(Arc::new(accept_waker));
        let accept_stop = stop.clone();
        let accept_loops = Arc::new(Counter::default());
        loops.push(accept_loops.clone());
        let listener = mio::net::TcpListener::from_std(listener);
        threads.push(
            thread::Builder::new()
                .name("acceptor".into())
                .spawn(move || {
                    acceptor::run(accept_poll, listener, handles, accept_stop, accept_loops)
                })
                .map_err(NodeError::Spawn)?,
        );

        Ok(Node {
            local_addr,
            stop,
            wakers,
            loops,
            threads,
            workers,
        })
    }

    /// The address the node accepts on (the real port when configured with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The systemd watchdog's check: every reactor and the acceptor went round its loop
    /// since the last time this said yes. Each call also wakes them all (one `eventfd`
    /// write each; a woken loop finds nothing to do), so an idle node passes by answering
    /// the wake-up and a stuck loop fails. The compute pool is not checked: a busy pool
    /// answers OVERLOADED, which is the node working as designed.
    pub(crate) fn liveness(&self) -> impl FnMut() -> bool + Send + 'static {
        let loops = self.loops.clone();
        let wakers = self.wakers.clone();
        let counts = move || loops.iter().map(|l| l.get()).collect::<Vec<_>>();
        let mut progress = tether_daemon::watchdog::Progress::new(counts());
        let wake = move || {
            for waker in &wakers {
                let _ = waker.wake();
            }
        };
        wake();
        move || {
            let alive = progress.moved(counts());
            wake();
            alive
        }
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        // Reactors dropped their pool handles: workers finish their job and exit.
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// Registers `node` in etcd under `/tether/nodes/{id}` when `config.etcd` is set.
pub(crate) fn register(
    config: &Config,
    node: &Node,
) -> Result<Option<Registration>, DiscoveryError> {
    if config.etcd.is_empty() {
        return Ok(None);
    }
    let endpoints = config.etcd_auth.endpoints(&config.etcd)?;
    let local = node.local_addr();
    let id = if config.id.is_empty() {
        let host = hostname().unwrap_or_else(|| "node".into());
        format!("{host}-{}", local.port())
    } else {
        config.id.clone()
    };
    let addr = if !config.advertise.is_empty() {
        config.advertise.clone()
    } else if local.ip().is_unspecified() {
        tracing::warn!(
            "listening on every address and no `advertise` set: registering 127.0.0.1:{}",
            local.port()
        );
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    };
    let key = Role::Node.key(&id);
    tracing::info!(%key, %addr, etcd = ?config.etcd, "registering in etcd");
    let value = Member::new(&id, &addr).value;
    Registration::start(endpoints, key, value, LEASE_TTL).map(Some)
}

/// The host name (gethostname(2)), without pulling in a system-information crate.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Runs a node until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    tether_daemon::rlimit::raise_and_log();
    let node = Node::start(&config)?;
    tracing::info!(
        addr = %node.local_addr(),
        reactors = config.reactor_count(),
        work_us = config.work_us,
        "echo node listening"
    );
    let registration = register(&config, &node)?;
    tether_daemon::notify::ready();
    let watchdog = tether_daemon::watchdog::Watchdog::start(
        "every reactor and the acceptor answered a wake-up",
        node.liveness(),
    );
    tether_daemon::signals::wait_for_stop()?;
    tracing::info!("stopping");
    tether_daemon::notify::stopping();
    drop(watchdog);
    // Out of etcd first: gateways stop sending here as soon as they see the DELETE.
    if let Some(registration) = registration {
        registration.revoke(Duration::from_secs(2));
    }
    node.stop();
    Ok(())
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
