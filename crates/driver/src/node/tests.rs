use std::sync::atomic::{AtomicBool, Ordering};

use test_support::kubelet_request::{kubelet_context, publish_request};
use tonic::Request;

use super::*;
use crate::mounter::DirMounter;
use crate::provider::MountOutput;
use crate::writer::PayloadFile;
use crate::{FileClassSource, ProviderClient};

/// Threads that ran an [`fs_probe`].
pub(crate) static FS_PROBE_THREADS: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());

pub(crate) fn fs_probes() -> usize {
    FS_PROBE_THREADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
}

pub(crate) fn fs_probes_on_this_thread() -> usize {
    let me = std::thread::current().id();
    FS_PROBE_THREADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|t| **t == me)
        .count()
}

const CLASS: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: kv, namespace: default}
spec:
  provider: fake
  parameters: {keyvaultName: kv1}
"#;

/// Answers one file, or fails with a deadline when `fail` is set.
#[derive(Default)]
struct FakeProvider {
    fail: AtomicBool,
}

#[tonic::async_trait]
impl ProviderClient for FakeProvider {
    async fn mount(&self, call: MountCall) -> Result<crate::provider::MountOutput, PublishError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(PublishError::Deadline(call.provider));
        }
        Ok(MountOutput {
            files: vec![PayloadFile {
                path: "foo".into(),
                mode: 0o644,
                contents: SecretBytes::new(b"value".to_vec()),
            }],
            object_versions: vec![("secret/foo".into(), "v1".into())],
            stale_for: None,
        })
    }
}

struct Env {
    dir: tempfile::TempDir,
    svc: NodeService,
    provider: Arc<FakeProvider>,
}

fn env(rotation: Option<Duration>) -> Env {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let class_file = dir.path().join("classes.yaml");
    std::fs::write(&class_file, CLASS).unwrap_or_else(|e| panic!("{e}"));
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers).unwrap_or_else(|e| panic!("{e}"));
    // A socket file name is all the metrics label looks for.
    std::fs::write(providers.join("fake.sock"), b"").unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::new("node-1", vec![providers]);
    config.rotation = rotation;
    let provider = Arc::new(FakeProvider::default());
    let svc = NodeService::new(
        config,
        Arc::new(FileClassSource::new(class_file)),
        Arc::new(DirMounter::default()),
        provider.clone(),
        None,
        Arc::new(Metrics::new()),
    );
    Env { dir, svc, provider }
}

impl Env {
    fn target(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("pods/uid-{i}/mount"))
    }

    async fn publish(&self, i: usize) -> Result<Published, PublishError> {
        let ctx = kubelet_context("kv", "web", "default", &format!("uid-{i}"), "sa", None);
        let req = publish_request(&format!("csi-{i}"), &self.target(i), ctx);
        self.svc.publish(req, Duration::from_secs(5)).await
    }

    async fn unpublish(&self, i: usize) -> Result<(), PublishError> {
        let target = self.target(i).display().to_string();
        self.svc.unpublish(&format!("csi-{i}"), &target).await
    }
}

/// gRPC's `TimeoutValue` has at most 8 digits; the parser used to take any number (and
/// signs, through `u64::from_str`) and saturate, handing a near-infinite deadline on.
#[test]
fn grpc_timeout_has_at_most_eight_digits() {
    let t = |v: &str| {
        let mut req = Request::new(());
        let value = v.parse().unwrap_or_else(|e| panic!("{v}: {e}"));
        req.metadata_mut().insert("grpc-timeout", value);
        grpc_timeout(&req)
    };
    assert_eq!(t("120S"), Some(Duration::from_secs(120)));
    assert_eq!(t("119999m"), Some(Duration::from_millis(119_999)));
    assert_eq!(t("5M"), Some(Duration::from_secs(300)));
    assert_eq!(t("7u"), Some(Duration::from_micros(7)));
    assert_eq!(t("7n"), Some(Duration::from_nanos(7)));
    assert_eq!(t("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
    for bad in [
        "100000000H",
        "18446744073709551615H",
        "999999999999999999999999S",
        "+5S",
        "-5S",
        "5",
        "S",
        "5s",
        "5 S",
        "",
    ] {
        assert_eq!(t(bad), None, "{bad:?}");
    }
    assert_eq!(grpc_timeout(&Request::new(())), None);
}

/// Failed first mounts and unpublishes of distinct targets used to leave their lock (and
/// refresh) entries behind forever.
#[tokio::test]
async fn no_entry_is_left_after_failed_publishes_and_unpublishes() {
    let e = env(Some(Duration::from_secs(60)));
    e.provider.fail.store(true, Ordering::SeqCst);
    for i in 0..20 {
        assert!(e.publish(i).await.is_err());
        assert!(!e.target(i).exists(), "the failed target is cleaned up");
    }
    assert_eq!(e.svc.map_sizes(), (0, 0), "after failed first mounts");
    for i in 20..40 {
        assert!(
            e.unpublish(i).await.is_ok(),
            "never published: already gone"
        );
    }
    assert_eq!(e.svc.map_sizes(), (0, 0), "after unpublishes");

    // Mounted volumes keep their refresh time (rotation gate) until unpublished.
    e.provider.fail.store(false, Ordering::SeqCst);
    for i in 40..50 {
        assert_eq!(e.publish(i).await.ok(), Some(Published::Mounted));
    }
    assert_eq!(e.svc.map_sizes(), (0, 10));
    for i in 40..50 {
        assert_eq!(
            e.publish(i).await.ok(),
            Some(Published::RotationSkipped),
            "refreshed just now"
        );
    }
    for i in 40..50 {
        assert!(e.unpublish(i).await.is_ok());
    }
    assert_eq!(
        e.svc.map_sizes(),
        (0, 0),
        "after unpublishing mounted volumes"
    );
}

/// A lock some call holds or waits on is never removed from the map (that would let the
/// next call on the same target run beside it).
#[tokio::test]
async fn a_lock_in_use_stays_in_the_map() {
    let e = env(None);
    let target = e.target(1);
    let held = e.svc.lock_for(&target);
    let guard = held.lock().await;
    let mine = e.svc.lock_for(&target);
    e.svc.release_lock(&target, mine);
    assert_eq!(e.svc.map_sizes().0, 1, "still held by another call");
    assert!(Arc::ptr_eq(&e.svc.lock_for(&target), &held));

    // A publish waits on the held lock, and the unpublish that holds it does not remove it.
    let svc = e.svc.clone();
    let ctx = kubelet_context("kv", "web", "default", "uid-1", "sa", None);
    let req = publish_request("csi-1", &target, ctx);
    let waiting = tokio::spawn(async move { svc.publish(req, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the publish waits for the lock");
    drop(guard);
    e.svc.release_lock(&target, held);
    let published = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(published.ok(), Some(Published::Mounted));
    assert_eq!(e.svc.map_sizes().0, 0, "the last user removed it");
}

/// A poisoned lock map used to hand out a fresh lock per call, so two calls on one target
/// no longer excluded each other. The map is recovered instead.
#[tokio::test]
async fn a_poisoned_lock_map_still_serialises() {
    let e = env(None);
    let target = e.target(1);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _held = e.svc.inner.locks.lock();
        panic!("poisoning the lock map on purpose");
    }));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _held = e.svc.inner.refreshed.lock();
        panic!("poisoning the refresh map on purpose");
    }));
    assert!(e.svc.inner.locks.is_poisoned() && e.svc.inner.refreshed.is_poisoned());
    let a = e.svc.lock_for(&target);
    let b = e.svc.lock_for(&target);
    assert!(Arc::ptr_eq(&a, &b), "one lock per target, poisoned or not");
    drop((a, b));
    e.svc.inner.locks.clear_poison();
    e.svc
        .inner
        .locks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    assert_eq!(e.publish(1).await.ok(), Some(Published::Mounted));
    assert_eq!(
        e.svc.map_sizes(),
        (0, 1),
        "the poisoned refresh map still records"
    );
    assert!(e.unpublish(1).await.is_ok());
    assert_eq!(e.svc.map_sizes(), (0, 0));
}

/// The publish path's file-system probes (provider socket lookups for the metrics label,
/// the target's mtime after a restart) run on the blocking pool: on a current-thread
/// runtime none of them may run on the test's own thread.
#[tokio::test(flavor = "current_thread")]
async fn publish_fs_probes_run_on_the_blocking_pool() {
    let e = env(Some(Duration::from_secs(60)));
    let before = fs_probes_on_this_thread();
    assert_eq!(e.publish(1).await.ok(), Some(Published::Mounted));
    assert!(
        e.svc.metrics().encode().contains(r#"provider="fake""#),
        "the socket lookup found the provider"
    );
    // As after a driver restart: no refresh time in memory, so the target's mtime decides.
    e.svc
        .inner
        .refreshed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    assert_eq!(e.publish(1).await.ok(), Some(Published::RotationSkipped));
    assert_eq!(fs_probes_on_this_thread(), before);
    assert!(fs_probes() >= 3);
    assert!(e.unpublish(1).await.is_ok());
}
