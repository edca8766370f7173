//! How many 100-byte records a second the journal takes under each fsync policy, on the disk
//! behind DIR (default: the system temp directory). Not a test: a measurement to read.
//!
//! ```text
//! cargo run --release -p tether-state --example journal_throughput -- [DIR]
//! ```
//!
//! `everysec` and `no` are measured twice: with `tick` after every append (a write(2) per
//! record: an event loop that handles one request per iteration) and after every 100 appends
//! (a busy loop handling a batch per iteration). Each run ends with a `flush`, which is timed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tether_state::journal::{FsyncPolicy, Journal, JournalError};

const RECORD: [u8; 100] = [0x5A; 100];

fn main() -> Result<(), JournalError> {
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("tether-journal-throughput-{}", std::process::id()));
    println!("directory: {}", base.display());
    println!(
        "{:<10} {:>14} {:>10} {:>12} {:>14}",
        "policy", "tick every", "records", "seconds", "appends/s"
    );
    let runs = [
        (FsyncPolicy::Always, 1, 5_000),
        (FsyncPolicy::EverySec, 1, 1_000_000),
        (FsyncPolicy::EverySec, 100, 2_000_000),
        (FsyncPolicy::No, 1, 1_000_000),
        (FsyncPolicy::No, 100, 2_000_000),
    ];
    for (i, (policy, tick_every, records)) in runs.into_iter().enumerate() {
        let dir = base.join(i.to_string());
        let elapsed = run(&dir, policy, tick_every, records)?;
        let rate = records as f64 / elapsed.as_secs_f64();
        let tick = if policy == FsyncPolicy::Always {
            "-".to_owned()
        } else {
            format!("{tick_every} appends")
        };
        println!(
            "{policy:<10} {tick:>14} {records:>10} {:>12.3} {rate:>14.0}",
            elapsed.as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn run(
    dir: &Path,
    policy: FsyncPolicy,
    tick_every: u64,
    records: u64,
) -> Result<Duration, JournalError> {
    let (mut journal, _) = Journal::open(dir, policy)?;
    let start = Instant::now();
    for i in 1..=records {
        journal.append(&RECORD)?;
        if i % tick_every == 0 {
            journal.tick(start.elapsed().as_millis() as u64)?;
        }
    }
    journal.flush()?;
    Ok(start.elapsed())
}
