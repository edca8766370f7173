//! The engine thread: the event loop hands it one batch of operations per iteration over a
//! channel and goes on; the thread runs them (merging batches that queued up meanwhile into
//! one round trip), sends the answers back with the batch, and wakes the loop. No engine
//! call ever blocks the event loop.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::bus::BusMessage;
use super::engine::{Engine, EngineError, Op, Outcome};
use super::Context;

/// Operations and, for each, what the loop does with its answer.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub ops: Vec<Op>,
    pub contexts: Vec<Context>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn add(&mut self, op: Op, context: Context) {
        self.ops.push(op);
        self.contexts.push(context);
    }

    fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
        self.contexts.extend(other.contexts);
    }
}

/// What reaches the loop from the fleet's threads.
#[derive(Debug)]
pub(crate) enum FleetEvent {
    Answered {
        batch: Batch,
        results: Vec<Result<Outcome, EngineError>>,
    },
    Bus(BusMessage),
    /// The bus subscription came up (true) or was lost (false).
    BusUp(bool),
}

/// The engine thread's handle; the thread ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Worker {
    batches: Option<Sender<Batch>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Worker {
    pub(crate) fn start(
        mut engine: Box<dyn Engine>,
        events: Sender<FleetEvent>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Worker> {
        let (batches, incoming): (Sender<Batch>, Receiver<Batch>) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("fleet-engine".into())
            .spawn(move || {
                if let Err(e) = engine.connect() {
                    tracing::warn!(error = %e, "fleet engine: not reachable at start; every batch tries again");
                }
                while let Ok(mut batch) = incoming.recv() {
                    while let Ok(more) = incoming.try_recv() {
                        batch.append(more);
                    }
                    let started = std::time::Instant::now();
                    let results = engine.run(&batch.ops);
                    let failed = results.iter().filter(|r| r.is_err()).count();
                    if failed > 0 {
                        let first = results.iter().find_map(|r| r.as_ref().err());
                        tracing::warn!(
                            operations = results.len(),
                            failed,
                            ms = started.elapsed().as_millis() as u64,
                            error = ?first,
                            "fleet engine: operations failed"
                        );
                    }
                    if events
                        .send(FleetEvent::Answered { batch, results })
                        .is_err()
                    {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(Worker {
            batches: Some(batches),
            thread: Some(thread),
        })
    }

    /// Hands a batch to the thread.
    pub(crate) fn submit(&self, batch: Batch) {
        if let Some(batches) = &self.batches {
            let _ = batches.send(batch);
        }
    }
}
