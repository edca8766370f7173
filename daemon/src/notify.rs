//! systemd's readiness protocol (sd_notify): one datagram to `$NOTIFY_SOCKET`.
//!
//! A daemon sends `READY=1` only once its listeners accept, and `STOPPING=1` when it starts
//! to shut down. Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing.
//! `WATCHDOG=1` pings are [`crate::watchdog`]'s, sent through [`watchdog_to`].

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// True once [`stopping`] ran. Held while sending `STOPPING=1` and while sending
/// `WATCHDOG=1` ([`watchdog_to`]), so no ping ever follows `STOPPING=1`: systemd re-arms its
/// watchdog on any ping, even while the unit stops, and a drain may outlast the interval.
static STOPPED: Mutex<bool> = Mutex::new(false);

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok(false)` when the variable is unset.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(Path::new(&path), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket at `path` (`@name` is an abstract socket).
pub(crate) fn notify_to(path: &Path, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let text = path.to_string_lossy();
    let addr = match text.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// `READY=1`: the daemon accepts. Failures are logged, never fatal.
pub fn ready() {
    if let Err(e) = notify("READY=1") {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

/// `STOPPING=1`: the daemon is shutting down. No `WATCHDOG=1` is sent after this.
pub fn stopping() {
    let mut stopped = STOPPED.lock().unwrap_or_else(PoisonError::into_inner);
    *stopped = true;
    if let Err(e) = notify("STOPPING=1") {
        tracing::warn!(error = %e, "cannot notify systemd of stopping");
    }
}

/// `WATCHDOG=1` to `path`, unless [`stopping`] has run: then nothing is sent and the answer
/// is `Ok(false)`.
pub(crate) fn watchdog_to(path: &Path) -> io::Result<bool> {
    let stopped = STOPPED.lock().unwrap_or_else(PoisonError::into_inner);
    if *stopped {
        return Ok(false);
    }
    notify_to(path, "WATCHDOG=1").map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path_and_an_abstract_socket() {
        let path = std::env::temp_dir().join(format!("tether-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(&path, "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("tether-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(Path::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
