//! Why a connection failed to open, an attempt to (re)connect failed, or a connection ended
//! early, under the names the summary's `errors` map uses ("connect_refused", "reset",
//! "eof", "KICKED", "ip_list_unavailable", …), and how OS errors map onto them.

use std::io;

use tether_proto::ErrorCode;

/// The reason a connection is closed before the end of the run, or never opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The target answered the SYN with a reset (nothing listening).
    ConnectRefused,
    /// No answer within `--connect-timeout`.
    ConnectTimeout,
    /// Any other failure while connecting.
    ConnectError,
    /// EMFILE / ENFILE: out of file descriptors (RLIMIT_NOFILE).
    FdLimit,
    /// EADDRNOTAVAIL: no free local port for this source address and target.
    NoSourcePorts,
    /// ENOMEM / ENOBUFS: the kernel has no memory for another socket.
    NoMemory,
    /// The established connection was reset by the peer.
    Reset,
    /// The server closed the connection.
    Eof,
    /// Any other I/O error on an established connection.
    IoError,
    /// The server sent bytes that are not a valid v1 frame stream.
    BadFrameFromServer,
    /// The server sent an ERROR whose code closes the connection (KICKED, TIMEOUT,
    /// AUTH_FAILED, …); named by the code.
    Server(ErrorCode),
    /// No LOGIN_OK (or ERROR) within `--connect-timeout` of LOGIN or RESUME.
    LoginTimeout,
    /// tether-ipconfig could not be reached (connect or I/O error).
    IpListUnreachable,
    /// No complete `/ip_list` answer within `--connect-timeout`.
    IpListTimeout,
    /// `/ip_list` answered 503: no gateway is available.
    IpListUnavailable,
    /// `/ip_list` answered another status than 200 or 503.
    IpListHttp,
    /// The `/ip_list` answer is not HTTP, not the JSON, or lists no usable address.
    IpListBad,
    /// A connection told GOAWAY did not get back within `--reconnect-timeout`.
    ReconnectTimeout,
    /// TLS failed: the handshake (certificate, version) or a record.
    TlsError,
    /// The WebSocket upgrade was refused, or the server broke RFC 6455.
    WsError,
}

impl Cause {
    /// The key used in the summary's `errors` map.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cause::ConnectRefused => "connect_refused",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ConnectError => "connect_error",
            Cause::FdLimit => "fd_limit",
            Cause::NoSourcePorts => "no_source_ports",
            Cause::NoMemory => "no_memory",
            Cause::Reset => "reset",
            Cause::Eof => "eof",
            Cause::IoError => "io_error",
            Cause::BadFrameFromServer => "bad_frame_from_server",
            Cause::Server(code) => code.name(),
            Cause::LoginTimeout => "login_timeout",
            Cause::IpListUnreachable => "ip_list_unreachable",
            Cause::IpListTimeout => "ip_list_timeout",
            Cause::IpListUnavailable => "ip_list_unavailable",
            Cause::IpListHttp => "ip_list_http_error",
            Cause::IpListBad => "ip_list_bad_answer",
            Cause::ReconnectTimeout => "reconnect_timeout",
            Cause::TlsError => "tls_error",
            Cause::WsError => "websocket_error",
        }
    }

    /// Classifies an error from creating, binding or connecting a socket.
    pub(crate) fn of_connect_error(error: &io::Error) -> Cause {
        match error.raw_os_error() {
            Some(libc::ECONNREFUSED) => Cause::ConnectRefused,
            Some(libc::ETIMEDOUT) => Cause::ConnectTimeout,
            Some(libc::EMFILE | libc::ENFILE) => Cause::FdLimit,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Cause::NoSourcePorts,
            Some(libc::ENOMEM | libc::ENOBUFS) => Cause::NoMemory,
            _ => match error.kind() {
                io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
                io::ErrorKind::TimedOut => Cause::ConnectTimeout,
                _ => Cause::ConnectError,
            },
        }
    }

    /// Classifies an error from reading or writing an established connection.
    pub(crate) fn of_stream_error(error: &io::Error) -> Cause {
        if matches!(error.raw_os_error(), Some(libc::ENOMEM | libc::ENOBUFS)) {
            return Cause::NoMemory;
        }
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Cause::Reset,
            io::ErrorKind::UnexpectedEof => Cause::Eof,
            _ => Cause::IoError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn connect_errors_are_named_by_cause() {
        assert_eq!(
            Cause::of_connect_error(&os(libc::ECONNREFUSED)).name(),
            "connect_refused"
        );
        assert_eq!(
            Cause::of_connect_error(&os(libc::EMFILE)).name(),
            "fd_limit"
        );
        assert_eq!(
            Cause::of_connect_error(&os(libc::ENFILE)).name(),
            "fd_limit"
        );
        assert_eq!(
            Cause::of_connect_error(&os(libc::EADDRNOTAVAIL)).name(),
            "no_source_ports"
        );
        assert_eq!(
            Cause::of_connect_error(&os(libc::ENOBUFS)).name(),
            "no_memory"
        );
        assert_eq!(
            Cause::of_connect_error(&os(libc::EHOSTUNREACH)).name(),
            "connect_error"
        );
    }

    #[test]
    fn stream_errors_are_named_by_cause() {
        assert_eq!(
            Cause::of_stream_error(&os(libc::ECONNRESET)).name(),
            "reset"
        );
        assert_eq!(Cause::of_stream_error(&os(libc::EPIPE)).name(), "reset");
        assert_eq!(Cause::of_stream_error(&os(libc::EIO)).name(), "io_error");
    }

    #[test]
    fn server_errors_are_named_by_their_code() {
        assert_eq!(Cause::Server(ErrorCode::Kicked).name(), "KICKED");
        assert_eq!(Cause::Server(ErrorCode::AuthFailed).name(), "AUTH_FAILED");
    }
}
