//! An append-only journal with a Redis-style fsync policy and snapshot compaction: how the
//! state daemon's sessions and unacknowledged pushes survive a restart, SIGKILL included.
//!
//! Records are opaque bytes — the daemon serializes its own record types. The journal frames,
//! checksums, buffers, fsyncs, compacts and recovers them; it never looks inside.
//!
//! ```no_run
//! use tether_state::journal::{FsyncPolicy, Journal};
//!
//! # fn main() -> Result<(), tether_state::journal::JournalError> {
//! let (mut journal, replay) = Journal::open("/var/lib/tether-state", FsyncPolicy::EverySec)?;
//! for record in &replay {
//!     // apply(record): the newest snapshot's records, then the journals', in order
//! #   let _ = record;
//! }
//! journal.append(b"session 42 logged in")?;
//! // Once per event-loop iteration, before replying; it also reports a finished compaction.
//! if let Some(compacted) = journal.tick(1_000)? {
//!     println!("{compacted:?}");
//! }
//! if journal.size_bytes() > 64 << 20 && !journal.is_compacting() {
//!     let state: Vec<Vec<u8>> = Vec::new(); // the daemon's whole state, one record per item
//!     journal.start_compaction(&state)?; // the snapshot is written on a thread of its own
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # On disk
//!
//! ```text
//! DIR/lock                 flock(2)ed while a Journal is open: one writer per directory
//! DIR/snapshot-<g>.snap    the complete state at the start of generation g (g ≥ 1)
//! DIR/journal-<g>.log      the records appended during generation g
//! DIR/snapshot-<g>.tmp     a snapshot being written; never read, removed at open
//! ```
//!
//! The state is the newest snapshot `snapshot-<s>.snap` (or nothing, `s` = 0, before the first
//! one) followed by a **chain** of journals, `journal-<s>.log`, `journal-<s+1>.log`, … up to
//! the newest, which is the one appended to. Usually the chain is one journal long: it is
//! longer only while a compaction's snapshot is being written (or after one failed), because
//! a compaction starts the next journal at once and only writes its snapshot afterwards.
//!
//! Snapshots and journals are both a plain sequence of records, nothing else (no file header):
//!
//! ```text
//! offset size field
//! 0      4    len      u32 little-endian: payload length, at most MAX_RECORD_LEN (16 MiB)
//! 4      4    crc      u32 little-endian: CRC-32C of the 4 len bytes followed by the payload
//! 8      len  payload
//! ```
//!
//! The checksum covers the length too, so a zero-filled tail is never read as empty records.
//!
//! # Fsync policies, and what each can lose
//!
//! Records are encoded into a userspace buffer. `Always` writes and fdatasyncs it inside every
//! `append`; `EverySec` and `No` write it to the file at every [`Journal::tick`] and
//! [`Journal::flush`] (and whenever it reaches 64 KiB). `EverySec` fdatasyncs at most once a
//! second, on a background thread that `tick` hands a duplicate of the file descriptor to
//! (`syncer.rs`), so the caller's loop never waits for the disk; `flush` and drop fdatasync
//! on the caller's thread.
//!
//! | policy     | SIGKILL of the process                      | machine crash or power loss |
//! |------------|---------------------------------------------|-----------------------------|
//! | `always`   | nothing `append` returned `Ok` for          | nothing `append` returned `Ok` for |
//! | `everysec` | records appended since the last `tick`/`flush` (still in the buffer) | also records written since the last completed fdatasync: about 1 s, plus the time a sync takes (a sync still running when the next is due postpones it) |
//! | `no`       | records appended since the last `tick`/`flush` (still in the buffer) | also whatever the kernel had not written back yet (Linux: up to ~30 s by default) |
//!
//! A SIGKILL only destroys the process's memory: bytes already `write(2)`n to the file are in
//! the kernel's page cache and reach the disk anyway. Only a machine crash loses data that was
//! written but not fsynced. So a daemon that calls `tick` at the end of every event-loop
//! iteration, *before* sending the replies that acknowledge what it appended (Redis's own
//! order), loses nothing acknowledged to a SIGKILL under any policy; the policy only chooses
//! what a machine crash can take. A record whose append was cut short by a crash is dropped as
//! a torn tail at recovery; it was never acknowledged. When `append`, `tick` or `flush` return
//! an error, whether the affected records reach the disk is unknown — as with any database.
//!
//! # Compaction
//!
//! The daemon decides when (say, when [`Journal::size_bytes`] passes a threshold) and passes
//! its whole current state, as records, to [`Journal::start_compaction`], which moves from
//! generation `g` to `g + 1`. On the caller's thread, which waits for the disk here only for
//! the fdatasync of the journal it leaves (what `EverySec` had not synced yet) and for one
//! directory fsync:
//!
//! 1. encode the records into one buffer in memory, framed as the snapshot file will hold
//!    them (`image.rs`; CPU only — the checksums are left to the compaction thread);
//! 2. write out and fdatasync `journal-<g>.log`, under every policy: recovery will replay it
//!    before `journal-<g+1>.log`, so a newer journal must never outlive a crash that this
//!    one's tail did not;
//! 3. create `journal-<g+1>.log`, fsync the directory; every later append goes there.
//!
//! Then on a thread of its own (`compactor.rs`; one compaction at a time):
//!
//! 4. checksum the buffer, write it to `snapshot-<g+1>.tmp`, fdatasync it;
//! 5. rename it to `snapshot-<g+1>.snap`, fsync the directory — the commit point;
//! 6. delete `journal-<g>.log`, `snapshot-<g>.snap` and anything older.
//!
//! [`Journal::tick`] reports the outcome once the thread is done, without blocking;
//! [`Journal::flush`] and drop wait for it. Until step 5 is durable the directory holds the
//! old snapshot and a chain of two journals (or more, if compactions failed), which is all
//! recovery needs: a crash at any instant, or a failed step 4–6, loses nothing. A failure is
//! reported as [`Compacted::Failed`]; the journal carries on in `g + 1` and the next
//! compaction tries again. The buffer of step 1 is held until step 4 has written it: memory
//! about the size of the snapshot, for as long as the write takes.
//!
//! # Recovery
//!
//! [`Journal::open`] applies these rules to whatever a crash left behind:
//!
//! 1. **Which snapshot.** The newest `snapshot-<s>.snap` is the starting state; with no
//!    snapshot at all `s` is 0 and the initial state is empty. A `.snap` only appears through
//!    an atomic rename after its contents were fsynced, so one that exists is complete.
//! 2. **Which journals.** Every `journal-<h>.log` with `h ≥ s` is replayed, in order: the chain
//!    `journal-<s>.log`, `journal-<s+1>.log`, … must have no hole. A missing one with a newer
//!    one present is [`JournalError::JournalGap`]: a journal is created before its snapshot is
//!    written and deleted only after a newer snapshot is durable, so a hole means a file was
//!    lost, and replaying the journals after it would be wrong. With no journal at all from
//!    `s` on (a fresh directory, or a crash inside an older version's compaction, which
//!    created the journal after the snapshot), `journal-<s>.log` is created empty.
//! 3. **Check everything before touching anything.** The snapshot is read and checked
//!    completely; any damage in it is [`JournalError::Corrupt`]. Every journal of the chain is
//!    read and checked completely. A damaged record in the newest journal is a *torn tail*
//!    when it is cut short (short header or short payload), or fails its checksum while being
//!    the last record in the file, or is followed by nothing but zero bytes; any other damage
//!    — a bad record with data after it, a length field above the 16 MiB limit, or any damage
//!    at all in a journal that is not the newest (each was fdatasynced before the next one
//!    was started) — is `Corrupt`, naming the file and byte offset. After an error nothing on
//!    disk has been changed.
//! 4. **Repair.** A torn tail is logged (`warn!` with path, generation, offset and bytes
//!    dropped), reported in [`Replay::torn_tail`], and cut off (`ftruncate` + fsync) so new
//!    records follow the last good one; every record before it is replayed. Appends continue
//!    in the newest journal.
//! 5. **Clean up.** Leftover `snapshot-*.tmp` files (a crash during compaction step 4) and all
//!    files of generations before `s` (a crash during step 6) are ignored and removed: the
//!    chosen snapshot already contains them, so every record is applied exactly once.

mod compactor;
mod crc32c;
mod error;
mod files;
pub mod frame;
mod image;
mod lock;
mod policy;
mod recover;
mod replay;
mod syncer;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use compactor::Compacted;
pub use error::JournalError;
pub use frame::{Damage, HEADER_LEN, MAX_RECORD_LEN};
pub use policy::{FsyncPolicy, ParseFsyncPolicyError};
pub use replay::{Records, Replay, TornTail};

use compactor::Compactor;
use error::io_err;
use files::journal_path;
use image::Image;
pub(crate) use image::ImageWriter;
use lock::DirLock;
use syncer::Syncer;

/// `EverySec` and `No` write their buffer to the file once it holds this much, tick or not.
const WRITE_THRESHOLD: usize = 64 * 1024;

/// `EverySec`'s fdatasync interval.
const EVERYSEC_INTERVAL_MS: u64 = 1_000;

/// An open journal directory. See the [module documentation](self).
pub struct Journal {
    dir: PathBuf,
    policy: FsyncPolicy,
    generation: u64,
    /// `journal-<generation>.log`, opened with `O_APPEND`.
    path: PathBuf,
    file: File,
    /// Bytes in the file: whole records only.
    written: u64,
    /// Encoded records not yet written to the file.
    buf: Vec<u8>,
    /// Bytes were written since the last fdatasync.
    unsynced: bool,
    /// When `tick` last fdatasynced, for `EverySec`.
    last_sync_ms: Option<u64>,
    /// A failure left the file in a state the journal cannot vouch for.
    poisoned: bool,
    /// `EverySec`'s background fdatasync (none under the other policies).
    syncer: Option<Syncer>,
    /// The snapshot being written in the background, if any. Declared before the lock so that
    /// it is joined before the lock is released.
    compactor: Compactor,
    /// The last snapshot's size: what the next one reserves up front.
    last_snapshot_bytes: u64,
    _lock: DirLock,
}

/// A compaction: the snapshot that [`Journal::start_compaction`] encoded and hands to the
/// compaction thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The new generation.
    pub generation: u64,
    /// Records in the new snapshot.
    pub records: u64,
    /// Size of the new snapshot in bytes (and of the buffer held until it is written).
    pub bytes: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, recovers it as described in the
    /// [module documentation](self#recovery), and returns it with the records to replay.
    pub fn open(
        dir: impl AsRef<Path>,
        policy: FsyncPolicy,
    ) -> Result<(Journal, Replay), JournalError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock = DirLock::acquire(&dir)?;
        let recovered = recover::recover(&dir)?;
        let mut journal = Journal {
            dir,
            policy,
            generation: recovered.generation,
            path: recovered.path,
            file: recovered.file,
            written: recovered.file_len,
            buf: Vec::with_capacity(WRITE_THRESHOLD),
            unsynced: false,
            last_sync_ms: None,
            poisoned: false,
            syncer: None,
            compactor: Compactor::default(),
            last_snapshot_bytes: 0,
            _lock: lock,
        };
        journal.start_syncer();
        Ok((journal, recovered.replay))
    }

    /// Appends one record. Under `Always` it is written and fdatasynced before this returns;
    /// otherwise it is buffered until the next [`tick`](Self::tick) or [`flush`](Self::flush).
    pub fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        self.check()?;
        let len = record_len(record)?;
        let start = self.buf.len();
        frame::encode(len, record, &mut self.buf);
        match self.policy {
            FsyncPolicy::Always => {
                if let Err(e) = self.write_out() {
                    self.buf.truncate(start);
                    return Err(e);
                }
                self.sync()
            }
            FsyncPolicy::EverySec | FsyncPolicy::No if self.buf.len() >= WRITE_THRESHOLD => {
                self.write_out()
            }
            FsyncPolicy::EverySec | FsyncPolicy::No => Ok(()),
        }
    }

    /// The daemon's periodic call, with the same millisecond clock it gives the timer wheel:
    /// writes buffered records to the file and, under `EverySec`, starts a background
    /// fdatasync if a second has passed since the last one (and it has finished). Call it
    /// once per event-loop iteration, before replying.
    ///
    /// Returns how the compaction in flight ended, once it has (never blocking for it).
    pub fn tick(&mut self, now_ms: u64) -> Result<Option<Compacted>, JournalError> {
        self.check()?;
        self.write_out()?;
        if self.policy == FsyncPolicy::EverySec && self.unsynced {
            let due = match self.last_sync_ms {
                None => true,
                Some(last) => now_ms < last || now_ms - last >= EVERYSEC_INTERVAL_MS,
            };
            if due && self.sync_in_background() {
                self.last_sync_ms = Some(now_ms);
            }
        }
        Ok(self.compactor.poll())
    }

    /// Hands the fdatasync to the syncer thread; `false` when it is still busy with the last
    /// one (try again next tick). Without a syncer thread, syncs here.
    fn sync_in_background(&mut self) -> bool {
        let Some(syncer) = &self.syncer else {
            return self.sync().is_ok();
        };
        match self.file.try_clone() {
            Ok(dup) => {
                let taken = syncer.request(dup);
                if taken {
                    self.unsynced = false;
                }
                taken
            }
            Err(_) => self.sync().is_ok(),
        }
    }

    fn start_syncer(&mut self) {
        if self.policy != FsyncPolicy::EverySec {
            self.syncer = None;
            return;
        }
        if self.syncer.is_none() {
            match Syncer::start() {
                Ok(syncer) => self.syncer = Some(syncer),
                Err(e) => {
                    tracing::warn!(error = %e, "journal: no fsync thread; everysec syncs on the caller's thread")
                }
            }
        }
    }

    /// Writes buffered records to the file and, unless the policy is `No`, fdatasyncs; then
    /// waits for a compaction in flight to end (its outcome is still reported by the next
    /// [`tick`](Self::tick)). Dropping the journal does the same (logging instead of
    /// returning an error).
    pub fn flush(&mut self) -> Result<(), JournalError> {
        self.check()?;
        self.write_out()?;
        if self.policy != FsyncPolicy::No {
            if self.syncer.is_some() {
                // A background sync may still be running: sync here regardless.
                self.unsynced = true;
            }
            self.sync()?;
        }
        self.compactor.finish();
        Ok(())
    }

    /// Starts replacing everything recorded so far with `snapshot`, the daemon's complete
    /// current state, and moves to a new generation (steps 1–3 of the
    /// [module documentation](self#compaction) here; the snapshot is written on the
    /// compaction thread, and [`tick`](Self::tick) reports how that ended).
    ///
    /// Returns what will be written. An error leaves the journal in the current generation
    /// as if nothing had happened — unless it is the fdatasync of the current journal, which
    /// poisons it as any failed fdatasync does. [`JournalError::CompactionInFlight`] while the
    /// previous compaction has not ended, or has but `tick` has not reported it yet.
    pub fn start_compaction<I>(&mut self, snapshot: I) -> Result<Compaction, JournalError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.start_compaction_with(|writer| {
            for record in snapshot {
                writer.record(|out| out.extend_from_slice(record.as_ref()));
            }
        })
    }

    /// [`start_compaction`](Self::start_compaction) with the state written by `snapshot`,
    /// record by record, straight into the snapshot's image: no buffer per record.
    pub(crate) fn start_compaction_with(
        &mut self,
        snapshot: impl FnOnce(&mut ImageWriter),
    ) -> Result<Compaction, JournalError> {
        self.check()?;
        if self.compactor.busy() {
            return Err(JournalError::CompactionInFlight);
        }
        let next = self
            .generation
            .checked_add(1)
            .ok_or(JournalError::GenerationExhausted)?;
        let reserve = self.last_snapshot_bytes + self.last_snapshot_bytes / 8;
        let image = Image::build(usize::try_from(reserve).unwrap_or(0), snapshot)?;
        let compaction = Compaction {
            generation: next,
            records: image.records(),
            bytes: image.len(),
        };
        // Recovery replays this journal before the next one until the snapshot is durable:
        // make it complete on disk before anything can reach the next one, whatever the
        // policy (a background sync may still be running: sync here regardless).
        self.write_out()?;
        self.unsynced = true;
        self.sync()?;
        self.start_generation(next)?;
        self.last_snapshot_bytes = compaction.bytes;
        self.compactor.start(&self.dir, compaction, image);
        Ok(compaction)
    }

    /// [`start_compaction`](Self::start_compaction), then waits for the snapshot to be
    /// written: for tests and tools. A daemon's loop calls `start_compaction` and learns the
    /// outcome from [`tick`](Self::tick).
    ///
    /// If writing the snapshot fails, the error is returned but the journal has moved to the
    /// new generation all the same, and nothing is lost (see [`Compacted::Failed`]).
    pub fn compact<I>(&mut self, snapshot: I) -> Result<Compaction, JournalError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.start_compaction(snapshot)?;
        match self.compactor.wait() {
            Some(Compacted::Done { compaction, .. }) => Ok(compaction),
            Some(Compacted::Failed { error, .. }) => Err(error),
            None => Err(JournalError::CompactionInFlight), // unreachable: one was started
        }
    }

    /// A compaction was started and [`tick`](Self::tick) has not reported its end yet.
    pub fn is_compacting(&self) -> bool {
        self.compactor.busy()
    }

    /// Bytes in the current generation's journal, buffered ones included: what compaction
    /// would reclaim.
    pub fn size_bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// The current generation (0 until the first compaction).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Changes the policy (a config reload). Buffered records are written out first, and
    /// fdatasynced when switching to `Always`.
    pub fn set_policy(&mut self, policy: FsyncPolicy) -> Result<(), JournalError> {
        self.check()?;
        self.write_out()?;
        if policy == FsyncPolicy::Always {
            if self.syncer.is_some() {
                self.unsynced = true;
            }
            self.sync()?;
        }
        self.policy = policy;
        self.start_syncer();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True once a failure has made the journal refuse every call (see
    /// [`JournalError::Poisoned`]).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check(&mut self) -> Result<(), JournalError> {
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::take_failure) {
            self.poisoned = true;
            return Err(io_err("fdatasync (background)", &self.path)(e));
        }
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        Ok(())
    }

    /// Writes the buffer to the file. A failed write is rolled back so that no partial record
    /// sits in front of later ones; the buffer is kept for the next attempt.
    fn write_out(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            if self.file.set_len(self.written).is_err() {
                self.poisoned = true;
            }
            return Err(io_err("append to", &self.path)(e));
        }
        self.written += self.buf.len() as u64;
        self.unsynced = true;
        self.buf.clear();
        if self.buf.capacity() > 4 * WRITE_THRESHOLD {
            // One huge record must not pin its size in memory for ever.
            self.buf = Vec::with_capacity(WRITE_THRESHOLD);
        }
        Ok(())
    }

    /// fdatasyncs what was written. A failure poisons the journal: after a failed fsync Linux
    /// may have dropped the dirty pages, and a retry can report success for data that never
    /// reached the disk.
    fn sync(&mut self) -> Result<(), JournalError> {
        if !self.unsynced {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(io_err("fdatasync", &self.path)(e));
        }
        self.unsynced = false;
        Ok(())
    }

    /// Compaction step 3. On failure the journal stays in the current generation, with no
    /// new file left behind if it can help it.
    fn start_generation(&mut self, next: u64) -> Result<(), JournalError> {
        let path = journal_path(&self.dir, next);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create journal", &path))?;
        if let Err(e) = files::sync_dir(&self.dir) {
            files::remove_quietly(&path, "journal that could not be made durable");
            return Err(e);
        }
        self.file = file;
        self.path = path;
        self.generation = next;
        self.written = 0;
        self.unsynced = false;
        self.buf.clear();
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.poisoned {
            if let Err(e) = self.flush() {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "journal: flush on drop failed; records appended since the last successful tick may be lost"
                );
            }
        }
        // Whatever happened above, the compaction thread is done before the lock goes.
        match self.compactor.wait() {
            Some(Compacted::Done { compaction, ms }) => tracing::info!(
                generation = compaction.generation,
                records = compaction.records,
                bytes = compaction.bytes,
                ms,
                "journal: compacted into a snapshot"
            ),
            Some(Compacted::Failed { compaction, error }) => tracing::warn!(
                generation = compaction.generation,
                error = %error,
                "journal: compaction failed; the journals since the previous snapshot still hold every record"
            ),
            None => {}
        }
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("policy", &self.policy)
            .field("generation", &self.generation)
            .field("written", &self.written)
            .field("buffered", &self.buf.len())
            .field("unsynced", &self.unsynced)
            .field("poisoned", &self.poisoned)
            .field("compacting", &self.compactor.busy())
            .finish()
    }
}

/// A record's length as written in its header, if it is within the limit.
fn record_len(record: &[u8]) -> Result<u32, JournalError> {
    u32::try_from(record.len())
        .ok()
        .filter(|&len| len <= MAX_RECORD_LEN)
        .ok_or_else(|| JournalError::too_large(record.len()))
}
