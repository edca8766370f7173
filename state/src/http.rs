//! The daemon's two HTTP listeners (axum, each on its own thread): the push API (`http`:
//! `POST /v1/push`, `GET` and `DELETE /v1/sessions/{device_id}`, the rooms' endpoints
//! (`/v1/rooms/{room}`, `…/members`, `…/publish`, `/v1/broadcast`), `GET /healthz`), where
//! every request but `/healthz` needs a bearer token with the endpoint's scope
//! ([`crate::api_tokens`]); and the metrics listener (`metrics`: `GET /metrics`,
//! `GET /healthz`), unauthenticated, so that scraping never reaches the push API.
//!
//! Sessions live in the event loop, so the handlers send it a [`Command`] over a channel,
//! wake it, and wait for the answer. A push or an ended session is answered only after its
//! record is in the journal. Every error is a JSON `{"error": "..."}` with a status that
//! says whose fault it is; 401 and 403 also carry `WWW-Authenticate: Bearer …`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use tether_daemon::http_thread::{HttpError, HttpThread};
use tokio::sync::oneshot;

use crate::api_tokens::{AccessCell, Denied, Granted, Scope};
use crate::config::MAX_TTL_S;
use crate::metrics::Metrics;
use crate::store::{
    EndedSession, Membership, Published, PushRefused, PushStatus, RoomRefused, RoomView,
    SessionView,
};

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
    End {
        device: String,
        reply: oneshot::Sender<Option<EndedSession>>,
    },
    Join {
        device: String,
        room: String,
        reply: oneshot::Sender<RoomResult<Membership>>,
    },
    Leave {
        device: String,
        room: String,
        reply: oneshot::Sender<RoomResult<Membership>>,
    },
    /// `room` `None`: the broadcast.
    Publish {
        room: Option<String>,
        payload: Vec<u8>,
        reply: oneshot::Sender<RoomResult<Published>>,
    },
    RoomView {
        room: String,
        reply: oneshot::Sender<Option<RoomView>>,
    },
}

pub(crate) type RoomResult<T> = Result<T, RoomRefused>;

/// The loop's answer to a command, sent once this iteration's records are in the journal.
pub(crate) enum Answer {
    Push(oneshot::Sender<PushResult>, PushResult),
    View(oneshot::Sender<Option<SessionView>>, Option<SessionView>),
    End(oneshot::Sender<Option<EndedSession>>, Option<EndedSession>),
    Membership(
        oneshot::Sender<RoomResult<Membership>>,
        RoomResult<Membership>,
    ),
    Published(
        oneshot::Sender<RoomResult<Published>>,
        RoomResult<Published>,
    ),
}

impl Answer {
    pub(crate) fn send(self) {
        let _ = match self {
            Answer::Push(reply, result) => reply.send(result).map_err(drop),
            Answer::View(reply, result) => reply.send(result).map_err(drop),
            Answer::End(reply, result) => reply.send(result).map_err(drop),
            Answer::Membership(reply, result) => reply.send(result).map_err(drop),
            Answer::Published(reply, result) => reply.send(result).map_err(drop),
        };
    }
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
    access: AccessCell,
    metrics: Arc<Metrics>,
    max_payload: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    device_id: String,
    payload: String,
    ttl_s: Option<u64>,
}

/// The running listeners; they stop when dropped.
pub(crate) struct Http {
    push_api: HttpThread,
    metrics: HttpThread,
}

/// Where each listener binds, and what the push API needs.
pub(crate) struct HttpSetup {
    pub push_api: SocketAddr,
    pub metrics: SocketAddr,
    pub access: AccessCell,
    pub max_payload: usize,
    pub version: &'static str,
}

impl Http {
    pub(crate) fn start(
        setup: HttpSetup,
        handle: LoopHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Http, HttpError> {
        let scrape = metrics_router(metrics.clone(), setup.version);
        let metrics_thread = HttpThread::start(
            "metrics listener",
            "tether-state-metrics",
            setup.metrics,
            scrape,
        )?;
        let app = push_api_router(Arc::new(Shared {
            handle,
            access: setup.access,
            metrics,
            max_payload: setup.max_payload,
        }));
        let push_api = HttpThread::start(
            "push API listener",
            "tether-state-http",
            setup.push_api,
            app,
        )?;
        Ok(Http {
            push_api,
            metrics: metrics_thread,
        })
    }

    pub(crate) fn push_api_addr(&self) -> SocketAddr {
        self.push_api.local_addr()
    }

    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr()
    }
}

fn push_api_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/push", post(push))
        .route("/v1/sessions/{device_id}", get(session).delete(end_session))
        .route("/v1/rooms/{room}", get(room_view))
        .route(
            "/v1/rooms/{room}/members",
            post(join_room).delete(leave_room),
        )
        .route("/v1/rooms/{room}/publish", post(publish_room))
        .route("/v1/broadcast", post(broadcast))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "metrics are served on the metrics listener (the `metrics` key), not here",
                )
            }),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(shared)
}

fn metrics_router(metrics: Arc<Metrics>, version: &'static str) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        tether_daemon::prometheus::CONTENT_TYPE,
                    )],
                    metrics.render(version),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
}

/// `None` when the request's bearer token has `needed`; else the 401 or 403 answer, counted
/// by reason.
fn refusal(shared: &Shared, headers: &HeaderMap, needed: Scope) -> Option<Response> {
    let access = shared.access.get();
    let presented = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let denied = match access.authorize(presented, needed) {
        Ok(Granted::Open | Granted::Token(_)) => return None,
        Err(denied) => denied,
    };
    let m = &shared.metrics;
    match &denied {
        Denied::Missing => m.api_denied_missing.inc_shared(),
        Denied::Unknown => m.api_denied_unknown.inc_shared(),
        Denied::Scope { token, needed } => {
            m.api_denied_scope.inc_shared();
            tracing::warn!(token = %token, scope = needed.name(), "push API: a token used without the scope its request needs");
        }
    }
    let status = StatusCode::from_u16(denied.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = error(status, &denied.message());
    if let Ok(challenge) = header::HeaderValue::from_str(&denied.challenge()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    Some(response)
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

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(refused) = refusal(&shared, &headers, Scope::Push) {
        return refused;
    }
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
    let payload = match payload_of(&request.payload, shared.max_payload) {
        Ok(payload) => payload,
        Err(refused) => return *refused,
    };
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
        Ok(Ok(Err(PushRefused::FleetUnavailable))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({
                "error": "the fleet's router cannot be reached from this host; nothing was accepted, retry",
                "status": "unavailable",
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

async fn session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(device): Path<String>,
) -> Response {
    let view = |reply| Command::View { device, reply };
    session_command(&shared, &headers, Scope::SessionsRead, view).await
}

/// `DELETE /v1/sessions/{device_id}`: kicks the device's connection and removes its session.
async fn end_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(device): Path<String>,
) -> Response {
    let end = |reply| Command::End { device, reply };
    session_command(&shared, &headers, Scope::Kick, end).await
}

/// A command about one session, for a request whose token has `needed`: 200 with the loop's
/// answer as JSON, or 404.
async fn session_command<T: serde::Serialize>(
    shared: &Shared,
    headers: &HeaderMap,
    needed: Scope,
    command: impl FnOnce(oneshot::Sender<Option<T>>) -> Command,
) -> Response {
    if let Some(refused) = refusal(shared, headers, needed) {
        return refused;
    }
    let (reply, answer) = oneshot::channel();
    if !shared.handle.send(command(reply)) {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRequest {
    device_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    payload: String,
}

/// `POST /v1/rooms/{room}/members`: the device's session joins the room.
async fn join_room(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Body,
) -> Response {
    membership(&shared, &headers, body, |device, reply| Command::Join {
        device,
        room,
        reply,
    })
    .await
}

/// `DELETE /v1/rooms/{room}/members`: the device's session leaves the room.
async fn leave_room(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Body,
) -> Response {
    membership(&shared, &headers, body, |device, reply| Command::Leave {
        device,
        room,
        reply,
    })
    .await
}

async fn membership(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    command: impl FnOnce(String, oneshot::Sender<RoomResult<Membership>>) -> Command,
) -> Response {
    if let Some(refused) = refusal(shared, headers, Scope::Rooms) {
        return refused;
    }
    let request: MemberRequest = match json_body(body, 4096).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    if request.device_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "device_id is empty");
    }
    let (reply, answer) = oneshot::channel();
    if !shared.handle.send(command(request.device_id, reply)) {
        return busy();
    }
    room_answer(answer).await
}

/// `POST /v1/rooms/{room}/publish`.
async fn publish_room(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Body,
) -> Response {
    publish(&shared, &headers, body, Some(room)).await
}

/// `POST /v1/broadcast`: to every logged-in connection.
async fn broadcast(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    publish(&shared, &headers, body, None).await
}

async fn publish(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    room: Option<String>,
) -> Response {
    if let Some(refused) = refusal(shared, headers, Scope::Push) {
        return refused;
    }
    let request: PublishRequest = match json_body(body, body_limit(shared.max_payload)).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let payload = match payload_of(&request.payload, shared.max_payload) {
        Ok(payload) => payload,
        Err(refused) => return *refused,
    };
    let (reply, answer) = oneshot::channel();
    if !shared.handle.send(Command::Publish {
        room,
        payload,
        reply,
    }) {
        return busy();
    }
    room_answer(answer).await
}

/// `GET /v1/rooms/{room}`.
async fn room_view(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers, Scope::SessionsRead) {
        return refused;
    }
    let (reply, answer) = oneshot::channel();
    if !shared.handle.send(Command::RoomView { room, reply }) {
        return busy();
    }
    match tokio::time::timeout(LOOP_TIMEOUT, answer).await {
        Ok(Ok(Some(view))) => Json(view).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such room"),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not answer in time",
        ),
    }
}

/// A request's base64 `payload`, decoded, or the 400/413 answer.
fn payload_of(encoded: &str, max_payload: usize) -> Result<Vec<u8>, Box<Response>> {
    let payload = STANDARD.decode(encoded.as_bytes()).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("payload is not base64: {e}"),
        ))
    })?;
    if payload.len() > max_payload {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("payload over max_payload ({max_payload} bytes)"),
        )));
    }
    Ok(payload)
}

/// A JSON request body of at most `limit` bytes, or the 400/413 answer.
async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, Response> {
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {limit} bytes"),
        ));
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("malformed request: {e}")))
}

/// The loop's answer to a room command: 200 with it as JSON, or the refusal's status.
async fn room_answer<T: serde::Serialize>(answer: oneshot::Receiver<RoomResult<T>>) -> Response {
    match tokio::time::timeout(LOOP_TIMEOUT, answer).await {
        Ok(Ok(Ok(done))) => Json(done).into_response(),
        Ok(Ok(Err(refused))) => {
            let status = match refused {
                RoomRefused::NoSession => StatusCode::NOT_FOUND,
                RoomRefused::BadName => StatusCode::BAD_REQUEST,
                RoomRefused::NotGranted => StatusCode::FORBIDDEN,
                RoomRefused::SessionFull { .. } | RoomRefused::DaemonFull { .. } => {
                    StatusCode::CONFLICT
                }
                RoomRefused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &refused.reason())
        }
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not answer in time",
        ),
    }
}
