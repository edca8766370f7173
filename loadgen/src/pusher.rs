//! `--push-rate R`: one thread that POSTs R pushes per second, in total, to tether-state's
//! `POST /v1/push` (`--push-url`) for devices of this run picked at random, from the start
//! of the load until [`settle`] before its end (so the last pushes reach their devices
//! before the connections close) — so a demo needs no second tool to drive pushes.
//!
//! Each payload is stamped with the POST time ([`crate::pushes`]), so the connections
//! measure push latency from it. The requests go over one blocking keep-alive HTTP/1.1
//! connection (reopened when the server closes it); a push is due at `start + n / R`, and
//! a thread that falls behind sends at once without skipping. One thread does a few
//! thousand POSTs per second on loopback; more needs more loadgen processes. With
//! `--push-token-file`, each POST carries `Authorization: Bearer <token>`. Answers are
//! counted by status; refusals and failures also under `errors` as `push_api_<cause>`
//! (`push_api_http_401` for a token the daemon does not know, `_403` for one without `push`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use tether_daemon::secret::Secret;

use crate::config::PushConfig;
use crate::http::{self, Url};
use crate::pushes;
use crate::session;

/// TTL asked for each push: long enough to outlive a reconnect, short enough not to pile up.
pub(crate) const PUSH_TTL_S: u64 = 60;
/// Connect and read timeout of one POST.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// What follows the stamp in each payload.
const TAG: &[u8] = b" tether-loadgen push";
/// The longest quiet spell before the end of the load.
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// How long before the end of a `duration`-long load the pushes stop: a tenth of it, at
/// most [`SETTLE_MAX`].
pub(crate) fn settle(duration: Duration) -> Duration {
    (duration / 10).min(SETTLE_MAX)
}

/// What the push driver did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushApi {
    /// POSTs sent.
    pub posted: u64,
    /// Answered 200 `delivered`: the device was online.
    pub delivered: u64,
    /// Answered 200 `queued`: the session was detached; delivered on RESUME.
    pub queued: u64,
    /// Answered 200 `offline`: the device had no session; nothing kept.
    pub offline: u64,
    /// Anything else (HTTP errors, refusals, I/O failures); by cause in `errors`.
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
}

impl PushApi {
    /// Adds another process's counts (`--procs`).
    pub fn add(&mut self, o: &PushApi) {
        self.posted += o.posted;
        self.delivered += o.delivered;
        self.queued += o.queued;
        self.offline += o.offline;
        self.failed += o.failed;
        for (name, n) in &o.errors {
            *self.errors.entry(name.clone()).or_insert(0) += n;
        }
    }

    fn fail(&mut self, cause: &str) {
        self.failed += 1;
        *self.errors.entry(format!("push_api_{cause}")).or_insert(0) += 1;
    }
}

/// The devices pushes go to: `prefix-(offset + i)`, i < count.
#[derive(Debug, Clone)]
pub(crate) struct Devices {
    pub prefix: String,
    pub offset: u64,
    pub count: usize,
}

/// Sends pushes at `config.rate` from `start` until `end`; returns the counts.
pub(crate) fn run(config: &PushConfig, devices: &Devices, start: Instant, end: Instant) -> PushApi {
    let mut api = PushApi::default();
    let mut client = Client::new(config.url.clone(), config.token.clone());
    let mut rng = Rng::seeded();
    let path = config.url.path("/v1/push");
    let mut n: u64 = 0;
    while let Ok(offset) = Duration::try_from_secs_f64(n as f64 / config.rate) {
        let due = start + offset;
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        n += 1;
        let index = rng.below(devices.count as u64) as usize;
        let device = session::device_id(&devices.prefix, devices.offset, index);
        let now_us = u64::try_from(session::unix_now().as_micros()).unwrap_or(u64::MAX);
        let body = request_body(&device, &pushes::stamped(now_us, TAG));
        api.posted += 1;
        match client.post(&path, body.as_bytes()) {
            Ok(response) => record(&mut api, &response),
            Err(cause) => api.fail(cause),
        }
    }
    api
}

/// The JSON body of one push.
fn request_body(device: &str, payload: &[u8]) -> String {
    serde_json::json!({
        "device_id": device,
        "payload": STANDARD.encode(payload),
        "ttl_s": PUSH_TTL_S,
    })
    .to_string()
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: Option<String>,
}

/// Counts one answer of the push API.
fn record(api: &mut PushApi, response: &http::Response) {
    if response.status != 200 {
        return api.fail(&format!("http_{}", response.status));
    }
    let status = serde_json::from_slice::<Answer>(&response.body)
        .ok()
        .and_then(|a| a.status);
    match status.as_deref() {
        Some("delivered") => api.delivered += 1,
        Some("queued") => api.queued += 1,
        Some("offline") => api.offline += 1,
        _ => api.fail("bad_answer"),
    }
}

/// One keep-alive HTTP/1.1 connection, reopened as needed (the room publisher uses it too).
pub(crate) struct Client {
    url: Url,
    token: Option<Secret>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub(crate) fn new(url: Url, token: Option<Secret>) -> Client {
        Client {
            url,
            token,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// POSTs `body`; a kept-alive connection the server closed meanwhile is retried once on a
    /// fresh one. The error is a cause name.
    pub(crate) fn post(&mut self, path: &str, body: &[u8]) -> Result<http::Response, &'static str> {
        let bearer = self.token.as_ref().map(Secret::expose);
        let request = http::post_json(&self.url.host, path, body, bearer);
        let reused = self.stream.is_some();
        match self.exchange(&request) {
            Err(Failure::Io) if reused => self.exchange(&request).map_err(Failure::name),
            other => other.map_err(Failure::name),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> Result<http::Response, Failure> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.url.addr, IO_TIMEOUT)
                .map_err(|_| Failure::Unreachable)?;
            let _ = stream.set_nodelay(true);
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|_| Failure::Io)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let result = self.round_trip(request);
        match &result {
            Ok(response) if !response.close => {}
            _ => self.stream = None,
        }
        result
    }

    fn round_trip(&mut self, request: &[u8]) -> Result<http::Response, Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::Io);
        };
        stream.write_all(request).map_err(|_| Failure::Io)?;
        let mut chunk = [0u8; 4096];
        loop {
            match http::parse_response(&self.buf, false, 1 << 20) {
                Ok(Some((response, used))) => {
                    self.buf.drain(..used);
                    return Ok(response);
                }
                Ok(None) => {}
                Err(_) => return Err(Failure::BadAnswer),
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return match http::parse_response(&self.buf, true, 1 << 20) {
                        Ok(Some((response, _))) => Ok(response),
                        _ if self.buf.is_empty() => Err(Failure::Io),
                        _ => Err(Failure::BadAnswer),
                    };
                }
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Failure::Timeout)
                }
                Err(_) => return Err(Failure::Io),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unreachable,
    Io,
    Timeout,
    BadAnswer,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Io => "io_error",
            Failure::Timeout => "timeout",
            Failure::BadAnswer => "bad_answer",
        }
    }
}

/// xorshift64*: device choice, not cryptography.
pub(crate) struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = session::unix_now().subsec_nanos() as u64;
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn bodies_carry_the_device_and_a_stamped_base64_payload() {
        let body: serde_json::Value =
            serde_json::from_str(&request_body("dev-3", &pushes::stamped(42, b"x"))).unwrap();
        assert_eq!(body["device_id"], "dev-3");
        assert_eq!(body["ttl_s"], PUSH_TTL_S);
        let payload = STANDARD.decode(body["payload"].as_str().unwrap()).unwrap();
        assert_eq!(pushes::stamp(&payload), Some(42));
    }

    #[test]
    fn answers_are_counted_by_status() {
        let mut api = PushApi::default();
        let answer = |status, body: &str| http::Response {
            status,
            body: body.as_bytes().to_vec(),
            close: false,
        };
        record(
            &mut api,
            &answer(200, r#"{"msg_id":1,"status":"delivered"}"#),
        );
        record(&mut api, &answer(200, r#"{"msg_id":2,"status":"queued"}"#));
        record(
            &mut api,
            &answer(200, r#"{"msg_id":null,"status":"offline"}"#),
        );
        record(&mut api, &answer(429, r#"{"error":"full","pending":1024}"#));
        record(&mut api, &answer(200, "nonsense"));
        assert_eq!(
            (api.delivered, api.queued, api.offline, api.failed),
            (1, 1, 1, 2)
        );
        assert_eq!(api.errors.get("push_api_http_429"), Some(&1));
        assert_eq!(api.errors.get("push_api_bad_answer"), Some(&1));
    }

    #[test]
    fn pushes_stop_a_little_before_the_end() {
        assert_eq!(settle(Duration::from_secs(20)), SETTLE_MAX);
        assert_eq!(settle(Duration::from_secs(2)), Duration::from_millis(200));
    }

    #[test]
    fn the_rng_covers_the_range() {
        let mut rng = Rng::seeded();
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[rng.below(10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.below(0), 0);
    }

    /// A fake push API on a kept-alive connection that it closes after two answers; every
    /// request must carry the bearer token.
    #[test]
    fn posts_at_the_rate_over_keep_alive_and_survive_a_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut requests = 0;
            for stream in listener.incoming().take(3) {
                let mut stream = stream.unwrap();
                let mut buf = Vec::new();
                let mut served = 0;
                let mut chunk = [0u8; 4096];
                while served < 2 {
                    let n = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        assert!(
                            head.lines()
                                .any(|l| l == "Authorization: Bearer push-t0ken"),
                            "{head}"
                        );
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        buf.drain(..end + 4 + len);
                        let body = r#"{"msg_id":7,"status":"delivered"}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        stream.write_all(answer.as_bytes()).unwrap();
                        served += 1;
                        requests += 1;
                    }
                }
                if requests >= 5 {
                    break;
                }
            }
            requests
        });
        let config = PushConfig {
            rate: 100.0,
            url: Url::parse(&format!("http://{addr}")).unwrap(),
            token: Some(Secret::new(b"push-t0ken".to_vec())),
        };
        let devices = Devices {
            prefix: "d".into(),
            offset: 0,
            count: 3,
        };
        let start = Instant::now();
        let api = run(&config, &devices, start, start + Duration::from_millis(50));
        assert_eq!(api.posted, 5, "{api:?}");
        assert_eq!(api.delivered, 5, "{api:?}");
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert_eq!(server.join().unwrap(), 5);
    }
}
