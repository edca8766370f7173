//! Acceptor threads: block in `accept`, set TCP_NODELAY and non-blocking, and hand each
//! socket to the reactor with the fewest open connections over a channel, waking it.
//!
//! Past `max_connections` a new socket gets ERROR OVERLOADED (on a plain TCP listener; on a
//! TLS or WebSocket one, whose client expects a handshake first, it is just closed). When the process
//! runs out of descriptors (EMFILE/ENFILE), one descriptor kept in reserve is released to
//! accept and close the waiting connection, so the listener does not spin on an error it
//! cannot clear; the event is logged at most once a second.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::Waker;
use tether_proto::{encode, ErrorCode};

use crate::balance::client_key;
use crate::metrics::GatewayInfo;
use crate::transport::Transport;

/// How an acceptor reaches one reactor.
#[derive(Clone)]
pub(crate) struct ReactorDoor {
    pub incoming: Sender<(mio::net::TcpStream, u64, Transport)>,
    pub waker: Arc<Waker>,
    pub open: Arc<AtomicUsize>,
}

/// Everything one acceptor thread needs.
pub(crate) struct Acceptor {
    pub listener: Arc<TcpListener>,
    /// What the listener speaks; the reactor starts the connection's layers for it.
    pub transport: Transport,
    pub reactors: Vec<ReactorDoor>,
    pub stop: Arc<AtomicBool>,
    pub info: Arc<GatewayInfo>,
}

impl Acceptor {
    pub(crate) fn run(self) {
        let mut reserve = File::open("/dev/null").ok();
        let mut last_complaint: Option<Instant> = None;
        let overloaded = overloaded_frame();
        loop {
            let accepted = self.listener.accept();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer, &overloaded),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhaustion(&e) => {
                    if complain(&mut last_complaint) {
                        tracing::warn!(
                            error = %e,
                            "out of file descriptors (RLIMIT_NOFILE): shedding new connections"
                        );
                    }
                    // Free the reserve to take the waiting connection off the queue, close
                    // it, and take the reserve back.
                    drop(reserve.take());
                    if let Ok((stream, _)) = self.listener.accept() {
                        drop(stream);
                    }
                    reserve = File::open("/dev/null").ok();
                    self.info.shed_out_of_descriptors.inc_shared();
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    if complain(&mut last_complaint) {
                        tracing::warn!(error = %e, "accept failed; pausing");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, overloaded: &[u8]) {
        let open: usize = self
            .reactors
            .iter()
            .map(|r| r.open.load(Ordering::Relaxed))
            .sum();
        let max = self.info.max_connections.load(Ordering::Relaxed);
        if open as u64 >= max {
            let _ = stream.set_nonblocking(true);
            if self.transport == Transport::Tcp {
                let _ = (&stream).write(overloaded);
            }
            self.info.rejected_at_accept.inc_shared();
            return;
        }
        if stream.set_nodelay(true).is_err() || stream.set_nonblocking(true).is_err() {
            return;
        }
        let Some(target) = self
            .reactors
            .iter()
            .min_by_key(|r| r.open.load(Ordering::Relaxed))
        else {
            return;
        };
        target.open.fetch_add(1, Ordering::Relaxed);
        let key = client_key(peer.ip());
        if target
            .incoming
            .send((mio::net::TcpStream::from_std(stream), key, self.transport))
            .is_err()
        {
            target.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let _ = target.waker.wake();
    }
}

fn overloaded_frame() -> Vec<u8> {
    let mut out = Vec::new();
    encode::error(
        &mut out,
        0,
        ErrorCode::Overloaded,
        "gateway at max_connections",
    );
    out
}

fn complain(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
    if due {
        *last = Some(Instant::now());
    }
    due
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Errors that concern one aborted connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
