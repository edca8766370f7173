//! A real SIGKILL: this test binary re-executes itself as a child that appends records and
//! prints `acked <n>` once record `n` is as safe as the policy makes it; the parent reads those
//! lines, kills the child with SIGKILL mid-stream, and reopens the journal.
//!
//! What it shows: under `always` — and under `everysec`/`no` when `tick` runs before the
//! acknowledgement, as the daemon's loop will do — a SIGKILL loses nothing acknowledged. And
//! what is only in the userspace buffer (appended, never ticked) is what a SIGKILL does lose.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use common::{record, TempDir};
use tether_state::journal::{FsyncPolicy, Journal};

const CHILD_DIR: &str = "TETHER_STATE_KILL_TEST_DIR";
const CHILD_POLICY: &str = "TETHER_STATE_KILL_TEST_POLICY";
const CHILD_TICK: &str = "TETHER_STATE_KILL_TEST_TICK";
/// Records the no-tick child appends before it stops and waits to be killed.
const UNTICKED: u64 = 1_000;

/// The child's side. Does nothing when the test harness runs it in the parent.
#[test]
fn child_writer() {
    let Ok(dir) = env::var(CHILD_DIR) else { return };
    let policy: FsyncPolicy = env::var(CHILD_POLICY).unwrap().parse().unwrap();
    let tick = env::var(CHILD_TICK).unwrap() == "1";
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
        journal.append(&record(i)).unwrap();
        if tick {
            journal.tick(start.elapsed().as_millis() as u64).unwrap();
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

/// Runs a child, SIGKILLs it after `stop_after` acknowledgements (or at "done"), and returns
/// the last acknowledged record number and what recovery finds.
fn run_and_kill(policy: FsyncPolicy, tick: bool, stop_after: u64) -> (Option<u64>, Vec<Vec<u8>>) {
    let dir = TempDir::new(&format!("kill-{policy}-{tick}"));
    let mut child = Command::new(env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_POLICY, policy.as_str())
        .env(CHILD_TICK, if tick { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until after the kill: a closed pipe would end the child through EPIPE instead.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_acked = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u64 = n.parse().unwrap();
            last_acked = Some(n);
            if n >= stop_after {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, while the child is still appending
    child.wait().unwrap();
    drop(lines);

    let (_journal, replay) = Journal::open(dir.path(), policy).unwrap();
    (last_acked, replay.iter().map(<[u8]>::to_vec).collect())
}

fn assert_nothing_acknowledged_lost(policy: FsyncPolicy, stop_after: u64) {
    let (last_acked, got) = run_and_kill(policy, true, stop_after);
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
    let (last_acked, got) = run_and_kill(FsyncPolicy::EverySec, false, u64::MAX);
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
