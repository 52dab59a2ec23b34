//! `secrets-store.csi.k8s.io/on-change: rollout-restart` against a real kube-apiserver: two
//! drivers (two nodes), each with one pod of the same Deployment (pod → ReplicaSet →
//! Deployment), see one rotation at the same time → the Deployment's pod template changes once
//! and one Event is published on it; a second rotation within the minimum interval waits and
//! is applied at a later refresh. The drivers run as the chart's ServiceAccount with
//! deploy/rbac.yaml and deploy/rbac-restart.yaml.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{apply_rbac, start_control_plane};
use common::{
    Behaviour, FakeProvider, MountGuard, is_root, kubelet_context, kubelet_target, logs,
    publish_request,
};
use driver::metrics::Metrics;
use driver::node::Published;
use driver::{
    Config, DirMounter, GrpcProviderClient, KubeClassSource, KubeSinks, Mounter, NodeService,
    TmpfsMounter,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use secrets_store_api::v1::SecretProviderClass;

const NS: &str = "app";
const T: Duration = Duration::from_secs(20);

fn files(version: &str) -> Behaviour {
    Behaviour::Files(
        vec![("foo".into(), 0o644, format!("value-{version}").into_bytes())],
        vec![("secret/foo".into(), version.into())],
    )
}

/// The Deployment's Events, once each of `services` has sent the ones it raised so far.
async fn deployment_events<'a>(
    services: impl IntoIterator<Item = &'a NodeService>,
    client: &kube::Client,
    name: &str,
) -> anyhow::Result<Vec<Event>> {
    for s in services {
        s.flush_events().await;
    }
    Ok(Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Deployment")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect())
}

/// (generation, restartedAt) of the Deployment: the generation moves on every pod-template
/// change, so it counts restarts.
async fn deployment_state(client: &kube::Client) -> anyhow::Result<(i64, Option<String>)> {
    let d = Api::<Deployment>::namespaced(client.clone(), NS)
        .get("web")
        .await?;
    let restarted = d
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned());
    Ok((d.metadata.generation.unwrap_or_default(), restarted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rotation_seen_by_two_pods_on_two_nodes_restarts_the_deployment_once()
-> anyhow::Result<()> {
    let _logs = logs::capture();
    let Some(cp) = start_control_plane().await? else {
        return Ok(());
    };
    let root = test_support::project_root();
    let rbac = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(root.join("deploy/rbac.yaml"))?,
        std::fs::read_to_string(root.join("deploy/rbac-restart.yaml"))?
    );
    apply_rbac(&cp, &rbac).await?;
    cp.create_namespace(NS).await?;
    cp.create_service_account(NS, "web-sa").await?;
    let admin = cp.client();

    // Deployment → ReplicaSet → two pods (no controller-manager runs: owners set by hand).
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    let dep: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}
    }))?;
    let dep = Api::<Deployment>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &dep)
        .await?;
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-rs", "namespace": NS,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": dep.uid(), "controller": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template}
    }))?;
    let rs = Api::<ReplicaSet>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &rs)
        .await?;
    let mut pods = Vec::new();
    for (name, node) in [("web-a", "node-1"), ("web-b", "node-2")] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-rs",
                                              "uid": rs.uid(), "controller": true}]},
            "spec": {"nodeName": node, "serviceAccountName": "web-sa",
                     "containers": [{"name": "c", "image": "busybox"}]}
        }))?;
        pods.push(
            Api::<Pod>::namespaced(admin.clone(), NS)
                .create(&PostParams::default(), &pod)
                .await?,
        );
    }
    let spc: SecretProviderClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "kv", "namespace": NS,
                     "annotations": {"secrets-store.csi.k8s.io/on-change": "rollout-restart"}},
        "spec": {"provider": "fake", "parameters": {"keyvaultName": "kv1"}}
    }))?;
    Api::<SecretProviderClass>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &spc)
        .await?;

    // Two drivers (node-1, node-2) sharing one fake provider.
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    fake.state.set(files("v1"));
    let interval = Duration::from_millis(400);
    let min_interval = Duration::from_secs(3);
    let driver_client = cp
        .service_account_client("kube-system", "secrets-store-csi-driver")
        .await?;
    let mut services = Vec::new();
    for node in ["node-1", "node-2"] {
        let mut config = Config::new(node, vec![providers.clone()]);
        config.rotation = Some(interval);
        config.restart_owners = Some(min_interval);
        let mounter: Arc<dyn Mounter> = if is_root() {
            Arc::new(TmpfsMounter)
        } else {
            Arc::new(DirMounter::default())
        };
        services.push(NodeService::new(
            config.clone(),
            Arc::new(KubeClassSource::new(driver_client.clone())),
            mounter,
            Arc::new(GrpcProviderClient::new(
                config.provider_dirs.clone(),
                config.max_recv_msg_size,
            )),
            Some(KubeSinks::new(driver_client.clone(), node)),
            Arc::new(Metrics::new()),
        ));
    }
    let targets: Vec<_> = pods
        .iter()
        .map(|p| kubelet_target(dir.path(), &p.uid().unwrap_or_default(), "secrets"))
        .collect();
    let _g = MountGuard(targets.clone());
    let reqs: Vec<_> = pods
        .iter()
        .zip(&targets)
        .map(|(p, t)| {
            let ctx = kubelet_context(
                "kv",
                &p.name_any(),
                NS,
                &p.uid().unwrap_or_default(),
                "web-sa",
                None,
            );
            publish_request("csi-vol", t, ctx)
        })
        .collect();
    let both = || async {
        let (a, b) = tokio::join!(
            services[0].publish(reqs[0].clone(), T),
            services[1].publish(reqs[1].clone(), T)
        );
        anyhow::Ok((a?, b?))
    };

    // First mounts: the digest is recorded on the Deployment, nothing restarts.
    assert_eq!(both().await?, (Published::Mounted, Published::Mounted));
    let (gen0, restarted) = deployment_state(&admin).await?;
    assert_eq!(restarted, None, "a first mount never restarts");
    let d = Api::<Deployment>::namespaced(admin.clone(), NS)
        .get("web")
        .await?;
    assert!(
        d.annotations()
            .get("secrets-store.csi.k8s.io/rotation-digests")
            .is_some_and(|v| v.contains("\"kv\"")),
        "{:?}",
        d.annotations()
    );

    // One rotation, seen by both pods at once: one template change, one Event.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    fake.state.set(files("v2"));
    assert_eq!(
        both().await?,
        (
            Published::Refreshed { changed: true },
            Published::Refreshed { changed: true }
        )
    );
    let (gen1, first_restart) = deployment_state(&admin).await?;
    assert_eq!(gen1, gen0 + 1, "exactly one pod-template change");
    assert!(first_restart.is_some());
    let events = deployment_events(&services, &admin, "web").await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].reason.as_deref(),
        Some("SecretsRotatedRolloutRestart")
    );
    assert!(events[0].series.is_none(), "{events:?}");
    let note = events[0].note.clone().unwrap_or_default();
    assert!(note.contains("kv") && note.contains("secret/foo"), "{note}");
    let text: String = services.iter().map(|s| s.metrics().encode()).collect();
    assert_eq!(
        text.matches(r#"rollout_restart_total{result="restarted""#)
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(r#"rollout_restart_total{result="already_applied""#),
        "{text}"
    );

    // A second rotation within the minimum interval waits...
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    fake.state.set(files("v3"));
    assert_eq!(
        services[0].publish(reqs[0].clone(), T).await?,
        Published::Refreshed { changed: true }
    );
    assert_eq!(deployment_state(&admin).await?.0, gen1, "rate-limited");
    assert!(
        services[0]
            .metrics()
            .encode()
            .contains(r#"rollout_restart_total{result="rate_limited""#)
    );
    // ...and is applied by a later refresh once the interval has passed, by either pod.
    tokio::time::sleep(min_interval).await;
    assert_eq!(
        both().await?,
        (
            Published::Refreshed { changed: false },
            Published::Refreshed { changed: true }
        )
    );
    let (gen2, second_restart) = deployment_state(&admin).await?;
    assert_eq!(gen2, gen1 + 1, "one more pod-template change");
    assert_ne!(second_restart, first_restart);
    // Two restarts: two Events, or one Event with a series of two when the same driver
    // published both with the same note (the recorder aggregates repeats).
    let occurrences: i32 = deployment_events(&services, &admin, "web")
        .await?
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    assert_eq!(occurrences, 2);

    // Nothing more without a change.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    both().await?;
    assert_eq!(deployment_state(&admin).await?.0, gen2);
    for (s, t) in services.iter().zip(&targets) {
        s.unpublish("csi-vol", &t.display().to_string()).await?;
    }
    Ok(())
}

/// Failures are reported, never fatal: without the restart RBAC the patch is refused and the pod
/// gets a `RolloutRestartFailed` Warning Event while its files still rotate; a driver without
/// `--rotation-restart-owners` says at mount that it will not restart anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rbac_or_flag_is_a_warning_event_not_a_failed_mount() -> anyhow::Result<()> {
    let _logs = logs::capture();
    let Some(cp) = start_control_plane().await? else {
        return Ok(());
    };
    // Only the base RBAC: no get/patch on workloads.
    apply_rbac(
        &cp,
        &std::fs::read_to_string(test_support::project_root().join("deploy/rbac.yaml"))?,
    )
    .await?;
    cp.create_namespace(NS).await?;
    cp.create_service_account(NS, "web-sa").await?;
    let admin = cp.client();
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))?;
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &sts)
        .await?;
    let mut pods = Vec::new();
    for name in ["db-0", "db-1"] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                              "uid": sts.uid(), "controller": true}]},
            "spec": {"nodeName": "node-1", "serviceAccountName": "web-sa",
                     "containers": [{"name": "c", "image": "busybox"}]}
        }))?;
        pods.push(
            Api::<Pod>::namespaced(admin.clone(), NS)
                .create(&PostParams::default(), &pod)
                .await?,
        );
    }
    let spc: SecretProviderClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "kv", "namespace": NS,
                     "annotations": {"secrets-store.csi.k8s.io/on-change": "rollout-restart"}},
        "spec": {"provider": "fake", "parameters": {"keyvaultName": "kv1"}}
    }))?;
    Api::<SecretProviderClass>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &spc)
        .await?;

    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    fake.state.set(files("v1"));
    let driver_client = cp
        .service_account_client("kube-system", "secrets-store-csi-driver")
        .await?;
    let service = |restart: Option<Duration>| {
        let mut config = Config::new("node-1", vec![providers.clone()]);
        config.rotation = Some(Duration::from_millis(200));
        config.restart_owners = restart;
        let mounter: Arc<dyn Mounter> = if is_root() {
            Arc::new(TmpfsMounter)
        } else {
            Arc::new(DirMounter::default())
        };
        NodeService::new(
            config.clone(),
            Arc::new(KubeClassSource::new(driver_client.clone())),
            mounter,
            Arc::new(GrpcProviderClient::new(
                config.provider_dirs.clone(),
                config.max_recv_msg_size,
            )),
            Some(KubeSinks::new(driver_client.clone(), "node-1")),
            Arc::new(Metrics::new()),
        )
    };
    let req = |i: usize| {
        let p: &Pod = &pods[i];
        let uid = p.uid().unwrap_or_default();
        let target = kubelet_target(dir.path(), &uid, "secrets");
        let ctx = kubelet_context("kv", &p.name_any(), NS, &uid, "web-sa", None);
        (target.clone(), publish_request("csi-vol", &target, ctx))
    };
    let pod_events = |name: &'static str| {
        let admin = admin.clone();
        async move {
            anyhow::Ok(
                Api::<Event>::namespaced(admin, NS)
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                            && e.reason.as_deref() == Some("RolloutRestartFailed")
                    })
                    .filter_map(|e| e.note)
                    .collect::<Vec<_>>(),
            )
        }
    };

    // Restarts allowed by the flag, but not by RBAC.
    let (t0, r0) = req(0);
    let _g = MountGuard(vec![t0.clone(), req(1).0]);
    let with_flag = service(Some(Duration::from_secs(1)));
    assert_eq!(with_flag.publish(r0.clone(), T).await?, Published::Mounted);
    with_flag.flush_events().await;
    let notes = pod_events("db-0").await?;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("StatefulSet") && notes[0].contains("forbidden"),
        "{notes:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.state.set(files("v2"));
    assert_eq!(
        with_flag.publish(r0, T).await?,
        Published::Refreshed { changed: true },
        "the files rotate all the same"
    );
    assert!(
        with_flag
            .metrics()
            .encode()
            .contains(r#"rollout_restart_total{result="error""#)
    );

    // No flag: said once, at mount.
    let (_, r1) = req(1);
    let without = service(None);
    assert_eq!(without.publish(r1, T).await?, Published::Mounted);
    without.flush_events().await;
    let notes = pod_events("db-1").await?;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("--rotation-restart-owners"), "{notes:?}");
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(admin.clone(), NS)
        .get("db")
        .await?;
    assert!(
        !sts.annotations()
            .contains_key("secrets-store.csi.k8s.io/rotation-digests")
    );

    // A provider answering from last-known-good (maxStaleness): a ServedStale Warning Event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.state.set(Behaviour::Stale(421, Box::new(files("v1"))));
    let (_, r1) = req(1);
    assert_eq!(
        without.publish(r1, T).await?,
        Published::Refreshed { changed: true }
    );
    without.flush_events().await;
    let stale: Vec<String> = Api::<Event>::namespaced(admin.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("db-1")
                && e.reason.as_deref() == Some("ServedStale")
                && e.type_.as_deref() == Some("Warning")
        })
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(
        stale[0].contains("421s ago") && stale[0].contains("kv"),
        "{stale:?}"
    );
    Ok(())
}

/// No restart storm: eight pods of one Deployment on eight nodes (eight drivers) see one
/// rotation at the same moment → one pod-template change, one Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_one_rotation_one_restart() -> anyhow::Result<()> {
    const N: usize = 8;
    let _logs = logs::capture();
    let Some(cp) = start_control_plane().await? else {
        return Ok(());
    };
    let root = test_support::project_root();
    let rbac = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(root.join("deploy/rbac.yaml"))?,
        std::fs::read_to_string(root.join("deploy/rbac-restart.yaml"))?
    );
    apply_rbac(&cp, &rbac).await?;
    cp.create_namespace(NS).await?;
    cp.create_service_account(NS, "web-sa").await?;
    let admin = cp.client();
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    let dep: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": N, "selector": {"matchLabels": {"app": "web"}}, "template": template}
    }))?;
    let dep = Api::<Deployment>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &dep)
        .await?;
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-rs", "namespace": NS,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": dep.uid(), "controller": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template}
    }))?;
    let rs = Api::<ReplicaSet>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &rs)
        .await?;
    let spc: SecretProviderClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "kv", "namespace": NS,
                     "annotations": {"secrets-store.csi.k8s.io/on-change": "rollout-restart"}},
        "spec": {"provider": "fake", "parameters": {"keyvaultName": "kv1"}}
    }))?;
    Api::<SecretProviderClass>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &spc)
        .await?;
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    fake.state.set(files("v1"));
    let driver_client = cp
        .service_account_client("kube-system", "secrets-store-csi-driver")
        .await?;
    let interval = Duration::from_millis(300);
    let mut work = Vec::new();
    let mut targets = Vec::new();
    for i in 0..N {
        let node = format!("node-{i}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "namespace": NS, "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-rs",
                                              "uid": rs.uid(), "controller": true}]},
            "spec": {"nodeName": node, "serviceAccountName": "web-sa",
                     "containers": [{"name": "c", "image": "busybox"}]}
        }))?;
        let pod = Api::<Pod>::namespaced(admin.clone(), NS)
            .create(&PostParams::default(), &pod)
            .await?;
        let mut config = Config::new(node.clone(), vec![providers.clone()]);
        config.rotation = Some(interval);
        config.restart_owners = Some(Duration::from_secs(60));
        let mounter: Arc<dyn Mounter> = if is_root() {
            Arc::new(TmpfsMounter)
        } else {
            Arc::new(DirMounter::default())
        };
        let svc = NodeService::new(
            config.clone(),
            Arc::new(KubeClassSource::new(driver_client.clone())),
            mounter,
            Arc::new(GrpcProviderClient::new(
                config.provider_dirs.clone(),
                config.max_recv_msg_size,
            )),
            Some(KubeSinks::new(driver_client.clone(), &node)),
            Arc::new(Metrics::new()),
        );
        let uid = pod.uid().unwrap_or_default();
        let target = kubelet_target(dir.path(), &uid, "secrets");
        let ctx = kubelet_context("kv", &pod.name_any(), NS, &uid, "web-sa", None);
        targets.push(target.clone());
        work.push((svc, publish_request("csi-vol", &target, ctx)));
    }
    let _g = MountGuard(targets);
    let all = || {
        futures::future::join_all(
            work.iter()
                .map(|(svc, req)| async move { svc.publish(req.clone(), T).await }),
        )
    };
    for r in all().await {
        assert_eq!(r?, Published::Mounted);
    }
    let (gen0, _) = deployment_state(&admin).await?;
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    fake.state.set(files("v2"));
    for r in all().await {
        assert_eq!(r?, Published::Refreshed { changed: true });
    }
    assert_eq!(deployment_state(&admin).await?.0, gen0 + 1, "one restart");
    let events = deployment_events(work.iter().map(|(s, _)| s), &admin, "web").await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].series.is_none(), "{events:?}");
    let restarted: usize = work
        .iter()
        .map(|(s, _)| {
            s.metrics()
                .encode()
                .matches(r#"rollout_restart_total{result="restarted""#)
                .count()
        })
        .sum();
    assert_eq!(restarted, 1);
    Ok(())
}
