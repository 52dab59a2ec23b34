//! Faults injected into a publish, and what each one must leave intact (issue 14):
//!
//! | fault | preserved |
//! |---|---|
//! | provider process killed while a Mount is in flight | retryable `Unavailable`, nothing mounted (first mount) or the last good files (rotation); the next publish succeeds |
//! | writer process killed at random points | the visible files are exactly the old or the new payload; the next write removes what the dead one left |
//! | tmpfs full (ENOSPC) | an error naming the target, no partial file; the old files on rotation |
//! | 10 MiB provider response | `ResourceExhausted` naming `--max-call-recv-msg-size` at the default (4 MiB, as upstream); mounted whole when the flag allows it |
//! | a class with 1,000 objects | mounted in well under a second per hundred files |
//! | provider slower than kubelet's deadline | `DeadlineExceeded`, nothing mounted, and the retry mounts for real |
//! | 16 volumes of one pod published at once, 10 rounds, real API server | 0 failures; one pod status per class, naming one of the pod's volumes |
//! | API server unreachable during a publish | `Unavailable`, nothing mounted, the next publish after it is back records everything |
//!
//! Every test uses canary secret values (`CANARY-<random>`) in file contents, service-account
//! tokens and nodePublishSecretRef data, and asserts that no log line (all of this process,
//! trace level), Event, metric or error message carries one.
//!
//! Child processes (a provider to kill, a writer to kill) are this test binary run again with
//! [`CHILD_ENV`] set: see [`child_process`].

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{self, Relay};
use common::{
    Behaviour, FakeProvider, MountGuard, assert_no_canary, canary, is_root, kubelet_context,
    kubelet_target, logs, publish_request,
};
use csi_proto::v1 as csi;
use driver::metrics::Metrics;
use driver::node::Published;
use driver::writer::{self, PayloadFile};
use driver::{
    Config, DirMounter, FileClassSource, GrpcProviderClient, KubeClassSource, KubeSinks, Mounter,
    NodeService, TmpfsMounter,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use secrets_store_api::v1::{SecretProviderClass, SecretProviderClassPodStatus};
use sensitive::SecretBytes;
use test_support::{ChildGuard, ControlPlane};
use tonic::Code;

// === child processes ===

/// Set to `<role> <argument>` in a child process of this binary.
const CHILD_ENV: &str = "DRIVER_FAULTS_CHILD";

/// Not a test of its own: the entry point of the child processes the tests kill. Without
/// [`CHILD_ENV`] it returns at once. Roles:
/// - `writer <target>`: rewrites `<target>` with payload A, then B, forever, after creating
///   `<target>/../ready`;
/// - `provider <dir>`: a fake provider on `<dir>/fake.sock` whose Mount never answers; creates
///   `<dir>/mount-started` once a Mount arrived.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (role, arg) = role.split_once(' ').unwrap_or((role.as_str(), ""));
    let arg = PathBuf::from(arg);
    match role {
        "writer" => {
            let (a, b) = (payload_a(), payload_b());
            let ready = arg.with_file_name("ready");
            let _ = std::fs::write(ready, "");
            loop {
                let _ = writer::write_payload(&arg, &a);
                let _ = writer::write_payload(&arg, &b);
            }
        }
        "provider" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let fake = FakeProvider::start(&arg, "fake").await.expect("listen");
                fake.state.set(Behaviour::Slow(Duration::from_secs(600)));
                loop {
                    if fake.state.calls() > 0 {
                        let _ = std::fs::write(arg.join("mount-started"), "");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// This binary, running [`child_process`] as `role`; dies with the test process.
fn spawn_child(role: &str, arg: &Path, log: &Path) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "child_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format!("{role} {}", arg.display()));
    Ok(ChildGuard::spawn(role, cmd, log)?)
}

/// SIGKILL, no grace, then reap.
fn sigkill(child: &mut ChildGuard) {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    child.stop(Duration::ZERO);
}

async fn wait_for_file(path: &Path, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {within:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

// === payloads and what a reader sees ===

fn file(path: &str, contents: Vec<u8>) -> PayloadFile {
    PayloadFile {
        path: path.into(),
        mode: 0o644,
        contents: SecretBytes::new(contents),
    }
}

/// Old payload of the writer test: 40 files of 4 KiB, a nested one, a shared name.
fn payload_a() -> Vec<PayloadFile> {
    let mut files: Vec<PayloadFile> = (0..40)
        .map(|i| file(&format!("a-{i:02}"), vec![b'a'; 4096]))
        .collect();
    files.push(file("shared", b"A".to_vec()));
    files.push(file("dir/a", b"nested A".to_vec()));
    files
}

/// New payload: other names (30 files of 6 KiB), other nested file, same shared name.
fn payload_b() -> Vec<PayloadFile> {
    let mut files: Vec<PayloadFile> = (0..30)
        .map(|i| file(&format!("b-{i:02}"), vec![b'b'; 6144]))
        .collect();
    files.push(file("shared", b"B".to_vec()));
    files.push(file("dir/b", b"nested B".to_vec()));
    files
}

fn as_map(files: &[PayloadFile]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|f| (f.path.clone(), f.contents.expose().to_vec()))
        .collect()
}

/// What a container reading the volume sees: every name that resolves, with its contents
/// (a dangling link is a name that is not there).
fn visible(target: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name.starts_with("..") {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match std::fs::metadata(entry.path()) {
                Err(_) => {}
                Ok(m) if m.is_dir() => walk(&entry.path(), &rel, out)?,
                Ok(_) => {
                    out.insert(rel, std::fs::read(entry.path())?);
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(target, "", &mut out)?;
    Ok(out)
}

/// Anything in `target` besides `..data`, the directory it names and the links of `files`.
fn leftovers(target: &Path, files: &[PayloadFile]) -> anyhow::Result<Vec<String>> {
    let data = std::fs::read_link(target.join("..data"))?;
    let mut expected: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_string))
        .collect();
    expected.push("..data".into());
    expected.push(data.display().to_string());
    let mut extra = Vec::new();
    for entry in std::fs::read_dir(target)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            extra.push(name);
        }
    }
    extra.sort();
    Ok(extra)
}

// === fault: the writer killed in the middle of a write ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_mid_write_leaves_old_or_new_and_the_next_write_repairs() -> anyhow::Result<()>
{
    const KILLS: usize = 150;
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("target");
    std::fs::create_dir(&target)?;
    // As root the target is a tmpfs, as in the driver.
    let _g = MountGuard(vec![target.clone()]);
    if is_root() {
        TmpfsMounter.mount(&target)?;
    }
    let (a, b) = (payload_a(), payload_b());
    let (map_a, map_b) = (as_map(&a), as_map(&b));

    // How long one rewrite takes here: the kills are spread over three of them.
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch)?;
    let started = Instant::now();
    for _ in 0..10 {
        writer::write_payload(&scratch, &a)?;
        writer::write_payload(&scratch, &b)?;
    }
    let one_write = started.elapsed() / 20;

    writer::write_payload(&target, &a)?;
    let (mut mid_write, mut saw_old, mut saw_new) = (0, 0, 0);
    for i in 0..KILLS {
        let ready = dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = spawn_child("writer", &target, &dir.path().join("writer.log"))?;
        wait_for_file(&ready, Duration::from_secs(20)).await?;
        let delay = one_write.mul_f64(3.0 * rand::random::<f64>());
        std::thread::sleep(delay);
        sigkill(&mut child);

        let seen = visible(&target)?;
        let current = if seen == map_a {
            saw_old += 1;
            &a
        } else if seen == map_b {
            saw_new += 1;
            &b
        } else {
            anyhow::bail!(
                "kill {i}: the target shows neither payload: {:?}",
                seen.keys().collect::<Vec<_>>()
            );
        };
        if !leftovers(&target, current)?.is_empty() {
            mid_write += 1;
        }
        // The next publish repairs: with the same contents (nothing to write), or new ones.
        let next = if i % 2 == 0 {
            current
        } else if current == &a {
            &b
        } else {
            &a
        };
        writer::write_payload(&target, next)?;
        assert_eq!(
            visible(&target)?,
            as_map(next),
            "kill {i}: repaired contents"
        );
        assert_eq!(
            leftovers(&target, next)?,
            Vec::<String>::new(),
            "kill {i}: the next write removes what the killed one left"
        );
        if next == &b {
            writer::write_payload(&target, &a)?;
        }
    }
    println!(
        "{KILLS} writers killed ({one_write:?} per write): {saw_old} showed the old payload, \
         {saw_new} the new one, {mid_write} left debris behind"
    );
    assert!(
        mid_write > 0,
        "no kill landed in the middle of a write; the test proves nothing"
    );
    if is_root() {
        TmpfsMounter.unmount(&target)?;
    }
    Ok(())
}

// === the driver in process, the class from a file ===

fn class_yaml(objects: usize) -> String {
    let many: String = (0..objects)
        .map(|i| format!("  - |\n    objectName: secret-{i:04}\n    objectType: secret\n"))
        .collect();
    let params = serde_json::json!({"keyvaultName": "kv1", "objects": format!("array:\n{many}")});
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {{name: kv, namespace: default}}\nspec:\n  provider: fake\n  parameters: {params}\n"
    )
}

struct Env {
    dir: tempfile::TempDir,
    providers: PathBuf,
    svc: NodeService,
    mounter: Arc<dyn Mounter>,
    fake: Option<FakeProvider>,
}

fn default_mounter() -> Arc<dyn Mounter> {
    if is_root() {
        Arc::new(TmpfsMounter)
    } else {
        Arc::new(DirMounter::default())
    }
}

async fn env(
    config: impl FnOnce(&mut Config),
    mounter: Arc<dyn Mounter>,
    objects: usize,
) -> anyhow::Result<Env> {
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let class_file = dir.path().join("classes.yaml");
    std::fs::write(&class_file, class_yaml(objects))?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    let mut cfg = Config::new("node-1", vec![providers.clone()]);
    config(&mut cfg);
    let svc = NodeService::new(
        cfg.clone(),
        Arc::new(FileClassSource::new(class_file)),
        mounter.clone(),
        Arc::new(GrpcProviderClient::new(
            cfg.provider_dirs.clone(),
            cfg.max_recv_msg_size,
        )),
        None,
        Arc::new(Metrics::new()),
    );
    Ok(Env {
        dir,
        providers,
        svc,
        mounter,
        fake: Some(fake),
    })
}

/// A publish as kubelet sends it, with canaries as the service-account token and as the
/// nodePublishSecretRef data.
fn request(target: &Path, uid: &str) -> csi::NodePublishVolumeRequest {
    let tokens = serde_json::json!({
        "api://AzureADTokenExchange": {"token": canary(), "expirationTimestamp": "2099-01-01T00:00:00Z"}
    })
    .to_string();
    let mut req = publish_request(
        "csi-fault",
        target,
        kubelet_context("kv", "web", "default", uid, "default", Some(&tokens)),
    );
    req.secrets.insert("clientid".into(), canary());
    req.secrets.insert("clientsecret".into(), canary());
    req
}

fn canary_files(n: usize, version: &str) -> (Behaviour, BTreeMap<String, Vec<u8>>) {
    let files: Vec<(String, i32, Vec<u8>)> = (0..n)
        .map(|i| (format!("secret-{i:04}"), 0o644, canary().into_bytes()))
        .collect();
    let versions = (0..n)
        .map(|i| (format!("secret/secret-{i:04}"), version.to_string()))
        .collect();
    let map = files
        .iter()
        .map(|(p, _, c)| (p.clone(), c.clone()))
        .collect();
    (Behaviour::Files(files, versions), map)
}

/// Nothing of the volume is left: no mount, no directory.
fn assert_nothing_mounted(mounter: &dyn Mounter, target: &Path) -> anyhow::Result<()> {
    assert!(
        !mounter.is_mounted(target)?,
        "{} still mounted",
        target.display()
    );
    assert!(!target.exists(), "{} left behind", target.display());
    Ok(())
}

/// What a failed publish showed kubelet and the Event, checked for canaries.
fn shown(e: &driver::PublishError) -> String {
    let text = e.render();
    assert_no_canary("an error message", &text);
    text
}

// === fault: the provider killed while a Mount is in flight ===

/// A first mount whose provider (a child process) is SIGKILLed while it holds the Mount call.
async fn first_mount_with_the_provider_killed(
    e: &mut Env,
    target: &Path,
) -> anyhow::Result<driver::PublishError> {
    e.fake = None; // the provider is a child process this time
    let mut child = spawn_child("provider", &e.providers, &e.dir.path().join("provider.log"))?;
    wait_for_file(&e.providers.join("fake.sock"), Duration::from_secs(20)).await?;
    let svc = e.svc.clone();
    let req = request(target, "uid-k");
    let publish = tokio::spawn(async move { svc.publish(req, Duration::from_secs(30)).await });
    wait_for_file(&e.providers.join("mount-started"), Duration::from_secs(20)).await?;
    sigkill(&mut child);
    match tokio::time::timeout(Duration::from_secs(20), publish).await?? {
        Ok(p) => anyhow::bail!("publish succeeded with the provider killed: {p:?}"),
        Err(err) => Ok(err),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_killed_mid_mount_leaves_nothing_and_the_retry_mounts() -> anyhow::Result<()> {
    let logs = logs::capture();
    let mut e = env(|_| {}, default_mounter(), 1).await?;
    let target = kubelet_target(e.dir.path(), "uid-k", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let err = first_mount_with_the_provider_killed(&mut e, &target).await?;
    let text = shown(&err);
    // A connection reset under the call reaches tonic as `Unknown: transport error`; grpc-go,
    // and so upstream, says UNAVAILABLE, which kubelet takes for "maybe in progress, retry".
    assert_eq!(err.code(), Code::Unavailable, "{text}");
    assert!(
        text.contains("provider \"fake\""),
        "names the provider: {text}"
    );
    assert_nothing_mounted(e.mounter.as_ref(), &target)?;

    // The provider back (a new process binds the same socket): the retry mounts.
    let fake = FakeProvider::start(&e.providers, "fake").await?;
    let (files, want) = canary_files(2, "v1");
    fake.state.set(files);
    let out = e
        .svc
        .publish(request(&target, "uid-k"), Duration::from_secs(30))
        .await?;
    assert_eq!(out, Published::Mounted);
    assert_eq!(visible(&target)?, want);
    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &e.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_killed_mid_rotation_keeps_the_last_good_files() -> anyhow::Result<()> {
    let logs = logs::capture();
    let interval = Duration::from_millis(200);
    let mut e = env(|c| c.rotation = Some(interval), default_mounter(), 1).await?;
    let target = kubelet_target(e.dir.path(), "uid-kr", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let (v1, want_v1) = canary_files(3, "v1");
    if let Some(f) = &e.fake {
        f.state.set(v1);
    }
    let t = Duration::from_secs(30);
    assert_eq!(
        e.svc.publish(request(&target, "uid-kr"), t).await?,
        Published::Mounted
    );
    let data = std::fs::read_link(target.join("..data"))?;

    // The provider restarts as a process that hangs in Mount, and is killed in it.
    e.fake = None;
    let mut child = spawn_child("provider", &e.providers, &e.dir.path().join("provider.log"))?;
    tokio::time::sleep(interval).await;
    let svc = e.svc.clone();
    let req = request(&target, "uid-kr");
    let refresh = tokio::spawn(async move { svc.publish(req, t).await });
    wait_for_file(&e.providers.join("mount-started"), t).await?;
    sigkill(&mut child);
    let out = tokio::time::timeout(Duration::from_secs(20), refresh).await???;
    assert_eq!(out, Published::RefreshFailed);
    assert_eq!(visible(&target)?, want_v1, "the last good files stay");
    assert_eq!(std::fs::read_link(target.join("..data"))?, data);
    let text = e.svc.metrics().encode();
    assert!(
        text.contains(r#"error_type="GRPCProviderError""#),
        "the failed refresh is counted: {text}"
    );

    // Back: the next refresh writes the new version.
    let fake = FakeProvider::start(&e.providers, "fake").await?;
    let (v2, want_v2) = canary_files(2, "v2");
    fake.state.set(v2);
    tokio::time::sleep(interval).await;
    assert_eq!(
        e.svc.publish(request(&target, "uid-kr"), t).await?,
        Published::Refreshed { changed: true }
    );
    assert_eq!(visible(&target)?, want_v2);
    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &e.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

// === fault: tmpfs full ===

/// tmpfs of 64 KiB at the target, so a provider response can overflow it.
struct SmallTmpfs;

impl Mounter for SmallTmpfs {
    fn is_mounted(&self, path: &Path) -> std::io::Result<bool> {
        driver::mounter::is_mount_point(path)
    }
    fn mount(&self, path: &Path) -> std::io::Result<()> {
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            c"size=64k",
        )
        .map_err(std::io::Error::from)
    }
    fn unmount(&self, path: &Path) -> std::io::Result<()> {
        TmpfsMounter.unmount(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_full_names_the_target_and_keeps_the_old_files() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("SKIPPED tmpfs_full_names_the_target_and_keeps_the_old_files: needs root");
        return Ok(());
    }
    let logs = logs::capture();
    let interval = Duration::from_millis(200);
    let e = env(|c| c.rotation = Some(interval), Arc::new(SmallTmpfs), 1).await?;
    let fake = e
        .fake
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no provider"))?;
    let t = Duration::from_secs(30);
    let too_big = || {
        Behaviour::Files(
            (0..4)
                .map(|i| {
                    (
                        format!("big-{i}"),
                        0o644,
                        canary().repeat(1000).into_bytes(),
                    )
                })
                .collect(),
            vec![("secret/big".into(), "1".into())],
        )
    };

    // First mount: fails, names the target and the cause; nothing is left.
    let target = kubelet_target(e.dir.path(), "uid-full", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    fake.state.set(too_big());
    let err = e
        .svc
        .publish(request(&target, "uid-full"), t)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a payload larger than the tmpfs was mounted"))?;
    let text = shown(&err);
    println!("tmpfs full: {:?}: {text}", err.code());
    assert!(
        text.contains(&target.display().to_string()) && text.contains("No space left on device"),
        "{text}"
    );
    assert_eq!(err.kind(), "FileWriteError");
    assert_nothing_mounted(e.mounter.as_ref(), &target)?;

    // Rotation to a payload that does not fit: the old files stay, whole, and nothing else.
    let (small, want) = canary_files(2, "v1");
    fake.state.set(small.clone());
    assert_eq!(
        e.svc.publish(request(&target, "uid-full"), t).await?,
        Published::Mounted
    );
    tokio::time::sleep(interval).await;
    fake.state.set(too_big());
    assert_eq!(
        e.svc.publish(request(&target, "uid-full"), t).await?,
        Published::RefreshFailed
    );
    assert_eq!(visible(&target)?, want);
    let written: Vec<PayloadFile> = want.iter().map(|(p, c)| file(p, c.clone())).collect();
    assert_eq!(leftovers(&target, &written)?, Vec::<String>::new());
    assert!(
        e.svc
            .metrics()
            .encode()
            .contains(r#"error_type="FileWriteError""#)
    );
    let log = logs.text();
    assert!(
        log.contains("No space left on device") && log.contains(&target.display().to_string()),
        "the rotation failure is logged with the target"
    );

    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &e.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

// === fault: a 10 MiB provider response ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_response_needs_the_flag_and_then_mounts_whole() -> anyhow::Result<()> {
    const TEN_MIB: usize = 10 << 20;
    let logs = logs::capture();
    let t = Duration::from_secs(30);

    // The default limit is upstream's 4 MiB: refused, naming the flag, nothing mounted.
    let e = env(|_| {}, default_mounter(), 1).await?;
    let default = driver::DriverArgs::try_parse_from_args(["--nodeid=n"])?;
    assert_eq!(default.max_recv_msg_size, 4 << 20);
    if let Some(f) = &e.fake {
        f.state.set(Behaviour::Oversized(TEN_MIB));
    }
    let target = kubelet_target(e.dir.path(), "uid-big", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let err = e
        .svc
        .publish(request(&target, "uid-big"), t)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("10 MiB accepted under a 4 MiB limit"))?;
    let text = shown(&err);
    assert_eq!(err.code(), Code::ResourceExhausted, "{text}");
    assert!(text.contains("--max-call-recv-msg-size"), "{text}");
    assert_nothing_mounted(e.mounter.as_ref(), &target)?;

    // --max-call-recv-msg-size=16777216 (bytes): mounted, every byte.
    let raised = driver::DriverArgs::try_parse_from_args([
        "--nodeid=n",
        "--max-call-recv-msg-size=16777216",
    ])?;
    let e = env(
        |c| c.max_recv_msg_size = raised.max_recv_msg_size,
        default_mounter(),
        1,
    )
    .await?;
    if let Some(f) = &e.fake {
        f.state.set(Behaviour::Oversized(TEN_MIB));
    }
    let target = kubelet_target(e.dir.path(), "uid-big", "secrets");
    let _g2 = MountGuard(vec![target.clone()]);
    let started = Instant::now();
    assert_eq!(
        e.svc.publish(request(&target, "uid-big"), t).await?,
        Published::Mounted
    );
    let took = started.elapsed();
    let big = std::fs::read(target.join("big"))?;
    assert!(big.len() == TEN_MIB && big.iter().all(|b| *b == b'x'));
    println!("10 MiB response mounted in {took:?}");
    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    logs.assert_no_canary();
    Ok(())
}

/// `DriverArgs` from flags, the way main parses them.
trait ParseArgs {
    fn try_parse_from_args<const N: usize>(args: [&str; N]) -> anyhow::Result<Config>;
}

impl ParseArgs for driver::DriverArgs {
    fn try_parse_from_args<const N: usize>(args: [&str; N]) -> anyhow::Result<Config> {
        use clap::Parser;
        let argv = std::iter::once("secrets-store-csi-driver".to_string())
            .chain(args.iter().map(|a| (*a).to_string()));
        driver::DriverArgs::try_parse_from(argv)?.config()
    }
}

// === a class with 1,000 objects ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_with_a_thousand_objects_mounts_quickly() -> anyhow::Result<()> {
    const N: usize = 1000;
    let logs = logs::capture();
    let e = env(|_| {}, default_mounter(), N).await?;
    let (files, want) = canary_files(N, "v1");
    if let Some(f) = &e.fake {
        f.state.set(files);
    }
    let target = kubelet_target(e.dir.path(), "uid-many", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let started = Instant::now();
    assert_eq!(
        e.svc
            .publish(request(&target, "uid-many"), Duration::from_secs(30))
            .await?,
        Published::Mounted
    );
    let took = started.elapsed();
    assert_eq!(visible(&target)?, want);
    let seen = e.fake.as_ref().map(|f| f.state.seen()).unwrap_or_default();
    let attrs: BTreeMap<String, String> = serde_json::from_str(&seen[0].attributes)?;
    assert_eq!(attrs["objects"].matches("objectName:").count(), N);
    println!("{N} objects mounted in {took:?}");
    assert!(took < Duration::from_secs(10), "{N} objects took {took:?}");
    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    logs.assert_no_canary();
    Ok(())
}

// === a provider slower than kubelet's deadline, through the CSI socket ===

/// The driver served on a unix socket, as kubelet reaches it.
struct Served {
    node: csi::node_client::NodeClient<tonic::transport::Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(svc: NodeService, sock: &Path) -> anyhow::Result<Served> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = driver::config::Endpoint::Unix(sock.to_path_buf());
    tokio::spawn(async move {
        let _ = driver::server::serve(svc, &endpoint, async {
            let _ = stopped.await;
        })
        .await;
    });
    wait_for_file(sock, Duration::from_secs(10)).await?;
    Ok(Served {
        node: csi::node_client::NodeClient::new(driver::provider::unix_channel(sock)),
        _stop: stop,
    })
}

/// NodePublishVolume over the socket with kubelet's deadline (the grpc-timeout header).
async fn publish_with_deadline(
    node: &mut csi::node_client::NodeClient<tonic::transport::Channel>,
    req: csi::NodePublishVolumeRequest,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut r = tonic::Request::new(req);
    r.set_timeout(deadline);
    let out = node.node_publish_volume(r).await.map(|_| ());
    if let Err(s) = &out {
        assert_no_canary("a gRPC status", s.message());
    }
    out
}

/// tonic's server drops the NodePublishVolume future when kubelet's deadline (the grpc-timeout
/// header) passes, which is before the driver's own provider deadline (counted from the
/// provider call, after the class read and the mount). The publish stops wherever it was: the
/// tmpfs stays mounted and empty, nothing cleans it up, and kubelet's retry is answered
/// "already mounted" with an empty volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_slower_than_kubelets_deadline_mounts_nothing() -> anyhow::Result<()> {
    let logs = logs::capture();
    let e = env(|_| {}, default_mounter(), 1).await?;
    let fake = e
        .fake
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no provider"))?;
    let mut served = serve(e.svc.clone(), &e.dir.path().join("csi.sock")).await?;
    let target = kubelet_target(e.dir.path(), "uid-slow", "secrets");
    let _g = MountGuard(vec![target.clone()]);

    fake.state.set(Behaviour::Slow(Duration::from_secs(8)));
    let started = Instant::now();
    let err = publish_with_deadline(
        &mut served.node,
        request(&target, "uid-slow"),
        Duration::from_secs(2),
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("a provider past the deadline mounted"))?;
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The driver finishes (and cleans up) on its own side of the deadline too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.mounter.is_mounted(&target)? || target.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the timed-out publish left {} mounted",
            target.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kubelet's retry, with the provider fast again, mounts for real (not "already mounted").
    let (files, want) = canary_files(2, "v1");
    fake.state.set(files);
    publish_with_deadline(
        &mut served.node,
        request(&target, "uid-slow"),
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(visible(&target)?, want);
    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &e.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

/// The driver killed after mounting the tmpfs and before the first write finished (or a publish
/// cancelled there): the next publish finds a mount without `..data`. It must fetch and write,
/// not answer "already mounted" over an empty volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_left_without_files_is_completed_by_the_next_publish() -> anyhow::Result<()> {
    let logs = logs::capture();
    let e = env(|_| {}, default_mounter(), 1).await?;
    let target = kubelet_target(e.dir.path(), "uid-half", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    // What a driver killed between mount(2) and the `..data` swap leaves: the mount, a
    // half-filled payload directory and dangling links.
    std::fs::create_dir_all(&target)?;
    e.mounter.mount(&target)?;
    std::fs::create_dir(target.join("..2026_01_01_00_00_00.1"))?;
    std::fs::write(
        target.join("..2026_01_01_00_00_00.1/secret-0000"),
        "partial",
    )?;
    std::os::unix::fs::symlink("..data/secret-0000", target.join("secret-0000"))?;

    let (files, want) = canary_files(2, "v1");
    if let Some(f) = &e.fake {
        f.state.set(files);
    }
    let out = e
        .svc
        .publish(request(&target, "uid-half"), Duration::from_secs(30))
        .await?;
    assert_eq!(out, Published::Mounted);
    assert_eq!(visible(&target)?, want);
    e.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    logs.assert_no_canary();
    Ok(())
}

// === the real API server: 16 volumes of one pod at once, and the API server going away ===

const NODE: &str = "node-1";

/// The driver under deploy/rbac.yaml's ServiceAccount, reaching the API server through a relay.
struct Cluster {
    cp: ControlPlane,
    relay: Relay,
    dir: tempfile::TempDir,
    fake: FakeProvider,
    svc: NodeService,
    served: Served,
}

async fn cluster(rotation: Option<Duration>) -> anyhow::Result<Option<Cluster>> {
    let Some(cp) = cluster::start_control_plane().await? else {
        return Ok(None);
    };
    cluster::apply_rbac(&cp, &cluster::shipped_rbac()?).await?;
    let relay = Relay::start(cp.url()).await?;
    let client =
        cluster::service_account_client_via(&cp, "kube-system", "secrets-store-csi-driver", &relay)
            .await?;
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    let fake = FakeProvider::start(&providers, "fake").await?;
    let mut config = Config::new(NODE, vec![providers]);
    config.rotation = rotation;
    let svc = NodeService::new(
        config.clone(),
        Arc::new(KubeClassSource::new(client.clone())),
        default_mounter(),
        Arc::new(GrpcProviderClient::new(
            config.provider_dirs.clone(),
            config.max_recv_msg_size,
        )),
        Some(KubeSinks::new(client, NODE)),
        Arc::new(Metrics::new()),
    );
    let served = serve(svc.clone(), &dir.path().join("csi.sock")).await?;
    Ok(Some(Cluster {
        cp,
        relay,
        dir,
        fake,
        svc,
        served,
    }))
}

/// A class `name` in `ns` for the fake provider, syncing file `secret-0000` to Secret `<name>-s`.
async fn create_class(cp: &ControlPlane, ns: &str, name: &str) -> anyhow::Result<()> {
    cp.create_namespace(ns).await?;
    let spc: SecretProviderClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"provider": "fake", "parameters": {"keyvaultName": "kv1", "objects": "array: []"},
                 "secretObjects": [{"secretName": format!("{name}-s"), "type": "Opaque",
                                    "data": [{"objectName": "secret-0000", "key": "value"}]}]}
    }))?;
    Api::<SecretProviderClass>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &spc)
        .await?;
    Ok(())
}

/// A pod with one inline volume per class in `classes` (`v0`, `v1`, …).
async fn create_pod(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    classes: &[String],
) -> anyhow::Result<Pod> {
    cp.create_service_account(ns, "web-sa").await?;
    let volumes: Vec<serde_json::Value> = classes
        .iter()
        .enumerate()
        .map(|(i, class)| {
            serde_json::json!({"name": format!("v{i}"), "csi": {
            "driver": "secrets-store.csi.k8s.io", "readOnly": true,
            "volumeAttributes": {"secretProviderClass": class}}})
        })
        .collect();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": NODE, "serviceAccountName": "web-sa",
                 "containers": [{"name": "c", "image": "busybox"}], "volumes": volumes}
    }))?;
    Ok(Api::<Pod>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &pod)
        .await?)
}

async fn events(cp: &ControlPlane, ns: &str) -> anyhow::Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(cp.client(), ns)
        .list(&ListParams::default())
        .await?
        .items)
}

fn assert_no_canary_in_events(events: &[Event]) {
    for e in events {
        assert_no_canary("an Event", e.note.as_deref().unwrap_or_default());
    }
}

/// 16 volumes of one pod, published at once, for `rounds` pods; returns the failures.
async fn publish_pods_concurrently(
    c: &Cluster,
    ns: &str,
    rounds: usize,
    class_of: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<String>> {
    const VOLUMES: usize = 16;
    let classes: Vec<String> = (0..VOLUMES).map(&class_of).collect();
    let mut failures = Vec::new();
    for round in 0..rounds {
        let name = format!("web-{round}");
        let pod = create_pod(&c.cp, ns, &name, &classes).await?;
        let uid = pod.uid().unwrap_or_default();
        let mut tasks = tokio::task::JoinSet::new();
        let targets: Vec<PathBuf> = (0..VOLUMES)
            .map(|i| kubelet_target(c.dir.path(), &uid, &format!("v{i}")))
            .collect();
        let _g = MountGuard(targets.clone());
        let start = Arc::new(tokio::sync::Barrier::new(VOLUMES));
        for (i, target) in targets.iter().enumerate() {
            let mut node = c.served.node.clone();
            let mut req = request(target, &uid);
            req.volume_context = kubelet_context(&classes[i], &name, ns, &uid, "web-sa", None);
            req.volume_id = format!("csi-{round}-{i}");
            let start = start.clone();
            tasks.spawn(async move {
                start.wait().await;
                publish_with_deadline(&mut node, req, Duration::from_secs(60)).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(s) = r? {
                failures.push(format!("{name}: {:?}: {}", s.code(), s.message()));
            }
        }
        for (i, target) in targets.iter().enumerate() {
            c.svc
                .unpublish(&format!("csi-{round}-{i}"), &target.display().to_string())
                .await?;
        }
    }
    Ok(failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_volumes_of_one_pod_published_at_once_all_succeed() -> anyhow::Result<()> {
    const ROUNDS: usize = 10;
    let logs = logs::capture();
    let Some(c) = cluster(None).await? else {
        return Ok(());
    };
    let (files, _) = canary_files(2, "v1");
    c.fake.state.set(files);

    // One class for all 16 volumes: one pod status and one synced Secret for all of them.
    create_class(&c.cp, "same", "kv").await?;
    let same = publish_pods_concurrently(&c, "same", ROUNDS, |_| "kv".into()).await?;
    // A class per volume: 16 pod statuses and Secrets per pod.
    for i in 0..16 {
        create_class(&c.cp, "distinct", &format!("kv-{i}")).await?;
    }
    let distinct = publish_pods_concurrently(&c, "distinct", ROUNDS, |i| format!("kv-{i}")).await?;
    println!(
        "16 concurrent publishes x {ROUNDS} pods: {} of 160 failed with one class, {} of 160 with a class per volume",
        same.len(),
        distinct.len()
    );
    assert_eq!(
        same,
        Vec::<String>::new(),
        "one class shared by the volumes"
    );
    assert_eq!(distinct, Vec::<String>::new(), "a class per volume");

    // Every pod has its statuses; a shared one names one of the pod's own volumes.
    let statuses = Api::<SecretProviderClassPodStatus>::namespaced(c.cp.client(), "same")
        .list(&ListParams::default())
        .await?;
    assert_eq!(statuses.items.len(), ROUNDS);
    for s in &statuses.items {
        let st = s.status.clone().unwrap_or_default();
        let uid = &s.owner_references()[0].uid;
        assert!(
            st.mounted && st.target_path.contains(&format!("/pods/{uid}/volumes/")),
            "{st:?}"
        );
    }
    let statuses = Api::<SecretProviderClassPodStatus>::namespaced(c.cp.client(), "distinct")
        .list(&ListParams::default())
        .await?;
    assert_eq!(statuses.items.len(), ROUNDS * 16);
    c.svc.flush_events().await;
    for ns in ["same", "distinct"] {
        let events = events(&c.cp, ns).await?;
        assert_no_canary_in_events(&events);
        assert!(events.is_empty(), "no warnings in {ns}: {events:?}");
    }
    assert_no_canary("the metrics", &c.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_unreachable_during_a_publish() -> anyhow::Result<()> {
    let logs = logs::capture();
    let interval = Duration::from_millis(300);
    let Some(mut c) = cluster(Some(interval)).await? else {
        return Ok(());
    };
    let ns = "outage";
    create_class(&c.cp, ns, "kv").await?;
    let pod = create_pod(&c.cp, ns, "web", &["kv".into()]).await?;
    let uid = pod.uid().unwrap_or_default();
    let target = kubelet_target(c.dir.path(), &uid, "v0");
    let _g = MountGuard(vec![target.clone()]);
    let req = || {
        let mut r = request(&target, &uid);
        r.volume_context = kubelet_context("kv", "web", ns, &uid, "web-sa", None);
        r
    };
    let (v1, want_v1) = canary_files(2, "v1");
    c.fake.state.set(v1);
    let statuses = Api::<SecretProviderClassPodStatus>::namespaced(c.cp.client(), ns);
    let mounter = default_mounter();

    // 1. Unreachable before the publish: the class cannot be read. Unavailable, the provider
    //    is not called, nothing is mounted.
    c.relay.down();
    let err = publish_with_deadline(&mut c.served.node, req(), Duration::from_secs(30))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("published without the API server"))?;
    println!("API server down before the class read: {err:?}");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("failed to get secretproviderclass outage/kv"),
        "{}",
        err.message()
    );
    assert_eq!(c.fake.state.calls(), 0);
    assert_nothing_mounted(mounter.as_ref(), &target)?;

    // 2. Gone while the provider answers: the files were written, the pod status cannot be.
    //    Unavailable, and the first mount is undone (kubelet retries the whole publish).
    c.relay.up().await?;
    let (v1, _) = canary_files(2, "v1");
    c.fake.state.set(Behaviour::Delayed(
        Duration::from_millis(1500),
        Box::new(v1),
    ));
    let mut node = c.served.node.clone();
    let r = req();
    let publish =
        tokio::spawn(
            async move { publish_with_deadline(&mut node, r, Duration::from_secs(30)).await },
        );
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.fake.state.calls() < 1 {
        anyhow::ensure!(Instant::now() < deadline, "the provider was not called");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The provider answers with files once the API server is already gone.
    c.relay.down();
    let err = publish
        .await?
        .err()
        .ok_or_else(|| anyhow::anyhow!("published without the API server"))?;
    println!("API server down before the pod status: {err:?}");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("secretproviderclasspodstatus"),
        "{}",
        err.message()
    );
    assert_nothing_mounted(mounter.as_ref(), &target)?;

    // 3. Back: the retry mounts and records everything.
    c.relay.up().await?;
    c.fake.state.set(Behaviour::Files(
        want_v1
            .iter()
            .map(|(p, b)| (p.clone(), 0o644, b.clone()))
            .collect(),
        vec![("secret/secret-0000".into(), "v1".into())],
    ));
    publish_with_deadline(&mut c.served.node, req(), Duration::from_secs(30)).await?;
    assert_eq!(visible(&target)?, want_v1);
    let status = statuses.get(&format!("web-{ns}-kv")).await?;
    assert_eq!(
        status.status.map(|s| s.target_path),
        Some(target.display().to_string())
    );

    // 4. Unreachable during a rotation: the mounted files stay, the call succeeds.
    c.relay.down();
    tokio::time::sleep(interval).await;
    publish_with_deadline(&mut c.served.node, req(), Duration::from_secs(30)).await?;
    assert_eq!(visible(&target)?, want_v1);
    let metrics = c.svc.metrics().encode();
    assert!(
        metrics.contains("rotation_reconcile_error_total{"),
        "{metrics}"
    );
    c.relay.up().await?;

    // Events raised while the API server was unreachable (the failed class read, the failed
    // pod status write, the failed rotation) were queued and are sent once it is back; none
    // carries a canary.
    tokio::time::timeout(Duration::from_secs(120), c.svc.flush_events()).await?;
    let events = events(&c.cp, ns).await?;
    assert_no_canary_in_events(&events);
    let raised = |reason: &str, text: &str| {
        events.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.note.as_deref().unwrap_or_default().contains(text)
        })
    };
    assert!(
        raised(
            "FailedToMountSecretsStore",
            "failed to get secretproviderclass outage/kv"
        ),
        "{events:#?}"
    );
    // The failed pod status write is a second FailedToMountSecretsStore on the pod: the
    // recorder counts it in the first one's series (its key leaves the note out).
    let failed_mounts: i32 = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedToMountSecretsStore"))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    assert_eq!(failed_mounts, 2, "{events:#?}");
    assert!(raised("MountRotationFailed", "outage/kv"), "{events:#?}");
    c.svc
        .unpublish("csi-fault", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &metrics);
    logs.assert_no_canary();
    Ok(())
}
