//! The HTTP API (axum).
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/report` | 200 `{"status":"ok"}`; 400 `{"error","field"}` for a malformed or out-of-range report; with `report_keys_file`, 401 `{"error","reason"}` unsigned or not signed right ([`crate::auth`]), 403 `{"error","reason"}` signed for another gateway; 413 over `max_report_bytes`; 503 past `max_gateways` |
//! | `GET /ip_list` | 200 `{"gateways":[{"id","addr","transports":{"tcp","tls","ws","wss"},"score":{"dynamic","static"}}…],"generated_at_ms"}`, at most `top_n` entries, ties shuffled per request; 503 `{"error","generated_at_ms"}` when no gateway is eligible. With `cors_origins`: `Vary: Origin`, and `Access-Control-Allow-Origin` for an allowed `Origin` ([`crate::cors`]) |
//! | `OPTIONS /ip_list` | with `cors_origins`: a CORS preflight, 204 for an allowed `Origin`, 403 `{"error"}` otherwise; without: 405 |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | anything else | 404 (405 for a wrong method) with a JSON error |
//!
//! Every error body is JSON with an `error` message. `/ip_list` serves the current
//! [`Snapshot`] through the thread's cache and [`Dealer`]: no lock,
//! no serde, one allocation for the body.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::sync::Notify;

use crate::auth::{check_body_id, Presented, Refusal, Verifier};
use crate::config::Config;
use crate::cors::{Cors, Preflight, ALLOW_METHODS, MAX_AGE_S};
use crate::credentials::Credentials;
use crate::metrics::{Endpoint, Metrics, Rejection};
use crate::registry::{RecordError, Recorded, Registry};
use crate::report::Report;
use crate::snapshot::{Dealer, Snapshot, SnapshotCell};

/// Content type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = tether_daemon::prometheus::CONTENT_TYPE;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Monotonic milliseconds since the service started: the registry's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` after the start.
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.start + std::time::Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the handlers and the rebuild task share.
#[derive(Debug)]
pub struct AppState {
    pub registry: Mutex<Registry>,
    pub snapshot: SnapshotCell,
    pub metrics: Metrics,
    pub clock: Clock,
    /// Wakes the rebuild task after a report.
    pub rebuild: Notify,
    pub top_n: usize,
    pub max_report_bytes: usize,
    /// When (monotonic ms) a refusal for `max_gateways` was last logged; 0 = never.
    pub full_logged_at_ms: AtomicU64,
    /// With `report_keys_file`: who may report. None = unsigned reports are accepted.
    pub(crate) auth: Option<Mutex<Verifier>>,
    /// Which browser origins may read `/ip_list` (`cors_origins`).
    pub(crate) cors: Cors,
}

impl AppState {
    /// The state of a service with `config`, checking reports against `credentials`
    /// (`report_keys_file`, loaded) when given.
    pub fn new(config: &Config, credentials: Option<Credentials>) -> AppState {
        AppState {
            registry: Mutex::new(Registry::new(
                config.window,
                config.stale_after_ms,
                config.max_gateways,
            )),
            snapshot: SnapshotCell::new(Snapshot::empty(unix_ms())),
            metrics: Metrics::new(),
            clock: Clock::new(),
            rebuild: Notify::new(),
            top_n: config.top_n,
            max_report_bytes: config.max_report_bytes,
            full_logged_at_ms: AtomicU64::new(0),
            auth: credentials.map(|c| Mutex::new(Verifier::new(c))),
            cors: Cors::new(&config.cors_origins),
        }
    }

    /// New report credentials (SIGHUP). False when the service checks no signatures (it was
    /// started without `report_keys_file`).
    pub fn replace_credentials(&self, credentials: Credentials) -> bool {
        match &self.auth {
            Some(auth) => {
                auth.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .replace(credentials);
                true
            }
            None => false,
        }
    }

    /// Records a parsed report (from `POST /v1/report` or etcd) at `now_ms`, counting it
    /// accepted, or refused when `max_gateways` is reached, and the stale gateways it evicted.
    pub fn accept_report(&self, report: Report, now_ms: u64) -> Result<Recorded, RecordError> {
        let recorded = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(report, now_ms);
        match &recorded {
            Ok(recorded) => {
                self.metrics.report_accepted();
                self.metrics.stale_dropped(recorded.evicted);
            }
            Err(RecordError::Full { .. }) => self.metrics.report_rejected(Rejection::Full),
        }
        recorded
    }

    /// Rebuilds the list now: drops stale gateways, ranks the live ones (sorting outside the
    /// registry lock), publishes the new snapshot. Returns when (monotonic ms) the next
    /// tracked gateway goes stale.
    pub fn rebuild_now(&self) -> Option<u64> {
        let now_ms = self.clock.now_ms();
        let mut ranking = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .collect(now_ms);
        ranking.sort();
        let generated_at_ms = unix_ms();
        let snapshot = Snapshot::build(&ranking.ranked, self.top_n, generated_at_ms);
        self.metrics.stale_dropped(ranking.evicted);
        self.metrics.rebuilt(
            crate::metrics::GatewayCounts {
                live: ranking.live(),
                draining: ranking.draining,
                full: ranking.full,
                listed: snapshot.listed(),
            },
            generated_at_ms,
        );
        self.snapshot.publish(snapshot);
        ranking.next_expiry_ms
    }
}

pub(crate) type Shared = Arc<AppState>;

/// The routes, over `state`.
pub(crate) fn router(state: Shared) -> Router {
    let limit = state.max_report_bytes;
    Router::new()
        .route("/ip_list", get(ip_list).options(ip_list_preflight))
        .route(
            "/v1/report",
            post(report).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

thread_local! {
    static DEALER: RefCell<Dealer> = RefCell::new(Dealer::from_entropy());
}

async fn ip_list(State(s): State<Shared>, request: HeaderMap) -> Response {
    let started = Instant::now();
    let rendered = s.snapshot.with(|snap| {
        let body = DEALER.with(|d| snap.render(&mut d.borrow_mut()));
        body.ok_or_else(|| snap.unavailable_body().to_vec())
    });
    let (status, body) = match rendered {
        Ok(body) => (StatusCode::OK, body),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    };
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, JSON),
            (header::CACHE_CONTROL, NO_STORE),
        ],
        Body::from(body),
    )
        .into_response();
    add_cors(&s.cors, &request, response.headers_mut());
    s.metrics
        .request(Endpoint::IpList, status.as_u16(), started.elapsed());
    response
}

/// The CORS headers of an `/ip_list` answer to `request` (none with CORS off).
fn add_cors(cors: &Cors, request: &HeaderMap, out: &mut HeaderMap) {
    if !cors.is_on() {
        return;
    }
    out.insert(header::VARY, HeaderValue::from_static("origin"));
    let origin = request.get(header::ORIGIN).map(HeaderValue::as_bytes);
    // The value is the request's own header value, or `*`: always a valid header value.
    if let Some(Ok(value)) = cors
        .allow_origin(origin)
        .map(|v| HeaderValue::from_bytes(&v))
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
}

/// `OPTIONS /ip_list`: a browser's CORS preflight ([`crate::cors`]).
async fn ip_list_preflight(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    request: HeaderMap,
) -> Response {
    let started = Instant::now();
    let origin = request.get(header::ORIGIN).map(HeaderValue::as_bytes);
    let mut response = match s.cors.preflight(origin) {
        Preflight::Off => return method_not_allowed(State(s), method, uri).await,
        Preflight::Allowed => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_S),
            );
            response
        }
        Preflight::Refused => error(
            StatusCode::FORBIDDEN,
            "this origin may not read /ip_list (cors_origins)",
            None,
        ),
    };
    add_cors(&s.cors, &request, response.headers_mut());
    s.metrics.request(
        Endpoint::IpList,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A JSON error answer.
fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = match field {
        Some(field) => json!({"error": message, "field": field}),
        None => json!({"error": message}),
    };
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

async fn report(State(s): State<Shared>, request: Request) -> Response {
    let started = Instant::now();
    let response = record(&s, request).await;
    s.metrics.request(
        Endpoint::Report,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A refused report: counted, logged at debug, answered 401 or 403 with a JSON reason.
fn refuse(s: &AppState, refusal: &Refusal) -> Response {
    let reason = refusal.reason();
    s.metrics.report_rejected(reason);
    tracing::debug!(reason = reason.label(), "report refused: {refusal}");
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = json!({"error": refusal.to_string(), "reason": reason.label()}).to_string();
    let mut response = (status, [(header::CONTENT_TYPE, JSON)], body).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Tether-Report-HMAC-SHA256"),
        );
    }
    response
}

/// The signature headers of `request`, owned (a header that is not visible ASCII is None).
fn signature_headers(request: &Request) -> [Option<String>; 3] {
    use tether_proto::report_auth::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER].map(|name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

async fn record(s: &AppState, request: Request) -> Response {
    let [id, timestamp, signature] = signature_headers(&request);
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            s.metrics.report_rejected(Rejection::TooLarge);
            let message = format!(
                "the report is larger than {} bytes (max_report_bytes)",
                s.max_report_bytes
            );
            return error(StatusCode::PAYLOAD_TOO_LARGE, &message, None);
        }
        Err(rejection) => {
            s.metrics.report_rejected(Rejection::Malformed);
            let message = format!("cannot read the body: {}", rejection.body_text());
            return error(StatusCode::BAD_REQUEST, &message, None);
        }
    };
    let signed_for = match &s.auth {
        Some(auth) => {
            let presented = Presented {
                id: id.as_deref(),
                timestamp: timestamp.as_deref(),
                signature: signature.as_deref(),
            };
            let verdict = auth
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .authenticate(&presented, &body, unix_ms());
            match verdict {
                Ok(id) => Some(id),
                Err(refusal) => return refuse(s, &refusal),
            }
        }
        None => None,
    };
    let report = match Report::parse(&body) {
        Ok(report) => report,
        Err(e) => {
            s.metrics.report_rejected(Rejection::of(&e));
            tracing::debug!(error = %e, "report refused");
            return error(StatusCode::BAD_REQUEST, &e.to_string(), e.field());
        }
    };
    if let Some(signed_for) = signed_for {
        if let Err(refusal) = check_body_id(&signed_for, &report.id) {
            return refuse(s, &refusal);
        }
    }
    let id = report.id.clone();
    let now_ms = s.clock.now_ms();
    match s.accept_report(report, now_ms) {
        Ok(recorded) => {
            if recorded.new {
                tracing::info!(id = %id, "new gateway");
            }
            s.rebuild.notify_one();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, JSON)],
                r#"{"status":"ok"}"#,
            )
                .into_response()
        }
        Err(e @ RecordError::Full { .. }) => {
            // Once a minute at most: a flood of new ids must not flood the log too.
            let last = s.full_logged_at_ms.load(Ordering::Relaxed);
            if last == 0 || now_ms.saturating_sub(last) >= 60_000 {
                s.full_logged_at_ms.store(now_ms.max(1), Ordering::Relaxed);
                tracing::warn!(id = %id, "{e} (logged once a minute; see reports_rejected_total)");
            }
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), None)
        }
    }
}

async fn healthz(State(s): State<Shared>) -> Response {
    let started = Instant::now();
    let response = "ok".into_response();
    s.metrics.request(Endpoint::Healthz, 200, started.elapsed());
    response
}

async fn metrics(State(s): State<Shared>) -> Response {
    let started = Instant::now();
    let body = s.metrics.render_prometheus();
    let response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        )],
        body,
    )
        .into_response();
    s.metrics.request(Endpoint::Metrics, 200, started.elapsed());
    response
}

async fn not_found(State(s): State<Shared>, uri: Uri) -> Response {
    let started = Instant::now();
    let response = (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, JSON)],
        json!({"error": "not found", "path": uri.path()}).to_string(),
    )
        .into_response();
    s.metrics.request(Endpoint::Other, 404, started.elapsed());
    response
}

async fn method_not_allowed(State(s): State<Shared>, method: Method, uri: Uri) -> Response {
    let started = Instant::now();
    let allow = if uri.path() == "/v1/report" {
        "POST"
    } else {
        "GET, HEAD"
    };
    let response = (
        StatusCode::METHOD_NOT_ALLOWED,
        [
            (header::CONTENT_TYPE, JSON),
            (header::ALLOW, HeaderValue::from_static(allow)),
        ],
        json!({
            "error": "method not allowed",
            "method": method.as_str(),
            "path": uri.path(),
        })
        .to_string(),
    )
        .into_response();
    s.metrics.request(Endpoint::Other, 405, started.elapsed());
    response
}
