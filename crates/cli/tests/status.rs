//! `secrets-store status` against a real kube-apiserver: the pod status and Events are written
//! by the driver's own code (`driver::pod_status::record`, `driver::events::PodEvents`), the
//! rotation settings come from a driver DaemonSet's flags.

use std::collections::HashMap;
use std::time::Duration;

use driver::VolumeContext;
use driver::events::{PodEvents, reason};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use secrets_store_cli::status::{Rotation, collect};
use test_support::ControlPlane;

const NS: &str = "app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_versions_last_error_and_rotation() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::start().await else {
        return Ok(());
    };
    let cp = cp?;
    let root = test_support::project_root();
    for f in [
        "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml",
        "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml",
    ] {
        cp.apply_crd_yaml(&std::fs::read_to_string(root.join("deploy/crds").join(f))?)
            .await?;
    }
    cp.create_namespace(NS).await?;
    cp.create_namespace("kube-system").await?;
    cp.create_service_account(NS, "default").await?;
    let client = cp.client();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": NS},
        "spec": {"nodeName": "node-1",
                 "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [
                    {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                                                "volumeAttributes": {"secretProviderClass": "kv"}}},
                    {"name": "other", "emptyDir": {}}]}
    }))?;
    let pod = Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await?;
    let uid = pod.uid().unwrap_or_default();

    // Before any mount: no status, the mount is reported as not mounted; no DaemonSet: the
    // rotation is unknown, unless given.
    let r = collect(&client, NS, "web-1", None).await?;
    assert_eq!(r.mounts.len(), 1, "only the secrets-store volume");
    assert!(!r.mounts[0].mounted);
    assert!(matches!(r.rotation, Rotation::Unknown { .. }), "{r:?}");
    assert!(r.mounts[0].next_refresh.contains("not mounted"));
    let r = collect(&client, NS, "web-1", Some(Duration::from_secs(30))).await?;
    assert_eq!(
        r.rotation,
        Rotation::On {
            interval_secs: 30,
            source: "--rotation-poll-interval".into()
        }
    );

    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "secrets-store-csi-driver", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "secrets-store", "image": "x",
                                "args": ["--endpoint=unix:///csi/csi.sock", "--nodeid=$(KUBE_NODE_NAME)",
                                         "--enable-secret-rotation=true", "--rotation-poll-interval=90s"]}]}}}
    }))?;
    Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &ds)
        .await?;

    // The driver records a mount.
    let ctx = csi_proto::kubelet::inline_volume_context("kv", "web-1", NS, &uid, "default", None);
    let vc = VolumeContext::parse(&ctx, &HashMap::new())?;
    let target = format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/secrets/mount");
    let v1 = vec![
        ("secret/foo".to_string(), "v1".to_string()),
        ("cert/tls".to_string(), "c1".to_string()),
    ];
    driver::pod_status::record(&client, "node-1", &vc, &target, &v1).await?;
    let r = collect(&client, NS, "web-1", None).await?;
    assert_eq!(
        r.rotation,
        Rotation::On {
            interval_secs: 90,
            source: "DaemonSet kube-system/secrets-store-csi-driver".into()
        }
    );
    let m = &r.mounts[0];
    assert!(m.mounted);
    assert_eq!(m.class, "kv");
    assert_eq!(m.pod_status.as_deref(), Some("web-1-app-kv"));
    let objects: Vec<_> = m
        .objects
        .iter()
        .map(|o| (o.id.as_str(), o.version.as_str()))
        .collect();
    assert_eq!(objects, [("cert/tls", "c1"), ("secret/foo", "v1")]);
    assert!(m.last_changed.is_some());
    assert!(
        m.next_refresh.contains("1m30s") || m.next_refresh.contains("90s"),
        "{}",
        m.next_refresh
    );
    assert!(r.last_refresh_error.is_none());

    // A failed refresh: reported as the last refresh error, with the Event.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let events = PodEvents::new(client.clone(), "node-1");
    events.warn(
        &vc,
        reason::MOUNT_ROTATION_FAILED,
        "Rotate",
        "provider fake: Throttled".into(),
    );
    events.flush().await;
    let r = collect(&client, NS, "web-1", None).await?;
    let e = r.last_refresh_error.clone().expect("the rotation failure");
    assert_eq!(e.reason, "MountRotationFailed");
    assert!(e.note.contains("Throttled"));
    let text = r.render_text();
    for needle in [
        "Pod app/web-1 on node node-1",
        "Rotation: on, every 90s",
        "Volume secrets (SecretProviderClass kv)",
        "secret/foo  v1",
        "Last refresh error (",
        "MountRotationFailed",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // A later successful change clears it (the error is older than the change).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v2 = vec![
        ("secret/foo".to_string(), "v2".to_string()),
        ("cert/tls".to_string(), "c1".to_string()),
    ];
    driver::pod_status::record(&client, "node-1", &vc, &target, &v2).await?;
    let r = collect(&client, NS, "web-1", None).await?;
    assert!(r.last_refresh_error.is_none(), "{r:?}");
    assert_eq!(r.events.len(), 1, "the Event is still listed");
    assert!(r.mounts[0].objects.iter().any(|o| o.version == "v2"));
    assert!(
        r.render_text()
            .contains("Last refresh error: none since the last change")
    );
    let json = serde_json::to_value(&r)?;
    assert_eq!(json["mounts"][0]["objects"][1]["version"], "v2");
    assert_eq!(json["rotation"]["state"], "on");

    // Rotation off on the driver.
    Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .delete("secrets-store-csi-driver", &DeleteParams::default())
        .await?;
    let mut off = ds_without_rotation();
    off.metadata.name = Some("csi-driver-2".into());
    Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &off)
        .await?;
    let r = collect(&client, NS, "web-1", None).await?;
    assert!(matches!(r.rotation, Rotation::Off { .. }), "{r:?}");
    assert!(r.mounts[0].next_refresh.contains("never"));

    // A missing pod names it.
    let err = collect(&client, NS, "nope", None)
        .await
        .err()
        .map(|e| daemon::error::render(&e))
        .unwrap_or_default();
    assert!(err.contains("pod app/nope"), "{err}");
    Ok(())
}

fn ds_without_rotation() -> DaemonSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "secrets-store", "image": "x",
                                "args": ["--nodeid=$(KUBE_NODE_NAME)"]}]}}}
    }))
    .unwrap_or_default()
}
