//! The install path on a real node: the images built by `scripts/images.sh` are imported into the
//! node's containerd, `helm install` puts the provider chart (with the driver chart as its
//! dependency) on a real kubelet, and a workload pod reads its secrets through the chart's
//! DaemonSets from keyvault-emulator; `helm upgrade` changes the rotation settings, `helm
//! uninstall` takes everything away again.
//!
//! What a real cluster has and this node lacks is stood in for by `test_support` (see its
//! `stand_ins` module): a pod network (bridge CNI inside the test's network namespace), the
//! `kubernetes` Service IP (an address on `lo` and a relay to the apiserver), and the
//! DaemonSet/Job/garbage-collection/root-CA controllers. The provider reaches the emulator as an
//! Azure Stack Hub user's provider reaches its cloud: a cloud env file and a CA bundle mounted
//! through the chart's `linux.volumes`, `linux.volumeMounts` and `linux.env` values.
//!
//! `harness = false`: the process enters a private mount + network namespace before any thread.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Pod, Secret},
    storage::v1::CSINode,
};
use keyvault_emulator::{Emulator, EmulatorConfig};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use libtest_mimic::{Arguments, Failed, Trial};
use test_support::{
    ControlPlane, Controllers, HostsOverride, KUBERNETES_SERVICE_IP, Node, NodeOptions, Peer,
    PrivateNamespaces, ServiceRelay, peer, project_root,
};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const POD_CIDR: &str = "10.244.0.0/24";
const NS: &str = "apps";
const SYSTEM_NS: &str = "kube-system";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SP: &str = "11111111-1111-1111-1111-111111111111";
const SP_SECRET: &str = "chart-e2e-sp-secret";
const SYNC: Duration = Duration::from_secs(10);
const IMAGES: &[&str] = &[
    "secrets-store-csi-driver.tar",
    "secrets-store-provider-azure.tar",
];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let trial = Trial::test("helm_install_on_a_real_node", move || {
        install_on_a_real_node().map_err(|e| Failed::from(format!("{e:#}")))
    });
    if args.list {
        return libtest_mimic::run(&args, vec![trial]).exit_code();
    }
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !root {
        if ci {
            eprintln!("real_node_chart: the real node needs root (CAP_SYS_ADMIN) under CI=true");
            return ExitCode::FAILURE;
        }
        eprintln!("SKIPPING real_node_chart (not in CI): it needs root");
        return ExitCode::SUCCESS;
    }
    let namespaces = match PrivateNamespaces::enter(NODE_IP) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("real_node_chart: {e}");
            return ExitCode::FAILURE;
        }
    };
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    let leaked = namespaces.leaked_host_paths();
    if !leaked.is_empty() {
        eprintln!("real_node_chart: folders appeared on the machine: {leaked:?}");
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

/// The image archives, or `None` (outside CI) when they are not built.
fn image_archives() -> anyhow::Result<Option<Vec<PathBuf>>> {
    let dir = project_root().join("target/images");
    let paths: Vec<PathBuf> = IMAGES.iter().map(|i| dir.join(i)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        let msg = format!(
            "the image archive {} is missing: build the images with `bash scripts/images.sh`",
            missing.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            bail!(msg);
        }
        eprintln!("SKIPPING TEST (not in CI): {msg}");
        return Ok(None);
    }
    Ok(Some(paths))
}

fn helm(args: &[&str]) -> anyhow::Result<String> {
    let bin = peer(Peer::Helm).context("helm is not installed (bash scripts/peers.sh helm)")?;
    e2e::helm(&bin, args).map_err(anyhow::Error::msg)
}

fn install_on_a_real_node() -> anyhow::Result<()> {
    let Some(archives) = image_archives()? else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(scenario(&archives))
}

fn seed() -> String {
    format!(
        r#"
tenant: {TENANT}
vaults:
  - name: kv1
    access: [{SP}]
    secrets:
      - {{ name: plain, value: "installed by helm" }}
identities:
  service_principals:
    - {{ client_id: {SP}, client_secret: {SP_SECRET} }}
"#
    )
}

/// The chart values, written with upstream's value names only (a user migrating keeps their
/// file): the emulator's CA replaces the image's bundle through `linux.volumes` and
/// `linux.volumeMounts`, as an Azure Stack Hub user adds their private CA.
fn values(
    kubelet_dir: &Path,
    cloud_dir: &Path,
    certs_dir: &Path,
    rotation: &str,
    sync: bool,
) -> String {
    format!(
        r#"linux:
  volumes:
    - name: azure-stack
      hostPath: {{ path: {cloud}, type: Directory }}
    - name: ca-certificates
      hostPath: {{ path: {certs}, type: Directory }}
  volumeMounts:
    - name: azure-stack
      mountPath: /etc/azure-stack
      readOnly: true
    - name: ca-certificates
      mountPath: /etc/ssl/certs
      readOnly: true
secrets-store-csi-driver:
  install: true
  enableSecretRotation: true
  rotationPollInterval: {rotation}
  syncSecret:
    enabled: {sync}
  linux:
    kubeletRootDir: {kubelet}
    tolerations:
      - operator: Exists
"#,
        cloud = cloud_dir.display(),
        certs = certs_dir.display(),
        kubelet = kubelet_dir.display(),
    )
}

async fn scenario(archives: &[PathBuf]) -> anyhow::Result<()> {
    let cp = ControlPlane::start()
        .await
        .context("control plane peers missing")??;
    let client = cp.client();
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed())?).await?;
    let hosts = HostsOverride::new(&[(&emu.vault_host("kv1"), emu.https_addr().ip())])?;
    PrivateNamespaces::bind_etc_hosts_file(hosts.path())?;

    // kube-proxy's part: the `kubernetes` Service IP on lo, relayed to the apiserver.
    let service_ip = Ipv4Addr::from(KUBERNETES_SERVICE_IP);
    let status = Command::new("ip")
        .args(["addr", "add", &format!("{service_ip}/32"), "dev", "lo"])
        .status()?;
    ensure!(status.success(), "adding {service_ip} to lo");
    let apiserver: SocketAddr = cp
        .url()
        .trim_start_matches("https://")
        .parse()
        .context("apiserver address")?;
    let _relay = ServiceRelay::start(SocketAddr::from((service_ip, 443)), apiserver).await?;

    let mut node = Node::start(
        &cp,
        NODE_IP,
        NodeOptions {
            sync_frequency: SYNC,
            pod_cidr: Some(POD_CIDR.into()),
            ..NodeOptions::default()
        },
    )
    .await
    .context("node peers missing")??;
    node.keep_logs_in(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-node-chart-logs"));
    let _controllers = Controllers::start(
        client.clone(),
        node.name(),
        cp.ca_pem(),
        Duration::from_millis(500),
    );
    for archive in archives {
        node.ctr(&["images", "import", &archive.display().to_string()])?;
    }

    // The Azure Stack user's files: cloud env file and CA bundle on the node.
    let cloud = node.scratch("azure-stack")?;
    let certs = node.scratch("ca-certificates")?;
    std::fs::write(certs.join("ca-certificates.crt"), emu.ca_pem())?;
    std::fs::write(
        cloud.join("cloud.json"),
        emu.azure_stack_environment().to_string(),
    )?;
    let values_file = node.scratch("helm")?.join("values.yaml");
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let values_arg = values_file.display().to_string();
    // `helm install` or `helm upgrade` of the release with the given driver settings.
    let release = |verb: &str, rotation: &str, sync: bool| -> anyhow::Result<()> {
        std::fs::write(
            &values_file,
            values(&node.kubelet_dir(), &cloud, &certs, rotation, sync),
        )?;
        helm(&[
            verb,
            "sscsi",
            "charts/csi-secrets-store-provider-azure",
            "--namespace",
            SYSTEM_NS,
            "--kubeconfig",
            &kubeconfig,
            "-f",
            &values_arg,
            "--wait",
            "--timeout",
            "3m",
        ])
        .map_err(|e| anyhow::anyhow!("{e}\n{}", node.kubelet_log()))?;
        Ok(())
    };

    let result = async {
        helm(&["dependency", "build", "charts/csi-secrets-store-provider-azure"])?;
        let start = Instant::now();
        release("install", "2s", true)?;
        let installed = start.elapsed();
        // helm's --wait counts a DaemonSet with maxUnavailable 1 on one node as ready before its
        // pod is (0 expected ready), as on any one-node cluster; wait for the pods ourselves.
        for name in ["secrets-store-csi-driver", "csi-secrets-store-provider-azure"] {
            let api = Api::<DaemonSet>::namespaced(client.clone(), SYSTEM_NS);
            loop {
                let ready = api.get(name).await?.status.map(|s| s.number_ready).unwrap_or(0);
                if ready == 1 {
                    break;
                }
                ensure!(
                    start.elapsed() < Duration::from_secs(180),
                    "DaemonSet {name}: {ready} ready\n{}",
                    node.kubelet_log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        println!(
            "helm install returned after {:.1}s (CRD hook Job included); both DaemonSets Ready after {:.1}s",
            installed.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
        // The chart's driver registered itself (no registrar sidecar).
        let csinode = Api::<CSINode>::all(client.clone()).get(node.name()).await?;
        ensure!(
            csinode.spec.drivers.iter().any(|d| d.name == "secrets-store.csi.k8s.io"),
            "driver not registered: {:?}",
            csinode.spec.drivers
        );

        // A workload in the pod network reads its secret.
        cp.create_service_account(NS, "default").await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({
                    "metadata": { "name": "sp-creds", "namespace": NS },
                    "stringData": { "clientid": SP, "clientsecret": SP_SECRET },
                }))?,
            )
            .await?;
        let classes: Api<secrets_store_api::v1::SecretProviderClass> =
            Api::namespaced(client.clone(), NS);
        classes
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                    "kind": "SecretProviderClass",
                    "metadata": { "name": "kv", "namespace": NS },
                    "spec": {
                        "provider": "azure",
                        "parameters": {
                            "keyvaultName": "kv1",
                            "tenantId": TENANT,
                            "cloudName": "AzureStackCloud",
                            "cloudEnvFileName": "/etc/azure-stack/cloud.json",
                            "objects": "array:\n  - |\n    objectName: plain\n    objectType: secret\n",
                        },
                        "secretObjects": [{
                            "secretName": "synced",
                            "type": "Opaque",
                            "data": [{ "objectName": "plain", "key": "value" }],
                        }],
                    },
                }))?,
            )
            .await?;
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": "workload", "namespace": NS },
            "spec": {
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "app",
                    "image": test_support::workload_image(),
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                    "volumeMounts": [{ "name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true }],
                }],
                "volumes": [{
                    "name": "secrets",
                    "csi": {
                        "driver": "secrets-store.csi.k8s.io",
                        "readOnly": true,
                        "volumeAttributes": { "secretProviderClass": "kv" },
                        "nodePublishSecretRef": { "name": "sp-creds" },
                    },
                }],
            },
        }))?;
        let workload = pod.clone();
        let pod = node.run_pod(pod, Duration::from_secs(120)).await?;
        let got = node.exec(&pod, "app", &["cat", "/mnt/secrets/plain"])?;
        ensure!(got == "installed by helm", "workload reads {got:?}");
        let synced = secrets.get("synced").await?;
        ensure!(
            synced.data.as_ref().and_then(|d| d.get("value")).is_some_and(|v| v.0 == b"installed by helm"),
            "synced Secret"
        );
        println!("our pods on the node: {}", pod_memory(&node)?);

        // Rotation through the chart's settings.
        emu.admin().set_secret("kv1", "plain", "rotated under helm").await?;
        wait_content(&node, &pod, "rotated under helm", SYNC * 3 + Duration::from_secs(20)).await?;

        // helm upgrade: a new rotation interval reaches the driver's new pod.
        release("upgrade", "3s", true)?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NS);
        let driver_pods = pods.list(&ListParams::default().labels("app=secrets-store-csi-driver")).await?;
        let args: Vec<String> = driver_pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| c.args.clone().unwrap_or_default()))
            .collect();
        ensure!(args.iter().any(|a| a == "--rotation-poll-interval=3s"), "driver args after upgrade: {args:?}");
        emu.admin().set_secret("kv1", "plain", "rotated after upgrade").await?;
        wait_content(&node, &pod, "rotated after upgrade", SYNC * 3 + Duration::from_secs(40)).await?;

        node.delete_pod(NS, "workload", Duration::from_secs(60)).await?;

        // Least privilege: with syncSecret.enabled=false the driver has no Secret permissions;
        // a class that asks for sync still mounts, and the pod gets an Event saying what to set.
        release("upgrade", "3s", false)?;
        let mut nosync = workload.clone();
        nosync.metadata.name = Some("nosync".into());
        let nosync = node.run_pod(nosync, Duration::from_secs(120)).await?;
        let got = node.exec(&nosync, "app", &["cat", "/mnt/secrets/plain"])?;
        ensure!(got == "rotated after upgrade", "nosync reads {got:?}");
        let start = Instant::now();
        loop {
            let events = node.event_messages(NS, "nosync").await;
            if let Some(e) = events.iter().find(|e| e.contains("syncSecret.enabled=true")) {
                println!("with syncSecret.enabled=false: {e}");
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "no Event about Secret sync: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        node.delete_pod(NS, "nosync", Duration::from_secs(60)).await?;
        helm(&["uninstall", "sscsi", "--namespace", SYSTEM_NS, "--kubeconfig", &kubeconfig, "--wait"])?;
        let start = Instant::now();
        loop {
            let left = pods.list(&ListParams::default()).await?.items.len();
            if left == 0 {
                break;
            }
            ensure!(start.elapsed() < Duration::from_secs(60), "{left} pods left in {SYSTEM_NS} after uninstall");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Nothing of the release is left: no DaemonSet, and kubelet dropped the driver when its
        // registration socket went away.
        let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), SYSTEM_NS)
            .list(&ListParams::default())
            .await?;
        ensure!(daemonsets.items.is_empty(), "DaemonSets left after uninstall");
        let csinodes: Api<CSINode> = Api::all(client.clone());
        loop {
            let drivers = csinodes.get(node.name()).await?.spec.drivers;
            if drivers.iter().all(|d| d.name != "secrets-store.csi.k8s.io") {
                break;
            }
            ensure!(start.elapsed() < Duration::from_secs(60), "kubelet still lists the driver");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok(())
    }
    .await;
    drop(_controllers);
    let stopped = node.stop();
    result?;
    stopped?;
    drop(emu);
    drop(cp);
    Ok(())
}

async fn wait_content(node: &Node, pod: &Pod, want: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let got = node
            .exec(pod, "app", &["cat", "/mnt/secrets/plain"])
            .unwrap_or_default();
        if got == want {
            println!(
                "rotation to {want:?} reached the workload in {:.1}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        ensure!(
            start.elapsed() < timeout,
            "the workload still reads {got:?}, not {want:?}\n{}",
            node.kubelet_log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// RSS of the chart's containers (driver, provider) on the node.
fn pod_memory(node: &Node) -> anyhow::Result<String> {
    let tasks = node.ctr(&["tasks", "ls"])?;
    let mut out = Vec::new();
    for line in tasks.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(id), Some(pid)) = (f.next(), f.next()) else {
            continue;
        };
        let info = node.ctr(&["containers", "info", id]).unwrap_or_default();
        let image = ["secrets-store-csi-driver", "secrets-store-provider-azure"]
            .into_iter()
            .find(|i| info.contains(&format!("{i}:")));
        let Some(image) = image else {
            continue;
        };
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
            })
            .unwrap_or_default();
        out.push(format!("{image} RSS {rss} KiB"));
    }
    Ok(out.join(", "))
}
