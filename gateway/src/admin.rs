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

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tether_daemon::http_thread::HttpThread;

use crate::metrics::{render_prometheus, render_stats, GatewayInfo, Metrics};

/// Why the admin listener could not start (bind, or setting up its thread).
pub use tether_daemon::http_thread::HttpError as AdminError;

/// Content type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = tether_daemon::prometheus::CONTENT_TYPE;

/// A running admin listener. Dropping it stops it too (like [`Admin::stop`]).
#[derive(Debug)]
pub struct Admin {
    http: HttpThread,
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
        let app = router(Arc::new(AdminState { reactors, info }));
        let http = HttpThread::start("admin listener", "tether-admin", addr, app)?;
        Ok(Admin { http })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Graceful stop: stops accepting, lets in-flight requests finish (for up to 2 s), joins
    /// the thread.
    pub fn stop(self) {
        self.http.stop();
    }
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
