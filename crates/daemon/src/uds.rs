//! Both ends of the unix sockets gRPC runs on: the private bind the daemons serve on, and the
//! one client connector (driver to provider, driver to itself for /healthz, provider to itself,
//! tests to either).

use std::io;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tonic::transport::{Channel, Endpoint as ChannelEndpoint};

use crate::Endpoint;

/// The URI tonic needs; over a unix socket it only sets `:authority` (`localhost`, as Go's
/// gRPC clients send, so peers that check it see what they expect).
const UNIX_URI: &str = "http://localhost";

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        }
    })
}

/// A channel over the unix socket at `path` that connects on first use (and reconnects).
pub fn channel_lazy(path: &Path) -> Channel {
    ChannelEndpoint::from_static(UNIX_URI).connect_with_connector_lazy(unix_connector(path.into()))
}

/// A channel over the unix socket at `path`, connected now.
pub async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    ChannelEndpoint::from_static(UNIX_URI)
        .connect_with_connector(unix_connector(path.into()))
        .await
}

/// A channel to a daemon's own `--endpoint` (unix or TCP), connected now.
pub async fn channel_to(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    match endpoint {
        Endpoint::Unix(path) => channel(path).await,
        Endpoint::Tcp(addr) => {
            let addr = Endpoint::tcp_listen_addr(addr);
            ChannelEndpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await
        }
    }
}

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
