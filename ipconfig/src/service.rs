//! Starting and stopping the service: the listener, the tokio runtime, the HTTP server and
//! the rebuild task; the systemd watchdog's liveness check; and [`run`], which the binary
//! calls.
//!
//! The rebuild task waits for a report (a `Notify` permit) or for the next gateway to go
//! stale, rebuilds the list, then sleeps `rebuild_interval` so that a stream of reports costs
//! at most one rebuild per interval. The first report after a quiet spell is listed at once.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::serve::ListenerExt;
use thiserror::Error;
use tokio::sync::watch;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::http::{router, AppState, Shared};

/// Listen backlog: room for a burst of clients asking for the list at once.
const BACKLOG: u32 = 4096;

/// How long [`Service::stop`] lets open connections finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the service could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the tokio runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot start the service thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot watch etcd")]
    Etcd(#[source] tether_discovery::DiscoveryError),
    #[error("report_keys_file {path}: {problems}")]
    Credentials { path: String, problems: String },
}

/// A running service. Dropping it stops it too (like [`Service::stop`]).
#[derive(Debug)]
pub struct Service {
    local_addr: SocketAddr,
    state: Shared,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    /// For [`Service::liveness`]: the runtime, and false once the HTTP server has ended.
    runtime: tokio::runtime::Handle,
    serving: Arc<AtomicBool>,
    /// The etcd watch feeding the registry, with `etcd` set.
    fleet: Option<tether_discovery::Watch>,
}

impl Service {
    /// Binds `config.listen` (port 0 allowed), then serves on a tokio runtime with
    /// `config.workers` threads. The listener accepts once this returns.
    pub fn start(config: &Config) -> Result<Service, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_count())
            .thread_name("ipconfig-worker")
            .enable_io()
            .enable_time()
            .build()
            .map_err(StartError::Runtime)?;
        let addr = config.listen;
        let listener = {
            let _enter = runtime.enter();
            listen(addr).map_err(|source| StartError::Listen { addr, source })?
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?;

        let credentials = config
            .report_keys_file
            .as_deref()
            .map(load_credentials)
            .transpose()?;
        let state: Shared = Arc::new(AppState::new(config, credentials));
        let fleet = if config.etcd.is_empty() {
            None
        } else {
            let endpoints = config
                .etcd_auth
                .endpoints(&config.etcd)
                .map_err(StartError::Etcd)?;
            Some(crate::fleet::watch(endpoints, state.clone()).map_err(StartError::Etcd)?)
        };
        let app = router(state.clone());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let server = runtime.spawn(serve(listener, app, shutdown_rx.clone()));
        let rebuilder = runtime.spawn(rebuild_loop(
            state.clone(),
            config.rebuild_interval(),
            shutdown_rx,
        ));
        let handle = runtime.handle().clone();
        let serving = Arc::new(AtomicBool::new(true));
        let server_running = serving.clone();
        let thread = std::thread::Builder::new()
            .name("ipconfig".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = server.await;
                    server_running.store(false, Ordering::Relaxed);
                    let _ = rebuilder.await;
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(StartError::Thread)?;
        Ok(Service {
            local_addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            runtime: handle,
            serving,
            fleet,
        })
    }

    /// The systemd watchdog's check: the HTTP server is still running, and the runtime ran
    /// the probe task spawned by the previous call (each call spawns the next one: a task
    /// that bumps a counter). So the check fails when no worker thread polls tasks any more,
    /// e.g. every worker blocked, and costs one tiny task per call.
    pub fn liveness(&self) -> impl FnMut() -> bool + Send + 'static {
        let runtime = self.runtime.clone();
        let serving = self.serving.clone();
        let answered = Arc::new(AtomicU64::new(0));
        let probe = {
            let answered = answered.clone();
            move || {
                let answered = answered.clone();
                runtime.spawn(async move {
                    answered.fetch_add(1, Ordering::Relaxed);
                });
            }
        };
        let mut progress = tether_daemon::watchdog::Progress::new([0]);
        probe();
        move || {
            let alive = progress.moved([answered.load(Ordering::Relaxed)])
                && serving.load(Ordering::Relaxed);
            probe();
            alive
        }
    }

    /// The address the service accepts on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state (registry, snapshot, metrics), for tests and embedding.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// Graceful stop: stops accepting, lets open requests finish (up to 2 s), joins.
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    fn shutdown_and_join(&mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.stop();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("service thread panicked");
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown_and_join();
    }
}

/// The report credentials in the file at `path`.
pub(crate) fn load_credentials(path: &std::path::Path) -> Result<Credentials, StartError> {
    Credentials::load(path).map_err(|errors| StartError::Credentials {
        path: path.display().to_string(),
        problems: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// A TCP listener on `addr` with SO_REUSEADDR and a deep backlog. Needs a runtime context.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Waits until `shutdown` says true (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Serves until shutdown, then waits up to [`SHUTDOWN_GRACE`] for open connections.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: watch::Receiver<bool>,
) {
    let listener = listener.tap_io(|stream| {
        // Answers are one small write each: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
    });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(shutdown.clone()))
        .into_future();
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }
        () = async {
            stopped(shutdown).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open after the grace period, dropping them");
        }
    }
}

/// Rebuilds the list after reports (at most every `interval`) and when a gateway goes stale.
async fn rebuild_loop(state: Shared, interval: Duration, shutdown: watch::Receiver<bool>) {
    let mut next_expiry = state.rebuild_now();
    loop {
        let wake_at = next_expiry.map(|ms| {
            // One extra millisecond: at `expiry` itself the gateway is exactly stale.
            tokio::time::Instant::from_std(state.clock.instant_at(ms.saturating_add(1)))
        });
        tokio::select! {
            () = state.rebuild.notified() => {}
            () = sleep_until(wake_at) => {}
            () = stopped(shutdown.clone()) => return,
        }
        next_expiry = state.rebuild_now();
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stopped(shutdown.clone()) => return,
        }
    }
}

/// Sleeps until `at`, or forever when there is no deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// SIGHUP: reads `report_keys_file` again; a file with errors leaves the old keys in force.
/// The rest of the configuration needs a restart.
fn reload_credentials(config: &Config, service: &Service) {
    let Some(path) = &config.report_keys_file else {
        tracing::info!(
            "SIGHUP: no report_keys_file to reload (restart to change the configuration)"
        );
        return;
    };
    match load_credentials(path) {
        Ok(credentials) => {
            let (ids, prefixes) = credentials.counts();
            service.state().replace_credentials(credentials);
            tracing::info!(path = %path.display(), ids, prefixes, "SIGHUP: report keys reloaded");
        }
        Err(e) => tracing::error!("SIGHUP: {e}; the previous report keys stay in force"),
    }
}

/// Runs the service until SIGTERM or SIGINT, then stops gracefully.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Signals first: a SIGTERM that arrives while starting still stops cleanly.
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    tether_daemon::signals::spawn(move |event| {
        let _ = events_tx.send(event);
    })?;
    let service = Service::start(&config)?;
    tracing::info!(
        addr = %service.local_addr(),
        workers = config.worker_count(),
        window = config.window,
        stale_after_ms = config.stale_after_ms,
        top_n = config.top_n,
        etcd = ?config.etcd,
        report_keys_file = ?config.report_keys_file,
        "ipconfig listening{}",
        if config.report_keys_file.is_some() { "; reports must be signed" } else { "; reports are not signed (loopback only)" }
    );
    tether_daemon::notify::ready();
    let watchdog = tether_daemon::watchdog::Watchdog::start(
        "the HTTP server runs and the runtime ran the last probe task",
        service.liveness(),
    );
    while let Ok(tether_daemon::signals::SignalEvent::Reload) = events_rx.recv() {
        reload_credentials(&config, &service);
    }
    tracing::info!("stopping");
    tether_daemon::notify::stopping();
    drop(watchdog);
    service.stop();
    tracing::info!("stopped");
    Ok(())
}
