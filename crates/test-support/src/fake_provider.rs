//! A fake Secrets Store provider: a real tonic server on a unix socket that answers `Mount` as
//! told ([`Behaviour`]) and records what it was sent ([`Seen`]), for failure injection in the
//! driver's tests (real providers are tested against the real driver elsewhere).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provider_proto::v1alpha1::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use provider_proto::v1alpha1::{
    Error as ProviderError, File, MountRequest, MountResponse, ObjectVersion, VersionRequest,
    VersionResponse,
};
use tokio_stream::wrappers::UnixListenerStream;

/// What the fake provider answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Files (path, mode, contents) and versions (id, version).
    Files(Vec<(String, i32, Vec<u8>)>, Vec<(String, String)>),
    ErrorCode(String),
    Slow(Duration),
    NoVersions,
    Oversized(usize),
    /// The inner answer, after a pause (a provider still working when something else fails).
    Delayed(Duration, Box<Behaviour>),
    /// The inner answer, marked as last-known-good this many seconds old (the Azure provider's
    /// `x-secrets-store-stale-seconds` response header).
    Stale(u64, Box<Behaviour>),
}

/// One Mount as the provider saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub attributes: String,
    pub secrets: String,
    pub permission: String,
    pub target_path: String,
    pub authority: String,
}

#[derive(Clone, Default)]
pub struct FakeState {
    pub behaviour: Arc<Mutex<Option<Behaviour>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// When set, Version fails with UNAVAILABLE (an unhealthy provider).
    pub version_fails: Arc<Mutex<bool>>,
    authority: Arc<Mutex<String>>,
}

impl FakeState {
    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn calls(&self) -> usize {
        self.seen().len()
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for FakeState {
    async fn version(
        &self,
        _r: tonic::Request<VersionRequest>,
    ) -> Result<tonic::Response<VersionResponse>, tonic::Status> {
        if *self.version_fails.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(tonic::Status::unavailable("not ready"));
        }
        Ok(tonic::Response::new(VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "fake".into(),
            runtime_version: "0".into(),
        }))
    }

    async fn mount(
        &self,
        r: tonic::Request<MountRequest>,
    ) -> Result<tonic::Response<MountResponse>, tonic::Status> {
        let mut req = r.into_inner();
        let take = std::mem::take::<String>;
        let authority = self
            .authority
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                attributes: take(&mut req.attributes),
                secrets: take(&mut req.secrets),
                permission: take(&mut req.permission),
                target_path: take(&mut req.target_path),
                authority,
            });
        let b = self
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut stale = None;
        let b = match b.unwrap_or(Behaviour::NoVersions) {
            Behaviour::Delayed(pause, inner) => {
                tokio::time::sleep(pause).await;
                *inner
            }
            Behaviour::Stale(age, inner) => {
                stale = Some(age);
                *inner
            }
            other => other,
        };
        let resp = match b {
            Behaviour::Files(files, versions) => MountResponse {
                files: files
                    .into_iter()
                    .map(|(path, mode, contents)| File {
                        path,
                        mode,
                        contents,
                    })
                    .collect(),
                object_version: versions
                    .into_iter()
                    .map(|(id, version)| ObjectVersion { id, version })
                    .collect(),
                error: None,
            },
            Behaviour::ErrorCode(code) => MountResponse {
                error: Some(ProviderError { code }),
                ..Default::default()
            },
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                MountResponse::default()
            }
            Behaviour::NoVersions => MountResponse {
                files: vec![File {
                    path: "a".into(),
                    mode: 0o644,
                    contents: b"x".to_vec(),
                }],
                ..Default::default()
            },
            Behaviour::Delayed(..) | Behaviour::Stale(..) => {
                return Err(tonic::Status::internal(
                    "fake provider: nested Delayed or Stale",
                ));
            }
            Behaviour::Oversized(n) => MountResponse {
                files: vec![File {
                    path: "big".into(),
                    mode: 0o644,
                    contents: vec![b'x'; n],
                }],
                object_version: vec![ObjectVersion {
                    id: "secret/big".into(),
                    version: "1".into(),
                }],
                error: None,
            },
        };
        let mut resp = tonic::Response::new(resp);
        if let Some(age) = stale {
            resp.metadata_mut().insert(
                "x-secrets-store-stale-seconds",
                tonic::metadata::MetadataValue::from(age),
            );
        }
        Ok(resp)
    }
}

/// A fake provider listening on `<dir>/<name>.sock`; stops when dropped: no new connection is
/// accepted and open ones are shut down (GOAWAY) once their calls in flight have answered, so a
/// client's next call goes to whatever listens on the socket then. (A provider killed mid-call
/// is a process: see the driver's `faults` tests.)
pub struct FakeProvider {
    pub state: FakeState,
    pub dir: PathBuf,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // Dropping the server future ends its shutdown signal: each connection task (spawned
        // apart from it) then shuts its connection down.
        self.0.abort();
    }
}

impl FakeProvider {
    pub async fn start(dir: &Path, name: &str) -> std::io::Result<Self> {
        let state = FakeState::default();
        let sock = dir.join(format!("{name}.sock"));
        let listener = daemon::uds::bind_private(&sock)?;
        let authority = state.authority.clone();
        let svc = CsiDriverProviderServer::new(state.clone());
        let task = tokio::spawn(async move {
            let layer =
                tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
                    let a = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    *authority.lock().unwrap_or_else(|e| e.into_inner()) = a;
                    req
                });
            let _ = tonic::transport::Server::builder()
                .layer(layer)
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    std::future::pending::<()>(),
                )
                .await;
        });
        Ok(Self {
            state,
            dir: dir.to_path_buf(),
            _task: AbortOnDrop(task),
        })
    }
}
