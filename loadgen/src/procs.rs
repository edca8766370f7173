//! `--procs K`: the connections spread over K worker processes, each under its own
//! open-files limit, and their results merged into one summary.
//!
//! The parent re-executes its own binary ([`std::env::current_exe`]) K times with the same
//! flags minus `--procs` and `--json`, plus `--worker-of J/K`: worker J runs the
//! connections whose global index ≡ J (mod K), so device ids, payload seeds, source
//! addresses, the `--connect-rate` timetable and the open-loop phases are exactly those of a
//! one-process run. A worker writes JSON lines on its stdout — `{"progress": Totals}` once a
//! second, `{"report": Report}` at the end — and logs on stderr as usual. The parent prints
//! one progress line for all of them and merges the reports: counters added, histograms
//! rebuilt bucket by bucket ([`WireStats`]), so percentiles are those of all samples
//! together, not averages of per-process percentiles.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::cpu::CpuTime;
use crate::progress::{Reporter, Totals};
use crate::pusher::PushApi;
use crate::stats::{Stats, WireStats};
use crate::summary::Summary;

/// What a worker process reports at the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub threads: usize,
    pub stats: WireStats,
    pub push_api: Option<PushApi>,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
}

/// One line of a worker process's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Line {
    Progress(Totals),
    Report(Box<Report>),
}

/// A worker whose parent is killed goes with it: its connections would otherwise stay open,
/// holding ports and load on the target, with nobody to report to.
#[cfg(target_os = "linux")]
fn die_with_parent() {
    // SAFETY: PR_SET_PDEATHSIG only sets the signal this process gets when its parent exits.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent() {}

/// Runs as worker process (`--worker-of J/K`): the shard's connections, reported on stdout.
pub fn run_worker(config: &Config) -> anyhow::Result<()> {
    die_with_parent();
    let per_process = config
        .shard
        .map_or(config.conns, |s| config.conns.div_ceil(s.count));
    crate::limits::preflight(config, per_process);
    let emit = |line: &Line| {
        let mut out = std::io::stdout().lock();
        // A parent gone away is not this process's problem to report.
        let _ = serde_json::to_writer(&mut out, line);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    };
    let outcome = crate::run_here(config, &mut |_, totals| emit(&Line::Progress(totals)))?;
    emit(&Line::Report(Box::new(Report {
        threads: outcome.threads,
        stats: WireStats::of(&outcome.stats),
        push_api: outcome.push_api,
        cpu_user_s: outcome.cpu.user.as_secs_f64(),
        cpu_sys_s: outcome.cpu.sys.as_secs_f64(),
    })));
    Ok(())
}

/// The flags for a worker process: `args` (this process's, program name excluded) minus
/// `--procs`, `--json` and `--worker-of`, plus `--worker-of J/K`.
pub(crate) fn worker_args(args: &[OsString], index: usize, count: usize) -> Vec<OsString> {
    const DROP: [&str; 3] = ["--procs", "--json", "--worker-of"];
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if DROP.contains(&text.as_ref()) {
            skip_value = true;
            continue;
        }
        if DROP
            .iter()
            .any(|flag| text.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        out.push(arg.clone());
    }
    out.push(OsString::from("--worker-of"));
    out.push(OsString::from(format!("{index}/{count}")));
    out
}

enum Event {
    Line(usize, Line),
    Done,
}

/// Runs `config` over `config.procs` worker processes started from this binary with
/// `args` (this process's flags, program name excluded); merges their results.
pub fn run_parent(config: &Config, args: &[OsString]) -> anyhow::Result<Summary> {
    let count = config.procs;
    crate::limits::preflight(config, config.conns.div_ceil(count));
    let exe = std::env::current_exe().context("finding this program to start worker processes")?;
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::with_capacity(count);
    let mut readers = Vec::with_capacity(count);
    for index in 0..count {
        let mut child = Command::new(&exe)
            .args(worker_args(args, index, count))
            // The parent's own settings must not reach the workers through the environment.
            .env_remove("TETHER_LOADGEN_PROCS")
            .env_remove("TETHER_LOADGEN_JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker process {index} ({})", exe.display()))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        children.push(child);
        let tx = tx.clone();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Line>(&line) {
                    Ok(parsed) => {
                        let _ = tx.send(Event::Line(index, parsed));
                    }
                    Err(e) => tracing::warn!(worker = index, error = %e, "unreadable worker line"),
                }
            }
            let _ = tx.send(Event::Done);
        }));
    }
    drop(tx);

    let began = Instant::now();
    let mut reporter = Reporter::new(config.conns);
    let mut totals = vec![Totals::default(); count];
    let mut reports: Vec<Option<Report>> = (0..count).map(|_| None).collect();
    let mut open = count;
    let mut next_tick = began + Duration::from_secs(1);
    while open > 0 {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Event::Line(j, Line::Progress(t))) => totals[j] = t,
            Ok(Event::Line(j, Line::Report(r))) => reports[j] = Some(*r),
            Ok(Event::Done) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !config.quiet {
                    let mut sum = Totals::default();
                    totals.iter().for_each(|t| sum.add(t));
                    eprintln!("{}", reporter.line(began.elapsed(), sum));
                }
                next_tick += Duration::from_secs(1);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let mut failures = Vec::new();
    for (j, child) in children.iter_mut().enumerate() {
        let status = child
            .wait()
            .with_context(|| format!("waiting for worker {j}"))?;
        if !status.success() || reports[j].is_none() {
            failures.push(format!("worker process {j}: {status}"));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }

    let mut total = Stats::new()?;
    let mut push_api: Option<PushApi> = None;
    let mut cpu = CpuTime::default();
    let mut threads = 0;
    for (j, report) in reports.into_iter().flatten().enumerate() {
        let stats = report
            .stats
            .into_stats()
            .with_context(|| format!("worker {j}'s report"))?;
        total
            .merge(&stats)
            .with_context(|| format!("merging worker {j}'s latencies"))?;
        if let Some(api) = &report.push_api {
            push_api.get_or_insert_with(PushApi::default).add(api);
        }
        cpu.user += Duration::from_secs_f64(report.cpu_user_s.max(0.0));
        cpu.sys += Duration::from_secs_f64(report.cpu_sys_s.max(0.0));
        threads += report.threads;
    }
    if let Some(api) = &push_api {
        for (name, &n) in &api.errors {
            total.errors_n(name, n);
        }
    }
    let summary = Summary::new(config, threads, &total, push_api.as_ref(), cpu);
    crate::finish(config, summary)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    /// Whether `arg` is a flag this module removes from a worker's command line.
    fn is_parent_only(arg: &OsStr) -> bool {
        let text = arg.to_string_lossy();
        ["--procs", "--json", "--worker-of"]
            .iter()
            .any(|f| text == *f || text.starts_with(&format!("{f}=")))
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn workers_get_the_same_flags_but_procs_and_json() {
        let args = os(&[
            "--target",
            "127.0.0.1:1",
            "--procs",
            "2",
            "--json",
            "out.json",
            "--conns=10",
            "--procs=3",
            "--json=x",
            "--quiet",
        ]);
        let got = worker_args(&args, 1, 2);
        assert_eq!(
            got,
            os(&[
                "--target",
                "127.0.0.1:1",
                "--conns=10",
                "--quiet",
                "--worker-of",
                "1/2"
            ])
        );
        assert!(got.iter().take(4).all(|a| !is_parent_only(a)));
        assert!(is_parent_only(OsStr::new("--procs=2")));
    }

    #[test]
    fn lines_round_trip() {
        let line = Line::Progress(Totals {
            open: 3,
            ..Totals::default()
        });
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with("{\"progress\":"), "{text}");
        assert!(
            matches!(serde_json::from_str::<Line>(&text).unwrap(), Line::Progress(t) if t.open == 3)
        );
    }
}
