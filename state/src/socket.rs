//! The daemon's Unix socket: binding it (replacing the file a dead daemon left behind,
//! refusing to start while another daemon listens on it, creating it with mode 0660: owner
//! and group, the gateways run in the daemon's group), and what the kernel says about a
//! connected peer: its credentials ([`peer_credentials`]) and whether it has gone
//! ([`peer_gone`]).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::peers::PeerCred;

use thiserror::Error;

/// The socket file's permissions.
pub(crate) const MODE: u32 = 0o660;

#[derive(Debug, Error)]
pub(crate) enum SocketError {
    #[error("another tether-state is listening on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds `path`, nonblocking, mode [`MODE`].
pub(crate) fn bind(path: &Path) -> Result<mio::net::UnixListener, SocketError> {
    let io_err = |what: &'static str| {
        move |source| SocketError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create the directory of"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::warn!(path = %path.display(), "removing a stale socket left by a daemon that is gone");
                    std::fs::remove_file(path).map_err(io_err("cannot remove the stale socket"))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_err("cannot probe the existing socket")(source)),
            }
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_err("cannot inspect")(source)),
    }
    // The umask decides the mode bind(2) creates the file with: no window with wider access.
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o117) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io_err("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))
        .map_err(io_err("cannot set the mode of"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("cannot make nonblocking the socket"))?;
    Ok(mio::net::UnixListener::from_std(listener))
}

/// The peer's pid, uid and gid (`SO_PEERCRED`) and supplementary groups (`SO_PEERGROUPS`;
/// none where the kernel does not have it), as they were when it connected.
pub(crate) fn peer_credentials(stream: &impl AsRawFd) -> io::Result<PeerCred> {
    let fd = stream.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of `len` bytes; the kernel writes at most
    // that many.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(fd).unwrap_or_default(),
    })
}

/// `SO_PEERGROUPS`: the peer's supplementary groups, growing the buffer when the kernel asks.
fn peer_groups(fd: i32) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || needed <= groups.len() {
            return Err(e);
        }
        groups.resize(needed, 0);
    }
}

/// Whether the peer has closed its end (or both ends are shut): `POLLHUP` or `POLLRDHUP`,
/// which a Unix stream socket reports as soon as the peer's last descriptor is closed, even
/// with unread data still queued.
pub(crate) fn peer_gone(stream: &impl AsRawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, timeout 0: poll(2) only fills `revents`.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tether-state-socket-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.sock")
    }

    #[test]
    fn binds_0660_refuses_a_live_socket_and_replaces_a_stale_one() {
        let path = temp("lifecycle");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, MODE);
        assert!(matches!(bind(&path), Err(SocketError::InUse(_))));
        drop(listener); // the file stays, nobody listens: stale
        assert!(path.exists());
        let _again = bind(&path).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_peer_is_seen_with_its_credentials_and_seen_gone_once_it_closes() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        // SAFETY: getters without side effects.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!(
            (cred.pid as u32, cred.uid, cred.gid),
            (std::process::id(), uid, gid)
        );
        assert!(!peer_gone(&a));
        // Data still queued does not hide the close.
        use std::io::Write;
        (&b).write_all(b"unread").unwrap();
        assert!(!peer_gone(&a));
        drop(b);
        assert!(peer_gone(&a));
    }

    #[test]
    fn never_removes_a_file_that_is_not_a_socket() {
        let path = temp("regular");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
