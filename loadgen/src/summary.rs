//! The result of a run: every worker's [`Stats`] merged, plus the run's shape and the load
//! generator's own CPU cost; printed as a table and written as JSON.
//!
//! JSON keys (bench scripts, `doc/bench.md` and `cargo xtask demo` rely on them):
//! `mode`, `pipeline` | `rate`, `duration_s`, `warmup_s`, `payload`, `threads`, `login`,
//! `conns{requested,established,logged_in,failed,dropped,setup_s}`,
//! `frames{sent,received,skipped}`, `requests{sent,answered,errored,lost,unanswered}`,
//! `errors{NAME:n}`, `verify_failures`, `throughput_per_s`,
//! `latency_us{p50,p90,p99,p999,max,mean}`, `logins{ok,failed,busy}`,
//! `resumes{ok,failed,new_session}`, `reconnects{goaways,ok,failed}`,
//! `heartbeats{sent,pongs}`,
//! `push{received,unique,duplicates,out_of_order,unstamped,acked,latency_us{…}}`,
//! `push_api{posted,delivered,queued,offline,failed}` (only with `--push-rate`),
//! `rooms{system,rooms,per_conn,publish_rate,publish_size,broadcast,published,publish_failed,
//! frames,replayed_frames,conflated_frames,deliveries,deliveries_in_window,deliveries_per_s,
//! messages_per_frame,gaps,missing,duplicates,unstamped,joins_ok,joins_refused,latency_us{…}}`
//! (only with `--rooms`, `--publish-rate`, `--broadcast` or `--peer`),
//! `cpu{user_s,sys_s,us_per_frame}`, `procs`; with `--hold` also
//! `hold{seconds,checked,answered}`; with `--echo-fraction` below 1, `echo_fraction`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};
use crate::cpu::CpuTime;
use crate::pusher::PushApi;
use crate::rooms::RoomCounts;
use crate::stats::{RequestCounts, Stats};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `"pipeline"` (closed loop) or `"rate"` (open loop).
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<usize>,
    /// DATA frames per second per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `--duration`, warmup included.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub payload: usize,
    pub threads: usize,
    /// `"none"`, `"anonymous"` (`--login`) or `"jwt"` (`--jwt-secret`).
    #[serde(default = "no_login")]
    pub login: String,
    pub conns: Conns,
    pub frames: Frames,
    /// What became of every DATA frame, warmup included (`frames` counts the measured
    /// window only).
    #[serde(default)]
    pub requests: RequestCounts,
    /// Count by name, every failure including attempts a fallback recovered from:
    /// connection causes ("connect_refused", "reset", "eof", "login_timeout",
    /// "ip_list_unavailable", "reconnect_timeout", …), ERROR codes by name ("KICKED",
    /// "OVERLOADED", `"ERROR_<n>"`), "send_backlog_overflow", "unanswered",
    /// "goaway_unanswered", `"push_api_<cause>"`.
    pub errors: BTreeMap<String, u64>,
    pub verify_failures: u64,
    /// Replies received inside the measured window / its length in seconds.
    pub throughput_per_s: f64,
    pub latency_us: Latency,
    #[serde(default)]
    pub logins: Logins,
    #[serde(default)]
    pub resumes: Resumes,
    #[serde(default)]
    pub reconnects: Reconnects,
    #[serde(default)]
    pub heartbeats: Heartbeats,
    #[serde(default)]
    pub push: Push,
    /// What `--push-rate` POSTed; absent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_api: Option<PushApiCounts>,
    pub cpu: Cpu,
    /// Worker processes the run was spread over (`--procs`).
    #[serde(default = "one")]
    pub procs: usize,
    /// `--echo-fraction`, when below 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_fraction: Option<f64>,
    /// `--hold`: the end-of-hold check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Room messages (`--rooms`, `--broadcast`, `--peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Rooms>,
}

/// Room messages received and published, and their publish → client latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rooms {
    /// `"tether"`, `"nats"` or `"nchan"`.
    pub system: String,
    pub rooms: usize,
    pub per_conn: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_size: Option<usize>,
    pub broadcast: bool,
    #[serde(flatten)]
    pub counts: RoomCounts,
    /// Deliveries inside the measured window / the seconds of it that publish (the window
    /// minus the quiet [`crate::pusher::settle`] at the end).
    pub deliveries_per_s: f64,
    /// Deliveries / frames: how much a window merged (1 for a peer).
    pub messages_per_frame: Option<f64>,
    /// Receive time − the payload's stamp, new messages after the warmup.
    pub latency_us: Latency,
}

fn one() -> usize {
    1
}

/// The check at the end of `--hold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub seconds: f64,
    /// Connections that were ready at the end of the hold and were sent a check PING.
    pub checked: u64,
    /// Of those, the ones whose PONG came back within `--connect-timeout`.
    pub answered: u64,
}

fn no_login() -> String {
    "none".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conns {
    pub requested: u64,
    /// TCP connected to a gateway (or target) at least once.
    pub established: u64,
    /// Logged in at least once (0 without a login).
    #[serde(default)]
    pub logged_in: u64,
    /// Never ready: every connect attempt failed, or the login did.
    pub failed: u64,
    /// Ready, then lost before the run ended (a GOAWAY followed by a successful reconnect
    /// is not a loss).
    pub dropped: u64,
    /// Seconds from the first dial until every connection was ready (logged in) or given
    /// up: with a login, `logged_in / setup_s` is the login rate the run achieved.
    #[serde(default)]
    pub setup_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frames {
    /// DATA frames sent (open loop: scheduled) after the warmup.
    pub sent: u64,
    /// Verified replies to those frames.
    pub received: u64,
    /// Open loop: sends that came due while their connection was getting back after a
    /// GOAWAY (not sent, not in `sent`).
    #[serde(default)]
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logins {
    /// LOGIN_OK answers to LOGIN.
    pub ok: u64,
    /// LOGINs refused (ERROR), timed out or cut off; by cause in `errors`.
    pub failed: u64,
    /// LOGINs and RESUMEs answered BUSY (the gateway's admission bound) and sent again
    /// after its `retry_after_ms` hint; not failures.
    #[serde(default)]
    pub busy: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumes {
    /// RESUMEs answered LOGIN_OK with the same session.
    pub ok: u64,
    /// RESUMEs refused, timed out or cut off (the connection then logs in afresh).
    pub failed: u64,
    /// RESUMEs answered LOGIN_OK with another session.
    pub new_session: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnects {
    /// GOAWAY frames received, plus (with `--resume-on-loss`) ready connections lost
    /// without one: every way back that was started.
    pub goaways: u64,
    /// Connections back (and resumed or logged in) on a gateway after a GOAWAY or a loss.
    pub ok: u64,
    /// Connections that did not get back within `--reconnect-timeout` (also dropped).
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeats {
    /// PINGs sent.
    pub sent: u64,
    /// PONGs received.
    pub pongs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// PUSH frames received, redeliveries included.
    pub received: u64,
    /// Message ids received for the first time on their connection.
    pub unique: u64,
    /// Redeliveries (at-least-once delivery).
    pub duplicates: u64,
    /// First deliveries with an id below one already received on the connection.
    pub out_of_order: u64,
    /// First deliveries shorter than the 8-byte send stamp (not in `latency_us`).
    pub unstamped: u64,
    /// ACKs sent.
    pub acked: u64,
    /// Receive time − the payload's stamp, first deliveries after the warmup.
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushApiCounts {
    pub posted: u64,
    pub delivered: u64,
    pub queued: u64,
    pub offline: u64,
    /// Refused or failed; by cause in `errors` as `push_api_<cause>`.
    pub failed: u64,
}

/// Latency percentiles in microseconds; `null` when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<f64>,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let q = |quantile: f64| (!h.is_empty()).then(|| h.value_at_quantile(quantile));
        Latency {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: (!h.is_empty()).then(|| h.max()),
            mean: (!h.is_empty()).then(|| h.mean()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub user_s: f64,
    pub sys_s: f64,
    /// CPU microseconds (user + sys, whole run) per verified reply (whole run, warmup
    /// included); `null` when nothing came back.
    pub us_per_frame: Option<f64>,
}

impl Summary {
    /// Builds the summary from the merged stats of a run of `config` on `threads` workers
    /// (and what the push driver did, with `--push-rate`).
    pub fn new(
        config: &Config,
        threads: usize,
        stats: &Stats,
        push_api: Option<&PushApi>,
        cpu: CpuTime,
    ) -> Summary {
        let (pipeline, rate) = match config.mode {
            Mode::Pipeline(k) => (Some(k), None),
            Mode::Rate(r) => (None, Some(r)),
            Mode::Hold => (None, None),
        };
        let measured = config.measured().as_secs_f64();
        let throughput = if measured > 0.0 {
            stats.received_in_window as f64 / measured
        } else {
            0.0
        };
        let session = &stats.session;
        let push = &stats.push;
        let cpu_us = cpu.total().as_secs_f64() * 1e6;
        Summary {
            mode: config.mode.name().to_string(),
            pipeline,
            rate,
            duration_s: config.duration.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            payload: config.payload,
            threads,
            login: config.login.name().to_string(),
            conns: Conns {
                requested: config.conns as u64,
                established: stats.established,
                logged_in: session.logged_in,
                failed: stats.failed,
                dropped: stats.dropped,
                setup_s: stats.setup.as_secs_f64(),
            },
            frames: Frames {
                sent: stats.sent,
                received: stats.received,
                skipped: session.skipped,
            },
            requests: stats.requests,
            errors: stats.errors.clone(),
            verify_failures: stats.verify_failures,
            throughput_per_s: throughput,
            latency_us: Latency::of(&stats.latency),
            logins: Logins {
                ok: session.logins_ok,
                failed: session.logins_failed,
                busy: session.logins_busy,
            },
            resumes: Resumes {
                ok: session.resumes_ok,
                failed: session.resumes_failed,
                new_session: session.resumes_new_session,
            },
            reconnects: Reconnects {
                goaways: session.goaways,
                ok: session.reconnects_ok,
                failed: session.reconnects_failed,
            },
            heartbeats: Heartbeats {
                sent: session.pings,
                pongs: session.pongs,
            },
            push: Push {
                received: push.received,
                unique: push.unique,
                duplicates: push.duplicates,
                out_of_order: push.out_of_order,
                unstamped: push.unstamped,
                acked: push.acked,
                latency_us: Latency::of(&stats.push_latency),
            },
            push_api: push_api.map(|api| PushApiCounts {
                posted: api.posted,
                delivered: api.delivered,
                queued: api.queued,
                offline: api.offline,
                failed: api.failed,
            }),
            cpu: Cpu {
                user_s: cpu.user.as_secs_f64(),
                sys_s: cpu.sys.as_secs_f64(),
                us_per_frame: (stats.total_received > 0)
                    .then(|| cpu_us / stats.total_received as f64),
            },
            procs: config.procs,
            echo_fraction: (config.echo_fraction < 1.0).then_some(config.echo_fraction),
            hold: config.hold.then_some(Hold {
                seconds: config.duration.as_secs_f64(),
                checked: session.checks_sent,
                answered: session.checks_answered,
            }),
            rooms: config.rooms.as_ref().map(|r| {
                let c = stats.rooms;
                Rooms {
                    system: config.peer.map_or("tether", |p| p.kind.name()).to_string(),
                    rooms: r.count,
                    per_conn: r.per_conn,
                    publish_rate: r.publish.as_ref().map(|p| p.rate),
                    publish_size: r.publish.as_ref().map(|p| p.size),
                    broadcast: r.publish.as_ref().is_some_and(|p| p.broadcast),
                    counts: c,
                    deliveries_per_s: {
                        // Publishing stops `settle` before the end: the rate is over the
                        // measured part that publishes.
                        let quiet = match &r.publish {
                            Some(_) => crate::pusher::settle(config.duration).as_secs_f64(),
                            None => 0.0,
                        };
                        let span = measured - quiet;
                        if span > 0.0 {
                            c.deliveries_in_window as f64 / span
                        } else {
                            0.0
                        }
                    },
                    messages_per_frame: (c.frames > 0)
                        .then(|| c.deliveries as f64 / c.frames as f64),
                    latency_us: Latency::of(&stats.room_latency),
                }
            }),
        }
    }

    /// Every requested connection came up (and logged in, when logging in), none was lost
    /// (a GOAWAY followed by a successful reconnect is not a loss), and every reply
    /// verified.
    pub fn passed(&self) -> bool {
        let logged_in = self.login == "none" || self.conns.logged_in == self.conns.requested;
        self.conns.established == self.conns.requested
            && logged_in
            && self.conns.dropped == 0
            && self.verify_failures == 0
    }

    /// The process exit status this summary calls for: 0 passed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.passed() {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// Writes the JSON summary (with a trailing newline) to `path`.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut text = self.to_json().map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The human table printed to stdout.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shape = match (self.pipeline, self.rate) {
            (Some(k), _) => format!("closed loop, pipeline {k}"),
            (_, Some(r)) => format!("open loop, {r}/s per connection"),
            _ => "heartbeats only".to_string(),
        };
        if let Some(fraction) = self.echo_fraction {
            shape.push_str(&format!(" on {}% of connections", fraction * 100.0));
        }
        if self.hold.is_some() {
            shape = format!("hold, {shape}");
        }
        if let Some(r) = self.rooms.as_ref().filter(|r| r.system != "tether") {
            shape = format!("{} subscribers", r.system);
        }
        writeln!(
            f,
            "tether-loadgen: {shape}, payload {} B, {} s (warmup {} s), {} threads in {} process(es)",
            self.payload, self.duration_s, self.warmup_s, self.threads, self.procs
        )?;
        let c = &self.conns;
        writeln!(
            f,
            "  conns        requested {}  established {}  logged in {}  failed {}  dropped {}  (login: {}, set up in {:.2} s)",
            c.requested, c.established, c.logged_in, c.failed, c.dropped, self.login, c.setup_s
        )?;
        writeln!(
            f,
            "  frames       sent {}  received {}",
            self.frames.sent, self.frames.received
        )?;
        let q = &self.requests;
        writeln!(
            f,
            "  requests     sent {}  answered {}  errored {}  lost with their connection {}  unanswered {}",
            q.sent, q.answered, q.errored, q.lost, q.unanswered
        )?;
        writeln!(f, "  throughput   {:.0} replies/s", self.throughput_per_s)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            opt(l.p50),
            opt(l.p90),
            opt(l.p99),
            opt(l.p999),
            opt(l.max),
            opt(l.mean.map(|m| format!("{m:.1}"))),
        )?;
        let (r, h, re) = (&self.resumes, &self.heartbeats, &self.reconnects);
        writeln!(
            f,
            "  sessions     logins {} ok {} failed {} busy  resumes {} ok {} failed {} new  heartbeats {} sent {} pongs",
            self.logins.ok, self.logins.failed, self.logins.busy, r.ok, r.failed, r.new_session, h.sent, h.pongs
        )?;
        writeln!(
            f,
            "  reconnects   goaways {}  back {}  failed {}  skipped sends {}",
            re.goaways, re.ok, re.failed, self.frames.skipped
        )?;
        let p = &self.push;
        writeln!(
            f,
            "  pushes       received {}  unique {}  duplicates {}  out of order {}  unstamped {}  acked {}",
            p.received, p.unique, p.duplicates, p.out_of_order, p.unstamped, p.acked
        )?;
        let pl = &p.latency_us;
        writeln!(
            f,
            "  push lat µs  p50 {}  p99 {}  p99.9 {}  max {}",
            opt(pl.p50),
            opt(pl.p99),
            opt(pl.p999),
            opt(pl.max)
        )?;
        if let Some(api) = &self.push_api {
            writeln!(
                f,
                "  push api     posted {}  delivered {}  queued {}  offline {}  failed {}",
                api.posted, api.delivered, api.queued, api.offline, api.failed
            )?;
        }
        if let Some(r) = &self.rooms {
            let c = &r.counts;
            writeln!(
                f,
                "  rooms        {} on {}: {} room(s), {} per conn{}  published {} (failed {})",
                if r.broadcast { "broadcast" } else { "rooms" },
                r.system,
                r.rooms,
                r.per_conn,
                r.publish_rate.map_or(String::new(), |rate| format!(
                    ", {rate}/s of {} B",
                    r.publish_size.unwrap_or(0)
                )),
                c.published,
                c.publish_failed
            )?;
            writeln!(
                f,
                "  deliveries   {}  {:.0}/s  frames {} ({} msgs/frame, {} replayed)  gaps {} ({} missing)  duplicates {}  unstamped {}  joins {} ok {} refused",
                c.deliveries,
                r.deliveries_per_s,
                c.frames,
                opt(r.messages_per_frame.map(|m| format!("{m:.2}"))),
                c.replayed_frames,
                c.gaps,
                c.missing,
                c.duplicates,
                c.unstamped,
                c.joins_ok,
                c.joins_refused
            )?;
            let rl = &r.latency_us;
            writeln!(
                f,
                "  room lat µs  p50 {}  p99 {}  p99.9 {}  max {}",
                opt(rl.p50),
                opt(rl.p99),
                opt(rl.p999),
                opt(rl.max)
            )?;
        }
        if self.errors.is_empty() {
            writeln!(f, "  errors       none")?;
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "  errors       {}", list.join("  "))?;
        }
        if let Some(h) = &self.hold {
            writeln!(
                f,
                "  hold         {} s, then {} of {} connections answered the check PING",
                h.seconds, h.answered, h.checked
            )?;
        }
        for name in self.errors.keys() {
            if let Some(hint) = crate::limits::hint(name) {
                writeln!(f, "  limit hit    {name}: {hint}")?;
            }
        }
        writeln!(f, "  verify       {} failures", self.verify_failures)?;
        writeln!(
            f,
            "  cpu          user {:.2} s  sys {:.2} s  {} µs/frame",
            self.cpu.user_s,
            self.cpu.sys_s,
            opt(self.cpu.us_per_frame.map(|u| format!("{u:.2}"))),
        )?;
        write!(
            f,
            "  result       {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use crate::stats::Window;

    fn sample() -> Summary {
        let mut config = Config::new(vec!["127.0.0.1:1".parse().unwrap()]);
        config.conns = 2;
        config.duration = Duration::from_secs(2);
        config.warmup = Duration::from_secs(1);
        let t0 = Instant::now();
        let window = Window {
            measure_start: t0,
            end: t0 + Duration::from_secs(1),
        };
        let mut stats = Stats::new().unwrap();
        stats.established = 2;
        for us in [100, 200, 300] {
            stats.sent(t0, &window);
            stats.reply(t0, t0 + Duration::from_micros(us), &window);
        }
        stats.error("OVERLOADED");
        let cpu = CpuTime {
            user: Duration::from_millis(3),
            sys: Duration::from_millis(0),
        };
        Summary::new(&config, 2, &stats, None, cpu)
    }

    #[test]
    fn json_has_every_required_key() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        for key in [
            "conns",
            "frames",
            "errors",
            "verify_failures",
            "throughput_per_s",
            "latency_us",
            "duration_s",
            "mode",
            "pipeline",
            "payload",
            "threads",
            "cpu",
            "login",
            "logins",
            "resumes",
            "reconnects",
            "heartbeats",
            "push",
            "requests",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for (group, keys) in [
            (
                "conns",
                &["established", "logged_in", "failed", "dropped", "setup_s"][..],
            ),
            ("frames", &["sent", "received", "skipped"][..]),
            (
                "requests",
                &["sent", "answered", "errored", "lost", "unanswered"][..],
            ),
            ("latency_us", &["p50", "p90", "p99", "p999", "max"][..]),
            ("cpu", &["user_s", "sys_s", "us_per_frame"][..]),
            ("logins", &["ok", "failed", "busy"][..]),
            ("resumes", &["ok", "failed", "new_session"][..]),
            ("reconnects", &["goaways", "ok", "failed"][..]),
            ("heartbeats", &["sent", "pongs"][..]),
            (
                "push",
                &[
                    "received",
                    "unique",
                    "duplicates",
                    "out_of_order",
                    "unstamped",
                    "acked",
                    "latency_us",
                ][..],
            ),
        ] {
            for key in keys {
                assert!(json[group].get(key).is_some(), "missing {group}.{key}");
            }
        }
        assert_eq!(json["mode"], "pipeline");
        assert_eq!(json["errors"]["OVERLOADED"], 1);
        assert_eq!(json["frames"]["received"], 3);
        assert_eq!(json["throughput_per_s"], 3.0);
        assert_eq!(json["latency_us"]["max"], 300);
        assert_eq!(json["cpu"]["us_per_frame"], 1000.0);
        assert!(json.get("rate").is_none());
        assert!(json.get("push_api").is_none());
        assert_eq!(json["login"], "none");
        assert!(json["push"]["latency_us"]["p50"].is_null());
    }

    #[test]
    fn sessions_pushes_and_the_push_api_are_reported() {
        let mut config = Config::new(vec!["127.0.0.1:1".parse().unwrap()]);
        config.conns = 1;
        config.login = crate::session::Login::Anonymous;
        let t0 = Instant::now();
        let window = Window {
            measure_start: t0,
            end: t0 + Duration::from_secs(1),
        };
        let mut stats = Stats::new().unwrap();
        stats.established = 1;
        stats.session.logins_ok = 1;
        stats.session.logins_busy = 3;
        stats.setup = Duration::from_millis(1500);
        stats.session.resumes_ok = 2;
        stats.session.goaways = 2;
        stats.session.reconnects_ok = 2;
        stats.session.pings = 7;
        stats.push.received = 3;
        stats.push.duplicates = 1;
        stats.push_latency(1_000, 1_800, t0, &window);
        let api = PushApi {
            posted: 5,
            delivered: 4,
            failed: 1,
            ..PushApi::default()
        };
        let summary = Summary::new(&config, 1, &stats, Some(&api), CpuTime::default());
        let json: serde_json::Value = serde_json::from_str(&summary.to_json().unwrap()).unwrap();
        assert_eq!(json["login"], "anonymous");
        assert_eq!(json["logins"]["busy"], 3);
        assert_eq!(json["conns"]["setup_s"], 1.5);
        assert_eq!(json["resumes"]["ok"], 2);
        assert_eq!(json["reconnects"]["goaways"], 2);
        assert_eq!(json["heartbeats"]["sent"], 7);
        assert_eq!(json["push"]["duplicates"], 1);
        assert_eq!(json["push"]["latency_us"]["max"], 800);
        assert_eq!(json["push_api"]["posted"], 5);
        // Logging in, a connection that never logged in fails the run.
        assert!(!summary.passed());
        stats.session.logged_in = 1;
        let summary = Summary::new(&config, 1, &stats, Some(&api), CpuTime::default());
        assert!(summary.passed(), "{summary}");
        assert!(summary.to_string().contains("resumes 2 ok"));
    }

    #[test]
    fn rate_mode_names_its_rate_and_round_trips() {
        let mut summary = sample();
        summary.mode = "rate".into();
        summary.pipeline = None;
        summary.rate = Some(50.0);
        let text = summary.to_json().unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["rate"], 50.0);
        assert!(json.get("pipeline").is_none());
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), summary);
    }

    #[test]
    fn passing_needs_every_conn_and_no_verify_failure() {
        let mut summary = sample();
        assert!(summary.passed());
        assert_eq!(summary.exit_code(), 0);
        summary.verify_failures = 1;
        assert_eq!(summary.exit_code(), 1);
        summary.verify_failures = 0;
        summary.conns.dropped = 1;
        assert!(!summary.passed());
        summary.conns.dropped = 0;
        summary.conns.established = 1;
        assert!(!summary.passed());
        assert!(summary.to_string().contains("FAIL"));
    }
}
