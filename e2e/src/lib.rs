//! Support for end-to-end tests: finding the built binaries, running them as child
//! processes on free loopback ports, and a small blocking frame client.
//!
//! The binaries are the ones `cargo build --release --workspace` (or the debug profile the
//! tests themselves were built with) left next to the test executable; `cargo xtask test`
//! builds them before it runs the tests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tether_proto::{Decoder, ErrorBody, Kind};

/// The path of a workspace binary built in the same profile as this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --release --workspace, \
         or run the tests through `cargo xtask test`)",
        path.display()
    );
    path
}

/// A loopback address with a port nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

/// Waits until something accepts on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed when the test drops it.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `name` (a workspace binary) with `args`; stderr is inherited so failures show
    /// in the test output.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        let child = Command::new(binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An echo node on a free loopback port, started with `extra` flags.
pub fn echo_node(extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let listen = addr.to_string();
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let proc = Proc::spawn("tether-echo-node", &args);
    wait_for_port(addr, Duration::from_secs(10));
    (proc, addr)
}

/// One frame read back, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub id: u64,
    pub body: Vec<u8>,
}

impl Reply {
    /// The error code of an ERROR reply.
    pub fn error_code(&self) -> Option<u16> {
        (self.kind == Kind::Error)
            .then(|| ErrorBody::parse(&self.body).ok().map(|b| b.code))
            .flatten()
    }
}

/// A blocking framed client with a read timeout.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(u32::MAX - 10),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Encodes and sends one frame.
    pub fn send_frame(&mut self, kind: Kind, id: u64, body: &[u8]) {
        let mut out = Vec::new();
        tether_proto::encode::frame(&mut out, kind, id, body);
        self.send(&out);
    }

    /// The next frame, or `None` at EOF. Panics on timeout.
    pub fn recv(&mut self) -> Option<Reply> {
        loop {
            if let Some((frame, used)) = self.decoder.decode(&self.buf).expect("server frame") {
                let reply = Reply {
                    kind: frame.kind,
                    id: frame.id,
                    body: frame.body.to_vec(),
                };
                self.buf.drain(..used);
                return Some(reply);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "EOF inside a frame");
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading a reply: {e}"),
            }
        }
    }

    /// The next frame, which must exist.
    pub fn expect(&mut self) -> Reply {
        self.recv().expect("a reply, not EOF")
    }

    /// Asserts the server closed the connection.
    pub fn expect_closed(&mut self) {
        if let Some(extra) = self.recv() {
            panic!("expected close, got {extra:?}");
        }
    }
}
