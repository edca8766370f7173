//! Playing systemd's side of the notification protocol: a Unix datagram socket that a daemon
//! started with `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) sends `READY=1`, `WATCHDOG=1` and
//! `STOPPING=1` to, with the time each datagram arrived.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A bound notification socket in a fresh temp path, removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Short: a socket path has room for 107 bytes only.
        let path =
            std::env::temp_dir().join(format!("tether-notify-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        NotifySocket { socket, path }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }

    /// The next datagram as text, or `None` after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Waits up to `timeout` for a datagram equal to `message`; panics with everything
    /// received meanwhile when none comes.
    pub fn expect(&self, message: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv_timeout(left) {
                Some(m) if m == message => return,
                Some(m) => seen.push(m),
                None => break,
            }
        }
        panic!("no {message:?} within {timeout:?}; received {seen:?}");
    }

    /// Every datagram received within `window`, with its arrival time.
    pub fn collect(&self, window: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv_timeout(left) {
                Some(m) => got.push((Instant::now(), m)),
                None => break,
            }
        }
        got
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
