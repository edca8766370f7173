//! `tether-state`: Tether's state daemon, the process behind a Unix domain socket that holds
//! every logged-in connection's session, its heartbeat and resume timers, and its queue of
//! pushes waiting for an ACK (see `design.md`, `doc/state.md` and the state kinds in
//! `doc/protocol.md`).
//!
//! - [`server`]: the one event loop (mio): socket, gateway links, timers, journal.
//! - [`store`]: the sessions and every change to them, sans-IO.
//! - [`session`], [`token`], [`record`]: a session, a login token, a journal record.
//! - [`journal`], [`wheel`]: the crash-safe journal and the timing wheel underneath.
//! - [`http`]: the push API; [`socket`]: binding the Unix socket; [`config`], [`metrics`].

pub mod config;
mod http;
pub mod journal;
mod link;
pub mod metrics;
pub mod record;
mod server;
mod session;
mod socket;
pub mod store;
pub mod token;
pub mod wheel;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tether_daemon::signals::{self, SignalEvent};

pub use config::{Config, Opts};

/// Runs the daemon until SIGTERM; `opts` is kept to re-read the configuration on SIGHUP.
pub fn run(opts: Opts, config: Config) -> anyhow::Result<()> {
    tracing::info!(
        config = %tether_daemon::config::render(&config),
        "starting tether-state"
    );
    let keys = config.keys().context("reading the JWT keys")?;
    tracing::info!(keys = ?keys, "login token keys");
    let metrics = Arc::new(metrics::Metrics::default());
    let clock = server::Clock::new();

    // The journal first: its lock keeps a second daemon off the same state.
    let started = std::time::Instant::now();
    let (journal, replay) = journal::Journal::open(&config.journal, config.journal_fsync)
        .with_context(|| format!("opening the journal in {}", config.journal.display()))?;
    let now = clock.now();
    let mut store = store::Store::new(store::Rules::new(&config, keys), metrics.clone(), now);
    for (i, record) in replay.iter().enumerate() {
        store.replay(record, now).with_context(|| {
            format!(
                "replaying the journal: record {} of {} (snapshot first) is refused",
                i + 1,
                replay.len()
            )
        })?;
    }
    store.finish_replay(now);
    tracing::info!(
        generation = replay.generation(),
        records = replay.len(),
        sessions = store.len(),
        torn_tail = replay.torn_tail.is_some(),
        ms = started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    drop(replay);

    let listener = socket::bind(&config.socket).context("binding the state socket")?;
    let poll = mio::Poll::new().context("creating the poller")?;
    let waker =
        Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).context("creating the waker")?);
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(16 * 1024);
    let http = http::Http::start(
        config.http,
        http::LoopHandle {
            commands: commands_tx,
            waker: waker.clone(),
        },
        metrics.clone(),
        config.max_payload,
        env!("CARGO_PKG_VERSION"),
    )
    .with_context(|| format!("starting the HTTP listener on {}", config.http))?;

    let signal = Arc::new(AtomicU8::new(server::RUN));
    {
        let (signal, waker) = (signal.clone(), waker.clone());
        signals::spawn(move |event| {
            let value = match event {
                SignalEvent::Stop => server::STOP,
                SignalEvent::Reload => server::RELOAD,
            };
            signal.store(value, Ordering::Relaxed);
            let _ = waker.wake();
        })
        .context("installing signal handlers")?;
    }

    let mut server = server::Server::new(
        poll,
        listener,
        waker,
        commands_rx,
        store,
        journal,
        config.compact_bytes,
        metrics,
        clock,
        signal,
    )
    .context("registering the state socket")?;
    tracing::info!(
        socket = %config.socket.display(),
        http = %http.local_addr(),
        "listening"
    );
    tether_daemon::notify::ready();
    let watchdog = watchdog(&server);

    let result = server.run(|store, journal| reload(&opts, &config, store, journal));
    drop(watchdog);
    drop(http);
    if let Err(e) = std::fs::remove_file(&config.socket) {
        tracing::warn!(error = %e, "could not remove the socket file");
    }
    result
}

/// Under systemd with `WatchdogSec=`: WATCHDOG=1 only while the event loop goes round. Each
/// check wakes the loop, so an idle loop answers within the check's retry and a stuck one
/// (or one busy compacting for longer than `WatchdogSec=`) gets no ping.
fn watchdog(server: &server::Server) -> Option<tether_daemon::watchdog::Watchdog> {
    use tether_daemon::watchdog::{Progress, Watchdog};
    let (loops, waker) = (server.loops(), server.waker.clone());
    let mut progress = Progress::new([loops.load(Ordering::Relaxed)]);
    let _ = waker.wake(); // so that the first check finds the loop gone round
    Watchdog::start("the event loop went round since the last ping", move || {
        let alive = progress.moved([loops.load(Ordering::Relaxed)]);
        let _ = waker.wake();
        alive
    })
}

/// SIGHUP: the rules (token keys and policy, timings, limits) and the fsync policy change; the socket, the
/// HTTP address and the journal directory need a restart.
fn reload(opts: &Opts, running: &Config, store: &mut store::Store, journal: &mut journal::Journal) {
    let mut config = match opts.load() {
        Ok(config) => config,
        Err(errors) => {
            return tracing::error!("SIGHUP: configuration refused, nothing changed:\n{errors}")
        }
    };
    let keys = match config.keys() {
        Ok(keys) => keys,
        Err(e) => {
            return tracing::error!(error = %e, "SIGHUP: cannot read the JWT keys, nothing changed")
        }
    };
    let ignored = restart_only_changes(running, &config);
    if !ignored.is_empty() {
        tracing::warn!(
            keys = %ignored.join(", "),
            "SIGHUP: these keys need a restart; they keep their running values"
        );
    }
    config.max_payload = running.max_payload;
    tracing::info!(keys = ?keys, "SIGHUP: login token keys");
    store.set_rules(store::Rules::new(&config, keys));
    if let Err(e) = journal.set_policy(config.journal_fsync) {
        tracing::error!(error = %e, "SIGHUP: cannot change the fsync policy");
    }
    tracing::info!("SIGHUP: configuration reloaded");
}

/// Keys of `new` that differ from `running` and only a restart applies.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.socket != new.socket {
        changed.push("socket");
    }
    if running.http != new.http {
        changed.push("http");
    }
    if running.journal != new.journal {
        changed.push("journal");
    }
    if running.compact_bytes != new.compact_bytes {
        changed.push("compact_bytes");
    }
    if running.max_payload != new.max_payload {
        // The HTTP listener sizes its body limit from it at start.
        changed.push("max_payload");
    }
    if running.log_format != new.log_format {
        changed.push("log_format");
    }
    changed
}
