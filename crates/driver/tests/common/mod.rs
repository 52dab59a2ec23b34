//! Shared by the driver's integration tests: a fake provider (a real tonic server on a temp
//! unix socket, for failure injection) and kubelet-shaped requests.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_proto::v1 as csi;
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
        let req = r.into_inner();
        let authority = self
            .authority
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                attributes: req.attributes,
                secrets: req.secrets,
                permission: req.permission,
                target_path: req.target_path,
                authority,
            });
        let b = self
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let resp = match b.unwrap_or(Behaviour::NoVersions) {
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
        Ok(tonic::Response::new(resp))
    }
}

/// A fake provider listening on `<dir>/<name>.sock`; stops when dropped.
pub struct FakeProvider {
    pub state: FakeState,
    pub dir: PathBuf,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FakeProvider {
    pub async fn start(dir: &Path, name: &str) -> std::io::Result<Self> {
        let state = FakeState::default();
        let sock = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock)?;
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
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Ok(Self {
            state,
            dir: dir.to_path_buf(),
            _task: AbortOnDrop(task),
        })
    }
}

/// The volume context kubelet sends for an inline volume with podInfoOnMount and
/// tokenRequests (upstream-driver.md §2.5).
pub fn kubelet_context(
    class: &str,
    pod: &str,
    ns: &str,
    uid: &str,
    sa: &str,
    tokens: Option<&str>,
) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("secretProviderClass", class),
        ("csi.storage.k8s.io/pod.name", pod),
        ("csi.storage.k8s.io/pod.namespace", ns),
        ("csi.storage.k8s.io/pod.uid", uid),
        ("csi.storage.k8s.io/serviceAccount.name", sa),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(t) = tokens {
        m.insert("csi.storage.k8s.io/serviceAccount.tokens".into(), t.into());
    }
    m
}

/// A NodePublishVolumeRequest shaped like kubelet's for an inline ephemeral volume.
pub fn publish_request(
    volume_id: &str,
    target: &Path,
    context: HashMap<String, String>,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        publish_context: HashMap::new(),
        staging_target_path: String::new(),
        target_path: target.display().to_string(),
        volume_capability: Some(csi::VolumeCapability {
            access_type: Some(csi::volume_capability::AccessType::Mount(
                csi::volume_capability::MountVolume {
                    fs_type: String::new(),
                    mount_flags: vec![],
                    volume_mount_group: String::new(),
                },
            )),
            access_mode: Some(csi::volume_capability::AccessMode {
                mode: csi::volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32,
            }),
        }),
        readonly: true,
        secrets: HashMap::new(),
        volume_context: context,
    }
}

/// Kubelet's target path layout.
pub fn kubelet_target(root: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    root.join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~csi")
        .join(volume)
        .join("mount")
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Unmounts anything a failed test left mounted under `root` (tests run as root).
pub struct MountGuard(pub Vec<PathBuf>);
impl Drop for MountGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
