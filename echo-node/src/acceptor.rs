//! The acceptor thread: takes connections off the listener and gives each to the reactor
//! with the fewest open connections, waking it.
//!
//! A failing `accept` (out of descriptors, say) is logged at most once a second and retried
//! after a short pause, so the thread never spins.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tether_daemon::metrics::{Counter, Gauge};

/// How the acceptor reaches one reactor.
pub(crate) struct ReactorHandle {
    pub incoming: Sender<TcpStream>,
    pub waker: Arc<Waker>,
    pub open: Arc<Gauge>,
}

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const STOP: Token = Token(1);

/// Runs until the stop flag is set and `STOP` is woken; counts its loop iterations in
/// `loops` (for the systemd watchdog, which wakes it through `STOP` too).
pub(crate) fn run(
    mut poll: Poll,
    mut listener: TcpListener,
    reactors: Vec<ReactorHandle>,
    stop: Arc<AtomicBool>,
    loops: Arc<Counter>,
) {
    if let Err(e) = poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
    {
        tracing::error!(error = %e, "cannot register the listener");
        return;
    }
    let mut events = Events::with_capacity(64);
    let mut last_complaint: Option<Instant> = None;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "acceptor poll failed");
            return;
        }
        loops.inc();
        if stop.load(Ordering::Acquire) {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _peer)) => hand_over(stream, &reactors),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    if last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "accept failed; pausing");
                        last_complaint = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    loops.inc(); // retrying is alive, not stuck
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                }
            }
        }
    }
}

fn hand_over(stream: TcpStream, reactors: &[ReactorHandle]) {
    let _ = stream.set_nodelay(true);
    let Some(target) = reactors.iter().min_by_key(|r| r.open.get()) else {
        return;
    };
    target.open.add_shared(1);
    if target.incoming.send(stream).is_err() {
        target.open.sub_shared(1);
        return;
    }
    let _ = target.waker.wake();
}

/// Errors that concern one aborted connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
