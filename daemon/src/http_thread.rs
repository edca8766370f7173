//! An axum app served on a thread of its own, far from a daemon's event loops: the gateway's
//! admin listener and the state daemon's push API.
//!
//! [`HttpThread::start`] binds synchronously (an address in use is an error returned, not a
//! log line), then serves on a new thread running a tokio current-thread runtime. Stopping
//! (or dropping) it stops accepting, lets requests in flight finish for up to
//! [`SHUTDOWN_GRACE`], and joins the thread.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;

/// How long a stop lets requests in flight finish before dropping their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the listener could not start. `listener` names it in messages ("admin listener").
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("{listener}: cannot bind {addr}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Setting up the bound socket, the runtime or the thread failed.
    #[error("{listener}: {what}")]
    Setup {
        listener: &'static str,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A running listener. Dropping it stops it too (like [`HttpThread::stop`]).
#[derive(Debug)]
pub struct HttpThread {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpThread {
    /// Binds `addr` (port 0 allowed) and serves `app` on a thread called `thread_name`;
    /// `listener` names it in errors and logs.
    pub fn start(
        listener: &'static str,
        thread_name: &str,
        addr: SocketAddr,
        app: Router,
    ) -> Result<HttpThread, HttpError> {
        let setup = |what: &'static str| {
            move |source| HttpError::Setup {
                listener,
                what,
                source,
            }
        };
        let std_listener = std::net::TcpListener::bind(addr).map_err(|source| HttpError::Bind {
            listener,
            addr,
            source,
        })?;
        let local_addr = std_listener
            .local_addr()
            .map_err(setup("reading the bound address"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(setup("setting the socket nonblocking"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(setup("building the tokio runtime"))?;
        let tcp = {
            // from_std registers the socket with this runtime's reactor.
            let _enter = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(setup("registering the listener"))?
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                runtime.block_on(serve(listener, tcp, app, shutdown_rx));
                // Dropping the runtime here cancels any connection still open past the grace.
            })
            .map_err(setup("spawning its thread"))?;
        tracing::info!(addr = %local_addr, "{listener} started");
        Ok(HttpThread {
            local_addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful stop: stops accepting, lets requests in flight finish (for up to
    /// [`SHUTDOWN_GRACE`]), joins the thread.
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    fn shutdown_and_join(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("HTTP listener thread panicked");
            }
        }
    }
}

impl Drop for HttpThread {
    fn drop(&mut self) {
        self.shutdown_and_join();
    }
}

/// Serves until `shutdown` fires (or its sender is dropped), then waits up to
/// [`SHUTDOWN_GRACE`] for open connections to finish.
async fn serve(
    listener: &'static str,
    tcp: tokio::net::TcpListener,
    app: Router,
    shutdown: oneshot::Receiver<()>,
) {
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    let server = axum::serve(tcp, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.await;
            // notify_one stores a permit, so the waiter below cannot miss it.
            notify.notify_one();
        })
        .into_future();
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "{listener} failed");
            }
        }
        () = async {
            signalled.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("{listener}: connections still open after the grace period, dropping them");
        }
    }
    tracing::info!("{listener} stopped");
}
