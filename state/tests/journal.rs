//! The journal seen from the daemon's side: append and reopen under each policy, compaction
//! (in the background, appends going on meanwhile), and recovery from every kind of damage a
//! crash (or worse) can leave behind, at every step of a compaction.

mod common;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{record, TempDir};
use proptest::prelude::*;
use tether_state::journal::{
    Compacted, Damage, FsyncPolicy, Journal, JournalError, Replay, HEADER_LEN, MAX_RECORD_LEN,
};

const POLICIES: [FsyncPolicy; 3] = [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No];

fn records(replay: &Replay) -> Vec<Vec<u8>> {
    replay.iter().map(<[u8]>::to_vec).collect()
}

fn framed_len(records: &[Vec<u8>]) -> u64 {
    records.iter().map(|r| (HEADER_LEN + r.len()) as u64).sum()
}

/// Writes `n` records with `Always` into a fresh generation-0 journal and closes it.
fn journal_with(dir: &TempDir, n: u64) -> Vec<Vec<u8>> {
    let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert!(replay.is_empty());
    let written: Vec<Vec<u8>> = (0..n).map(record).collect();
    for r in &written {
        journal.append(r).unwrap();
    }
    written
}

#[test]
fn round_trip_under_each_policy() {
    for policy in POLICIES {
        let dir = TempDir::new(&format!("round-trip-{policy}"));
        let (mut journal, replay) = Journal::open(dir.path(), policy).unwrap();
        assert!(replay.is_empty());
        assert_eq!((replay.generation(), replay.torn_tail), (0, None));
        let first: Vec<Vec<u8>> = (0..200).map(record).collect();
        for (i, r) in first.iter().enumerate() {
            journal.append(r).unwrap();
            if i % 50 == 0 {
                journal.tick(i as u64 * 10).unwrap();
            }
        }
        assert_eq!(journal.size_bytes(), framed_len(&first));
        drop(journal); // flushes what the last tick left in the buffer

        let (mut journal, replay) = Journal::open(dir.path(), policy).unwrap();
        assert_eq!(records(&replay), first, "{policy}");
        assert_eq!((replay.journal_len(), replay.snapshot_len()), (200, 0));
        assert_eq!(replay.torn_tail, None);
        assert_eq!(journal.size_bytes(), framed_len(&first));
        journal.append(b"after reopen").unwrap();
        journal.flush().unwrap();
        drop(journal);

        let (_journal, replay) = Journal::open(dir.path(), policy).unwrap();
        assert_eq!(replay.len(), 201);
        assert_eq!(replay.iter().last(), Some(&b"after reopen"[..]));
        assert_eq!(dir.files(), ["journal-0.log"]);
    }
}

#[test]
fn compaction_replays_snapshot_then_journal() {
    let dir = TempDir::new("compaction");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::EverySec).unwrap();
    for r in [&b"a"[..], b"b", b"c"] {
        journal.append(r).unwrap();
    }
    let snapshot: Vec<Vec<u8>> = vec![b"state 1".to_vec(), Vec::new(), b"state 3".to_vec()];
    let done = journal.compact(&snapshot).unwrap();
    assert_eq!((done.generation, done.records), (1, 3));
    assert_eq!(done.bytes, framed_len(&snapshot));
    assert_eq!((journal.generation(), journal.size_bytes()), (1, 0));
    assert_eq!(dir.files(), ["journal-1.log", "snapshot-1.snap"]);
    journal.append(b"d").unwrap();
    journal.append(b"e").unwrap();
    drop(journal);

    let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::EverySec).unwrap();
    let expected: Vec<&[u8]> = vec![b"state 1", b"", b"state 3", b"d", b"e"];
    assert_eq!(replay.iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        (
            replay.generation(),
            replay.snapshot_len(),
            replay.journal_len()
        ),
        (1, 3, 2)
    );

    // A second compaction, from borrowed slices this time, and an empty state.
    journal.compact(std::iter::empty::<&[u8]>()).unwrap();
    journal.append(b"f").unwrap();
    drop(journal);
    assert_eq!(dir.files(), ["journal-2.log", "snapshot-2.snap"]);
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::EverySec).unwrap();
    assert_eq!(replay.iter().collect::<Vec<_>>(), [b"f"]);
    assert_eq!((replay.generation(), replay.snapshot_len()), (2, 0));
}

/// Damages the last of six records in each way a crash can and checks that exactly that
/// record is dropped, loudly, and that the journal carries on cleanly after it.
#[test]
fn torn_tail_in_each_form_is_dropped_alone() {
    type Damager = fn(&mut Vec<u8>, usize);
    let cases: [(&str, Damager); 5] = [
        ("truncated header", |f, last| f.truncate(last + 3)),
        ("truncated payload", |f, last| {
            f.truncate(last + HEADER_LEN + 2)
        }),
        ("only the length written", |f, last| f.truncate(last + 4)),
        ("flipped crc byte", |f, last| f[last + 5] ^= 0x40),
        ("flipped payload byte", |f, _| {
            *f.last_mut().unwrap() ^= 0x01
        }),
    ];
    for (name, damage) in cases {
        let dir = TempDir::new("torn");
        let written = journal_with(&dir, 6);
        let path = dir.file("journal-0.log");
        let good_len = framed_len(&written[..5]);
        let mut bytes = fs::read(&path).unwrap();
        damage(&mut bytes, good_len as usize);
        fs::write(&path, &bytes).unwrap();

        let warnings = Capture::default();
        let (mut journal, replay) = tracing::subscriber::with_default(warnings.clone(), || {
            Journal::open(dir.path(), FsyncPolicy::Always).unwrap()
        });
        let warnings = warnings.0.lock().unwrap().clone();
        assert_eq!(warnings.len(), 1, "{name}: {warnings:?}");
        for field in [
            format!("offset={good_len} "),
            "generation=0 ".into(),
            "bytes_dropped=".into(),
        ] {
            assert!(
                warnings[0].contains(&field),
                "{name}: {field} missing in {}",
                warnings[0]
            );
        }
        assert_eq!(records(&replay), &written[..5], "{name}");
        let torn = replay
            .torn_tail
            .unwrap_or_else(|| panic!("{name}: no torn tail reported"));
        assert_eq!(torn.offset, good_len, "{name}");
        assert_eq!(torn.bytes_dropped, bytes.len() as u64 - good_len, "{name}");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            good_len,
            "{name}: file truncated"
        );

        journal.append(b"new").unwrap();
        drop(journal);
        let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
        let mut expected = written[..5].to_vec();
        expected.push(b"new".to_vec());
        assert_eq!(records(&replay), expected, "{name}");
        assert_eq!(replay.torn_tail, None, "{name}");
    }
}

/// A `tracing` subscriber that keeps every warning, rendered as `field=value ` pairs.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut line = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn fmt::Debug| {
                    line += &format!("{}={value:?} ", field.name());
                },
            );
            self.0.lock().unwrap().push(line);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn zero_filled_tail_is_a_torn_tail() {
    let dir = TempDir::new("zero-tail");
    let written = journal_with(&dir, 3);
    let path = dir.file("journal-0.log");
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, &[0u8; 4096]).unwrap();
    drop(file);
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(records(&replay), written);
    assert_eq!(replay.torn_tail.unwrap().bytes_dropped, 4096);
}

#[test]
fn corruption_before_good_records_is_a_hard_error() {
    let dir = TempDir::new("mid-file");
    let written = journal_with(&dir, 6);
    let path = dir.file("journal-0.log");
    let mut bytes = fs::read(&path).unwrap();
    let third = framed_len(&written[..2]) as usize;
    bytes[third + HEADER_LEN] ^= 0x01; // first payload byte of record 2 (of 6)
    fs::write(&path, &bytes).unwrap();

    for _ in 0..2 {
        match Journal::open(dir.path(), FsyncPolicy::Always) {
            Err(JournalError::Corrupt {
                path: p,
                offset,
                damage,
            }) => {
                assert_eq!(p, path);
                assert_eq!(offset, third as u64);
                assert!(matches!(damage, Damage::CrcMismatch { .. }));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Refusing changed nothing: the operator gets the file exactly as it was.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }
    let message = Journal::open(dir.path(), FsyncPolicy::Always)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("journal-0.log") && message.contains(&third.to_string()),
        "{message}"
    );
}

#[test]
fn absurd_length_field_is_a_hard_error_even_at_the_tail() {
    let dir = TempDir::new("absurd-length");
    let written = journal_with(&dir, 2);
    let path = dir.file("journal-0.log");
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 20]);
    fs::write(&path, &bytes).unwrap();
    match Journal::open(dir.path(), FsyncPolicy::Always) {
        Err(JournalError::Corrupt {
            offset,
            damage: Damage::LengthTooLarge { len },
            ..
        }) => {
            assert_eq!(offset, framed_len(&written));
            assert_eq!(len, MAX_RECORD_LEN + 1);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn any_damage_in_a_snapshot_is_a_hard_error() {
    let dir = TempDir::new("bad-snapshot");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    journal.compact([&b"one"[..], b"two"]).unwrap();
    drop(journal);
    let path = dir.file("snapshot-1.snap");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap(); // even a torn tail
    match Journal::open(dir.path(), FsyncPolicy::Always) {
        Err(JournalError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, (HEADER_LEN + 3) as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn leftover_snapshot_tmp_is_ignored_and_removed() {
    let dir = TempDir::new("tmp");
    let written = journal_with(&dir, 4);
    fs::write(
        dir.file("snapshot-1.tmp"),
        b"half a snapshot, never renamed",
    )
    .unwrap();
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(records(&replay), written);
    assert_eq!(replay.generation(), 0);
    assert_eq!(dir.files(), ["journal-0.log"]);
}

/// A crash after the snapshot's rename but before the old generation was deleted: the state
/// comes back once, from the snapshot, and the stale files are removed.
#[test]
fn crash_before_cleanup_applies_state_once() {
    let dir = TempDir::new("stale");
    let written = journal_with(&dir, 3);
    let stale_journal = fs::read(dir.file("journal-0.log")).unwrap();
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    journal.compact(&written).unwrap();
    journal.append(b"after").unwrap();
    let stale_snapshot = fs::read(dir.file("snapshot-1.snap")).unwrap();
    journal.compact(&written).unwrap();
    journal.append(b"after 2").unwrap();
    drop(journal);
    // Put the older generations back, as an interrupted cleanup would have left them.
    fs::write(dir.file("journal-0.log"), &stale_journal).unwrap();
    fs::write(dir.file("snapshot-1.snap"), &stale_snapshot).unwrap();
    fs::write(dir.file("journal-1.log"), b"").unwrap();

    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    let mut expected = written.clone();
    expected.push(b"after 2".to_vec());
    assert_eq!(records(&replay), expected);
    assert_eq!(replay.generation(), 2);
    assert_eq!(dir.files(), ["journal-2.log", "snapshot-2.snap"]);
}

/// A crash after the snapshot's rename but before its journal was created.
#[test]
fn crash_before_new_journal_exists() {
    let dir = TempDir::new("no-journal");
    let written = journal_with(&dir, 3);
    let old = fs::read(dir.file("journal-0.log")).unwrap();
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    journal.compact(&written).unwrap();
    drop(journal);
    fs::remove_file(dir.file("journal-1.log")).unwrap();
    fs::write(dir.file("journal-0.log"), &old).unwrap();

    let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(records(&replay), written);
    assert_eq!((replay.generation(), replay.journal_len()), (1, 0));
    assert_eq!(dir.files(), ["journal-1.log", "snapshot-1.snap"]);
    journal.append(b"x").unwrap();
    drop(journal);
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(replay.len(), 4);
}

#[test]
fn journal_after_a_gap_is_refused() {
    let dir = TempDir::new("orphan");
    journal_with(&dir, 1);
    fs::write(dir.file("journal-3.log"), b"").unwrap();
    match Journal::open(dir.path(), FsyncPolicy::Always) {
        Err(JournalError::JournalGap {
            missing,
            found,
            newest_snapshot: None,
        }) => {
            assert_eq!(missing, dir.file("journal-1.log"));
            assert_eq!(found, dir.file("journal-3.log"));
        }
        other => panic!("expected JournalGap, got {other:?}"),
    }
}

#[test]
fn oversized_record_is_refused_and_the_journal_carries_on() {
    let dir = TempDir::new("too-large");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    let huge = vec![0u8; MAX_RECORD_LEN as usize + 1];
    assert!(matches!(
        journal.append(&huge),
        Err(JournalError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        journal.compact([&huge]),
        Err(JournalError::RecordTooLarge { .. })
    ));
    assert_eq!(
        dir.files(),
        ["journal-0.log"],
        "the failed snapshot left nothing behind"
    );
    journal.append(b"fine").unwrap();
    drop(journal);
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(records(&replay), [b"fine".to_vec()]);
}

#[test]
fn one_journal_per_directory() {
    let dir = TempDir::new("lock");
    let (journal, _) = Journal::open(dir.path(), FsyncPolicy::No).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), FsyncPolicy::No),
        Err(JournalError::Locked { .. })
    ));
    drop(journal);
    Journal::open(dir.path(), FsyncPolicy::No).unwrap();
}

#[test]
fn tick_writes_the_buffer_and_changing_policy_flushes() {
    let dir = TempDir::new("tick");
    let path = dir.file("journal-0.log");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::EverySec).unwrap();
    journal.append(b"buffered").unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        0,
        "everysec buffers until tick"
    );
    journal.tick(0).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), (HEADER_LEN + 8) as u64);
    journal.append(b"again").unwrap();
    journal.set_policy(FsyncPolicy::Always).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (2 * HEADER_LEN + 13) as u64
    );
    journal.append(b"now").unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (3 * HEADER_LEN + 16) as u64
    );
    assert_eq!(journal.policy(), FsyncPolicy::Always);
}

// ---- compaction in the background ------------------------------------------------------

/// `n` records of about 200 bytes, tagged: enough of them make a snapshot that takes the
/// compaction thread a while to write.
fn tagged(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = format!("{tag}-{i}-").into_bytes();
            r.resize(200, i as u8);
            r
        })
        .collect()
}

/// Ticks until the compaction in flight ends (10 s at most), appending `during` meanwhile.
fn tick_until_compacted(journal: &mut Journal, during: &[Vec<u8>]) -> Compacted {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut during = during.iter();
    let mut now = 0;
    loop {
        if let Some(r) = during.next() {
            journal.append(r).unwrap();
        }
        now += 1;
        if let Some(done) = journal.tick(now).unwrap() {
            for r in during {
                journal.append(r).unwrap();
            }
            return done;
        }
        assert!(Instant::now() < deadline, "the compaction did not end");
        if during.len() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn appends_go_on_while_the_snapshot_is_written() {
    let dir = TempDir::new("in-flight");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::EverySec).unwrap();
    let before = tagged("before", 1_000);
    for r in &before {
        journal.append(r).unwrap();
    }
    journal.tick(0).unwrap();
    // The state the daemon would hand over: large, so that the write takes a while.
    let state = tagged("state", 100_000);
    let started = journal.start_compaction(&state).unwrap();
    assert_eq!((started.generation, started.records), (1, 100_000));
    assert_eq!(started.bytes, framed_len(&state));
    // Appends go to the new journal at once.
    assert_eq!((journal.generation(), journal.size_bytes()), (1, 0));
    assert!(journal.is_compacting());
    assert!(matches!(
        journal.start_compaction(&state),
        Err(JournalError::CompactionInFlight)
    ));

    let during = tagged("during", 5_000);
    let done = tick_until_compacted(&mut journal, &during);
    match done {
        Compacted::Done { compaction, .. } => assert_eq!(compaction, started),
        other => panic!("expected Done, got {other:?}"),
    }
    assert!(!journal.is_compacting());
    assert_eq!(dir.files(), ["journal-1.log", "snapshot-1.snap"]);
    assert_eq!(journal.size_bytes(), framed_len(&during));
    let after = tagged("after", 10);
    for r in &after {
        journal.append(r).unwrap();
    }
    drop(journal);

    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::EverySec).unwrap();
    assert_eq!(records(&replay), [state, during, after].concat());
    assert_eq!(
        (
            replay.generation(),
            replay.snapshot_generation(),
            replay.journal_files()
        ),
        (1, Some(1), 1)
    );
}

#[test]
fn flush_and_drop_wait_for_the_compaction_in_flight() {
    let dir = TempDir::new("drop-in-flight");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::No).unwrap();
    let state = tagged("state", 50_000);
    journal.start_compaction(&state).unwrap();
    journal.append(b"during").unwrap();
    journal.flush().unwrap();
    assert_eq!(
        dir.files(),
        ["journal-1.log", "snapshot-1.snap"],
        "flush waited"
    );
    // The outcome is still reported, once.
    assert!(matches!(
        journal.tick(1).unwrap(),
        Some(Compacted::Done { .. })
    ));
    assert!(journal.tick(2).unwrap().is_none());

    journal.start_compaction(&state[..10]).unwrap();
    journal.append(b"during 2").unwrap();
    drop(journal); // waits for the thread before the lock goes
    assert_eq!(dir.files(), ["journal-2.log", "snapshot-2.snap"]);
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::No).unwrap();
    let mut expected = state[..10].to_vec();
    expected.push(b"during 2".to_vec());
    assert_eq!(records(&replay), expected);
}

/// A FIFO where the snapshot's `.tmp` goes: the compaction thread blocks in `open` until
/// someone reads it, which holds the compaction in flight for as long as the test likes, and
/// then fails at the fdatasync (a FIFO cannot be synced).
fn make_fifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Copies the journal's regular files to a fresh directory: what a crash at this instant
/// would leave (everything was written, and a SIGKILL keeps what was written).
fn crash_copy(dir: &TempDir, name: &str) -> TempDir {
    let copy = TempDir::new(name);
    for file in dir.files() {
        let from = dir.file(&file);
        if fs::metadata(&from).unwrap().is_file() {
            fs::copy(&from, copy.file(&file)).unwrap();
        } else {
            fs::write(copy.file(&file), b"half a snapshot").unwrap();
        }
    }
    copy
}

#[test]
fn a_failed_snapshot_write_loses_nothing_and_the_next_compaction_retries() {
    let dir = TempDir::new("failed-write");
    let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    let before = tagged("before", 3);
    for r in &before {
        journal.append(r).unwrap();
    }
    make_fifo(&dir.file("snapshot-1.tmp"));
    journal.start_compaction(&before).unwrap();
    let during = tagged("during", 2);
    for (i, r) in during.iter().enumerate() {
        journal.append(r).unwrap();
        assert!(journal.tick(i as u64).unwrap().is_none(), "still in flight");
    }
    assert!(journal.is_compacting());
    assert_eq!(
        dir.files(),
        ["journal-0.log", "journal-1.log", "snapshot-1.tmp"]
    );

    // A crash now: the chain journal-0, journal-1 has everything.
    {
        let copy = crash_copy(&dir, "failed-write-crash");
        let (_journal, replay) = Journal::open(copy.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(records(&replay), [before.clone(), during.clone()].concat());
        assert_eq!(
            (
                replay.generation(),
                replay.snapshot_generation(),
                replay.journal_files()
            ),
            (1, None, 2)
        );
        assert_eq!(copy.files(), ["journal-0.log", "journal-1.log"]);
    }

    // Let the thread through: it writes into the FIFO, then fails to fdatasync it.
    let fifo = dir.file("snapshot-1.tmp");
    let reader = std::thread::spawn(move || fs::read(fifo).unwrap());
    let outcome = tick_until_compacted(&mut journal, &[]);
    let written = reader.join().unwrap();
    match outcome {
        Compacted::Failed { compaction, error } => {
            assert_eq!(compaction.generation, 1);
            assert_eq!(compaction.bytes, written.len() as u64);
            assert!(matches!(error, JournalError::Io { .. }), "{error:?}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(!journal.is_compacting());
    assert_eq!(dir.files(), ["journal-0.log", "journal-1.log"]);

    // The journal carries on in generation 1; a reopen replays the chain.
    journal.append(b"after").unwrap();
    drop(journal);
    let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    let mut all = [before, during].concat();
    all.push(b"after".to_vec());
    assert_eq!(records(&replay), all);
    assert_eq!((replay.generation(), replay.journal_files()), (1, 2));

    // The next compaction succeeds and removes the whole chain.
    let done = journal.compact(&all).unwrap();
    assert_eq!(done.generation, 2);
    assert_eq!(dir.files(), ["journal-2.log", "snapshot-2.snap"]);
    journal.append(b"last").unwrap();
    drop(journal);
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    all.push(b"last".to_vec());
    assert_eq!(records(&replay), all);
}

// ---- every crash point of a compaction, as the directory it leaves -----------------------

/// The exact bytes of a file holding `records` (snapshots and journals share the format):
/// written by a real journal in a scratch directory.
fn framed(records: &[Vec<u8>]) -> Vec<u8> {
    let scratch = TempDir::new("framed");
    let (mut journal, _) = Journal::open(scratch.path(), FsyncPolicy::No).unwrap();
    for r in records {
        journal.append(r).unwrap();
    }
    drop(journal);
    fs::read(scratch.file("journal-0.log")).unwrap()
}

/// Files by name, each with its records (`None`: a `.tmp`'s garbage).
type Files<'a> = Vec<(&'a str, Option<&'a [Vec<u8>]>)>;

/// A directory holding these files.
fn directory(name: &str, files: &[(&str, Option<&[Vec<u8>]>)]) -> TempDir {
    let dir = TempDir::new(name);
    for (file, content) in files {
        let bytes = match content {
            Some(records) => framed(records),
            None => b"a snapshot cut short by the crash".to_vec(),
        };
        fs::write(dir.file(file), bytes).unwrap();
    }
    dir
}

#[test]
fn every_crash_point_of_a_compaction_recovers_every_record() {
    // What generation g held (J0: journal of generation 0 …) and the snapshots that sum it up.
    let j0 = tagged("j0", 5);
    let j1 = tagged("j1", 4);
    let j2 = tagged("j2", 3);
    let j3 = tagged("j3", 2);
    let s1 = tagged("s1", 2); // the state at the start of generation 1
    let s2 = tagged("s2", 3);
    type Case<'a> = (
        &'a str,
        Files<'a>,
        Vec<Vec<u8>>, // replayed
        u64,          // generation appended to
        Vec<&'a str>, // files after the open
    );
    let cases: Vec<Case> = vec![
        (
            "g=0: journal-1 started, snapshot-1 not begun",
            vec![("journal-0.log", Some(&j0)), ("journal-1.log", Some(&j1))],
            [j0.clone(), j1.clone()].concat(),
            1,
            vec!["journal-0.log", "journal-1.log"],
        ),
        (
            "g=0: journal-1 started, nothing appended yet",
            vec![("journal-0.log", Some(&j0)), ("journal-1.log", Some(&[]))],
            j0.clone(),
            1,
            vec!["journal-0.log", "journal-1.log"],
        ),
        (
            "g=0: snapshot-1 being written",
            vec![
                ("journal-0.log", Some(&j0)),
                ("journal-1.log", Some(&j1)),
                ("snapshot-1.tmp", None),
            ],
            [j0.clone(), j1.clone()].concat(),
            1,
            vec!["journal-0.log", "journal-1.log"],
        ),
        (
            "g=0: snapshot-1 renamed, journal-0 not removed yet",
            vec![
                ("journal-0.log", Some(&j0)),
                ("journal-1.log", Some(&j1)),
                ("snapshot-1.snap", Some(&s1)),
            ],
            [s1.clone(), j1.clone()].concat(),
            1,
            vec!["journal-1.log", "snapshot-1.snap"],
        ),
        (
            "g=1: journal-2 started, snapshot-2 being written",
            vec![
                ("snapshot-1.snap", Some(&s1)),
                ("journal-1.log", Some(&j1)),
                ("journal-2.log", Some(&j2)),
                ("snapshot-2.tmp", None),
            ],
            [s1.clone(), j1.clone(), j2.clone()].concat(),
            2,
            vec!["journal-1.log", "journal-2.log", "snapshot-1.snap"],
        ),
        (
            "g=1: snapshot-2 renamed, nothing removed yet",
            vec![
                ("snapshot-1.snap", Some(&s1)),
                ("journal-1.log", Some(&j1)),
                ("snapshot-2.snap", Some(&s2)),
                ("journal-2.log", Some(&j2)),
            ],
            [s2.clone(), j2.clone()].concat(),
            2,
            vec!["journal-2.log", "snapshot-2.snap"],
        ),
        (
            "g=1: snapshot-2 renamed, snapshot-1 removed, journal-1 not yet",
            vec![
                ("journal-1.log", Some(&j1)),
                ("snapshot-2.snap", Some(&s2)),
                ("journal-2.log", Some(&j2)),
            ],
            [s2.clone(), j2.clone()].concat(),
            2,
            vec!["journal-2.log", "snapshot-2.snap"],
        ),
        (
            "g=1: two compactions failed in a row",
            vec![
                ("snapshot-1.snap", Some(&s1)),
                ("journal-1.log", Some(&j1)),
                ("journal-2.log", Some(&j2)),
                ("journal-3.log", Some(&j3)),
                ("snapshot-3.tmp", None),
            ],
            [s1.clone(), j1.clone(), j2.clone(), j3.clone()].concat(),
            3,
            vec![
                "journal-1.log",
                "journal-2.log",
                "journal-3.log",
                "snapshot-1.snap",
            ],
        ),
        (
            "an older version's crash: snapshot-1 renamed, journal-1 never created",
            vec![("journal-0.log", Some(&j0)), ("snapshot-1.snap", Some(&s1))],
            s1.clone(),
            1,
            vec!["journal-1.log", "snapshot-1.snap"],
        ),
    ];
    for (name, files, expected, generation, after_open) in cases {
        let dir = directory("crash-point", &files);
        let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(records(&replay), expected, "{name}");
        assert_eq!(replay.torn_tail, None, "{name}");
        assert_eq!(
            (replay.generation(), journal.generation()),
            (generation, generation),
            "{name}"
        );
        assert_eq!(dir.files(), after_open, "{name}");
        // Appends continue in the newest journal, and the chain replays the same way again.
        journal.append(b"next").unwrap();
        drop(journal);
        let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
        let mut with_next = expected.clone();
        with_next.push(b"next".to_vec());
        assert_eq!(records(&replay), with_next, "{name}: reopened");
        // And a compaction folds the whole chain into one snapshot.
        journal.compact(&with_next).unwrap();
        drop(journal);
        assert_eq!(
            dir.files(),
            [
                format!("journal-{}.log", generation + 1),
                format!("snapshot-{}.snap", generation + 1)
            ],
            "{name}: compacted"
        );
        let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(records(&replay), with_next, "{name}: compacted");
    }
}

#[test]
fn a_gap_in_the_chain_is_a_typed_error_and_changes_nothing() {
    let j = tagged("j", 2);
    let s = tagged("s", 1);
    // Name, files, the journal missing, the newer one found, the newest snapshot.
    type Case<'a> = (&'a str, Files<'a>, &'a str, &'a str, Option<u64>);
    let cases: [Case; 4] = [
        (
            "no snapshot, journal-1 missing",
            vec![("journal-0.log", Some(&j)), ("journal-2.log", Some(&j))],
            "journal-1.log",
            "journal-2.log",
            None,
        ),
        (
            "no snapshot, journal-0 missing",
            vec![("journal-1.log", Some(&j))],
            "journal-0.log",
            "journal-1.log",
            None,
        ),
        (
            "snapshot-1, journal-2 missing",
            vec![
                ("snapshot-1.snap", Some(&s)),
                ("journal-1.log", Some(&j)),
                ("journal-3.log", Some(&j)),
            ],
            "journal-2.log",
            "journal-3.log",
            Some(1),
        ),
        (
            "snapshot-1, journal-1 missing",
            vec![
                ("journal-0.log", Some(&j)),
                ("snapshot-1.snap", Some(&s)),
                ("journal-2.log", Some(&j)),
            ],
            "journal-1.log",
            "journal-2.log",
            Some(1),
        ),
    ];
    for (name, files, missing_name, found_name, snapshot) in cases {
        let dir = directory("gap", &files);
        let before = dir.files();
        match Journal::open(dir.path(), FsyncPolicy::Always) {
            Err(JournalError::JournalGap {
                missing,
                found,
                newest_snapshot,
            }) => {
                assert_eq!(missing, dir.file(missing_name), "{name}");
                assert_eq!(found, dir.file(found_name), "{name}");
                assert_eq!(newest_snapshot, snapshot, "{name}");
            }
            other => panic!("{name}: expected JournalGap, got {other:?}"),
        }
        assert_eq!(dir.files(), before, "{name}: nothing changed");
        let message = Journal::open(dir.path(), FsyncPolicy::Always)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(missing_name) && message.contains(found_name),
            "{name}: {message}"
        );
    }
}

#[test]
fn a_torn_tail_is_only_legal_in_the_newest_journal() {
    let j0 = tagged("j0", 3);
    let j1 = tagged("j1", 3);
    let cut = |records: &[Vec<u8>]| {
        let mut bytes = framed(records);
        bytes.truncate(bytes.len() - 5);
        bytes
    };

    // In the newest journal of a chain: dropped alone, the older journal kept whole.
    let dir = directory("torn-newest", &[("journal-0.log", Some(&j0))]);
    fs::write(dir.file("journal-1.log"), cut(&j1)).unwrap();
    let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(records(&replay), [j0.clone(), j1[..2].to_vec()].concat());
    let torn = replay.torn_tail.expect("torn tail reported");
    assert_eq!(torn.offset, framed_len(&j1[..2]));
    assert_eq!(
        fs::metadata(dir.file("journal-1.log")).unwrap().len(),
        torn.offset
    );
    drop(_journal);

    // In an older one: it was fdatasynced before the next began, so this is corruption.
    let dir = directory("torn-older", &[("journal-1.log", Some(&j1))]);
    let bytes = cut(&j0);
    fs::write(dir.file("journal-0.log"), &bytes).unwrap();
    match Journal::open(dir.path(), FsyncPolicy::Always) {
        Err(JournalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, dir.file("journal-0.log"));
            assert_eq!(offset, framed_len(&j0[..2]));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(dir.file("journal-0.log")).unwrap(), bytes);
}

#[derive(Debug, Clone)]
struct Script {
    before: Vec<Vec<u8>>,
    /// Compact after `before` into this state, or stay in generation 0.
    snapshot: Option<Vec<Vec<u8>>>,
    after: Vec<Vec<u8>>,
    /// Where to cut the last file, as a fraction of its length.
    cut: f64,
}

fn script() -> impl Strategy<Value = Script> {
    let records = || prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20);
    (
        records(),
        prop::option::of(records()),
        records(),
        0.0..=1.0f64,
    )
        .prop_map(|(before, snapshot, after, cut)| Script {
            before,
            snapshot,
            after,
            cut,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Cutting the last file anywhere loses at most its last record, and the journal goes on
    /// cleanly from there.
    #[test]
    fn a_cut_loses_at_most_the_last_record(s in script()) {
        let dir = TempDir::new("prop");
        let (mut journal, _) = Journal::open(dir.path(), FsyncPolicy::No).unwrap();
        for r in &s.before {
            journal.append(r).unwrap();
        }
        let (base, tail) = match &s.snapshot {
            Some(state) => {
                journal.compact(state).unwrap();
                (state.clone(), s.after.clone())
            }
            None => (Vec::new(), [s.before.clone(), s.after.clone()].concat()),
        };
        for r in &s.after {
            journal.append(r).unwrap();
        }
        let generation = journal.generation();
        drop(journal);

        let path = dir.file(&format!("journal-{generation}.log"));
        let len = fs::metadata(&path).unwrap().len();
        let cut = ((len as f64) * s.cut) as u64;
        OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();

        let (mut journal, replay) = Journal::open(dir.path(), FsyncPolicy::No).unwrap();
        let got = records(&replay);
        prop_assert!(got.len() >= base.len());
        prop_assert_eq!(&got[..base.len()], &base[..]);
        let replayed_tail = &got[base.len()..];
        prop_assert!(replayed_tail.len() <= tail.len());
        prop_assert_eq!(replayed_tail, &tail[..replayed_tail.len()]);
        // Only a cut inside a record loses it, and then only the record the cut went through.
        let kept = framed_len(replayed_tail);
        prop_assert!(cut - kept < (HEADER_LEN + tail.get(replayed_tail.len()).map_or(0, Vec::len)) as u64 || cut == kept);
        prop_assert_eq!(replay.torn_tail.is_some(), cut != kept);

        journal.append(b"next").unwrap();
        drop(journal);
        let (_journal, replay) = Journal::open(dir.path(), FsyncPolicy::No).unwrap();
        let mut expected = got.clone();
        expected.push(b"next".to_vec());
        prop_assert_eq!(records(&replay), expected);
    }

    /// Whatever bytes sit in the files, open returns — a replay or an error — and never panics.
    #[test]
    fn arbitrary_files_never_panic(
        journal in prop::collection::vec(any::<u8>(), 0..400),
        snapshot in prop::option::of(prop::collection::vec(any::<u8>(), 0..400)),
    ) {
        let dir = TempDir::new("arbitrary");
        let generation = u64::from(snapshot.is_some());
        if let Some(snapshot) = &snapshot {
            fs::write(dir.file("snapshot-1.snap"), snapshot).unwrap();
        }
        fs::write(dir.file(&format!("journal-{generation}.log")), &journal).unwrap();
        if let Ok((mut journal, replay)) = Journal::open(dir.path(), FsyncPolicy::No) {
            let count = replay.iter().count();
            prop_assert_eq!(count, replay.len());
            journal.append(b"still works").unwrap();
        }
    }
}
