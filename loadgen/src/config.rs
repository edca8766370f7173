//! Command-line flags (each also a `TETHER_LOADGEN_*` env var) and their validation into a
//! [`Config`] that [`crate::run`] can trust.
//!
//! [`Args`] is what clap parses; [`Args::into_config`] resolves the targets, applies the
//! defaults that depend on the machine (`--threads`) and reports every problem at once.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use thiserror::Error;

/// The largest body a v1 length field can describe (`u32::MAX` minus kind, flags and id).
const MAX_WIRE_BODY: u32 = u32::MAX - tether_proto::MIN_LEN;

/// The flags, as typed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tether-loadgen",
    version,
    about = "Closed- and open-loop load generator for Tether (DATA echo round trips, HdrHistogram latencies)"
)]
pub struct Args {
    /// Where to connect, ADDR[,ADDR…]; connections are spread round-robin over the targets.
    #[arg(
        long,
        env = "TETHER_LOADGEN_TARGET",
        value_delimiter = ',',
        required = true
    )]
    pub target: Vec<String>,

    /// Connections to open and keep for the whole run.
    #[arg(long, env = "TETHER_LOADGEN_CONNS", default_value_t = 100)]
    pub conns: usize,

    /// DATA payload size in bytes.
    #[arg(long, env = "TETHER_LOADGEN_PAYLOAD", default_value_t = 64)]
    pub payload: usize,

    /// Seconds of load, counted from the moment every connection is up (fractions allowed).
    #[arg(
        long,
        env = "TETHER_LOADGEN_DURATION",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub duration: f64,

    /// Seconds at the start of --duration whose frames and latencies are not recorded.
    #[arg(
        long,
        env = "TETHER_LOADGEN_WARMUP",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub warmup: f64,

    /// Closed loop: DATA frames kept outstanding per connection [default: 1].
    #[arg(long, env = "TETHER_LOADGEN_PIPELINE", conflicts_with = "rate")]
    pub pipeline: Option<usize>,

    /// Open loop: DATA frames per second per connection, on a fixed timetable.
    #[arg(long, env = "TETHER_LOADGEN_RATE", allow_negative_numbers = true)]
    pub rate: Option<f64>,

    /// Worker threads, each with its own mio poll [default: available cores].
    #[arg(long, env = "TETHER_LOADGEN_THREADS")]
    pub threads: Option<usize>,

    /// Local addresses to bind before connecting, IP[,IP…], round-robin per connection.
    #[arg(long, env = "TETHER_LOADGEN_SOURCE", value_delimiter = ',')]
    pub source: Vec<IpAddr>,

    /// Seconds a connection may take to establish.
    #[arg(
        long,
        env = "TETHER_LOADGEN_CONNECT_TIMEOUT",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub connect_timeout: f64,

    /// New connections per second across all threads; 0 means as fast as possible.
    #[arg(long, env = "TETHER_LOADGEN_CONNECT_RATE", default_value_t = 0)]
    pub connect_rate: u32,

    /// Largest body accepted from the server.
    #[arg(long, env = "TETHER_LOADGEN_MAX_BODY", default_value_t = tether_proto::DEFAULT_MAX_BODY)]
    pub max_body: u32,

    /// Write the summary as JSON to this file.
    #[arg(long, env = "TETHER_LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// No progress line on stderr.
    #[arg(long, env = "TETHER_LOADGEN_QUIET")]
    pub quiet: bool,
}

/// How DATA frames are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Closed loop: keep this many DATA frames outstanding per connection.
    Pipeline(usize),
    /// Open loop: this many DATA frames per second per connection, latency measured from
    /// each frame's scheduled send time.
    Rate(f64),
}

impl Mode {
    /// `"pipeline"` or `"rate"`, as in the JSON summary.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Pipeline(_) => "pipeline",
            Mode::Rate(_) => "rate",
        }
    }
}

/// A validated run description. Build one with [`Args::into_config`] or [`Config::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub targets: Vec<SocketAddr>,
    pub conns: usize,
    pub payload: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub mode: Mode,
    pub threads: usize,
    pub sources: Vec<IpAddr>,
    pub connect_timeout: Duration,
    /// New connections per second across all threads; 0 = unlimited.
    pub connect_rate: u32,
    pub max_body: u32,
    pub json: Option<PathBuf>,
    pub quiet: bool,
}

/// One thing wrong with the flags.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("--target: at least one target address is required")]
    NoTarget,
    #[error("--target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("--conns must be at least 1")]
    NoConns,
    #[error("--payload {payload} exceeds --max-body {max_body}")]
    PayloadTooLarge { payload: usize, max_body: u32 },
    #[error("--max-body {0} exceeds what a v1 length field can carry ({MAX_WIRE_BODY})")]
    MaxBodyTooLarge(u32),
    #[error("--{flag} must be a finite number of seconds {bound}, got {value}")]
    BadSeconds {
        flag: &'static str,
        bound: &'static str,
        value: f64,
    },
    #[error("--warmup ({warmup} s) must be shorter than --duration ({duration} s)")]
    WarmupTooLong { warmup: f64, duration: f64 },
    #[error("--pipeline must be at least 1")]
    NoPipeline,
    #[error("--rate must be a finite number above 0, got {0}")]
    BadRate(f64),
    #[error("--threads must be at least 1")]
    NoThreads,
    #[error("--json {0:?}: its directory does not exist")]
    JsonDir(PathBuf),
}

/// Every problem found in the flags, reported together.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{}", list(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Args {
    /// Resolves targets and checks every flag; all problems are returned at once.
    pub fn into_config(self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();

        let mut targets = Vec::new();
        for target in &self.target {
            match resolve(target) {
                Ok(addr) => targets.push(addr),
                Err(reason) => errors.push(ConfigError::BadTarget {
                    target: target.clone(),
                    reason,
                }),
            }
        }

        let mut seconds = |flag, value: f64, positive: bool| {
            let bound = if positive { "above 0" } else { "of 0 or more" };
            let ok = value.is_finite() && (value > 0.0 || (!positive && value == 0.0));
            match Duration::try_from_secs_f64(value) {
                Ok(d) if ok => d,
                _ => {
                    errors.push(ConfigError::BadSeconds { flag, bound, value });
                    Duration::ZERO
                }
            }
        };
        let duration = seconds("duration", self.duration, true);
        let warmup = seconds("warmup", self.warmup, false);
        let connect_timeout = seconds("connect-timeout", self.connect_timeout, true);

        let mode = match (self.pipeline, self.rate) {
            (_, Some(rate)) => Mode::Rate(rate),
            (pipeline, None) => Mode::Pipeline(pipeline.unwrap_or(1)),
        };
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        });

        let config = Config {
            targets,
            conns: self.conns,
            payload: self.payload,
            duration,
            warmup,
            mode,
            threads,
            sources: self.source,
            connect_timeout,
            connect_rate: self.connect_rate,
            max_body: self.max_body,
            json: self.json,
            quiet: self.quiet,
        };
        // The flag-level checks above already named bad seconds and unresolvable targets;
        // the config-level checks would only repeat them.
        let bad_target = errors
            .iter()
            .any(|e| matches!(e, ConfigError::BadTarget { .. }));
        errors.extend(config.problems().into_iter().filter(|e| match e {
            ConfigError::BadSeconds { .. } => false,
            ConfigError::NoTarget => !bad_target,
            _ => true,
        }));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl Config {
    /// The defaults of every flag, for the given targets (useful from tests and xtask).
    pub fn new(targets: Vec<SocketAddr>) -> Config {
        Config {
            targets,
            conns: 100,
            payload: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            mode: Mode::Pipeline(1),
            threads: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            sources: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            connect_rate: 0,
            max_body: tether_proto::DEFAULT_MAX_BODY,
            json: None,
            quiet: false,
        }
    }

    /// Checks a config built by hand the way [`Args::into_config`] checks flags.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.targets.is_empty() {
            errors.push(ConfigError::NoTarget);
        }
        if self.conns == 0 {
            errors.push(ConfigError::NoConns);
        }
        if self.max_body > MAX_WIRE_BODY {
            errors.push(ConfigError::MaxBodyTooLarge(self.max_body));
        }
        if self.payload > self.max_body as usize {
            errors.push(ConfigError::PayloadTooLarge {
                payload: self.payload,
                max_body: self.max_body,
            });
        }
        if self.duration.is_zero() {
            errors.push(ConfigError::BadSeconds {
                flag: "duration",
                bound: "above 0",
                value: 0.0,
            });
        }
        if self.connect_timeout.is_zero() {
            errors.push(ConfigError::BadSeconds {
                flag: "connect-timeout",
                bound: "above 0",
                value: 0.0,
            });
        }
        if !self.duration.is_zero() && self.warmup >= self.duration {
            errors.push(ConfigError::WarmupTooLong {
                warmup: self.warmup.as_secs_f64(),
                duration: self.duration.as_secs_f64(),
            });
        }
        match self.mode {
            Mode::Pipeline(0) => errors.push(ConfigError::NoPipeline),
            Mode::Rate(rate) if !(rate.is_finite() && rate > 0.0) => {
                errors.push(ConfigError::BadRate(rate))
            }
            _ => {}
        }
        if self.threads == 0 {
            errors.push(ConfigError::NoThreads);
        }
        if let Some(path) = &self.json {
            // Found out now rather than after the whole run.
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                errors.push(ConfigError::JsonDir(path.clone()));
            }
        }
        errors
    }

    /// The window whose frames and latencies are recorded: `duration - warmup`.
    pub fn measured(&self) -> Duration {
        self.duration.saturating_sub(self.warmup)
    }
}

/// `host:port` or `ip:port` to the first address it resolves to.
fn resolve(target: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match target.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "resolves to no address".to_string()),
        Err(e) => Err(format!("not HOST:PORT or does not resolve ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigErrors> {
        let mut argv = vec!["tether-loadgen"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .expect("clap accepts these flags")
            .into_config()
    }

    #[test]
    fn defaults_are_a_closed_loop_of_one() {
        let config = parse(&["--target", "127.0.0.1:1"]).unwrap();
        assert_eq!(config.mode, Mode::Pipeline(1));
        assert_eq!(config.conns, 100);
        assert_eq!(config.payload, 64);
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.max_body, 65_536);
        assert!(config.threads >= 1);
    }

    #[test]
    fn lists_split_on_commas_and_seconds_take_fractions() {
        let config = parse(&[
            "--target",
            "127.0.0.1:1,127.0.0.2:2",
            "--source",
            "127.0.0.3,127.0.0.4",
            "--duration",
            "1.5",
            "--rate",
            "20",
        ])
        .unwrap();
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.sources.len(), 2);
        assert_eq!(config.duration, Duration::from_millis(1500));
        assert_eq!(config.mode, Mode::Rate(20.0));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = parse(&[
            "--target",
            "nonsense",
            "--conns",
            "0",
            "--payload",
            "100",
            "--max-body",
            "10",
            "--rate",
            "0",
            "--warmup",
            "20",
        ])
        .unwrap_err()
        .0;
        assert!(matches!(errors[0], ConfigError::BadTarget { .. }));
        assert!(errors.contains(&ConfigError::NoConns));
        assert!(errors.contains(&ConfigError::PayloadTooLarge {
            payload: 100,
            max_body: 10
        }));
        assert!(errors.contains(&ConfigError::BadRate(0.0)));
        assert!(errors
            .iter()
            .any(|e| matches!(e, ConfigError::WarmupTooLong { .. })));
    }

    #[test]
    fn pipeline_and_rate_are_exclusive() {
        let result = Args::try_parse_from([
            "tether-loadgen",
            "--target",
            "127.0.0.1:1",
            "--pipeline",
            "2",
            "--rate",
            "5",
        ]);
        assert!(result.is_err());
        assert_eq!(
            parse(&["--target", "127.0.0.1:1", "--pipeline", "0"])
                .unwrap_err()
                .0,
            vec![ConfigError::NoPipeline]
        );
    }

    #[test]
    fn bad_seconds_are_named() {
        let errors = parse(&["--target", "127.0.0.1:1", "--duration", "-1"])
            .unwrap_err()
            .0;
        assert_eq!(
            errors,
            vec![ConfigError::BadSeconds {
                flag: "duration",
                bound: "above 0",
                value: -1.0
            }]
        );
        assert!(parse(&["--target", "127.0.0.1:1", "--duration", "NaN"]).is_err());
    }

    #[test]
    fn a_json_path_in_a_missing_directory_is_refused_up_front() {
        let errors = parse(&[
            "--target",
            "127.0.0.1:1",
            "--json",
            "/nonexistent/dir/s.json",
        ])
        .unwrap_err()
        .0;
        assert!(matches!(errors[..], [ConfigError::JsonDir(_)]));
        assert!(parse(&["--target", "127.0.0.1:1", "--json", "summary.json"]).is_ok());
    }
}
