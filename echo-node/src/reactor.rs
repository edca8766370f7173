//! One event loop thread: owns its connections, reads, answers, writes.
//!
//! The loop waits on the poll; a wake-up means new sockets from the acceptor, results from
//! the compute pool, or the stop flag. Nothing here is shared with other reactors except the
//! open-connection count the acceptor balances on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tether_daemon::metrics::{Counter, Gauge};
use tether_proto::{Decoder, Frame};

use crate::connection::{Connection, ReadStop};
use crate::echo::{self, Echo, Outcome, Request};
use crate::pool::{Job, PoolHandle};

/// The token of the reactor's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);

const SCRATCH: usize = 64 * 1024;

/// Everything one reactor thread owns.
pub(crate) struct Reactor {
    pub index: usize,
    pub poll: Poll,
    pub incoming: Receiver<TcpStream>,
    pub results: Receiver<Job>,
    pub pool: Option<PoolHandle>,
    /// Open connections, shared with the acceptor (which adds, while this reactor takes away).
    pub open: Arc<Gauge>,
    pub stop: Arc<AtomicBool>,
    pub decoder: Decoder,
    pub max_queued: usize,
    /// Loop iterations so far, read by the systemd watchdog (see [`crate::node`]).
    pub loops: Arc<Counter>,
    conns: Slab<Connection>,
    echo: Echo,
    scratch: Vec<u8>,
    generations: u64,
}

impl Reactor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        incoming: Receiver<TcpStream>,
        results: Receiver<Job>,
        pool: Option<PoolHandle>,
        open: Arc<Gauge>,
        stop: Arc<AtomicBool>,
        decoder: Decoder,
        max_queued: usize,
        publish_room: Option<String>,
        max_body: u32,
    ) -> Reactor {
        let compute = pool.is_some();
        Reactor {
            index,
            poll,
            incoming,
            results,
            pool,
            open,
            stop,
            decoder,
            max_queued,
            loops: Arc::new(Counter::default()),
            conns: Slab::new(),
            echo: Echo::new(index, compute).publishing(publish_room, max_body),
            scratch: vec![0; SCRATCH],
            generations: 0,
        }
    }

    /// Runs until the stop flag is set and the waker fires.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(reactor = self.index, error = %e, "poll failed; reactor stops");
                break;
            }
            self.loops.inc();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => woken = true,
                    Token(slot) => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let until_eagain = event.is_read_closed() || event.is_error();
                        self.on_event(slot, readable, until_eagain);
                    }
                }
            }
            if woken {
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
                self.adopt_new_connections();
                self.deliver_results();
            }
        }
        self.open.sub_shared(self.conns.len() as u64);
    }

    fn adopt_new_connections(&mut self) {
        while let Ok(mut stream) = self.incoming.try_recv() {
            let entry = self.conns.vacant_entry();
            let slot = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(slot), Interest::READABLE)
            {
                tracing::warn!(error = %e, "cannot register a new connection; dropping it");
                self.open.sub_shared(1);
                continue;
            }
            self.generations += 1;
            entry.insert(Connection::new(stream, self.generations));
        }
    }

    /// Handles readiness; a writable event needs no work of its own, because `settle`
    /// flushes and resumes a paused reader.
    fn on_event(&mut self, slot: usize, readable: bool, until_eagain: bool) {
        if !self.conns.contains(slot) {
            return;
        }
        if readable {
            self.read(slot, until_eagain);
        }
        self.settle(slot);
    }

    /// Reads and answers everything the socket has.
    fn read(&mut self, slot: usize, until_eagain: bool) -> ReadStop {
        let Reactor {
            conns,
            scratch,
            echo,
            pool,
            decoder,
            index,
            max_queued,
            ..
        } = self;
        let Some(conn) = conns.get_mut(slot) else {
            return ReadStop::Done;
        };
        let generation = conn.generation;
        conn.read_frames(scratch, decoder, *max_queued, until_eagain, |frame, out| {
            answer(echo, pool.as_ref(), *index, slot, generation, frame, out)
        })
    }

    /// Writes what is queued, resumes a paused reader, closes a finished connection and
    /// keeps the registered interest in step with the output buffer.
    fn settle(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            if conn.flush().is_err() {
                conn.broken = true;
                break;
            }
            let resume = conn.read_paused && conn.pending() < self.max_queued;
            if !resume {
                break;
            }
            conn.read_paused = false;
            // Reading stopped part-way: no edge will announce what is queued.
            if self.read(slot, true) != ReadStop::Paused {
                // One more pass flushes what this read produced.
                if let Some(conn) = self.conns.get_mut(slot) {
                    if conn.flush().is_err() {
                        conn.broken = true;
                    }
                }
                break;
            }
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.finished() {
            self.close(slot);
            return;
        }
        let want = if conn.pending() > 0 {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if want != conn.interest {
            conn.interest = want;
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(slot), want)
                .is_err()
            {
                self.close(slot);
            }
        }
    }

    /// Puts finished compute results into their connections' output buffers.
    fn deliver_results(&mut self) {
        let mut touched = Vec::new();
        while let Ok(job) = self.results.try_recv() {
            let Some(conn) = self.conns.get_mut(job.slot) else {
                continue; // the connection closed while its request was computed
            };
            if conn.generation != job.generation || conn.broken {
                continue;
            }
            let request = Request {
                kind: job.kind,
                id: job.id,
                route: job.route,
                payload: &job.payload,
            };
            self.echo.reply(conn.out(), &request);
            touched.push(job.slot);
        }
        touched.sort_unstable();
        touched.dedup();
        for slot in touched {
            self.settle(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns.try_remove(slot) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.open.sub_shared(1);
        }
    }
}

/// Answers one frame; offloads to the pool when it computes. Returns `false` when the
/// connection must close.
fn answer(
    echo: &mut Echo,
    pool: Option<&PoolHandle>,
    reactor: usize,
    slot: usize,
    generation: u64,
    frame: Frame<'_>,
    out: &mut Vec<u8>,
) -> bool {
    match echo.handle(frame, out) {
        Outcome::Continue => true,
        Outcome::Close => false,
        Outcome::Offload(request) => {
            let Some(pool) = pool else {
                echo.reply(out, &request);
                return true;
            };
            let job = Job {
                reactor,
                slot,
                generation,
                kind: request.kind,
                id: request.id,
                route: request.route,
                payload: request.payload.to_vec(),
            };
            match pool.try_submit(job) {
                Ok(()) => true,
                Err(_) => echo::overloaded(out, &request) == Outcome::Continue,
            }
        }
    }
}
