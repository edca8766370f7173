//! `tether-state`: Tether's state daemon, the process behind a Unix domain socket that holds
//! every logged-in connection's session, its heartbeat and resume timers, and its queue of
//! pushes waiting for an ACK (see `design.md`, `doc/state.md` and the state kinds in
//! `doc/protocol.md`).
//!
//! - [`server`]: the one event loop (mio): socket, gateway links, timers, journal.
//! - [`store`]: the sessions and every change to them, sans-IO.
//! - [`session`], [`token`], [`record`]: a session, a login token, a journal record.
//! - [`journal`], [`wheel`]: the crash-safe journal and the timing wheel underneath.
//! - [`http`]: the push API and the metrics listener; [`api_tokens`]: who may call the push
//!   API; [`socket`]: binding the Unix socket and reading a peer's credentials; [`peers`]:
//!   who may connect to it; [`config`], [`metrics`].
//! - [`fleet`]: many hosts behind one router table, durable pushes and a bus in Redis
//!   Cluster (`--fleet`); without it the daemon works alone.

pub mod api_tokens;
pub mod config;
pub mod fleet;
mod http;
pub mod journal;
mod link;
pub mod metrics;
mod peers;
pub mod record;
mod room;
mod server;
mod session;
mod socket;
pub mod store;
pub mod token;
pub mod wheel;

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tether_daemon::signals::{self, SignalEvent};

use api_tokens::{Access, AccessCell};

pub use config::{Config, Opts};

/// Runs the daemon until SIGTERM; `opts` is kept to re-read the configuration on SIGHUP.
pub fn run(opts: Opts, config: Config) -> anyhow::Result<()> {
    tracing::info!(
        config = %tether_daemon::config::render(&config),
        "starting tether-state"
    );
    let keys = config.keys().context("reading the JWT keys")?;
    tracing::info!(keys = ?keys, "login token keys");
    let access =
        Access::load(config.api_tokens_file.as_deref()).context("reading api_tokens_file")?;
    let metrics = Arc::new(metrics::Metrics::default());
    publish_access(&access, &metrics);
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
    let peers = socket_peers(&config.socket, &config)?;
    let poll = mio::Poll::new().context("creating the poller")?;
    let waker =
        Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).context("creating the waker")?);
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(16 * 1024);
    let access = AccessCell::new(access);
    let http = http::Http::start(
        http::HttpSetup {
            push_api: config.http,
            metrics: config.metrics,
            access: access.clone(),
            max_payload: config.max_payload,
            version: env!("CARGO_PKG_VERSION"),
        },
        http::LoopHandle {
            commands: commands_tx,
            waker: waker.clone(),
        },
        metrics.clone(),
    )
    .context("starting the HTTP listeners")?;

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

    let fleet = match fleet::Settings::from_config(&config).context("fleet settings")? {
        Some(settings) => {
            let engine = fleet::RedisEngine::new(settings.clone())
                .context("creating the fleet engine's client")?;
            let started = fleet::Fleet::start(
                settings,
                Box::new(engine),
                waker.clone(),
                &store,
                metrics.clone(),
            )
            .context("starting the fleet threads")?;
            Some(started)
        }
        None => None,
    };
    let reload_metrics = metrics.clone();
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
        peers,
    )
    .context("registering the state socket")?
    .with_fleet(fleet);
    tracing::info!(
        socket = %config.socket.display(),
        peers = %server.peers,
        http = %http.push_api_addr(),
        metrics = %http.metrics_addr(),
        "listening"
    );
    tether_daemon::notify::ready();
    let watchdog = watchdog(&server);

    let result =
        server.run(|loop_state| reload(&opts, &config, &access, &reload_metrics, loop_state));
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

/// The push API's rules, in the metrics and the log.
fn publish_access(access: &Access, metrics: &metrics::Metrics) {
    metrics.api_tokens.set(access.tokens() as u64);
    match access {
        Access::Open => {
            tracing::warn!("push API: no api_tokens_file, every request is allowed (loopback only)")
        }
        Access::Tokens(tokens) => {
            tracing::info!(tokens = ?tokens, "push API: bearer tokens loaded")
        }
    }
}

/// Who may connect to the state socket: `allow_uids` / `allow_gids`, or this process's uid
/// and the socket file's group.
fn socket_peers(socket: &std::path::Path, config: &Config) -> anyhow::Result<peers::Peers> {
    let socket_gid = std::fs::metadata(socket)
        .with_context(|| format!("reading the group of {}", socket.display()))?
        .gid();
    // SAFETY: geteuid has no failure mode and no side effect.
    let own_uid = unsafe { libc::geteuid() };
    Ok(peers::Peers::new(config, own_uid, socket_gid))
}

/// SIGHUP: the rules (token keys and policy, timings, limits), the fsync policy, the push API's tokens
/// (`api_tokens_file` re-read) and the socket's allow-list change; the socket, the HTTP
/// addresses and the journal directory need a restart.
fn reload(
    opts: &Opts,
    running: &Config,
    access: &AccessCell,
    metrics: &metrics::Metrics,
    loop_state: server::Reloadable<'_>,
) {
    let server::Reloadable {
        store,
        journal,
        peers,
    } = loop_state;
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
    let tokens = match Access::load(config.api_tokens_file.as_deref()) {
        Ok(tokens) => tokens,
        Err(e) => {
            return tracing::error!(error = %e, "SIGHUP: cannot read api_tokens_file, nothing changed")
        }
    };
    let kept = with_running_listeners(running, &config);
    if !kept.is_empty() {
        let errors: Vec<String> = kept.iter().map(ToString::to_string).collect();
        return tracing::error!(
            errors = %errors.join("; "),
            "SIGHUP: configuration refused with the listeners that keep running, nothing changed"
        );
    }
    let new_peers = match socket_peers(&running.socket, &config) {
        Ok(peers) => peers,
        Err(e) => return tracing::error!(error = %e, "SIGHUP: nothing changed"),
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
    publish_access(&tokens, metrics);
    access.set(tokens);
    if *peers != new_peers {
        tracing::info!(peers = %new_peers, "SIGHUP: state socket allow-list changed");
        *peers = new_peers;
    }
    if let Err(e) = journal.set_policy(config.journal_fsync) {
        tracing::error!(error = %e, "SIGHUP: cannot change the fsync policy");
    }
    tracing::info!("SIGHUP: configuration reloaded");
}

/// What `check` says of `new` with the running `http` and `metrics`, which a reload does not
/// change: a push API that keeps listening on a non-loopback address keeps needing
/// `api_tokens_file`.
fn with_running_listeners(
    running: &Config,
    new: &Config,
) -> Vec<tether_daemon::config::ConfigError> {
    use tether_daemon::config::Validate;
    let kept = Config {
        http: running.http,
        metrics: running.metrics,
        ..new.clone()
    };
    kept.validate()
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
    if running.metrics != new.metrics {
        changed.push("metrics");
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
    if running.fleet != new.fleet {
        changed.push("fleet");
    }
    if running.fleet_redis != new.fleet_redis {
        changed.push("fleet_redis");
    }
    if running.fleet_host != new.fleet_host {
        changed.push("fleet_host");
    }
    if running.fleet_credentials_file != new.fleet_credentials_file {
        changed.push("fleet_credentials_file");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_daemon::secret::Secret;

    #[test]
    fn a_reload_cannot_open_a_push_api_that_keeps_listening_off_loopback() {
        let dir = std::env::temp_dir().join(format!("tether-state-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join("api-tokens");
        std::fs::write(&tokens, format!("a {} push\n", api_tokens::hash_hex(b"t"))).unwrap();
        let running = Config {
            jwt_secret: Secret::from("s".to_string()),
            http: "0.0.0.0:8902".parse().unwrap(),
            api_tokens_file: Some(tokens.clone()),
            ..Config::default()
        };
        // The file moves http back to loopback (a restart key) and drops the tokens: valid on
        // its own, refused with the listener that stays.
        let new = Config {
            http: "127.0.0.1:8902".parse().unwrap(),
            api_tokens_file: None,
            ..running.clone()
        };
        let errors = with_running_listeners(&running, &new);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "api_tokens_file");
        assert!(with_running_listeners(&running, &running).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
