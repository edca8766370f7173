//! A real SIGKILL: this test binary re-executes itself as a child that appends records and
//! prints `acked <n>` once record `n` is as safe as the policy makes it; the parent reads those
//! lines, kills the child with SIGKILL mid-stream, and reopens the journal.
//!
//! What it shows: under `always` — and under `everysec`/`no` when `tick` runs before the
//! acknowledgement, as the daemon's loop will do — a SIGKILL loses nothing acknowledged. And
//! what is only in the userspace buffer (appended, never ticked) is what a SIGKILL does lose.
//! The same holds when the SIGKILL comes while a compaction's snapshot is being written in
//! the background, appends going on in the next journal meanwhile.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use common::{record, TempDir};
use tether_state::journal::{Compacted, FsyncPolicy, Journal};

const CHILD_DIR: &str = "TETHER_STATE_KILL_TEST_DIR";
const CHILD_POLICY: &str = "TETHER_STATE_KILL_TEST_POLICY";
const CHILD_TICK: &str = "TETHER_STATE_KILL_TEST_TICK";
/// `big` or `fifo`: start a compaction after `COMPACT_AT` records (see [`Compaction`]).
const CHILD_COMPACT: &str = "TETHER_STATE_KILL_TEST_COMPACT";
/// Records appended before the compaction starts; its snapshot holds exactly these (as the
/// daemon's state holds what its journal says), about 22 MB of them.
const COMPACT_AT: u64 = 150_000;
/// Records the no-tick child appends before it stops and waits to be killed.
const UNTICKED: u64 = 1_000;

/// The child's side. Does nothing when the test harness runs it in the parent.
#[test]
fn child_writer() {
    let Ok(dir) = env::var(CHILD_DIR) else { return };
    let policy: FsyncPolicy = env::var(CHILD_POLICY).unwrap().parse().unwrap();
    let tick = env::var(CHILD_TICK).unwrap() == "1";
    let compact = env::var(CHILD_COMPACT).ok();
    let (mut journal, replay) = Journal::open(&dir, policy).unwrap();
    assert!(replay.is_empty());
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        if !tick && i == UNTICKED {
            writeln!(out, "done").unwrap();
            out.flush().unwrap();
            break;
        }
        if i == COMPACT_AT {
            if let Some(mode) = &compact {
                if mode == "fifo" {
                    make_fifo(&std::path::Path::new(&dir).join("snapshot-1.tmp"));
                }
                journal.start_compaction((0..i).map(record)).unwrap();
                writeln!(out, "compacting").unwrap();
            }
        }
        journal.append(&record(i)).unwrap();
        if tick {
            if let Some(done) = journal.tick(start.elapsed().as_millis() as u64).unwrap() {
                assert!(matches!(done, Compacted::Done { .. }), "{done:?}");
                writeln!(out, "compacted").unwrap();
            }
        }
        if compact.is_some() && i < COMPACT_AT {
            continue; // only the records after the compaction started are acknowledged
        }
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
        if start.elapsed() > Duration::from_secs(60) {
            break; // the parent is gone
        }
    }
    // Wait for the SIGKILL without ever dropping (and so flushing) the journal.
    while start.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(50));
    }
    std::process::abort();
}

/// Where a compaction child is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This many acknowledgements after the compaction started.
    Started(u64),
    /// This many acknowledgements after `tick` reported the compaction done.
    Compacted(u64),
}

/// Runs a child, SIGKILLs it after `stop_after` acknowledgements (or at "done"; or, with
/// `compact`, as `kill_at` says), and returns the last acknowledged record number, the
/// journal's files as the kill left them, and what recovery finds.
fn run_and_kill(
    policy: FsyncPolicy,
    tick: bool,
    stop_after: u64,
    compact: Option<(&str, KillAt)>,
) -> (Option<u64>, Vec<String>, Vec<Vec<u8>>) {
    let dir = TempDir::new(&format!("kill-{policy}-{tick}"));
    let mut command = Command::new(env::current_exe().unwrap());
    command
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_POLICY, policy.as_str())
        .env(CHILD_TICK, if tick { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some((mode, _)) = compact {
        command.env(CHILD_COMPACT, mode);
    }
    let mut child = command.spawn().unwrap();
    // Kept open until after the kill: a closed pipe would end the child through EPIPE instead.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_acked = None;
    let mut counting = compact.is_none();
    let mut acks_to_go = match compact {
        None => u64::MAX,
        Some((_, KillAt::Started(n) | KillAt::Compacted(n))) => n,
    };
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The harness's own "test child_writer ... " starts the child's first line.
        let line = line.trim_start_matches("test child_writer ... ");
        match (line, compact) {
            ("done", _) => break,
            ("compacting", Some((_, KillAt::Started(_))))
            | ("compacted", Some((_, KillAt::Compacted(_)))) => counting = true,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u64 = n.parse().unwrap();
            last_acked = Some(n);
            if compact.is_none() && n >= stop_after {
                break;
            }
            if counting {
                if acks_to_go == 0 {
                    break;
                }
                acks_to_go -= 1;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, while the child is still appending
    child.wait().unwrap();
    drop(lines);

    let files = dir.files();
    let (_journal, replay) = Journal::open(dir.path(), policy).unwrap();
    (
        last_acked,
        files,
        replay.iter().map(<[u8]>::to_vec).collect(),
    )
}

fn assert_nothing_acknowledged_lost(policy: FsyncPolicy, stop_after: u64) {
    let (last_acked, _, got) = run_and_kill(policy, true, stop_after, None);
    let last_acked = last_acked.expect("the child acknowledged records");
    assert!(
        got.len() as u64 > last_acked,
        "{policy}: acked {last_acked}, recovered {}",
        got.len()
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, record(i as u64), "{policy}: record {i}");
    }
}

#[test]
fn sigkill_loses_nothing_acknowledged_under_always() {
    assert_nothing_acknowledged_lost(FsyncPolicy::Always, 300);
}

#[test]
fn sigkill_loses_nothing_ticked_under_everysec_and_no() {
    assert_nothing_acknowledged_lost(FsyncPolicy::EverySec, 3_000);
    assert_nothing_acknowledged_lost(FsyncPolicy::No, 3_000);
}

#[test]
fn sigkill_loses_the_unticked_buffer() {
    let (last_acked, _, got) = run_and_kill(FsyncPolicy::EverySec, false, u64::MAX, None);
    assert_eq!(last_acked, Some(UNTICKED - 1));
    // Only what crossed the 64 KiB write threshold reached the file; the rest died with the
    // process's memory, exactly as documented.
    assert!(
        !got.is_empty() && (got.len() as u64) < UNTICKED,
        "recovered {}",
        got.len()
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, record(i as u64));
    }
}

/// A FIFO where the snapshot's `.tmp` goes: the compaction thread blocks opening it (nobody
/// reads), so the compaction is certain to be in flight when the SIGKILL comes.
fn make_fifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Recovery finds records 0, 1, 2, … up to at least the last one acknowledged.
fn assert_every_acknowledged_record(what: &str, last_acked: Option<u64>, got: &[Vec<u8>]) {
    let last_acked = last_acked.expect("the child acknowledged records");
    assert!(
        got.len() as u64 > last_acked,
        "{what}: acked {last_acked}, recovered {}",
        got.len()
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, record(i as u64), "{what}: record {i}");
    }
}

#[test]
fn sigkill_while_the_snapshot_is_written_loses_nothing_acknowledged() {
    // Certainly in flight: the thread is stuck opening the .tmp, appends go to journal-1.
    let (last_acked, files, got) = run_and_kill(
        FsyncPolicy::EverySec,
        true,
        0,
        Some(("fifo", KillAt::Started(2_000))),
    );
    assert_eq!(
        files,
        ["journal-0.log", "journal-1.log", "snapshot-1.tmp"],
        "killed mid-compaction"
    );
    assert_every_acknowledged_record("fifo", last_acked, &got);

    // A real 22 MB snapshot, killed at three moments; on this machine they land before the
    // .tmp exists, while it is being written, and after the rename. Whichever step the thread
    // had reached, recovery finds everything.
    for kill_at in [
        KillAt::Started(0),
        KillAt::Started(20_000),
        KillAt::Started(60_000),
    ] {
        let (last_acked, files, got) =
            run_and_kill(FsyncPolicy::EverySec, true, 0, Some(("big", kill_at)));
        eprintln!("killed at {kill_at:?}: {files:?}");
        assert!(files.contains(&"journal-1.log".to_string()), "{files:?}");
        assert_every_acknowledged_record(&format!("{kill_at:?}"), last_acked, &got);
    }

    // After the compaction: the snapshot and the new journal.
    let (last_acked, files, got) = run_and_kill(
        FsyncPolicy::EverySec,
        true,
        0,
        Some(("big", KillAt::Compacted(100))),
    );
    assert_eq!(files, ["journal-1.log", "snapshot-1.snap"]);
    assert_every_acknowledged_record("compacted", last_acked, &got);
}
