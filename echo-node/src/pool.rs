//! The compute pool: `workers` threads taking requests from one bounded queue.
//!
//! Each request burns `work_us` of CPU (a stand-in for real work), then goes back to the
//! reactor that owns its connection, through that reactor's channel, with a wake-up. A full
//! queue is reported to the caller at once, never waited on: the reactor answers OVERLOADED.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;
use tether_proto::Kind;

/// A request travelling to a worker and back.
#[derive(Debug)]
pub(crate) struct Job {
    pub reactor: usize,
    /// The connection's slab slot and generation on its reactor.
    pub slot: usize,
    pub generation: u64,
    pub kind: Kind,
    pub id: u64,
    pub route: u64,
    pub payload: Vec<u8>,
}

/// Where finished jobs go: one channel and waker per reactor.
#[derive(Clone)]
pub(crate) struct Returns {
    pub senders: Vec<Sender<Job>>,
    pub wakers: Vec<Arc<Waker>>,
}

/// Submitting side of the pool, cloned into every reactor.
#[derive(Clone)]
pub(crate) struct PoolHandle {
    queue: Sender<Job>,
}

impl PoolHandle {
    /// Queues a job, or hands it back when the queue is full.
    pub(crate) fn try_submit(&self, job: Job) -> Result<(), Job> {
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }
}

/// Starts `workers` threads; they stop once every [`PoolHandle`] is dropped.
pub(crate) fn start(
    workers: usize,
    queue: usize,
    work: Duration,
    returns: Returns,
) -> std::io::Result<(PoolHandle, Vec<JoinHandle<()>>)> {
    let (tx, rx) = crossbeam_channel::bounded(queue);
    let mut threads = Vec::with_capacity(workers);
    for n in 0..workers {
        let rx: Receiver<Job> = rx.clone();
        let returns = returns.clone();
        threads.push(
            thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || {
                    for job in rx.iter() {
                        burn(work);
                        let reactor = job.reactor;
                        let (Some(sender), Some(waker)) =
                            (returns.senders.get(reactor), returns.wakers.get(reactor))
                        else {
                            continue;
                        };
                        if sender.send(job).is_err() {
                            return; // the reactor is gone: the node is stopping
                        }
                        let _ = waker.wake();
                    }
                })?,
        );
    }
    Ok((PoolHandle { queue: tx }, threads))
}

/// Spins for `work` so the cost is CPU, like real request handling, not a sleep.
fn burn(work: Duration) {
    let start = Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}
