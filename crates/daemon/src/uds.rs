//! The private unix-socket bind both daemons serve gRPC on.

use std::io;
use std::path::Path;

use tokio::net::UnixListener;

/// Binds a unix socket at `path` that only its owner can connect to (0600): the parent
/// directory is created if missing and a stale socket from an earlier run is removed first (as
/// upstream does). The caller removes the socket when it stops serving.
///
/// With the usual umask (022) a fresh socket is not writable (= not connectable) by others, so
/// tightening it right after bind leaves no window for a foreign connection.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| context("creating the directory of", e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed stale socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context("removing stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| context("listening on", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| context("restricting", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use super::*;

    #[tokio::test]
    async fn owner_only_parent_created_stale_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/s.sock");
        let first = bind_private(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second bind (a restarted daemon whose socket file was left behind) succeeds.
        drop(first);
        let _second = bind_private(&path).unwrap();
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
        // A directory in the way is an error that names the path.
        let err = bind_private(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
