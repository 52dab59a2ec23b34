//! Calling a provider plugin over `<dir>/<provider>.sock` (the v1alpha1 CSIDriverProvider API).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use provider_proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use provider_proto::v1alpha1::{MountRequest, ObjectVersion, VersionRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::error::PublishError;
use crate::node::{blocking, fs_probe};
use crate::writer::PayloadFile;
use sensitive::{SecretBytes, SecretString};

/// Everything the driver sends in one Mount.
#[derive(Debug)]
pub struct MountCall {
    pub provider: String,
    pub attributes: SecretString,
    pub secrets: SecretString,
    pub target_path: String,
    pub permission: String,
    pub current_object_versions: Vec<(String, String)>,
    /// Time left until the caller's deadline.
    pub timeout: Duration,
}

/// A successful Mount: files to write (may be empty: the provider wrote them itself) and the
/// object versions (never empty).
#[derive(Debug, Default)]
pub struct MountOutput {
    pub files: Vec<PayloadFile>,
    pub object_versions: Vec<(String, String)>,
    /// Set when the provider served a last-known-good answer this old (`STALE_HEADER`).
    pub stale_for: Option<Duration>,
}

/// Sends Mount to a named provider.
#[tonic::async_trait]
pub trait ProviderClient: Send + Sync + 'static {
    async fn mount(&self, call: MountCall) -> Result<MountOutput, PublishError>;
}

/// The longest a provider call may take, whatever the caller's deadline: kubelet sends two
/// minutes, but a `grpc-timeout` header may say up to 99,999,999 hours. Capping keeps the
/// deadline arithmetic far from `Instant`'s range.
pub const MAX_MOUNT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Provider names usable as a socket file name: `^[a-zA-Z0-9_-]{0,30}$`.
pub fn valid_provider_name(name: &str) -> bool {
    name.len() <= 30
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

// === impl GrpcProviderClient ===

/// gRPC to the provider's unix socket with `:authority` `localhost` (some providers reject any
/// other). One channel per provider, created lazily; unlike upstream, a cached channel is
/// dropped when its socket file disappears, so a provider that moved directories is found again.
pub struct GrpcProviderClient {
    dirs: Vec<PathBuf>,
    max_recv: usize,
    clients: Mutex<HashMap<String, (PathBuf, CsiDriverProviderClient<Channel>)>>,
}

impl GrpcProviderClient {
    /// `dirs` in search order (upstream: the additional paths first, then `--provider-volume`).
    pub fn new(dirs: Vec<PathBuf>, max_recv: usize) -> Self {
        Self {
            dirs,
            max_recv,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn clients(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (PathBuf, CsiDriverProviderClient<Channel>)>>
    {
        // The map is only changed by single inserts and removes: still valid after a panic.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The provider's client; the socket files are looked up on the blocking pool.
    async fn client(
        &self,
        provider: &str,
    ) -> Result<CsiDriverProviderClient<Channel>, PublishError> {
        if !valid_provider_name(provider) || provider.is_empty() {
            return Err(PublishError::InvalidProvider(provider.to_string()));
        }
        let cached = self.clients().get(provider).cloned();
        if let Some((sock, client)) = cached {
            let s = sock.clone();
            if blocking(move || fs_probe(|| s.exists())).await? {
                return Ok(client);
            }
            let mut clients = self.clients();
            if clients.get(provider).is_some_and(|(p, _)| *p == sock) {
                clients.remove(provider);
            }
        }
        let candidates: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|d| d.join(format!("{provider}.sock")))
            .collect();
        let sock = blocking(move || fs_probe(|| candidates.into_iter().find(|p| p.exists())))
            .await?
            .ok_or_else(|| PublishError::ProviderNotFound {
                provider: provider.to_string(),
                searched: self
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let client = CsiDriverProviderClient::new(unix_channel(&sock))
            .max_decoding_message_size(self.max_recv)
            .max_encoding_message_size(usize::MAX);
        self.clients()
            .insert(provider.to_string(), (sock, client.clone()));
        Ok(client)
    }

    /// Calls Version on every provider used so far (5 s timeout each), logs the result and
    /// returns (provider, healthy); the same signal as upstream's `--provider-health-check`.
    pub async fn health_check(&self) -> Vec<(String, bool)> {
        let clients: Vec<(String, CsiDriverProviderClient<Channel>)> = self
            .clients()
            .iter()
            .map(|(k, (_, c))| (k.clone(), c.clone()))
            .collect();
        let mut out = Vec::with_capacity(clients.len());
        for (name, mut client) in clients {
            let mut req = tonic::Request::new(VersionRequest {
                version: provider_proto::API_VERSION.into(),
            });
            req.set_timeout(Duration::from_secs(5));
            let healthy = match tokio::time::timeout(Duration::from_secs(5), client.version(req))
                .await
            {
                Ok(Ok(v)) => {
                    let v = v.into_inner();
                    tracing::debug!(provider = %name, runtime = %v.runtime_name, version = %v.runtime_version, "provider healthy");
                    true
                }
                Ok(Err(s)) => {
                    tracing::warn!(provider = %name, code = ?s.code(), "provider health check failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(provider = %name, "provider health check timed out");
                    false
                }
            };
            out.push((name, healthy));
        }
        out
    }
}

/// A lazily connecting channel over the provider's unix socket.
pub fn unix_channel(sock: &Path) -> Channel {
    daemon::uds::channel_lazy(sock)
}

#[tonic::async_trait]
impl ProviderClient for GrpcProviderClient {
    async fn mount(&self, call: MountCall) -> Result<MountOutput, PublishError> {
        let provider = call.provider.clone();
        let deadline = Instant::now()
            .checked_add(call.timeout.min(MAX_MOUNT_TIMEOUT))
            .ok_or_else(|| PublishError::Internal {
                what: "the provider call's deadline is out of the clock's range",
                source: None,
            })?;
        let request = MountRequest {
            attributes: call.attributes.expose().to_string(),
            secrets: call.secrets.expose().to_string(),
            target_path: call.target_path.clone(),
            permission: call.permission.clone(),
            current_object_version: call
                .current_object_versions
                .iter()
                .map(|(id, version)| ObjectVersion {
                    id: id.clone(),
                    version: version.clone(),
                })
                .collect(),
        };
        // Upstream's service config retries UNAVAILABLE up to 3 attempts (1 s, then x1.1).
        let mut backoff = Duration::from_secs(1);
        let mut attempt = 0;
        let (stale_for, response) = loop {
            attempt += 1;
            let mut client = self.client(&provider).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PublishError::Deadline(provider));
            }
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(left);
            match tokio::time::timeout(left, client.mount(req)).await {
                Err(_) => return Err(PublishError::Deadline(provider)),
                Ok(Ok(r)) => break (stale_header(r.metadata()), r.into_inner()),
                Ok(Err(s)) if s.code() == Code::Unavailable && attempt < 3 => {
                    tracing::debug!(provider = %provider, attempt, "provider unavailable, retrying");
                    if deadline.saturating_duration_since(Instant::now()) <= backoff {
                        return Err(map_status(&provider, &s));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.mul_f32(1.1);
                }
                Ok(Err(s)) => return Err(map_status(&provider, &s)),
            }
        };
        if let Some(err) = response.error.as_ref().filter(|e| !e.code.is_empty()) {
            return Err(PublishError::ProviderErrorCode {
                provider,
                code: err.code.clone(),
            });
        }
        if response.object_version.is_empty() {
            return Err(PublishError::MissingObjectVersions(provider));
        }
        let size: usize = response.files.iter().map(|f| f.contents.len()).sum();
        if size > 1024 * 1024 {
            tracing::info!(provider = %provider, bytes = size, "provider response is over 1 MiB: syncing it to a Kubernetes Secret may fail");
        }
        Ok(MountOutput {
            stale_for,
            object_versions: response
                .object_version
                .into_iter()
                .map(|o| (o.id, o.version))
                .collect(),
            files: response
                .files
                .into_iter()
                .map(|mut f| PayloadFile {
                    // Taken, not copied: the message zeroes what is left when dropped.
                    path: std::mem::take(&mut f.path),
                    mode: f.mode,
                    contents: SecretBytes::new(std::mem::take(&mut f.contents)),
                })
                .collect(),
        })
    }
}

/// The gRPC response header a provider sets when it served a last-known-good answer (not
/// upstream; an upstream driver ignores it): the answer's age in whole seconds.
pub const STALE_HEADER: &str = "x-secrets-store-stale-seconds";

fn stale_header(m: &tonic::metadata::MetadataMap) -> Option<Duration> {
    m.get(STALE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn map_status(provider: &str, s: &Status) -> PublishError {
    let message = s.message();
    if (s.code() == Code::OutOfRange && message.contains("message length too large"))
        || (s.code() == Code::ResourceExhausted
            && message.contains("received message larger than max"))
    {
        return PublishError::ResponseTooLarge {
            provider: provider.into(),
            message: message.into(),
        };
    }
    if s.code() == Code::DeadlineExceeded || s.code() == Code::Cancelled {
        return PublishError::Deadline(provider.into());
    }
    // The connection broke under the call (the provider died): UNAVAILABLE, as grpc-go says.
    let broken = std::error::Error::source(s).is_some_and(|e| e.is::<tonic::transport::Error>());
    // Provider messages are the provider's own error text (Key Vault errors, auth failures);
    // they are logged by providers too and carry no request attributes.
    PublishError::ProviderCall {
        provider: provider.into(),
        code: if broken && s.code() == Code::Unknown {
            Code::Unavailable
        } else {
            s.code()
        },
        message: message.into(),
    }
}

/// The provider client shared by the service, the health check and tests.
pub type SharedProviderClient = Arc<dyn ProviderClient>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names() {
        assert!(valid_provider_name("azure"));
        assert!(valid_provider_name("e2e-provider_1"));
        assert!(!valid_provider_name("../etc/x"));
        assert!(!valid_provider_name("a.sock"));
        assert!(!valid_provider_name(&"a".repeat(31)));
    }

    #[tokio::test]
    async fn missing_socket_names_the_dirs() {
        let c = GrpcProviderClient::new(
            vec!["/nonexistent/a".into(), "/nonexistent/b".into()],
            4 << 20,
        );
        let err = c
            .mount(MountCall {
                provider: "azure".into(),
                attributes: SecretString::new("{}"),
                secrets: SecretString::new("null"),
                target_path: "/t".into(),
                permission: "420".into(),
                current_object_versions: vec![],
                timeout: Duration::from_secs(1),
            })
            .await
            .err();
        let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            msg.contains("/nonexistent/a, /nonexistent/b") && msg.contains("azure.sock"),
            "{msg}"
        );
        assert_eq!(err.map(|e| e.code()), Some(Code::Unavailable));
    }

    fn call(timeout: Duration) -> MountCall {
        MountCall {
            provider: "azure".into(),
            attributes: SecretString::new("{}"),
            secrets: SecretString::new("null"),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_versions: vec![],
            timeout,
        }
    }

    /// `Instant::now() + timeout` panicked ("overflow when adding duration to instant") for a
    /// timeout past the clock's range; the deadline is now capped and computed with
    /// `checked_add`, so the call fails for its real reason.
    #[tokio::test]
    async fn a_huge_timeout_is_capped_not_a_panic() {
        let c = GrpcProviderClient::new(vec!["/nonexistent/a".into()], 4 << 20);
        for timeout in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(99_999_999 * 3600),
        ] {
            let err = c.mount(call(timeout)).await.err();
            assert!(
                matches!(err, Some(PublishError::ProviderNotFound { .. })),
                "{timeout:?}: {err:?}"
            );
        }
    }

    /// The socket lookups (`Path::exists` over the provider directories) run on the blocking
    /// pool, not on the async thread (here the test's own thread, a current-thread runtime).
    #[tokio::test(flavor = "current_thread")]
    async fn socket_lookups_run_on_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sock = dir.path().join("azure.sock");
        std::fs::write(&sock, b"").unwrap_or_else(|e| panic!("{e}"));
        let c = GrpcProviderClient::new(vec![dir.path().to_path_buf()], 4 << 20);
        let before = crate::node::tests::fs_probes_on_this_thread();
        // First lookup (search), then a cached client whose socket is checked again.
        let mut call = call(Duration::from_millis(200));
        call.provider = "azure".into();
        let _ = c.mount(call).await;
        assert!(c.client("azure").await.is_ok());
        assert_eq!(crate::node::tests::fs_probes_on_this_thread(), before);
        assert!(crate::node::tests::fs_probes() >= 2);
    }
}
