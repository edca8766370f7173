//! Which limit a run runs into, said in words: the open-files limit (RLIMIT_NOFILE), local
//! ports (the ephemeral range per source address and target), or kernel memory — before the
//! run when it can be foreseen ([`preflight`]), when it happens (logged once per cause by
//! [`hit`]), and in the summary ([`hint`]).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cause::Cause;
use crate::config::Config;

/// Descriptors a loadgen process needs beside its connections (poll, timerfds, std streams,
/// the push thread's sockets).
pub(crate) const SPARE_FDS: u64 = 64;

/// The open-files limit (soft, hard) of this process.
pub(crate) fn nofile() -> Option<(u64, u64)> {
    tether_daemon::rlimit::nofile().ok()
}

/// The ephemeral port range, `net.ipv4.ip_local_port_range`, as (first, last).
pub(crate) fn port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Processes needed for `conns` sockets under an open-files limit of `limit`.
pub(crate) fn procs_needed(conns: u64, limit: u64) -> u64 {
    let per = limit.saturating_sub(SPARE_FDS).max(1);
    conns.div_ceil(per)
}

/// Warns, before dialling, about a limit the run will hit: `per_process` sockets in one
/// process against RLIMIT_NOFILE, and connections per (source, target) pair against the
/// ephemeral port range.
pub(crate) fn preflight(config: &Config, per_process: usize) {
    let per_process = per_process as u64;
    if let Some((soft, hard)) = nofile() {
        if per_process + SPARE_FDS > soft {
            let total = config.conns as u64;
            tracing::warn!(
                sockets = per_process,
                soft,
                hard,
                "this process would hold {per_process} sockets but RLIMIT_NOFILE allows {soft} \
                 open files: expect fd_limit failures; use --procs {} or more (or raise the hard \
                 limit: ulimit -Hn, LimitNOFILE=)",
                procs_needed(total, soft)
            );
        }
    }
    if let Some((lo, hi)) = port_range() {
        let ports = u64::from(hi.saturating_sub(lo)) + 1;
        let targets = config.targets.len().max(1) as u64;
        let sources = config.sources.len().max(1) as u64;
        let per_pair = (config.conns as u64).div_ceil(targets * sources);
        if config.ipconfig.is_none() && per_pair > ports {
            tracing::warn!(
                per_pair,
                ports,
                "{per_pair} connections per (source address, target) but the ephemeral port \
                 range ({lo}-{hi}, net.ipv4.ip_local_port_range) has {ports} ports: expect \
                 no_source_ports failures; add --source-ips (at least {} addresses) or targets",
                (config.conns as u64).div_ceil(ports * targets)
            );
        }
    }
}

static FD: AtomicBool = AtomicBool::new(false);
static PORTS: AtomicBool = AtomicBool::new(false);
static MEMORY: AtomicBool = AtomicBool::new(false);

/// Logs, once per process and cause, which limit a failure means.
pub(crate) fn hit(cause: Cause, error: &std::io::Error) {
    let once = match cause {
        Cause::FdLimit => &FD,
        Cause::NoSourcePorts => &PORTS,
        Cause::NoMemory => &MEMORY,
        _ => return,
    };
    if !once.swap(true, Ordering::Relaxed) {
        if let Some(text) = hint(cause.name()) {
            tracing::error!(%error, "{text}; further failures are only counted as {}", cause.name());
        }
    }
}

/// What an error name in the summary means, for the names that are limits.
pub(crate) fn hint(name: &str) -> Option<String> {
    Some(match name {
        "fd_limit" => {
            let limit = nofile().map_or_else(String::new, |(soft, hard)| {
                format!(" (soft {soft}, hard {hard})")
            });
            format!(
                "out of file descriptors: RLIMIT_NOFILE{limit} or fs.file-max reached; spread \
                 the connections over --procs or raise the limit"
            )
        }
        "no_source_ports" => {
            let range = port_range().map_or_else(String::new, |(lo, hi)| format!(" {lo}-{hi}"));
            format!(
                "out of local ports: every ephemeral port (net.ipv4.ip_local_port_range{range}) \
                 of a (source address, target) pair is taken; add --source-ips or targets"
            )
        }
        "no_memory" => "out of kernel memory for sockets (ENOMEM/ENOBUFS): RAM or \
                        net.ipv4.tcp_mem reached"
            .to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_named() {
        assert!(hint("fd_limit").unwrap().contains("RLIMIT_NOFILE"));
        assert!(hint("no_source_ports")
            .unwrap()
            .contains("ip_local_port_range"));
        assert!(hint("no_memory").unwrap().contains("tcp_mem"));
        assert_eq!(hint("reset"), None);
        assert_eq!(procs_needed(15_000, 20_000), 1);
        assert_eq!(procs_needed(40_000, 20_000), 3);
        let (lo, hi) = port_range().unwrap();
        assert!(lo <= hi);
    }
}
