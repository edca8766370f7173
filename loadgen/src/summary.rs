//! The result of a run: every worker's [`Stats`] merged, plus the run's shape and the load
//! generator's own CPU cost; printed as a table and written as JSON.
//!
//! JSON keys (bench scripts and `doc/bench.md` rely on them):
//! `mode`, `pipeline` | `rate`, `duration_s`, `warmup_s`, `payload`, `threads`,
//! `conns{requested,established,failed,dropped}`, `frames{sent,received}`, `errors{NAME:n}`,
//! `verify_failures`, `throughput_per_s`, `latency_us{p50,p90,p99,p999,max,mean}`,
//! `cpu{user_s,sys_s,us_per_frame}`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};
use crate::cpu::CpuTime;
use crate::stats::Stats;

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
    pub conns: Conns,
    pub frames: Frames,
    /// Count by name: connection causes ("reset", "eof", …), ERROR codes ("OVERLOADED",
    /// "ERROR_<n>"), "GOAWAY", "PUSH", "send_backlog_overflow", "unanswered".
    pub errors: BTreeMap<String, u64>,
    pub verify_failures: u64,
    /// Replies received inside the measured window / its length in seconds.
    pub throughput_per_s: f64,
    pub latency_us: Latency,
    pub cpu: Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conns {
    pub requested: u64,
    pub established: u64,
    /// Never established.
    pub failed: u64,
    /// Established, then lost before the run ended.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frames {
    /// DATA frames sent (open loop: scheduled) after the warmup.
    pub sent: u64,
    /// Verified replies to those frames.
    pub received: u64,
}

/// Latency percentiles in microseconds; `null` when no reply was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<f64>,
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
    /// Builds the summary from the merged stats of a run of `config` on `threads` workers.
    pub fn new(config: &Config, threads: usize, stats: &Stats, cpu: CpuTime) -> Summary {
        let (pipeline, rate) = match config.mode {
            Mode::Pipeline(k) => (Some(k), None),
            Mode::Rate(r) => (None, Some(r)),
        };
        let measured = config.measured().as_secs_f64();
        let throughput = if measured > 0.0 {
            stats.received_in_window as f64 / measured
        } else {
            0.0
        };
        let h = &stats.latency;
        let q = |quantile: f64| (!h.is_empty()).then(|| h.value_at_quantile(quantile));
        let cpu_us = cpu.total().as_secs_f64() * 1e6;
        Summary {
            mode: config.mode.name().to_string(),
            pipeline,
            rate,
            duration_s: config.duration.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            payload: config.payload,
            threads,
            conns: Conns {
                requested: config.conns as u64,
                established: stats.established,
                failed: stats.failed,
                dropped: stats.dropped,
            },
            frames: Frames {
                sent: stats.sent,
                received: stats.received,
            },
            errors: stats.errors.clone(),
            verify_failures: stats.verify_failures,
            throughput_per_s: throughput,
            latency_us: Latency {
                p50: q(0.50),
                p90: q(0.90),
                p99: q(0.99),
                p999: q(0.999),
                max: (!h.is_empty()).then(|| h.max()),
                mean: (!h.is_empty()).then(|| h.mean()),
            },
            cpu: Cpu {
                user_s: cpu.user.as_secs_f64(),
                sys_s: cpu.sys.as_secs_f64(),
                us_per_frame: (stats.total_received > 0)
                    .then(|| cpu_us / stats.total_received as f64),
            },
        }
    }

    /// Every requested connection came up, none was lost, and every reply verified.
    pub fn passed(&self) -> bool {
        self.conns.established == self.conns.requested
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
        let shape = match (self.pipeline, self.rate) {
            (Some(k), _) => format!("closed loop, pipeline {k}"),
            (_, Some(r)) => format!("open loop, {r}/s per connection"),
            _ => self.mode.clone(),
        };
        writeln!(
            f,
            "tether-loadgen: {shape}, payload {} B, {} s (warmup {} s), {} threads",
            self.payload, self.duration_s, self.warmup_s, self.threads
        )?;
        let c = &self.conns;
        writeln!(
            f,
            "  conns        requested {}  established {}  failed {}  dropped {}",
            c.requested, c.established, c.failed, c.dropped
        )?;
        writeln!(
            f,
            "  frames       sent {}  received {}",
            self.frames.sent, self.frames.received
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
        Summary::new(&config, 2, &stats, cpu)
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
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for (group, keys) in [
            ("conns", &["established", "failed", "dropped"][..]),
            ("frames", &["sent", "received"][..]),
            ("latency_us", &["p50", "p90", "p99", "p999", "max"][..]),
            ("cpu", &["user_s", "sys_s", "us_per_frame"][..]),
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
