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
//!     // apply(record): the newest snapshot's records, then the journal's, in order
//! #   let _ = record;
//! }
//! journal.append(b"session 42 logged in")?;
//! journal.tick(1_000)?; // once per event-loop iteration, before replying
//! if journal.size_bytes() > 64 << 20 {
//!     let state: Vec<Vec<u8>> = Vec::new(); // the daemon's whole state, one record per item
//!     journal.compact(&state)?;
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
//! its whole current state, as records, to [`Journal::compact`], which moves from generation
//! `g` to `g + 1`:
//!
//! 1. write `snapshot-<g+1>.tmp`, fsync it;
//! 2. rename it to `snapshot-<g+1>.snap`, fsync the directory — the commit point;
//! 3. create `journal-<g+1>.log`, fsync the directory; later appends go there;
//! 4. delete `journal-<g>.log`, `snapshot-<g>.snap` and anything older.
//!
//! # Recovery
//!
//! [`Journal::open`] applies these rules to whatever a crash left behind:
//!
//! 1. **Which generation.** The newest `snapshot-<g>.snap` wins; with no snapshot at all the
//!    generation is 0 and the initial state is empty. A `.snap` only appears through an atomic
//!    rename after its contents were fsynced, so one that exists is complete.
//! 2. **Nothing newer than that.** A `journal-<h>.log` with `h` above the chosen generation is
//!    [`JournalError::OrphanJournal`]: compaction creates it only after its snapshot is
//!    durable, so its snapshot was lost, and replaying it on older state would be wrong.
//! 3. **Check everything before touching anything.** The snapshot is read and checked
//!    completely; any damage in it is [`JournalError::Corrupt`]. The chosen generation's
//!    journal is read and checked completely. A damaged record is a *torn tail* when it is cut
//!    short (short header or short payload), or fails its checksum while being the last record
//!    in the file, or is followed by nothing but zero bytes; any other damage — a bad record
//!    with data after it, or a length field above the 16 MiB limit — is `Corrupt`, naming the
//!    file and byte offset. After an error nothing on disk has been changed.
//! 4. **Repair.** A torn tail is logged (`warn!` with path, generation, offset and bytes
//!    dropped), reported in [`Replay::torn_tail`], and cut off (`ftruncate` + fsync) so new
//!    records follow the last good one; every record before it is replayed. A missing journal
//!    for the chosen generation (a crash between steps 2 and 3 of compaction) is created empty.
//! 5. **Clean up.** Leftover `snapshot-*.tmp` files (a crash during step 1) and all files of
//!    older generations (a crash during step 4) are ignored and removed: the chosen snapshot
//!    already contains them, so every record is applied exactly once.

mod crc32c;
mod error;
mod files;
mod frame;
mod lock;
mod policy;
mod recover;
mod replay;
mod syncer;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use error::JournalError;
pub use frame::{Damage, HEADER_LEN, MAX_RECORD_LEN};
pub use policy::{FsyncPolicy, ParseFsyncPolicyError};
pub use replay::{Records, Replay, TornTail};

use error::io_err;
use files::{journal_path, snapshot_path, snapshot_tmp_path};
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
    _lock: DirLock,
}

/// What a successful [`Journal::compact`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The new generation.
    pub generation: u64,
    /// Records in the new snapshot.
    pub records: u64,
    /// Size of the new snapshot in bytes.
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
    /// fdatasync if a second has passed since the last one (and it has finished). Call it once per event-loop iteration, before replying.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), JournalError> {
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
        Ok(())
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

    /// Writes buffered records to the file and, unless the policy is `No`, fdatasyncs.
    /// Dropping the journal does the same (logging instead of returning an error).
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
        Ok(())
    }

    /// Replaces everything recorded so far with `snapshot`, the daemon's complete current
    /// state, and starts a new generation (steps in the [module documentation](self#compaction)).
    ///
    /// If this fails before the snapshot is renamed into place, the journal carries on in the
    /// current generation as if nothing happened. If it fails after, the journal is poisoned:
    /// recovery will pick one of the two generations consistently, so reopen it.
    pub fn compact<I>(&mut self, snapshot: I) -> Result<Compaction, JournalError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.check()?;
        let next = self
            .generation
            .checked_add(1)
            .ok_or(JournalError::GenerationExhausted)?;
        // Until the rename below, recovery still uses this generation's journal: make it as
        // complete as the policy promises.
        self.flush()?;

        let tmp = snapshot_tmp_path(&self.dir, next);
        let (records, bytes) = match write_snapshot(&tmp, snapshot) {
            Ok(counts) => counts,
            Err(e) => {
                files::remove_quietly(&tmp, "unfinished snapshot");
                return Err(e);
            }
        };
        let snap = snapshot_path(&self.dir, next);
        if let Err(e) = fs::rename(&tmp, &snap) {
            files::remove_quietly(&tmp, "unfinished snapshot");
            return Err(io_err("rename snapshot into place", &snap)(e));
        }

        // From here recovery may already prefer the new snapshot: switch to its journal, or
        // accept nothing more that recovery might not replay.
        if let Err(e) = self.start_generation(next) {
            self.poisoned = true;
            return Err(e);
        }
        self.remove_older_generations();
        tracing::info!(
            generation = next,
            records,
            bytes,
            "journal: compacted into a snapshot"
        );
        Ok(Compaction {
            generation: next,
            records,
            bytes,
        })
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
    pub fn is_poisoned(&self) -> bool {
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

    /// Compaction steps 2 (the directory fsync) and 3.
    fn start_generation(&mut self, next: u64) -> Result<(), JournalError> {
        files::sync_dir(&self.dir)?;
        let path = journal_path(&self.dir, next);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create journal", &path))?;
        files::sync_dir(&self.dir)?;
        self.file = file;
        self.path = path;
        self.generation = next;
        self.written = 0;
        self.unsynced = false;
        self.buf.clear();
        Ok(())
    }

    /// Compaction step 4. Failures are only logged: recovery ignores and removes these files.
    fn remove_older_generations(&self) {
        let listing = match files::list(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(error = %e, "journal: could not list old generations to remove");
                return;
            }
        };
        let older = ..self.generation;
        for &g in listing.journals.range(older) {
            files::remove_quietly(&journal_path(&self.dir, g), "old journal");
        }
        for &g in listing.snapshots.range(older) {
            files::remove_quietly(&snapshot_path(&self.dir, g), "old snapshot");
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.poisoned {
            return;
        }
        if let Err(e) = self.flush() {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "journal: flush on drop failed; records appended since the last successful tick may be lost"
            );
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

/// Compaction step 1: writes and fsyncs a snapshot file; returns (records, bytes).
fn write_snapshot<I>(path: &Path, records: I) -> Result<(u64, u64), JournalError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let file = File::create(path).map_err(io_err("create snapshot", path))?;
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let (mut count, mut bytes) = (0u64, 0u64);
    for record in records {
        let record = record.as_ref();
        let len = record_len(record)?;
        out.write_all(&frame::header(len, record))
            .and_then(|()| out.write_all(record))
            .map_err(io_err("write snapshot", path))?;
        count += 1;
        bytes += (HEADER_LEN + record.len()) as u64;
    }
    let file = out
        .into_inner()
        .map_err(|e| io_err("write snapshot", path)(e.into_error()))?;
    file.sync_all().map_err(io_err("fsync snapshot", path))?;
    Ok((count, bytes))
}
