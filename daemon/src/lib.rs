//! What every Tether daemon shares, so each follows design.md's conventions the same way:
//! one `main` with a `check` subcommand ([`cli`]),
//! a TOML config layered under env vars and flags with a `check` that lists every error, the
//! validators its keys share and `--help` defaults taken from `Default` ([`config`]), secrets
//! that never print ([`secret`]), tracing logs in text or JSON ([`logging`]), and signal handling
//! ([`signals`]), systemd readiness notification ([`notify`]) and watchdog pings gated on a
//! liveness check ([`watchdog`]), the open-files limit ([`rlimit`]), memory given back after a
//! burst ([`heap`]), counters, gauges,
//! histograms and their one declaration per daemon ([`metrics`], [`metric_set!`]), Prometheus
//! text ([`prometheus`]) and the read and write loops of a nonblocking socket
//! ([`nonblocking`]); with the `http` feature, an axum app on its own thread
//! ([`http_thread`]); for tests, pages compared with committed copies ([`golden`]).

pub mod cli;
pub mod config;
pub mod golden;
pub mod heap;
#[cfg(feature = "http")]
pub mod http_thread;
pub mod logging;
pub mod metrics;
pub mod nonblocking;
pub mod notify;
pub mod prometheus;
pub mod rlimit;
pub mod secret;
pub mod signals;
pub mod watchdog;
