//! `tether-loadgen`: drives DATA round trips over many long-lived connections to a Tether
//! gateway or echo node and reports throughput, HdrHistogram latencies, errors by cause and
//! its own CPU cost — as a real client: it can find gateways through tether-ipconfig's
//! `/ip_list` ([`ip_list`]), log in with a JWT per device ([`session`]), heartbeat,
//! acknowledge pushes and measure their latency ([`pushes`]), and follow GOAWAY to another
//! gateway and RESUME there ([`reconnect`]).
//!
//! Thread per core: each worker ([`worker`]) owns its share of the connections in its own
//! `mio::Poll`; the only thing shared while the load runs is one cache line of relaxed
//! counters per worker for the progress line ([`progress`]). Two ways to offer load
//! ([`config::Mode`]): a closed loop keeping `--pipeline` frames outstanding per
//! connection, or an open loop sending `--rate` frames per second per connection on a fixed
//! timetable ([`schedule`]) with latency measured from the scheduled time. Every reply is
//! checked against the deterministic payload of its id ([`payload`]). With `--push-rate`,
//! one more thread POSTs pushes to the state daemon for the run's devices ([`pusher`]).
//!
//! With `--procs K` the work is spread over K copies of the program ([`procs`]), each under
//! its own open-files limit; with `--hold` the connections idle (heartbeats, and DATA only
//! on the `--echo-fraction` subset) and are checked at the end; [`limits`] names the limit
//! a run runs into (RLIMIT_NOFILE, local ports, memory).
//!
//! With `--tls`, `--ws` or `--wss` each connection speaks the gateway's other transports
//! through a [`link`] (rustls; the WebSocket client side of `tether_proto::ws`).
//!
//! [`run`] is the whole program minus argument parsing and printing; `main.rs` adds those.

mod cause;
mod config;
mod conn;
mod cpu;
mod deadlines;
mod dial;
mod http;
mod ip_list;
mod lag;
mod limits;
mod link;
mod outstanding;
mod payload;
mod peer;
mod procs;
mod progress;
mod publisher;
mod pusher;
mod pushes;
mod reconnect;
mod rooms;
mod schedule;
mod session;
mod start_line;
mod stats;
mod summary;
mod timer;
mod worker;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use crossbeam_channel::RecvTimeoutError;

pub use config::{Args, Config, ConfigError, ConfigErrors, Mode};
pub use link::Transport;
pub use procs::{run_parent, run_worker};
pub use summary::Summary;

use conn::Conn;
use cpu::CpuTime;
use progress::{Live, Reporter, Totals};
use start_line::StartLine;
use stats::Stats;
use worker::Shared;

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs the load described by `config` (judged by [`Args::into_config`], or built by hand) to
/// the end and returns the merged results; writes the JSON summary when `config.json` is
/// set. Printing the table is the caller's choice.
///
/// An `Err` means the run itself could not be carried out (no threads, no poll); connection failures, server errors and verify failures are results, counted in
/// the [`Summary`].
pub fn run(config: Config) -> anyhow::Result<Summary> {
    limits::preflight(&config, config.conns);
    let mut reporter = Reporter::new(config.conns);
    let quiet = config.quiet;
    let outcome = run_here(&config, &mut |elapsed, totals| {
        if !quiet {
            eprintln!("{}", reporter.line(elapsed, totals));
        }
    })?;
    let summary = Summary::new(
        &config,
        outcome.threads,
        &outcome.stats,
        outcome.push_api.as_ref(),
        outcome.cpu,
    );
    finish(&config, summary)
}

/// Writes the JSON summary when asked to; returns the summary.
fn finish(config: &Config, summary: Summary) -> anyhow::Result<Summary> {
    if let Some(path) = &config.json {
        summary
            .write_json(path)
            .with_context(|| format!("writing the JSON summary to {}", path.display()))?;
    }
    Ok(summary)
}

/// What this process's workers did.
pub(crate) struct Outcome {
    pub threads: usize,
    pub stats: Stats,
    pub push_api: Option<pusher::PushApi>,
    pub cpu: CpuTime,
}

/// Runs this process's share of the connections (all of them, or a `--procs` shard) on
/// its worker threads; `tick` gets the running totals once a second.
pub(crate) fn run_here(
    config: &Config,
    tick: &mut dyn FnMut(Duration, Totals),
) -> anyhow::Result<Outcome> {
    let mine = match config.shard {
        Some(shard) => (0..config.conns).filter(|&i| shard.owns(i)).count(),
        None => config.conns,
    };
    let threads = config.threads.min(mine).max(1);
    let cpu_before = CpuTime::now();

    let shared = Arc::new(Shared {
        live: Live::new(threads),
        start_line: StartLine::new(threads),
        connect_start: Instant::now(),
        config: config.clone(),
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut handles = Vec::with_capacity(threads);
    let mut spawn_error = None;
    for (index, conns) in plan(config, threads).into_iter().enumerate() {
        let tx = tx.clone();
        let for_worker = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || {
                let result = if for_worker.config.peer.is_some() {
                    peer::run(index, conns, for_worker)
                } else {
                    worker::run(index, conns, for_worker)
                };
                let _ = tx.send((index, result));
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // The others must not wait at the start line for a worker that never runs.
                shared.start_line.arrive();
                spawn_error.get_or_insert(e);
            }
        }
    }
    drop(tx);
    let pusher = config.push.clone().and_then(|mut push| {
        // Every worker process pushes its share of the rate.
        if let Some(shard) = config.shard {
            push.rate /= shard.count as f64;
        }
        let shared = Arc::clone(&shared);
        let devices = pusher::Devices {
            prefix: config.device_prefix.clone(),
            offset: config.device_offset,
            count: config.conns,
        };
        thread::Builder::new()
            .name("loadgen-push".into())
            .spawn(move || {
                // Pushes start with the load, once every connection is up.
                let start = loop {
                    if let Some(start) = shared.start_line.start() {
                        break start;
                    }
                    thread::sleep(Duration::from_millis(2));
                };
                let duration = shared.config.duration;
                pusher::run(
                    &push,
                    &devices,
                    start,
                    start + duration - pusher::settle(duration),
                )
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the push thread"))
            .ok()
    });
    let publisher = config
        .rooms
        .as_ref()
        .and_then(|rooms| rooms.publish.clone().map(|p| (rooms.clone(), p)))
        // With --procs, worker process 0 publishes for all.
        .filter(|_| config.shard.is_none_or(|s| s.index == 0))
        .and_then(|(rooms, publish)| {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("loadgen-publish".into())
                .spawn(move || {
                    let start = loop {
                        if let Some(start) = shared.start_line.start() {
                            break start;
                        }
                        thread::sleep(Duration::from_millis(2));
                    };
                    let duration = shared.config.duration;
                    publisher::run(
                        &rooms,
                        &publish,
                        shared.config.peer,
                        start,
                        start + duration - pusher::settle(duration),
                    )
                })
                .map_err(|e| tracing::error!(error = %e, "cannot start the publish thread"))
                .ok()
        });

    let began = Instant::now();
    let mut next_tick = began + PROGRESS_EVERY;
    let mut results = Vec::with_capacity(threads);
    loop {
        match rx.recv_deadline(next_tick) {
            Ok(result) => results.push(result),
            Err(RecvTimeoutError::Timeout) => {
                tick(began.elapsed(), shared.live.totals());
                next_tick += PROGRESS_EVERY;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let panicked = handles
        .into_iter()
        .map(thread::JoinHandle::join)
        .filter(Result::is_err)
        .count();
    if let Some(e) = spawn_error {
        return Err(anyhow!(e).context("spawning a worker thread"));
    }
    if panicked > 0 {
        bail!("{panicked} worker thread(s) panicked");
    }

    let mut total = Stats::new().context("creating the latency histogram")?;
    results.sort_by_key(|(index, _)| *index);
    for (index, result) in results {
        let stats = result.with_context(|| format!("worker {index}"))?;
        total
            .merge(&stats)
            .with_context(|| format!("merging worker {index}'s latencies"))?;
    }
    let push_api = match pusher {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow!("the push thread panicked"))?,
        ),
        None if config.push.is_some() => bail!("the push thread could not be started"),
        None => None,
    };
    if let Some(api) = &push_api {
        for (name, &n) in &api.errors {
            total.errors_n(name, n);
        }
    }
    if let Some(handle) = publisher {
        let done = handle
            .join()
            .map_err(|_| anyhow!("the publish thread panicked"))?;
        total.rooms.published += done.sent;
        total.rooms.publish_failed += done.failed;
        for (name, &n) in &done.errors {
            total.errors_n(name, n);
        }
    }
    let cpu = CpuTime::now().since(cpu_before);
    Ok(Outcome {
        threads,
        stats: total,
        push_api,
        cpu,
    })
}

/// Deals connections out: global connection `i` (of this process's shard, with `--procs`)
/// goes to worker `n % threads` where `n` counts the shard's connections, starts at target
/// `i % targets` (none with `--ipconfig`: the list decides), and comes from source
/// `(i / targets) % sources`, so every source address cycles over every target (each
/// (source, target) pair has its own ephemeral port range). Connection `i` sends DATA only
/// if it is in the `--echo-fraction` subset.
fn plan(config: &Config, threads: usize) -> Vec<Vec<Conn>> {
    let mut plans: Vec<Vec<Conn>> = (0..threads)
        .map(|_| Vec::with_capacity(config.conns / threads + 1))
        .collect();
    let targets = config.targets.len().max(1);
    let mine = (0..config.conns).filter(|&i| config.shard.is_none_or(|s| s.owns(i)));
    for (n, i) in mine.enumerate() {
        let target = config.targets.get(i % targets).copied();
        let source = match config.sources.len() {
            0 => None,
            len => config.sources.get((i / targets) % len).copied(),
        };
        if let Some(worker) = plans.get_mut(n % threads) {
            let mut conn = Conn::new(i, target, source);
            conn.echo = config::echoes(i, config.echo_fraction);
            worker.push(conn);
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_dealt_round_robin() {
        let mut config = Config::new(vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ]);
        config.conns = 7;
        config.sources = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        let plans = plan(&config, 3);
        let globals: Vec<Vec<usize>> = plans
            .iter()
            .map(|p| p.iter().map(|c| c.global).collect())
            .collect();
        assert_eq!(globals, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        let pairs: Vec<(u16, String)> = plans
            .iter()
            .flatten()
            .map(|c| (c.target.unwrap().port(), c.source.unwrap().to_string()))
            .collect();
        // Global order 0..4: (1,.2) (2,.2) (1,.3) (2,.3) — every pairing is used.
        assert!(pairs.contains(&(1, "127.0.0.2".into())));
        assert!(pairs.contains(&(2, "127.0.0.2".into())));
        assert!(pairs.contains(&(1, "127.0.0.3".into())));
        assert!(pairs.contains(&(2, "127.0.0.3".into())));
    }

    #[test]
    fn a_shard_takes_every_kth_connection_and_the_echo_subset_is_spread() {
        let mut config = Config::new(vec!["127.0.0.1:1".parse().unwrap()]);
        config.conns = 1000;
        config.echo_fraction = 0.01;
        config.shard = Some(config::Shard { index: 1, count: 2 });
        let plans = plan(&config, 2);
        let all: Vec<&Conn> = plans.iter().flatten().collect();
        assert_eq!(all.len(), 500);
        assert!(all.iter().all(|c| c.global % 2 == 1));
        // 10 of 1000 echo, one in each run of 100 indices; all at odd indices here.
        let echoing: Vec<usize> = all.iter().filter(|c| c.echo).map(|c| c.global).collect();
        assert_eq!(echoing.len(), 10, "{echoing:?}");
        assert_eq!((0..1000).filter(|&i| config::echoes(i, 0.01)).count(), 10);
        assert!((0..1000).all(|i| config::echoes(i, 1.0)));
    }

    #[test]
    fn with_ipconfig_no_connection_has_a_target_of_its_own() {
        let mut config = Config::new(Vec::new());
        config.ipconfig = Some(http::Url::parse("http://127.0.0.1:6789").unwrap());
        config.conns = 3;
        let plans = plan(&config, 2);
        assert_eq!(plans.iter().map(Vec::len).sum::<usize>(), 3);
        assert!(plans.iter().flatten().all(|c| c.target.is_none()));
    }
}
