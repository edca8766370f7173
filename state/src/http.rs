//! The push API (axum, on its own thread): `POST /v1/push`, `GET /v1/sessions/{device_id}`,
//! `GET /metrics`, `GET /healthz`.
//!
//! Sessions live in the event loop, so the handlers send it a [`Command`] over a channel,
//! wake it, and wait for the answer. A push is answered only after its record is in the
//! journal. Every error is a JSON `{"error": "..."}` with a status that says whose fault it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use tether_daemon::http_thread::{HttpError, HttpThread};
use tokio::sync::oneshot;

use crate::config::MAX_TTL_S;
use crate::metrics::Metrics;
use crate::store::{PushRefused, PushStatus, SessionView};

/// How long a handler waits for the event loop.
const LOOP_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type PushResult = Result<(Option<u64>, PushStatus), PushRefused>;

/// A request for the event loop.
pub(crate) enum Command {
    Push {
        device: String,
        payload: Vec<u8>,
        ttl_s: Option<u64>,
        reply: oneshot::Sender<PushResult>,
    },
    View {
        device: String,
        reply: oneshot::Sender<Option<SessionView>>,
    },
}

/// How handlers reach the event loop.
#[derive(Clone)]
pub(crate) struct LoopHandle {
    pub commands: crossbeam_channel::Sender<Command>,
    pub waker: Arc<mio::Waker>,
}

impl LoopHandle {
    /// Hands `command` to the loop; `false` when its queue is full or it is gone.
    fn send(&self, command: Command) -> bool {
        let sent = self.commands.try_send(command).is_ok();
        if sent {
            let _ = self.waker.wake();
        }
        sent
    }
}

struct Shared {
    handle: LoopHandle,
    metrics: Arc<Metrics>,
    max_payload: usize,
    version: &'static str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    device_id: String,
    payload: String,
    ttl_s: Option<u64>,
}

/// The running HTTP listener; stops when dropped.
pub(crate) struct Http {
    thread: HttpThread,
}

impl Http {
    pub(crate) fn start(
        addr: SocketAddr,
        handle: LoopHandle,
        metrics: Arc<Metrics>,
        max_payload: usize,
        version: &'static str,
    ) -> Result<Http, HttpError> {
        let app = router(Arc::new(Shared {
            handle,
            metrics,
            max_payload,
            version,
        }));
        let thread = HttpThread::start("push API listener", "tether-state-http", addr, app)?;
        Ok(Http { thread })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.thread.local_addr()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/push", post(push))
        .route("/v1/sessions/{device_id}", get(session))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(shared)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn busy() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is busy or stopping",
    )
}

/// Largest request body: the base64 of `max_payload` bytes plus room for the other fields.
fn body_limit(max_payload: usize) -> usize {
    max_payload.div_ceil(3) * 4 + 4096
}

async fn push(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    let limit = body_limit(shared.max_payload);
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {limit} bytes"),
        );
    };
    let request: PushRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed push: {e}")),
    };
    if request.device_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "device_id is empty");
    }
    if let Some(ttl) = request.ttl_s {
        if !(1..=MAX_TTL_S).contains(&ttl) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("ttl_s must be between 1 and {MAX_TTL_S}"),
            );
        }
    }
    let payload = match STANDARD.decode(request.payload.as_bytes()) {
        Ok(payload) => payload,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("payload is not base64: {e}"),
            )
        }
    };
    if payload.len() > shared.max_payload {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("payload over max_payload ({} bytes)", shared.max_payload),
        );
    }
    let (reply, answer) = oneshot::channel();
    if !shared.handle.send(Command::Push {
        device: request.device_id,
        payload,
        ttl_s: request.ttl_s,
        reply,
    }) {
        return busy();
    }
    match tokio::time::timeout(LOOP_TIMEOUT, answer).await {
        Ok(Ok(Ok((msg_id, status)))) => {
            Json(json!({ "msg_id": msg_id, "status": status })).into_response()
        }
        Ok(Ok(Err(PushRefused::QueueFull { pending }))) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "error": "the session's push queue is full; retry after the device acknowledges",
                "pending": pending,
            })),
        )
            .into_response(),
        Ok(Ok(Err(PushRefused::TooLarge { max }))) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("payload over max_payload ({max} bytes)"),
        ),
        Ok(Ok(Err(PushRefused::DaemonFull { max_bytes }))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({
                "error": "the daemon holds max_pending_bytes of unacknowledged pushes; retry later",
                "status": "full",
                "max_pending_bytes": max_bytes,
            })),
        )
            .into_response(),
        Ok(Ok(Err(PushRefused::IdsExhausted))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "every message id was issued; the journal's counters are at their end",
        ),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not answer in time",
        ),
    }
}

async fn session(State(shared): State<Arc<Shared>>, Path(device): Path<String>) -> Response {
    let (reply, answer) = oneshot::channel();
    if !shared.handle.send(Command::View { device, reply }) {
        return busy();
    }
    match tokio::time::timeout(LOOP_TIMEOUT, answer).await {
        Ok(Ok(Some(view))) => Json(view).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no session for this device"),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not answer in time",
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            tether_daemon::prometheus::CONTENT_TYPE,
        )],
        shared.metrics.render(shared.version),
    )
        .into_response()
}
