//! Binding the daemon's Unix socket: replacing the file a dead daemon left behind, refusing
//! to start while another daemon listens on it, and creating it with mode 0660 (owner and
//! group: the gateways run in the daemon's group).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    fn never_removes_a_file_that_is_not_a_socket() {
        let path = temp("regular");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
