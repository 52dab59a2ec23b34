//! The driver against a real kube-apiserver (etcd + kube-apiserver on loopback, from
//! test-support), running under its own ServiceAccount bound to deploy/rbac.yaml, driven by a
//! kubelet-shaped harness over the CSI unix socket. The provider is a fake on a unix socket
//! (end to end with the real Azure provider comes from the e2e crate). Secret values are
//! canaries, and no log line, Event, metric or error message may carry one.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::cluster::{apply_rbac, start_control_plane};
use common::{
    Behaviour, FakeProvider, MountGuard, assert_no_canary, canary, is_root, kubelet_context,
    kubelet_target, logs, publish_request,
};
use csi_proto::v1 as csi;
use driver::config::Endpoint;
use driver::metrics::Metrics;
use driver::{
    Config, DirMounter, GrpcProviderClient, KubeClassSource, KubeSinks, Mounter, NodeService,
    TmpfsMounter,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use secrets_store_api::v1::{SecretProviderClass, SecretProviderClassPodStatus};
use test_support::ControlPlane;

const NODE: &str = "node-1";
const AUDIENCE: &str = "api://AzureADTokenExchange";

struct Harness {
    cp: ControlPlane,
    dir: tempfile::TempDir,
    fake: FakeProvider,
    sock: PathBuf,
    node: csi::node_client::NodeClient<tonic::transport::Channel>,
    svc: NodeService,
    _server: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The driver, as `system:serviceaccount:kube-system:<sa>`, serving CSI on a unix socket.
async fn harness(
    cp: ControlPlane,
    driver_sa: &str,
    rotation: Option<Duration>,
) -> anyhow::Result<Harness> {
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    let client = cp.service_account_client("kube-system", driver_sa).await?;
    let mut config = Config::new(NODE, vec![providers]);
    config.rotation = rotation;
    let mounter: Arc<dyn Mounter> = if is_root() {
        Arc::new(TmpfsMounter)
    } else {
        Arc::new(DirMounter::default())
    };
    let svc = NodeService::new(
        config.clone(),
        Arc::new(KubeClassSource::new(client.clone())),
        mounter,
        Arc::new(GrpcProviderClient::new(
            config.provider_dirs.clone(),
            config.max_recv_msg_size,
        )),
        Some(KubeSinks::new(client, NODE)),
        Arc::new(Metrics::new()),
    );
    let served = svc.clone();
    let sock = dir.path().join("csi.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = Endpoint::Unix(sock.clone());
    let server = tokio::spawn(async move {
        let _ = driver::server::serve(served, &endpoint, async {
            let _ = stopped.await;
        })
        .await;
    });
    for _ in 0..100 {
        if test_support::socket_accepts(&sock) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let node = csi::node_client::NodeClient::new(driver::provider::unix_channel(&sock));
    Ok(Harness {
        cp,
        dir,
        fake,
        sock,
        node,
        svc,
        _server: server,
        _stop: stop,
    })
}

/// A ReplicaSet and a pod it owns, with the inline CSI volume kubelet would mount.
async fn create_pod(
    cp: &ControlPlane,
    ns: &str,
    pod: &str,
    class: &str,
) -> anyhow::Result<(Pod, ReplicaSet)> {
    cp.create_service_account(ns, "web-sa").await?;
    let client = cp.client();
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-rs", "namespace": ns},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))?;
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rs)
        .await?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": ns, "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-rs",
                                          "uid": rs.uid(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": NODE, "serviceAccountName": "web-sa",
                 "containers": [{"name": "c", "image": "busybox",
                                 "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true}]}],
                 "volumes": [{"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                                                          "volumeAttributes": {"secretProviderClass": class}}}]}
    }))?;
    let pod = Api::<Pod>::namespaced(client, ns)
        .create(&PostParams::default(), &pod)
        .await?;
    Ok((pod, rs))
}

/// What kubelet puts in `csi.storage.k8s.io/serviceAccount.tokens` for `tokenRequests`.
async fn kubelet_tokens(cp: &ControlPlane, ns: &str) -> anyhow::Result<String> {
    let token = cp.token_request(ns, "web-sa", AUDIENCE, 3600).await?;
    Ok(serde_json::json!({ AUDIENCE: {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"} }).to_string())
}

fn tls_bundle() -> anyhow::Result<String> {
    let ck = rcgen::generate_simple_self_signed(vec!["web.example".to_string()])?;
    Ok(format!(
        "{}{}",
        ck.signing_key.serialize_pem(),
        ck.cert.pem()
    ))
}

fn provider_files(opaque: &str, version: &str, tls: &str) -> Behaviour {
    let docker = r#"{"auths":{"registry.example":{"auth":"dTpw"}}}"#;
    Behaviour::Files(
        vec![
            ("foo".into(), 0o644, opaque.as_bytes().to_vec()),
            ("cert".into(), 0o600, tls.as_bytes().to_vec()),
            ("dockercfg".into(), 0o644, docker.as_bytes().to_vec()),
            ("user".into(), 0o644, b"admin".to_vec()),
            ("pass".into(), 0o644, b"pw".to_vec()),
            (
                "sshkey".into(),
                0o600,
                b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
                    .to_vec(),
            ),
            (
                "legacycfg".into(),
                0o644,
                br#"{"registry.example":{"auth":"dTpw"}}"#.to_vec(),
            ),
        ],
        vec![
            ("secret/foo".into(), version.into()),
            ("secret/cert".into(), "c1".into()),
        ],
    )
}

async fn create_class(cp: &ControlPlane, ns: &str) -> anyhow::Result<()> {
    let spc: SecretProviderClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "kv", "namespace": ns},
        "spec": {"provider": "fake", "parameters": {"keyvaultName": "kv1", "objects": "array: []"},
                 "secretObjects": [
            {"secretName": "opaque-s", "type": "Opaque", "labels": {"environment": "test"},
             "annotations": {"team": "web"}, "data": [{"objectName": "foo", "key": "username"}]},
            {"secretName": "tls-s", "type": "kubernetes.io/tls",
             "data": [{"objectName": "cert", "key": "tls.crt"}, {"objectName": "cert", "key": "tls.key"}]},
            {"secretName": "docker-s", "type": "kubernetes.io/dockerconfigjson",
             "data": [{"objectName": "dockercfg", "key": ".dockerconfigjson"}]},
            {"secretName": "basic-s", "type": "kubernetes.io/basic-auth",
             "data": [{"objectName": "user", "key": "username"}, {"objectName": "pass", "key": "password"}]},
            {"secretName": "ssh-s", "type": "kubernetes.io/ssh-auth",
             "data": [{"objectName": "sshkey", "key": "ssh-privatekey"}]},
            {"secretName": "dockercfg-s", "type": "kubernetes.io/dockercfg",
             "data": [{"objectName": "legacycfg", "key": ".dockercfg"}]},
            {"secretName": "sa-token-s", "type": "kubernetes.io/service-account-token",
             "annotations": {"kubernetes.io/service-account.name": "web-sa"},
             "data": [{"objectName": "foo", "key": "token"}]},
            {"secretName": "broken-s", "type": "Opaque", "data": [{"objectName": "not-returned", "key": "k"}]}
        ]}
    }))?;
    Api::<SecretProviderClass>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &spc)
        .await?;
    Ok(())
}

fn mtime(p: &Path) -> anyhow::Result<(i64, i64)> {
    let m = std::fs::metadata(p)?;
    Ok((m.mtime(), m.mtime_nsec()))
}

/// NodePublishVolume over the socket with a nodePublishSecretRef canary; an error message
/// must not carry a canary.
async fn publish(
    h: &mut Harness,
    mut req: csi::NodePublishVolumeRequest,
) -> Result<(), tonic::Status> {
    req.secrets
        .entry("clientsecret".into())
        .or_insert_with(canary);
    let mut r = tonic::Request::new(req);
    r.set_timeout(Duration::from_secs(30));
    let out = h.node.node_publish_volume(r).await.map(|_| ());
    if let Err(s) = &out {
        assert_no_canary("an error message", s.message());
    }
    out
}

/// The Events on `pod`, once the driver has sent the ones it raised so far.
async fn events_for(h: &Harness, ns: &str, pod: &str) -> anyhow::Result<Vec<Event>> {
    h.svc.flush_events().await;
    let list = Api::<Event>::namespaced(h.cp.client(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_publish_syncs_secrets_records_status_and_rotates() -> anyhow::Result<()> {
    let logs = logs::capture();
    let Some(cp) = start_control_plane().await? else {
        return Ok(());
    };
    apply_rbac(
        &cp,
        &std::fs::read_to_string(test_support::project_root().join("deploy/rbac.yaml"))?,
    )
    .await?;
    let interval = Duration::from_secs(1);
    let mut h = harness(cp, "secrets-store-csi-driver", Some(interval)).await?;
    let ns = "app";
    let (pod, rs) = create_pod(&h.cp, ns, "web-1", "kv").await?;
    create_class(&h.cp, ns).await?;
    let tls = tls_bundle()?;
    let (alice, bob) = (canary(), canary());
    h.fake.state.set(provider_files(&alice, "v1", &tls));

    let tokens = kubelet_tokens(&h.cp, ns).await?;
    let uid = pod.uid().unwrap_or_default();
    let target = kubelet_target(h.dir.path(), &uid, "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let mut req = publish_request(
        "csi-abc",
        &target,
        kubelet_context("kv", "web-1", ns, &uid, "web-sa", Some(&tokens)),
    );
    req.secrets.insert("clientsecret".into(), canary());
    publish(&mut h, req.clone()).await?;

    // Files, and the apiserver-minted token forwarded to the provider.
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, alice);
    let seen = h.fake.state.seen();
    let attrs: BTreeMap<String, String> = serde_json::from_str(&seen[0].attributes)?;
    let sent: serde_json::Value =
        serde_json::from_str(&attrs["csi.storage.k8s.io/serviceAccount.tokens"])?;
    let jwt = sent[AUDIENCE]["token"].as_str().unwrap_or_default();
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    assert_eq!(claims["aud"][0], AUDIENCE);
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:web-sa"));
    assert_eq!(attrs["csi.storage.k8s.io/pod.uid"], uid);

    // SecretProviderClassPodStatus.
    let spcps_api = Api::<SecretProviderClassPodStatus>::namespaced(h.cp.client(), ns);
    let spcps = spcps_api.get("web-1-app-kv").await?;
    assert_eq!(
        spcps
            .labels()
            .get("internal.secrets-store.csi.k8s.io/node-name")
            .map(String::as_str),
        Some(NODE)
    );
    assert_eq!(spcps.owner_references()[0].kind, "Pod");
    assert_eq!(spcps.owner_references()[0].uid, uid);
    let status = spcps.status.clone().unwrap_or_default();
    assert!(status.mounted);
    assert_eq!(status.target_path, target.display().to_string());
    assert_eq!(status.secret_provider_class_name, "kv");
    let ids: Vec<_> = status
        .objects
        .iter()
        .map(|o| (o.id.as_str(), o.version.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("secret/cert", "c1"), ("secret/foo", "v1")],
        "sorted by id"
    );

    // Synced Secrets of every type, owned by the ReplicaSet.
    let secrets = Api::<Secret>::namespaced(h.cp.client(), ns);
    let data = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| b.0.clone())
            .unwrap_or_default()
    };
    for (name, ty) in [
        ("opaque-s", "Opaque"),
        ("tls-s", "kubernetes.io/tls"),
        ("docker-s", "kubernetes.io/dockerconfigjson"),
        ("basic-s", "kubernetes.io/basic-auth"),
        ("ssh-s", "kubernetes.io/ssh-auth"),
        ("dockercfg-s", "kubernetes.io/dockercfg"),
        ("sa-token-s", "kubernetes.io/service-account-token"),
    ] {
        let s = secrets.get(name).await?;
        assert_eq!(s.type_.as_deref(), Some(ty), "{name}");
        assert_eq!(
            s.labels()
                .get("secrets-store.csi.k8s.io/managed")
                .map(String::as_str),
            Some("true"),
            "{name}"
        );
        let owners = s.owner_references();
        assert_eq!(owners.len(), 1, "{name}");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("ReplicaSet", rs.uid().unwrap_or_default().as_str())
        );
        assert_eq!(
            owners[0].controller, None,
            "no controller flag, as upstream"
        );
    }
    let opaque = secrets.get("opaque-s").await?;
    assert_eq!(data(&opaque, "username"), alice.as_bytes());
    assert_eq!(
        opaque.labels().get("environment").map(String::as_str),
        Some("test")
    );
    assert_eq!(
        opaque.annotations().get("team").map(String::as_str),
        Some("web")
    );
    let tls_s = secrets.get("tls-s").await?;
    assert!(String::from_utf8(data(&tls_s, "tls.crt"))?.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        String::from_utf8(data(&tls_s, "tls.key"))?.starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    assert_eq!(data(&secrets.get("basic-s").await?, "password"), b"pw");
    assert!(secrets.get_opt("broken-s").await?.is_none());

    // An Event on the pod for the secretObject naming an object the provider did not return.
    let events = events_for(&h, ns, "web-1").await?;
    let missing = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("SecretObjectNotMounted"));
    assert!(
        missing.is_some_and(|e| e
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("not-returned")),
        "{events:?}"
    );
    for e in &events {
        assert_no_canary("an Event", e.note.as_deref().unwrap_or_default());
    }

    // Republish within the interval: nothing happens.
    publish(&mut h, req.clone()).await?;
    assert_eq!(h.fake.state.calls(), 1);

    // Republish past the interval with unchanged content: no write anywhere.
    let spcps_rv = spcps_api.get("web-1-app-kv").await?.resource_version();
    let opaque_rv = secrets.get("opaque-s").await?.resource_version();
    let tls_rv = secrets.get("tls-s").await?.resource_version();
    let file_mtime = mtime(&target.join("foo"))?;
    let data_link = std::fs::read_link(target.join("..data"))?;
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    publish(&mut h, req.clone()).await?;
    assert_eq!(
        h.fake.state.calls(),
        2,
        "provider asked again after the interval"
    );
    assert_eq!(
        spcps_api.get("web-1-app-kv").await?.resource_version(),
        spcps_rv,
        "pod status not rewritten"
    );
    assert_eq!(
        secrets.get("opaque-s").await?.resource_version(),
        opaque_rv,
        "secret not rewritten"
    );
    assert_eq!(
        secrets.get("tls-s").await?.resource_version(),
        tls_rv,
        "tls secret not rewritten"
    );
    assert_eq!(
        mtime(&target.join("foo"))?,
        file_mtime,
        "file not rewritten"
    );
    assert_eq!(std::fs::read_link(target.join("..data"))?, data_link);

    // New version in the store: files, Secret and pod status change after the next republish.
    h.fake.state.set(provider_files(&bob, "v2", &tls));
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    publish(&mut h, req.clone()).await?;
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, bob);
    let opaque2 = secrets.get("opaque-s").await?;
    assert_eq!(data(&opaque2, "username"), bob.as_bytes());
    assert_ne!(opaque2.resource_version(), opaque_rv);
    assert_eq!(
        secrets.get("tls-s").await?.resource_version(),
        tls_rv,
        "unchanged secret untouched"
    );
    let status2 = spcps_api
        .get("web-1-app-kv")
        .await?
        .status
        .unwrap_or_default();
    assert!(
        status2
            .objects
            .iter()
            .any(|o| o.id == "secret/foo" && o.version == "v2")
    );

    // Unpublish (twice: idempotent).
    let mut node = h.node.clone();
    let un = csi::NodeUnpublishVolumeRequest {
        volume_id: "csi-abc".into(),
        target_path: target.display().to_string(),
    };
    node.node_unpublish_volume(un.clone()).await?;
    node.node_unpublish_volume(un).await?;
    assert!(!target.exists());
    assert!(h.sock.exists(), "server still up");
    for e in &events_for(&h, ns, "web-1").await? {
        assert_no_canary("an Event", e.note.as_deref().unwrap_or_default());
    }
    assert_no_canary("the metrics", &h.svc.metrics().encode());
    logs.assert_no_canary();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1alpha1_classes_missing_classes_and_missing_permissions() -> anyhow::Result<()> {
    let logs = logs::capture();
    let Some(cp) = start_control_plane().await? else {
        return Ok(());
    };
    apply_rbac(
        &cp,
        &std::fs::read_to_string(test_support::project_root().join("deploy/rbac.yaml"))?,
    )
    .await?;
    // A second identity whose role lacks `get` on secretproviderclasses.
    let weak = std::fs::read_to_string(test_support::project_root().join("deploy/rbac.yaml"))?
        .replace("name: secrets-store-csi-driver", "name: weak-driver")
        .replace("secretproviderclasses-role", "weak-role")
        .replace("secretprovidersyncing-role", "weak-sync-role")
        .replace("secretproviderclasses-rolebinding", "weak-binding")
        .replace("secretprovidersyncing-rolebinding", "weak-sync-binding")
        .replace(
            "    resources: [\"secretproviderclasses\"]\n    verbs: [\"get\"]",
            "    resources: [\"secretproviderclasses\"]\n    verbs: [\"list\"]",
        );
    apply_rbac(&cp, &weak).await?;

    let mut h = harness(cp, "secrets-store-csi-driver", None).await?;
    let ns = "legacy";
    let (pod, _) = create_pod(&h.cp, ns, "old-1", "kv-alpha").await?;
    let uid = pod.uid().unwrap_or_default();
    // A class created through the deprecated v1alpha1 API is served to the driver as v1.
    let alpha = serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1alpha1", "kind": "SecretProviderClass",
        "metadata": {"name": "kv-alpha", "namespace": ns},
        "spec": {"provider": "fake", "parameters": {"objects": "array: []"},
                 "secretObjects": [{"secretName": "mismatch-s", "type": "Opaque",
                                    "data": [{"objectName": "foo", "key": "foo"}]}]}
    });
    let alpha: secrets_store_api::v1alpha1::SecretProviderClass = serde_json::from_value(alpha)?;
    Api::<secrets_store_api::v1alpha1::SecretProviderClass>::namespaced(h.cp.client(), ns)
        .create(&PostParams::default(), &alpha)
        .await?;
    let old = canary();
    h.fake.state.set(Behaviour::Files(
        vec![("foo".into(), 0o644, old.clone().into_bytes())],
        vec![("secret/foo".into(), "1".into())],
    ));
    // A pod status left by another node (a StatefulSet pod that moved) is taken over.
    let stale: SecretProviderClassPodStatus = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassPodStatus",
        "metadata": {"name": "old-1-legacy-kv-alpha", "namespace": ns,
                     "labels": {"internal.secrets-store.csi.k8s.io/node-name": "other-node"}},
        "status": {"podName": "old-1", "mounted": true, "targetPath": "/elsewhere", "objects": [{"id": "secret/foo", "version": "0"}]}
    }))?;
    Api::<SecretProviderClassPodStatus>::namespaced(h.cp.client(), ns)
        .create(&PostParams::default(), &stale)
        .await?;
    // A Secret of another type already holds the synced name.
    let taken: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mismatch-s", "namespace": ns},
        "type": "kubernetes.io/basic-auth", "stringData": {"username": "u"}
    }))?;
    Api::<Secret>::namespaced(h.cp.client(), ns)
        .create(&PostParams::default(), &taken)
        .await?;

    let target = kubelet_target(h.dir.path(), &uid, "secrets");
    let _g = MountGuard(vec![target.clone()]);
    publish(
        &mut h,
        publish_request(
            "v",
            &target,
            kubelet_context("kv-alpha", "old-1", ns, &uid, "web-sa", None),
        ),
    )
    .await?;
    assert_eq!(std::fs::read_to_string(target.join("foo"))?, old);
    let spcps = Api::<SecretProviderClassPodStatus>::namespaced(h.cp.client(), ns)
        .get("old-1-legacy-kv-alpha")
        .await?;
    assert_eq!(
        spcps
            .labels()
            .get("internal.secrets-store.csi.k8s.io/node-name")
            .map(String::as_str),
        Some(NODE)
    );
    let st = spcps.status.clone().unwrap_or_default();
    assert_eq!(
        (st.target_path.as_str(), st.objects[0].version.as_str()),
        (target.display().to_string().as_str(), "1")
    );
    assert_eq!(spcps.owner_references()[0].uid, uid);
    let events = events_for(&h, ns, "old-1").await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedToCreateSecret")
                && e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("type cannot change")),
        "{events:?}"
    );

    // A class that does not exist: NotFound naming it, and an Event on the pod.
    let target2 = kubelet_target(h.dir.path(), &uid, "other");
    let _g2 = MountGuard(vec![target2.clone()]);
    let err = publish(
        &mut h,
        publish_request(
            "w",
            &target2,
            kubelet_context("nope", "old-1", ns, &uid, "web-sa", None),
        ),
    )
    .await
    .err();
    assert_eq!(
        err.as_ref().map(tonic::Status::code),
        Some(tonic::Code::NotFound),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.message().contains("legacy/nope")));
    assert!(!target2.exists(), "nothing left behind");
    let events = events_for(&h, ns, "old-1").await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedToMountSecretsStore")
                && e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("legacy/nope")),
        "{events:?}"
    );

    // A class without spec (valid for the CRD): the provider is reported missing.
    let raw = serde_json::json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                                 "metadata": {"name": "empty", "namespace": ns}});
    let resource = kube::api::ApiResource::erase::<SecretProviderClass>(&());
    Api::<kube::api::DynamicObject>::namespaced_with(h.cp.client(), ns, &resource)
        .create(&PostParams::default(), &serde_json::from_value(raw)?)
        .await?;
    let err = publish(
        &mut h,
        publish_request(
            "e",
            &target2,
            kubelet_context("empty", "old-1", ns, &uid, "web-sa", None),
        ),
    )
    .await
    .err();
    assert_eq!(
        err.as_ref().map(tonic::Status::code),
        Some(tonic::Code::InvalidArgument),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.message().contains("spec.provider is not set")));

    // The same publish under an identity without `get` on secretproviderclasses.
    let h_svc = h.svc.clone();
    let mut weak_h = harness(h.cp, "weak-driver", None).await?;
    let target3 = kubelet_target(weak_h.dir.path(), &uid, "secrets");
    let _g3 = MountGuard(vec![target3.clone()]);
    let err = publish(
        &mut weak_h,
        publish_request(
            "x",
            &target3,
            kubelet_context("kv-alpha", "old-1", ns, &uid, "web-sa", None),
        ),
    )
    .await
    .err();
    let msg = err
        .as_ref()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(err.map(|e| e.code()), Some(tonic::Code::PermissionDenied));
    assert!(
        msg.contains("forbidden") && msg.contains("`get` on secretproviderclasses"),
        "{msg}"
    );
    for e in &events_for(&weak_h, ns, "old-1").await? {
        assert_no_canary("an Event", e.note.as_deref().unwrap_or_default());
    }
    for svc in [&h_svc, &weak_h.svc] {
        assert_no_canary("the metrics", &svc.metrics().encode());
    }
    logs.assert_no_canary();
    Ok(())
}

/// Issue 16: a provider reports an optional object the store lacks with the reserved version
/// `ABSENT_OBJECT_VERSION`; the driver records it in the pod status and warns on the pod once,
/// not on every rotation; when the object appears its file is written and the status shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_optional_object_is_warned_about_once() -> anyhow::Result<()> {
    let Some(cp) = start_control_plane().await? else {
        return Ok(());
    };
    apply_rbac(
        &cp,
        &std::fs::read_to_string(test_support::project_root().join("deploy/rbac.yaml"))?,
    )
    .await?;
    let interval = Duration::from_secs(1);
    let mut h = harness(cp, "secrets-store-csi-driver", Some(interval)).await?;
    let ns = "opt";
    let (pod, _) = create_pod(&h.cp, ns, "web-1", "kv").await?;
    create_class(&h.cp, ns).await?;
    let absent = provider_proto::ABSENT_OBJECT_VERSION;
    h.fake.state.set(Behaviour::Files(
        vec![("foo".into(), 0o644, b"here".to_vec())],
        vec![
            ("secret/foo".into(), "v1".into()),
            ("secret/later".into(), absent.into()),
        ],
    ));
    let uid = pod.uid().unwrap_or_default();
    let target = kubelet_target(h.dir.path(), &uid, "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let req = publish_request(
        "csi-opt",
        &target,
        kubelet_context("kv", "web-1", ns, &uid, "web-sa", None),
    );
    publish(&mut h, req.clone()).await?;
    assert!(!target.join("later").exists());
    let absent_events = |events: Vec<Event>| -> Vec<Event> {
        events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("OptionalSecretObjectAbsent"))
            .collect()
    };
    let first = absent_events(events_for(&h, ns, "web-1").await?);
    assert_eq!(first.len(), 1, "{first:?}");
    let note = first[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("secret/later") && note.contains("SecretProviderClass kv"),
        "{note}"
    );
    let spcps = Api::<SecretProviderClassPodStatus>::namespaced(h.cp.client(), ns);
    let recorded = spcps.get("web-1-opt-kv").await?.status.unwrap_or_default();
    assert!(
        recorded
            .objects
            .iter()
            .any(|o| o.id == "secret/later" && o.version == absent)
    );

    // Rotation with the object still absent: no second warning (the Event is not repeated).
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    publish(&mut h, req.clone()).await?;
    assert_eq!(h.fake.state.calls(), 2, "the provider was asked again");
    let again = absent_events(events_for(&h, ns, "web-1").await?);
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(
        again[0].series.is_none(),
        "not repeated: {:?}",
        again[0].series
    );

    // It appears: the next rotation writes it.
    h.fake.state.set(Behaviour::Files(
        vec![
            ("foo".into(), 0o644, b"here".to_vec()),
            ("later".into(), 0o644, b"now".to_vec()),
        ],
        vec![
            ("secret/foo".into(), "v1".into()),
            ("secret/later".into(), "v7".into()),
        ],
    ));
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    publish(&mut h, req).await?;
    assert_eq!(std::fs::read_to_string(target.join("later"))?, "now");
    let recorded = spcps.get("web-1-opt-kv").await?.status.unwrap_or_default();
    assert!(
        recorded
            .objects
            .iter()
            .any(|o| o.id == "secret/later" && o.version == "v7")
    );
    Ok(())
}
