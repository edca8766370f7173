//! The journal seen from the daemon's side: append and reopen under each policy, compaction,
//! and recovery from every kind of damage a crash (or worse) can leave behind.

mod common;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::sync::{Arc, Mutex};

use common::{record, TempDir};
use proptest::prelude::*;
use tether_state::journal::{
    Damage, FsyncPolicy, Journal, JournalError, Replay, HEADER_LEN, MAX_RECORD_LEN,
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
fn journal_newer_than_every_snapshot_is_refused() {
    let dir = TempDir::new("orphan");
    journal_with(&dir, 1);
    fs::write(dir.file("journal-3.log"), b"").unwrap();
    match Journal::open(dir.path(), FsyncPolicy::Always) {
        Err(JournalError::OrphanJournal {
            path,
            newest_snapshot: None,
        }) => {
            assert_eq!(path, dir.file("journal-3.log"))
        }
        other => panic!("expected OrphanJournal, got {other:?}"),
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
