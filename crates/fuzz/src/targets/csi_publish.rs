//! The driver's CSI request handling: `NodePublishVolume` through the tonic `Node` trait (so the
//! `grpc-timeout` metadata is read as from kubelet), the real gRPC provider client against a fake
//! provider on a unix socket whose answer the input chooses, the atomic writer on a plain
//! directory (`DirMounter`, as `--no-tmpfs`), then `NodeUnpublishVolume`.
//!
//! Input (structured): the SecretProviderClass (provider name, parameters), the request
//! (volume id, capability, read-only, volume context, secrets, `grpc-timeout`), the provider's
//! answer (files with arbitrary paths, modes and contents, object versions, or an error code),
//! rotation on or off, and a second publish.
//!
//! Checks: no panic on any thread; nothing is written outside the target; a successful first
//! publish shows exactly the provider's files; errors never show the secrets or tokens; after
//! unpublish the target is gone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use csi_proto::v1 as csi;
use csi_proto::v1::node_server::Node as _;
use driver::error::PublishError;
use driver::metrics::Metrics;
use driver::{ClassSource, Config, DirMounter, GrpcProviderClient, NodeService};
use secrets_store_api::v1::{SecretProviderClass, SecretProviderClassSpec};
use test_support::fake_provider::{Behaviour, FakeProvider};

use crate::input::Gen;
use crate::targets::params::{CANARY_CLIENT_SECRET, CANARY_TOKEN};

/// The class the next publish finds (any namespace and name).
#[derive(Default)]
struct OneClass(Mutex<Option<SecretProviderClass>>);

#[tonic::async_trait]
impl ClassSource for OneClass {
    async fn get(&self, namespace: &str, name: &str) -> Result<SecretProviderClass, PublishError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PublishError::ClassNotFound {
                namespace: namespace.into(),
                name: name.into(),
                hint: String::new(),
            })
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    /// Everything this target writes is under here; targets under `root/targets`.
    root: PathBuf,
    fake: FakeProvider,
    classes: Arc<OneClass>,
    /// Rotation off, rotation on (poll interval zero: every publish refreshes).
    services: [NodeService; 2],
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fuzz-csi")
            .enable_all()
            .build()
            .expect("runtime");
        let root = std::env::temp_dir().join(format!("fuzz-csi-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let providers = root.join("providers");
        std::fs::create_dir_all(&providers).expect("providers dir");
        let fake = rt
            .block_on(FakeProvider::start(&providers, "fake"))
            .expect("fake provider");
        let classes = Arc::new(OneClass::default());
        let provider = Arc::new(GrpcProviderClient::new(vec![providers.clone()], 4 << 20));
        let service = |rotation| {
            let mut config = Config::new("fuzz-node", vec![providers.clone()]);
            config.rotation = rotation;
            NodeService::new(
                config,
                classes.clone(),
                Arc::new(DirMounter::default()),
                provider.clone(),
                None,
                Arc::new(Metrics::new()),
            )
        };
        let services = [service(None), service(Some(Duration::ZERO))];
        Env {
            rt,
            root,
            fake,
            classes,
            services,
        }
    })
}

/// One generated case.
struct Case {
    class: Option<SecretProviderClass>,
    request: csi::NodePublishVolumeRequest,
    timeout: Option<String>,
    behaviour: Behaviour,
    rotation: bool,
    second: Option<Behaviour>,
}

pub fn run(data: &[u8]) {
    let env = env();
    let targets = env.root.join("targets");
    let case = generate(&mut Gen::new(data), &targets);
    crate::no_panic_on("fuzz-csi", || exercise(env, &targets, case));
}

fn exercise(env: &Env, targets: &Path, case: Case) {
    let _ = std::fs::remove_dir_all(targets);
    std::fs::create_dir_all(targets).expect("targets dir");
    *env.classes.0.lock().unwrap_or_else(|e| e.into_inner()) = case.class.clone();
    let svc = &env.services[usize::from(case.rotation)];
    let target = PathBuf::from(&case.request.target_path);
    let files = match &case.behaviour {
        Behaviour::Files(files, _) => files.clone(),
        _ => Vec::new(),
    };
    let secrets = secrets_of(&case);
    env.fake.state.set(case.behaviour);

    let first = env
        .rt
        .block_on(publish(svc, &case.request, case.timeout.as_deref()));
    check_status(&first, &secrets);
    check_confined(&env.root, targets, &target);
    if first.is_ok() && case.second.is_none() {
        check_files(&target, &files);
    }
    if let Some(b) = case.second {
        env.fake.state.set(b);
        let again = env
            .rt
            .block_on(publish(svc, &case.request, case.timeout.as_deref()));
        check_status(&again, &secrets);
        check_confined(&env.root, targets, &target);
    }
    let unpublish = env
        .rt
        .block_on(svc.node_unpublish_volume(tonic::Request::new(
            csi::NodeUnpublishVolumeRequest {
                volume_id: case.request.volume_id.clone(),
                target_path: case.request.target_path.clone(),
            },
        )));
    if !case.request.volume_id.is_empty() && !case.request.target_path.is_empty() {
        assert!(unpublish.is_ok(), "unpublish failed: {unpublish:?}");
        assert!(
            std::fs::symlink_metadata(&target).is_err(),
            "the target is still there after unpublish"
        );
    }
}

async fn publish(
    svc: &NodeService,
    request: &csi::NodePublishVolumeRequest,
    timeout: Option<&str>,
) -> Result<tonic::Response<csi::NodePublishVolumeResponse>, tonic::Status> {
    let mut req = tonic::Request::new(request.clone());
    if let Some(t) = timeout
        && let Ok(v) = t.parse()
    {
        req.metadata_mut().insert("grpc-timeout", v);
    }
    svc.node_publish_volume(req).await
}

fn check_status(
    r: &Result<tonic::Response<csi::NodePublishVolumeResponse>, tonic::Status>,
    secrets: &[&str],
) {
    if let Err(s) = r {
        let m = s.message();
        for secret in secrets {
            assert!(!m.contains(secret), "the status shows a secret: {m}");
        }
    }
}

/// The canaries that are secret in this case: the fuzzer also copies them into names and
/// values that are not secret (a provider name, a pod name), where showing them is right.
fn secrets_of(case: &Case) -> Vec<&'static str> {
    const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    let mut open = format!(
        "{:?} {:?} {} {} {:?} {:?} {:?}",
        case.class,
        case.timeout,
        case.request.volume_id,
        case.request.target_path,
        case.behaviour,
        case.second,
        case.request.secrets.keys().collect::<Vec<_>>()
    );
    for (k, v) in &case.request.volume_context {
        open.push_str(k);
        if k != TOKENS {
            open.push_str(v);
        }
    }
    for (k, v) in &case.request.secrets {
        if k != "clientsecret" && k != TOKENS {
            open.push_str(v);
        }
    }
    [CANARY_CLIENT_SECRET, CANARY_TOKEN]
        .into_iter()
        .filter(|c| !open.contains(c))
        .collect()
}

/// Every path under `root` is the providers dir, `targets`, or inside `target`.
fn check_confined(root: &Path, targets: &Path, target: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let allowed = p.starts_with(root.join("providers"))
                || p.starts_with(target)
                || target.starts_with(&p)
                || p == targets;
            assert!(allowed, "written outside the target: {}", p.display());
            if e.file_type().is_ok_and(|t| t.is_dir()) && !p.starts_with(root.join("providers")) {
                stack.push(p);
            }
        }
    }
}

/// After a first publish: each file the provider sent (unique, valid) reads back through the
/// target.
fn check_files(target: &Path, files: &[(String, i32, Vec<u8>)]) {
    let mut by_path: BTreeMap<&str, usize> = BTreeMap::new();
    for (p, _, _) in files {
        *by_path.entry(p.as_str()).or_default() += 1;
    }
    for (path, _mode, contents) in files {
        if by_path[path.as_str()] > 1 {
            continue;
        }
        let on_disk = std::fs::read(target.join(path));
        if let Ok(bytes) = on_disk {
            assert_eq!(
                &bytes, contents,
                "{path}: other contents than the provider's"
            );
        }
    }
}

// === generation ===

fn plausible_path(g: &mut Gen<'_>) -> String {
    g.text(&[
        "foo",
        "dir/bar",
        "a",
        "../escape",
        "/abs",
        "..data",
        "..data/x",
        "a/../b",
        "./a",
        "a//b",
        "a/",
        ".hidden",
        "dir/..x",
        "foo",
    ])
}

fn generate(g: &mut Gen<'_>, targets: &Path) -> Case {
    let class = g.chance(15, 16).then(|| {
        let mut parameters = BTreeMap::new();
        if g.chance(7, 8) {
            parameters.insert("keyvaultName".to_owned(), g.text(&["kv1"]));
        }
        for _ in 0..g.below(3) {
            parameters.insert(g.string(16), g.string(16));
        }
        SecretProviderClass::new(
            "kv",
            SecretProviderClassSpec {
                provider: g.text(&[
                    "fake", "fake", "fake", "fake", "fake", "missing", "", "../fake",
                ]),
                parameters,
                secret_objects: Vec::new(),
            },
        )
    });

    let tokens = format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{CANARY_TOKEN}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#
    );
    let mut context: HashMap<String, String> = HashMap::new();
    let keys: &[(&str, &[&str])] = &[
        (
            "secretProviderClass",
            &["kv", "kv", "kv", "kv", "kv", "kv", "kv", ""],
        ),
        (
            "csi.storage.k8s.io/pod.name",
            &["web", "web", "web", "web", "web", "web", ""],
        ),
        (
            "csi.storage.k8s.io/pod.namespace",
            &["default", "default", "default", ""],
        ),
        (
            "csi.storage.k8s.io/pod.uid",
            &["uid-1", "uid-1", "uid-1", "uid-1", ""],
        ),
        ("csi.storage.k8s.io/serviceAccount.name", &["default"]),
        ("csi.storage.k8s.io/ephemeral", &["true"]),
    ];
    for (k, plausible) in keys {
        if g.chance(15, 16) {
            context.insert((*k).to_owned(), g.text(plausible));
        }
    }
    if g.chance(1, 2) {
        context.insert(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            tokens.clone(),
        );
    }
    for _ in 0..g.below(2) {
        context.insert(g.string(16), g.string(16));
    }
    let mut secrets = HashMap::new();
    if g.chance(1, 2) {
        secrets.insert("clientid".to_owned(), "app".to_owned());
        secrets.insert("clientsecret".to_owned(), CANARY_CLIENT_SECRET.to_owned());
    }

    // The target: always inside `targets` (kubelet's paths are trusted), possibly nested.
    let mut target = targets.to_path_buf();
    for _ in 0..=g.below(2) {
        let seg: String = g
            .string(24)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        target.push(if seg.is_empty() { "mount" } else { &seg });
    }

    let mut request = csi_proto::kubelet::inline_publish_request(
        &g.text(&[
            "csi-1", "csi-1", "csi-1", "csi-1", "csi-1", "csi-1", "csi-1", "",
        ]),
        &target,
        context,
        secrets,
    );
    if g.chance(1, 16) {
        request.volume_capability = None;
    }
    if g.chance(1, 16) {
        request.readonly = false;
    }
    if g.chance(1, 32) {
        request.target_path = String::new();
    }

    let timeout = g.chance(1, 2).then(|| {
        g.text(&[
            "10S",
            "5000m",
            "2M",
            "1H",
            "1n",
            "0S",
            "99999999H",
            "999999999999H",
            "18446744073709551615n",
            "18446744073709551615H",
            "S",
            "-1S",
            "10s",
        ])
    });

    let behaviour = behaviour(g);
    let rotation = g.bool();
    let second = g.chance(1, 4).then(|| behaviour_of(g));
    Case {
        class,
        request,
        timeout,
        behaviour,
        rotation,
        second,
    }
}

fn behaviour(g: &mut Gen<'_>) -> Behaviour {
    behaviour_of(g)
}

fn behaviour_of(g: &mut Gen<'_>) -> Behaviour {
    match g.byte() % 8 {
        7 => Behaviour::ErrorCode(g.text(&["AuthFailed", "", "x"])),
        6 => Behaviour::NoVersions,
        _ => {
            let n = g.below(5);
            let files = (0..n)
                .map(|_| {
                    let path = plausible_path(g);
                    let mode = if g.chance(7, 8) {
                        g.pick(&[0o644, 0o400, 0o600, 0o777, 0o7777])
                    } else {
                        g.i32()
                    };
                    (path, mode, g.bytes(64))
                })
                .collect();
            let versions = if g.chance(15, 16) {
                vec![("secret/foo".to_owned(), g.text(&["v1", "v2"]))]
            } else {
                Vec::new()
            };
            Behaviour::Files(files, versions)
        }
    }
}
