//! Opening sockets: bind the source address (if any), start a nonblocking connect, and
//! later tell whether the connect finished.
//!
//! socket2 builds the socket so it can be bound before connecting: `--source` spreads
//! connections over several local addresses, which tests beyond ~28k connections from
//! 127.0.0.0/8 need. The bind uses port 0 with SO_REUSEADDR and, on Linux,
//! IP_BIND_ADDRESS_NO_PORT, so the port is only chosen at connect time and the same local
//! port can serve different targets.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cause::Cause;

/// Starts connecting to `target` from `source` (any local address when `None`).
pub(crate) fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, Cause> {
    start(target, source).map_err(|e| {
        let cause = Cause::of_connect_error(&e);
        crate::limits::hit(cause, &e);
        cause
    })
}

fn start(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        socket.set_reuse_address(true)?;
        bind_address_no_port(&socket);
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Asks Linux to pick the local port at connect time rather than at bind time; best effort.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int, on a socket we
    // own; a failure only means the kernel picks the port at bind time instead.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_socket: &Socket) {}

/// After a writable or error event on a connecting socket: `Ok(true)` once connected,
/// `Ok(false)` when the event was spurious and the connect is still under way.
pub(crate) fn finished(stream: &TcpStream) -> Result<bool, Cause> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => {
            let cause = Cause::of_connect_error(&e);
            crate::limits::hit(cause, &e);
            return Err(cause);
        }
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(false)
        }
        Err(e) => Err(Cause::of_connect_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connects_from_a_bound_source() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let stream = connect(target, Some("127.0.0.1".parse().unwrap())).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        // Loopback connects complete at once, but poll until the socket says so.
        let mut done = false;
        for _ in 0..100 {
            if finished(&stream).unwrap() {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(done);
        assert_eq!(stream.local_addr().unwrap(), peer);
    }

    #[test]
    fn a_closed_port_is_refused() {
        let target = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let outcome = connect(target, None).and_then(|stream| {
            for _ in 0..100 {
                if finished(&stream)? {
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(Cause::ConnectTimeout)
        });
        assert_eq!(outcome, Err(Cause::ConnectRefused));
    }
}
