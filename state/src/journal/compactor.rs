//! The background half of compaction: writing a snapshot to disk on a thread of its own, so
//! that the daemon's event loop never waits for it (Redis rewrites its AOF in a forked child
//! for the same reason).
//!
//! By the time a job gets here the loop has encoded the state into an [`Image`] and moved its
//! appends to `journal-<g>.log` (see [`Journal::start_compaction`](super::Journal::start_compaction)).
//! The thread then
//!
//! 1. checksums the image, writes it to `snapshot-<g>.tmp` and fdatasyncs it;
//! 2. renames it to `snapshot-<g>.snap` and fsyncs the directory — the commit point: from
//!    here recovery starts from this snapshot;
//! 3. removes every file of the generations before `g`, which the snapshot now contains.
//!
//! Until step 2 is durable, recovery replays the previous snapshot and the whole chain of
//! journals after it, so a crash at any instant, or a failed step, loses nothing. One job runs
//! at a time; the [`Journal`](super::Journal) polls for the outcome without blocking, and waits
//! for it in `flush` and on drop.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use super::error::{io_err, JournalError};
use super::files::{self, journal_path, snapshot_path, snapshot_tmp_path};
use super::image::Image;
use super::Compaction;

/// How a background compaction ended.
#[derive(Debug)]
pub enum Compacted {
    /// `snapshot-<generation>.snap` is durable and the older generations are gone.
    Done {
        compaction: Compaction,
        /// Milliseconds the compaction thread took: checksum, write, fsyncs, rename, removals.
        ms: u64,
    },
    /// The snapshot could not be written (or its rename made durable). Nothing is lost: the
    /// older snapshot and the chain of journals after it still hold every record, and the
    /// next compaction tries again.
    Failed {
        compaction: Compaction,
        error: JournalError,
    },
}

/// The compaction being written, if any, or the outcome of the last one until it is taken.
#[derive(Default)]
pub(super) struct Compactor {
    job: Option<(Compaction, Job)>,
}

enum Job {
    Running(JoinHandle<Result<u64, JournalError>>),
    /// The thread's result (milliseconds taken, or the error), not taken yet.
    Ended(Result<u64, JournalError>),
}

impl Compactor {
    /// A compaction is being written, or has ended and its outcome was not taken yet: no
    /// other may start.
    pub(super) fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Starts writing `image` as `snapshot-<compaction.generation>` in `dir`. The caller makes
    /// sure the compactor is not [`busy`](Self::busy).
    pub(super) fn start(&mut self, dir: &Path, compaction: Compaction, image: Image) {
        debug_assert!(!self.busy());
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("journal-compact".into())
            .spawn(move || {
                let started = Instant::now();
                write(&dir, compaction.generation, image)
                    .map(|()| started.elapsed().as_millis() as u64)
            });
        let job = match spawned {
            Ok(thread) => Job::Running(thread),
            Err(source) => Job::Ended(Err(JournalError::Io {
                op: "start the thread to write",
                path: PathBuf::from(format!("snapshot-{}.snap", compaction.generation)),
                source,
            })),
        };
        self.job = Some((compaction, job));
    }

    /// Takes the outcome if the job has ended; never blocks.
    pub(super) fn poll(&mut self) -> Option<Compacted> {
        match &self.job {
            Some((_, Job::Running(thread))) if !thread.is_finished() => None,
            Some(_) => self.wait(),
            None => None,
        }
    }

    /// Blocks until the job (if any) has ended, leaving its outcome to be taken.
    pub(super) fn finish(&mut self) {
        let Some((compaction, job)) = &mut self.job else {
            return;
        };
        if let Job::Running(_) = job {
            if let Job::Running(thread) = std::mem::replace(job, Job::Ended(Ok(0))) {
                *job = Job::Ended(join(thread, compaction.generation));
            }
        }
    }

    /// Waits for the job, if there is one, and takes its outcome.
    pub(super) fn wait(&mut self) -> Option<Compacted> {
        self.finish();
        let (compaction, job) = self.job.take()?;
        let result = match job {
            Job::Ended(result) => result,
            Job::Running(thread) => join(thread, compaction.generation), // finish() ended it
        };
        Some(match result {
            Ok(ms) => Compacted::Done { compaction, ms },
            Err(error) => Compacted::Failed { compaction, error },
        })
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        // Never leave the thread writing into a directory whose lock is about to be released.
        self.finish();
    }
}

/// The thread's result; a panic (there is no known way to cause one) counts as a failure.
fn join(
    thread: JoinHandle<Result<u64, JournalError>>,
    generation: u64,
) -> Result<u64, JournalError> {
    thread.join().unwrap_or_else(|_| {
        Err(JournalError::Io {
            op: "write (the compaction thread panicked)",
            path: PathBuf::from(format!("snapshot-{generation}.snap")),
            source: std::io::Error::other("compaction thread panicked"),
        })
    })
}

/// The thread's work: steps 1 to 3 of the module documentation.
fn write(dir: &Path, generation: u64, image: Image) -> Result<(), JournalError> {
    let tmp = snapshot_tmp_path(dir, generation);
    let snap = snapshot_path(dir, generation);
    let bytes = image.seal();
    let written = File::create(&tmp)
        .map_err(io_err("create snapshot", &tmp))
        .and_then(|mut file| {
            file.write_all(&bytes)
                .map_err(io_err("write snapshot", &tmp))?;
            drop(bytes); // the memory goes back before the (longer) wait for the disk
            file.sync_data().map_err(io_err("fdatasync snapshot", &tmp))
        })
        .and_then(|()| {
            fs::rename(&tmp, &snap).map_err(io_err("rename snapshot into place", &snap))
        });
    if let Err(e) = written {
        files::remove_quietly(&tmp, "unfinished snapshot");
        return Err(e);
    }
    // If this fails the rename may or may not survive a crash; either way recovery finds a
    // consistent state (the new snapshot and its journals, or the old one and all the
    // journals), so only the removals wait for the next compaction.
    files::sync_dir(dir)?;
    remove_older_generations(dir, generation);
    Ok(())
}

/// Step 3. Failures are only logged: recovery ignores and removes these files.
fn remove_older_generations(dir: &Path, generation: u64) {
    let listing = match files::list(dir) {
        Ok(listing) => listing,
        Err(e) => {
            tracing::warn!(error = %e, "journal: could not list old generations to remove");
            return;
        }
    };
    for &g in listing.journals.range(..generation) {
        files::remove_quietly(&journal_path(dir, g), "old journal");
    }
    for &g in listing.snapshots.range(..generation) {
        files::remove_quietly(&snapshot_path(dir, g), "old snapshot");
    }
}
