//! The admin HTTP listener: `GET /metrics`, `GET /stats`, `GET /healthz`.
//!
//! It runs on its own thread with a tokio current-thread runtime and axum, far from the data
//! path: the reactors never wait for it. A scrape reads every reactor's [`Metrics`] (relaxed
//! atomic loads) and renders them with [`render_prometheus`] or [`render_stats`].
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /stats` | the same numbers as JSON, with per-reactor counts |
//! | `GET /healthz` | 200 `ok`, or 503 `{"status":"draining"}` while draining |
//! | anything else | 404 (405 for a wrong method) with a JSON error body |

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::oneshot;

use crate::metrics::{render_prometheus, render_stats, GatewayInfo, Metrics};

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = tether_daemon::prometheus::CONTENT_TYPE;

/// How long [`Admin::stop`] lets in-flight requests finish before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("admin listener: cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Setting up the bound socket or the runtime failed.
    #[error("admin listener: {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A running admin listener. Dropping it stops it too (like [`Admin::stop`]).
#[derive(Debug)]
pub struct Admin {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the handlers read.
struct AdminState {
    reactors: Vec<Arc<Metrics>>,
    info: Arc<GatewayInfo>,
}

type Shared = Arc<AdminState>;

impl Admin {
    /// Binds `addr` (port 0 allowed) synchronously — an error here (address in use) is
    /// returned, not logged — then serves on a new thread running a tokio current-thread
    /// runtime with axum.
    pub fn start(
        addr: SocketAddr,
        reactors: Vec<Arc<Metrics>>,
        info: Arc<GatewayInfo>,
    ) -> Result<Admin, AdminError> {
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|source| AdminError::Bind { addr, source })?;
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
        let listener = {
            // from_std registers the socket with this runtime's reactor.
            let _enter = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(setup("registering the listener"))?
        };

        let app = router(Arc::new(AdminState { reactors, info }));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tether-admin".into())
            .spawn(move || {
                runtime.block_on(serve(listener, app, shutdown_rx));
                // Dropping the runtime here cancels any connection still open past the grace.
            })
            .map_err(setup("spawning the admin thread"))?;

        tracing::info!(addr = %local_addr, "admin listener started");
        Ok(Admin {
            local_addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful stop: stops accepting, lets in-flight requests finish (for up to 2 s), joins
    /// the thread.
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    fn shutdown_and_join(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("admin thread panicked");
            }
        }
    }
}

/// Maps an I/O error from setup step `what` to [`AdminError::Setup`].
fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> AdminError {
    move |source| AdminError::Setup { what, source }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.shutdown_and_join();
    }
}

/// Serves until `shutdown` fires (or its sender is dropped), then waits up to
/// [`SHUTDOWN_GRACE`] for open connections to finish.
async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: oneshot::Receiver<()>) {
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.await;
            // notify_one stores a permit, so the waiter below cannot miss it.
            notify.notify_one();
        })
        .into_future();
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "admin listener failed");
            }
        }
        () = async {
            signalled.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("admin listener: connections still open after the grace period, dropping them");
        }
    }
    tracing::info!("admin listener stopped");
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn metrics(State(s): State<Shared>) -> Response {
    let body = render_prometheus(&s.reactors, &s.info);
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body).into_response()
}

async fn stats(State(s): State<Shared>) -> Response {
    Json(render_stats(&s.reactors, &s.info)).into_response()
}

async fn healthz(State(s): State<Shared>) -> Response {
    if s.info.draining.load(Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        "ok".into_response()
    }
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not found", "path": uri.path()})),
    )
        .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        Json(json!({
            "error": "method not allowed",
            "method": method.as_str(),
            "path": uri.path(),
        })),
    )
        .into_response()
}
