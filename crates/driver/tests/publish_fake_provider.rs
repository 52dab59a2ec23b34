//! NodePublishVolume / NodeUnpublishVolume end to end through the real gRPC provider client
//! and a fake provider on a unix socket (failure injection), with the class from a file. As
//! root the target is a real tmpfs. File contents, tokens and nodePublishSecretRef values are
//! canaries, and no log line, metric or error message may carry one.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Behaviour, FakeProvider, MountGuard, assert_no_canary, canary, is_root, kubelet_context,
    kubelet_target, logs, publish_request,
};
use driver::metrics::Metrics;
use driver::node::Published;
use driver::{
    Config, DirMounter, FileClassSource, GrpcProviderClient, Mounter, NodeService, TmpfsMounter,
};
use tonic::Code;

const CLASS: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: kv, namespace: default}
spec:
  provider: fake
  parameters:
    keyvaultName: kv1
    objects: "array:\n  - |\n    objectName: foo\n"
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: missing-provider, namespace: default}
spec:
  provider: nothere
  parameters: {a: b}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: kv-notify
  namespace: default
  annotations: {secrets-store.csi.k8s.io/on-change: file}
spec:
  provider: fake
  parameters: {keyvaultName: kv1}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: kv-bad-notify
  namespace: default
  annotations: {secrets-store.csi.k8s.io/on-change: reboot}
spec:
  provider: fake
  parameters: {keyvaultName: kv1}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: no-params, namespace: default}
spec:
  provider: fake
"#;

struct Env {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    fake: FakeProvider,
    svc: NodeService,
    mounter: Arc<dyn Mounter>,
}

async fn env(rotation: Option<Duration>, max_recv: usize) -> anyhow::Result<Env> {
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let class_file = dir.path().join("classes.yaml");
    std::fs::write(&class_file, CLASS)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    let mut config = Config::new("node-1", vec![dir.path().join("etc-providers"), providers]);
    config.rotation = rotation;
    let mounter: Arc<dyn Mounter> = if is_root() {
        Arc::new(TmpfsMounter)
    } else {
        Arc::new(DirMounter::default())
    };
    let svc = NodeService::new(
        config,
        Arc::new(FileClassSource::new(class_file)),
        mounter.clone(),
        Arc::new(GrpcProviderClient::new(
            vec![
                dir.path().join("etc-providers"),
                dir.path().join("providers"),
            ],
            max_recv,
        )),
        None,
        Arc::new(Metrics::new()),
    );
    Ok(Env {
        root: dir.path().to_path_buf(),
        _dir: dir,
        fake,
        svc,
        mounter,
    })
}

fn files(contents: &str, version: &str) -> Behaviour {
    Behaviour::Files(
        vec![
            ("foo".into(), 0o644, contents.as_bytes().to_vec()),
            ("dir/bar".into(), 0o400, b"bar".to_vec()),
        ],
        vec![
            ("secret/foo".into(), version.into()),
            ("secret/bar".into(), version.into()),
        ],
    )
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn publish_writes_files_and_sends_upstream_request() -> anyhow::Result<()> {
    let logs = logs::capture();
    let e = env(None, 4 << 20).await?;
    let secret = canary();
    e.fake.state.set(files(&secret, "v1"));
    let target = kubelet_target(&e.root, "uid-1", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let tokens = format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#,
        canary()
    );
    let ctx = kubelet_context("kv", "web", "default", "uid-1", "default", Some(&tokens));
    let out = e
        .svc
        .publish(publish_request("csi-1", &target, ctx.clone()), T)
        .await?;
    assert_eq!(out, Published::Mounted);

    assert_eq!(std::fs::read_to_string(target.join("foo"))?, secret);
    assert_eq!(std::fs::read_to_string(target.join("dir/bar"))?, "bar");
    assert_eq!(
        std::fs::metadata(target.join("dir/bar"))?.mode() & 0o777,
        0o400
    );
    assert!(std::fs::read_link(target.join("..data")).is_ok());
    if is_root() {
        assert!(
            driver::mounter::is_mount_point(&target)?,
            "target is a tmpfs mount"
        );
    }

    let seen = e.fake.state.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authority, "localhost");
    assert_eq!(seen[0].permission, "420");
    assert_eq!(seen[0].secrets, "null");
    assert_eq!(seen[0].target_path, target.display().to_string());
    let attrs: BTreeMap<String, String> = serde_json::from_str(&seen[0].attributes)?;
    assert_eq!(attrs["keyvaultName"], "kv1");
    assert_eq!(attrs["objects"], "array:\n  - |\n    objectName: foo\n");
    assert_eq!(attrs["csi.storage.k8s.io/serviceAccount.tokens"], tokens);
    for (k, v) in &ctx {
        assert_eq!(attrs.get(k), Some(v), "volume context key {k} forwarded");
    }

    // Rotation off: re-publish is a no-op without a provider call.
    let out = e
        .svc
        .publish(publish_request("csi-1", &target, ctx), T)
        .await?;
    assert_eq!(out, Published::AlreadyMounted);
    assert_eq!(e.fake.state.calls(), 1);

    e.svc
        .unpublish("csi-1", &target.display().to_string())
        .await?;
    assert!(!target.exists());
    e.svc
        .unpublish("csi-1", &target.display().to_string())
        .await?; // idempotent
    let text = e.svc.metrics().encode();
    assert!(
        text.contains(r#"node_publish_total{provider="fake""#),
        "{text}"
    );
    assert_no_canary("the metrics", &text);
    logs.assert_no_canary();
    Ok(())
}

#[tokio::test]
async fn node_publish_secrets_are_forwarded_as_json() -> anyhow::Result<()> {
    let logs = logs::capture();
    let e = env(None, 4 << 20).await?;
    e.fake.state.set(files(&canary(), "v1"));
    let target = kubelet_target(&e.root, "uid-2", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let mut req = publish_request(
        "csi-2",
        &target,
        kubelet_context("kv", "web", "default", "uid-2", "default", None),
    );
    let client_secret = canary();
    req.secrets.insert("clientid".into(), canary());
    req.secrets
        .insert("clientsecret".into(), client_secret.clone());
    e.svc.publish(req, T).await?;
    let seen = e.fake.state.seen();
    let secrets: BTreeMap<String, String> = serde_json::from_str(&seen[0].secrets)?;
    assert_eq!(secrets["clientsecret"], client_secret);
    e.svc
        .unpublish("csi-2", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &e.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

async fn expect_failure(e: &Env, class: &str, code: Code, needle: &str) -> anyhow::Result<()> {
    let target = kubelet_target(&e.root, "uid-f", class);
    let _g = MountGuard(vec![target.clone()]);
    let ctx = kubelet_context(class, "web", "default", "uid-f", "default", None);
    let mut req = publish_request("csi-f", &target, ctx);
    req.secrets.insert("clientsecret".into(), canary());
    let err = e.svc.publish(req, Duration::from_secs(2)).await.err();
    let Some(err) = err else {
        anyhow::bail!("publish of {class} should fail")
    };
    // What kubelet and the Event show: the message with every cause.
    let shown = err.render();
    assert_no_canary("an error message", &shown);
    assert_eq!(err.code(), code, "{shown}");
    assert!(shown.contains(needle), "{shown} should mention {needle:?}");
    assert!(
        !e.mounter.is_mounted(&target)?,
        "failed publish leaves no mount"
    );
    assert!(
        !target.join("..data").exists(),
        "failed publish leaves no files"
    );
    Ok(())
}

#[tokio::test]
async fn failure_modes_clean_up_and_explain() -> anyhow::Result<()> {
    let logs = logs::capture();
    let e = env(None, 4 << 20).await?;
    // Provider socket missing.
    expect_failure(&e, "missing-provider", Code::Unavailable, "nothere.sock").await?;
    // Class problems.
    expect_failure(&e, "no-params", Code::InvalidArgument, "spec.parameters").await?;
    expect_failure(&e, "absent", Code::NotFound, "default/absent").await?;
    // Provider error code.
    e.fake.state.set(Behaviour::ErrorCode("AuthFailed".into()));
    expect_failure(&e, "kv", Code::Unknown, "provider error code AuthFailed").await?;
    // Zero object versions.
    e.fake.state.set(Behaviour::NoVersions);
    expect_failure(&e, "kv", Code::Unknown, "no object versions").await?;
    // Slow provider past the deadline (2 s).
    e.fake.state.set(Behaviour::Slow(Duration::from_secs(6)));
    let started = std::time::Instant::now();
    expect_failure(&e, "kv", Code::DeadlineExceeded, "deadline").await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "deadline honoured: {:?}",
        started.elapsed()
    );
    // Traversal in a provider path.
    e.fake.state.set(Behaviour::Files(
        vec![("../x".into(), 0o644, canary().into_bytes())],
        vec![("a".into(), "1".into())],
    ));
    expect_failure(&e, "kv", Code::Internal, "must not contain '..'").await?;
    let text = e.svc.metrics().encode();
    assert!(text.contains(r#"error_type="GRPCProviderError""#), "{text}");
    assert!(
        text.contains(r#"provider="unknown""#),
        "unknown providers are one label value: {text}"
    );
    assert_no_canary("the metrics", &text);
    logs.assert_no_canary();
    Ok(())
}

#[tokio::test]
async fn oversized_response_names_the_flag() -> anyhow::Result<()> {
    let e = env(None, 1 << 20).await?;
    e.fake.state.set(Behaviour::Oversized(2 << 20));
    expect_failure(
        &e,
        "kv",
        Code::ResourceExhausted,
        "--max-call-recv-msg-size",
    )
    .await
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument() -> anyhow::Result<()> {
    let e = env(None, 4 << 20).await?;
    let target = kubelet_target(&e.root, "uid-i", "v");
    let good = publish_request(
        "id",
        &target,
        kubelet_context("kv", "p", "default", "u", "sa", None),
    );
    let mut r = good.clone();
    r.volume_capability = None;
    let mut r2 = good.clone();
    r2.volume_context.clear();
    let mut r3 = good.clone();
    r3.readonly = false;
    let mut r4 = good.clone();
    r4.volume_context.remove("csi.storage.k8s.io/pod.namespace");
    for (req, needle) in [
        (r, "capability"),
        (r2, "attributes"),
        (r3, "readOnly"),
        (r4, "podInfoOnMount"),
    ] {
        let err = e.svc.publish(req, T).await.err();
        assert_eq!(
            err.as_ref().map(|e| e.code()),
            Some(Code::InvalidArgument),
            "{err:?}"
        );
        assert!(err.is_some_and(|e| e.render().contains(needle)));
    }
    assert!(!e.mounter.is_mounted(&target)?);
    Ok(())
}

fn mtime(p: &Path) -> anyhow::Result<(i64, i64)> {
    let m = std::fs::metadata(p)?;
    Ok((m.mtime(), m.mtime_nsec()))
}

/// Issue 15: with rotation on, every provider call carries `secrets-store.csi.k8s.io/maxAge`
/// (half the poll interval), and a volume is refreshed once its contents may be one interval old,
/// counting from the start of the last call less that max age: about every half interval.
#[tokio::test]
async fn rotation_asks_for_half_the_interval_and_refreshes_every_half_interval()
-> anyhow::Result<()> {
    let interval = Duration::from_millis(1200);
    let e = env(Some(interval), 4 << 20).await?;
    e.fake.state.set(files("v1", "v1"));
    let target = kubelet_target(&e.root, "uid-m", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let ctx = kubelet_context("kv", "web", "default", "uid-m", "default", None);
    let req = || publish_request("csi-m", &target, ctx.clone());
    let started = std::time::Instant::now();
    assert_eq!(e.svc.publish(req(), T).await?, Published::Mounted);
    assert_eq!(e.svc.publish(req(), T).await?, Published::RotationSkipped);
    assert_eq!(e.fake.state.calls(), 1);
    tokio::time::sleep(
        (interval / 2 + Duration::from_millis(200)).saturating_sub(started.elapsed()),
    )
    .await;
    assert_eq!(
        e.svc.publish(req(), T).await?,
        Published::Refreshed { changed: false }
    );
    for call in e.fake.state.seen() {
        let attrs: BTreeMap<String, String> = serde_json::from_str(&call.attributes)?;
        assert_eq!(attrs["secrets-store.csi.k8s.io/maxAge"], "600ms");
    }

    // Rotation off: no max age (the provider's TTL applies).
    let e = env(None, 4 << 20).await?;
    e.fake.state.set(files("v1", "v1"));
    let target = kubelet_target(&e.root, "uid-n", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let ctx = kubelet_context("kv", "web", "default", "uid-n", "default", None);
    assert_eq!(
        e.svc
            .publish(publish_request("csi-n", &target, ctx), T)
            .await?,
        Published::Mounted
    );
    let attrs: BTreeMap<String, String> = serde_json::from_str(&e.fake.state.seen()[0].attributes)?;
    assert!(!attrs.contains_key("secrets-store.csi.k8s.io/maxAge"));
    Ok(())
}

#[tokio::test]
async fn rotation_refreshes_on_change_only_and_keeps_files_on_failure() -> anyhow::Result<()> {
    let logs = logs::capture();
    let interval = Duration::from_millis(300);
    let e = env(Some(interval), 4 << 20).await?;
    let (v1, v2) = (canary(), canary());
    e.fake.state.set(files(&v1, "v1"));
    let target = kubelet_target(&e.root, "uid-r", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let ctx = kubelet_context("kv", "web", "default", "uid-r", "default", None);
    let req = || publish_request("csi-r", &target, ctx.clone());
    assert_eq!(e.svc.publish(req(), T).await?, Published::Mounted);
    let data_link = std::fs::read_link(target.join("..data"))?;
    let file_mtime = mtime(&target.join("foo"))?;

    // Within the interval: skipped, no provider call.
    assert_eq!(e.svc.publish(req(), T).await?, Published::RotationSkipped);
    assert_eq!(e.fake.state.calls(), 1);

    // Past the interval, same content: provider called, nothing written.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    assert_eq!(
        e.svc.publish(req(), T).await?,
        Published::Refreshed { changed: false }
    );
    assert_eq!(e.fake.state.calls(), 2);
    assert_eq!(std::fs::read_link(target.join("..data"))?, data_link);
    assert_eq!(mtime(&target.join("foo"))?, file_mtime);

    // New version: files change.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    e.fake.state.set(files(&v2, "v2"));
    assert_eq!(
        e.svc.publish(req(), T).await?,
        Published::Refreshed { changed: true }
    );
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, v2);

    // Provider fails: the last good files stay, the call succeeds (kubelet #121271), metric.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    e.fake.state.set(Behaviour::ErrorCode("Throttled".into()));
    assert_eq!(e.svc.publish(req(), T).await?, Published::RefreshFailed);
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, v2);
    let text = e.svc.metrics().encode();
    assert!(text.contains("rotation_reconcile_error_total{"), "{text}");
    for result in ["ok", "error"] {
        assert!(
            text.contains(&format!(
                r#"volume_refresh_last_timestamp_seconds{{result="{result}",os_type="linux"}}"#
            )),
            "{text}"
        );
    }
    assert!(
        text.contains(
            r#"rotation_reconcile_total{provider="fake",os_type="linux",rotated="true"}"#
        ),
        "{text}"
    );

    e.svc
        .unpublish("csi-r", &target.display().to_string())
        .await?;
    assert_no_canary("the metrics", &e.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

#[tokio::test]
async fn health_check_calls_version_on_used_providers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = FakeProvider::start(dir.path(), "fake").await?;
    fake.state.set(files("x", "v1"));
    let client = GrpcProviderClient::new(vec![dir.path().to_path_buf()], 4 << 20);
    assert!(
        client.health_check().await.is_empty(),
        "no provider used yet"
    );
    let call = driver::provider::MountCall {
        provider: "fake".into(),
        attributes: sensitive::SecretString::new("{}"),
        secrets: sensitive::SecretString::new("null"),
        target_path: "/t".into(),
        permission: "420".into(),
        current_object_versions: vec![],
        timeout: T,
    };
    use driver::ProviderClient;
    client.mount(call).await?;
    assert_eq!(client.health_check().await, [("fake".to_string(), true)]);
    *fake
        .state
        .version_fails
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = true;
    assert_eq!(client.health_check().await, [("fake".to_string(), false)]);
    Ok(())
}

/// The pod's fsGroup (kubelet's `volume_mount_group`): the files are group-owned by it with the
/// provider's modes; a value that is not a group ID is refused before anything is mounted.
#[tokio::test]
async fn volume_mount_group_owns_the_files() -> anyhow::Result<()> {
    let e = env(None, 4 << 20).await?;
    e.fake.state.set(files("x", "v1"));
    let target = kubelet_target(&e.root, "uid-g", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    // Any group as root (the driver's user); else this process's own group.
    let group = if is_root() {
        4242
    } else {
        std::fs::metadata(&e.root)?.gid()
    };
    let ctx = kubelet_context("kv", "web", "default", "uid-g", "default", None);
    let with_group = |g: &str| {
        let mut r = publish_request("csi-g", &target, ctx.clone());
        if let Some(csi_proto::v1::volume_capability::AccessType::Mount(m)) = r
            .volume_capability
            .as_mut()
            .and_then(|c| c.access_type.as_mut())
        {
            m.volume_mount_group = g.into();
        }
        r
    };

    let err = e.svc.publish(with_group("web-group"), T).await.err();
    assert_eq!(err.as_ref().map(|e| e.code()), Some(Code::InvalidArgument));
    assert!(
        err.is_some_and(|e| e.render().contains("volume_mount_group \"web-group\"")),
        "names the field and the value"
    );
    assert!(!e.mounter.is_mounted(&target)?, "nothing mounted");
    assert_eq!(e.fake.state.calls(), 0, "the provider is not called");

    let out = e.svc.publish(with_group(&group.to_string()), T).await?;
    assert_eq!(out, Published::Mounted);
    for (p, mode) in [("foo", 0o644), ("dir/bar", 0o400)] {
        let m = std::fs::metadata(target.join(p))?;
        assert_eq!(m.gid(), group, "{p}: group-owned by the fsGroup");
        assert_eq!(m.mode() & 0o7777, mode, "{p}: the provider's mode");
    }
    assert_eq!(std::fs::metadata(target.join("dir"))?.gid(), group);
    e.svc
        .unpublish("csi-g", &target.display().to_string())
        .await?;
    Ok(())
}

/// `secrets-store.csi.k8s.io/on-change: file`: `<target>/..secrets-store/changes.json` names
/// the objects and versions, is rewritten with the files on a rotation, and carries no contents;
/// an unknown mode fails the mount naming the annotation, before anything is mounted.
#[tokio::test]
async fn on_change_file_writes_the_notice_with_the_files() -> anyhow::Result<()> {
    let logs = logs::capture();
    let interval = Duration::from_millis(300);
    let e = env(Some(interval), 4 << 20).await?;
    let (v1, v2) = (canary(), canary());
    e.fake.state.set(files(&v1, "v1"));
    let target = kubelet_target(&e.root, "uid-n", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let ctx = kubelet_context("kv-notify", "web", "default", "uid-n", "default", None);
    let req = || publish_request("csi-n", &target, ctx.clone());
    assert_eq!(e.svc.publish(req(), T).await?, Published::Mounted);
    let notice_path = target.join("..secrets-store/changes.json");
    let read = || -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(&notice_path)?)?)
    };
    let n = read()?;
    assert_eq!(n["schemaVersion"], 1);
    assert_eq!(n["sequence"], 1);
    assert_eq!(n["objects"]["secret/foo"], "v1");
    assert_eq!(n["changes"].as_array().map(Vec::len), Some(2));

    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    e.fake.state.set(files(&v2, "v2"));
    assert_eq!(
        e.svc.publish(req(), T).await?,
        Published::Refreshed { changed: true }
    );
    let n = read()?;
    assert_eq!(n["sequence"], 2);
    assert_eq!(n["contentChanged"], true);
    assert_eq!(n["objects"]["secret/foo"], "v2");
    assert_eq!(n["changes"][0]["previousVersion"], "v1");
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, v2);
    assert_no_canary("the notice", &std::fs::read_to_string(&notice_path)?);

    // Unchanged: no rewrite, same sequence.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    assert_eq!(
        e.svc.publish(req(), T).await?,
        Published::Refreshed { changed: false }
    );
    assert_eq!(read()?["sequence"], 2);
    e.svc
        .unpublish("csi-n", &target.display().to_string())
        .await?;

    // An unknown mode: refused with the annotation named, nothing left behind.
    let bad = kubelet_target(&e.root, "uid-nb", "secrets");
    let _g2 = MountGuard(vec![bad.clone()]);
    let ctx = kubelet_context("kv-bad-notify", "web", "default", "uid-nb", "default", None);
    let err = e
        .svc
        .publish(publish_request("csi-nb", &bad, ctx), T)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("secrets-store.csi.k8s.io/on-change") && err.contains("rollout-restart"),
        "{err}"
    );
    assert!(!bad.join("..data").exists());
    logs.assert_no_canary();
    Ok(())
}

/// A provider that served last-known-good (`maxStaleness`) says so in a response header; the
/// driver mounts the files and reports it (a warning line here; with the API server, a
/// `ServedStale` Warning Event on the pod).
#[tokio::test]
async fn a_stale_answer_is_mounted_and_reported() -> anyhow::Result<()> {
    let logs = logs::capture();
    let e = env(None, 4 << 20).await?;
    let value = canary();
    e.fake
        .state
        .set(Behaviour::Stale(420, Box::new(files(&value, "v1"))));
    let target = kubelet_target(&e.root, "uid-s", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let ctx = kubelet_context("kv", "web", "default", "uid-s", "default", None);
    assert_eq!(
        e.svc
            .publish(publish_request("csi-s", &target, ctx), T)
            .await?,
        Published::Mounted
    );
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, value);
    let text = logs.text();
    assert!(
        text.contains("last-known-good") && text.contains("420"),
        "{text}"
    );
    logs.assert_no_canary();
    Ok(())
}
