//! The real node: a real kubelet (v1.34, built from the Go module proxy) with a real containerd
//! runs pods whose inline `secrets-store.csi.k8s.io` volumes our driver mounts through our Azure
//! provider against keyvault-emulator. kubelet's own CSI client makes every call: registration
//! through the plugin watcher, NodePublishVolume with the pod info and the service-account token
//! it mints, periodic republish, NodeUnpublishVolume on deletion, volume reconstruction after a
//! restart.
//!
//! The whole test process runs in a private mount + network namespace (entered in `main`, before
//! any thread starts): the control plane, emulator, provider, driver, containerd, kubelet and the
//! pods (hostNetwork) all talk over that namespace's loopback. The last test stops the node and
//! asserts that nothing of it is left on the machine.
//!
//! `harness = false`: the scenarios share one node, run in order, one at a time (libtest-mimic
//! keeps cargo's filtering and listing).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, ExitCode},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::{
    core::v1::{Pod, Secret},
    storage::v1::{CSIDriver, CSINode},
};
use keyvault_emulator::{Emulator, EmulatorConfig, Fault};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use libtest_mimic::{Arguments, Failed, Trial};
use secrets_store_api::v1::{SecretProviderClass, SecretProviderClassPodStatus};
use test_support::{
    ChildGuard, ControlPlane, HostsOverride, Node, NodeOptions, PrivateNamespaces, project_root,
};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const DRIVER: &str = "secrets-store.csi.k8s.io";
const NS: &str = "node-e2e";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SP: &str = "11111111-1111-1111-1111-111111111111";
const SP_SECRET: &str = "node-e2e-sp-secret";
const OUTSIDER: &str = "33333333-3333-3333-3333-333333333333";
const OUTSIDER_SECRET: &str = "node-e2e-outsider-secret";
const MI: &str = "22222222-2222-2222-2222-222222222222";
const UAMI: &str = "44444444-4444-4444-4444-444444444444";
const WI: &str = "55555555-5555-5555-5555-555555555555";
/// The driver's own liveness endpoint (no livenessprobe sidecar).
const HEALTH_PORT: u16 = 19808;
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// kubelet's sync period, which is also its republish period (× 1–1.5 jitter).
const SYNC: Duration = Duration::from_secs(10);
/// The driver's `--rotation-poll-interval`. The provider runs with its default `--cache-ttl`
/// (2m): a vault change must still reach the files within this + one republish period.
const POLL: Duration = Duration::from_secs(8);

type Scenario = fn(&mut World) -> Result<(), Failed>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("kubelet_registers_the_driver", kubelet_registers_the_driver),
    (
        "pod_reads_its_files_with_pod_status_and_synced_secret",
        pod_reads_its_files,
    ),
    (
        "fs_group_owns_the_files_so_a_non_root_user_reads_0640",
        fs_group_owns_the_files,
    ),
    (
        "selection_optional_json_keys_template_and_fs_group_in_one_pod",
        beyond_upstream_in_one_pod,
    ),
    (
        "secret_sync_without_a_mount_feeds_a_pod_env",
        secret_sync_feeds_env,
    ),
    (
        "new_pod_starts_from_last_known_good_during_a_key_vault_outage",
        last_known_good,
    ),
    ("every_identity_mode_through_kubelet", every_identity_mode),
    (
        "rotation_within_poll_interval_and_one_republish_with_the_default_cache_ttl",
        rotation_within_poll_and_republish,
    ),
    (
        "rotation_reaches_the_container_through_republish",
        rotation_reaches_the_container,
    ),
    (
        "broken_classes_leave_the_pod_waiting_with_an_event",
        broken_classes,
    ),
    ("driver_restart_keeps_mounts_serving", driver_restart),
    ("provider_restart_keeps_mounts_serving", provider_restart),
    ("kubelet_restart_reconstructs_volumes", kubelet_restart),
    (
        "pod_deletion_unpublishes_the_volume",
        pod_deletion_unpublishes,
    ),
    ("bench_pod_startup_against_empty_dir", bench_pod_startup),
    ("node_stops_and_leaves_nothing_behind", node_stops_clean),
];

static WORLD: Mutex<Option<Result<World, String>>> = Mutex::new(None);

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One node, one scenario after another.
    args.test_threads = Some(1);
    let listing = args.list;
    let mut namespaces = None;
    if !listing {
        match enter_namespaces() {
            Ok(ns) => namespaces = ns,
            Err(e) => {
                eprintln!("real_node: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let trials = SCENARIOS
        .iter()
        .map(|(name, f)| {
            let f = *f;
            let available = namespaces.is_some() || listing;
            Trial::test(*name, move || {
                if !available {
                    // Not root and not in CI: enter_namespaces printed why.
                    return Ok(());
                }
                with_world(f)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Whatever ran, the world goes down here (the last scenario already checked leftovers when
    // it was selected).
    if let Ok(mut w) = WORLD.lock()
        && let Some(Ok(world)) = w.take()
    {
        world.shutdown();
    }
    if let Some(ns) = &namespaces {
        let leaked = ns.leaked_host_paths();
        if !leaked.is_empty() {
            eprintln!("real_node: folders appeared on the machine: {leaked:?}");
            return ExitCode::FAILURE;
        }
    }
    conclusion.exit_code()
}

fn enter_namespaces() -> Result<Option<PrivateNamespaces>, String> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !root {
        if ci {
            return Err("the real node needs root (CAP_SYS_ADMIN) and CI=true".into());
        }
        eprintln!("SKIPPING real_node (not in CI): it needs root to run kubelet and containerd");
        return Ok(None);
    }
    PrivateNamespaces::enter(NODE_IP)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn with_world(f: Scenario) -> Result<(), Failed> {
    let mut guard = WORLD.lock().map_err(|_| "a previous scenario panicked")?;
    if guard.is_none() {
        *guard = Some(World::start());
    }
    match guard.as_mut() {
        Some(Ok(world)) => f(world),
        Some(Err(e)) => Err(format!("the node could not start: {e}").into()),
        None => Err("unreachable: no world".into()),
    }
}

/// Everything the scenarios share: the runtime and the peers.
struct World {
    rt: tokio::runtime::Runtime,
    env: Env,
}

struct Env {
    // Drop order: our daemons, then the node, then the emulator and the control plane.
    driver: Option<ChildGuard>,
    provider: Option<ChildGuard>,
    node: Option<Node>,
    emu: Emulator,
    _cp: ControlPlane,
    client: Client,
    _hosts: HostsOverride,
    driver_cmd: Vec<String>,
    provider_cmd: Vec<String>,
    provider_env: Vec<(String, String)>,
    starts: u32,
    env_file: PathBuf,
    scratch: PathBuf,
    /// Where the provider's socket is (`--provider-volume` of the driver).
    providers: PathBuf,
}

impl World {
    fn start() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let env = rt.block_on(Env::start()).map_err(|e| format!("{e:#}"))?;
        Ok(Self { rt, env })
    }

    fn shutdown(self) {
        let World { rt, env } = self;
        let _guard = rt.enter();
        drop(env);
        drop(rt);
    }
}

impl Env {
    async fn start() -> anyhow::Result<Self> {
        let cp = ControlPlane::start()
            .await
            .context("the control plane peers are missing")??;
        let client = cp.client();
        for crd in [
            "secrets-store.csi.x-k8s.io_secretproviderclasses",
            "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses",
            "secret-sync.x-k8s.io_secretsyncs",
        ] {
            let path = project_root().join(format!("deploy/crds/{crd}.yaml"));
            cp.apply_crd_yaml(&std::fs::read_to_string(&path)?).await?;
        }
        let csidriver: CSIDriver = serde_saphyr::from_str(&std::fs::read_to_string(
            project_root().join("deploy/csidriver.yaml"),
        )?)?;
        Api::<CSIDriver>::all(client.clone())
            .create(&PostParams::default(), &csidriver)
            .await?;
        cp.create_service_account(NS, "default").await?;
        cp.create_service_account(NS, "workload").await?;

        let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed(&cp))?).await?;
        let hosts = HostsOverride::new(&[(&emu.vault_host("kv1"), emu.https_addr().ip())])?;
        PrivateNamespaces::bind_etc_hosts_file(hosts.path())?;

        let mut node = Node::start(
            &cp,
            NODE_IP,
            NodeOptions {
                sync_frequency: SYNC,
                ..NodeOptions::default()
            },
        )
        .await
        .context("the node peers are missing")??;
        // Logs of the last run (kubelet, containerd, driver, provider, pods) stay here.
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-node-logs");
        let _ = std::fs::remove_dir_all(&logs);
        node.keep_logs_in(logs);
        let scratch = node.scratch("e2e")?;
        let ca_file = scratch.join("emulator-ca.pem");
        std::fs::write(&ca_file, emu.ca_pem())?;
        let env_file = scratch.join("azurestackcloud.json");
        std::fs::write(&env_file, emu.azure_stack_environment().to_string())?;
        let providers = scratch.join("providers");
        std::fs::create_dir_all(&providers)?;
        let plugin_dir = node.plugin_dir(DRIVER)?;
        let bin = |name: &str| e2e::workspace_binary(name).display().to_string();
        let provider_cmd = vec![
            bin("secrets-store-provider-azure"),
            format!("--endpoint=unix://{}/azure.sock", providers.display()),
            "--healthz-port=0".into(),
            "--prometheus-port=0".into(),
            // The default --cache-ttl (2m): the driver's max age keeps rotation prompt.
            "-v=2".into(),
        ];
        let provider_env = vec![
            ("SSL_CERT_FILE".into(), ca_file.display().to_string()),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST".into(), emu.imds_url()),
            ("AZURE_NMI_ENDPOINT".into(), emu.nmi_url()),
        ];
        let driver_cmd = vec![
            bin("secrets-store-csi-driver"),
            format!("--endpoint=unix://{}/csi.sock", plugin_dir.display()),
            format!("--nodeid={}", node.name()),
            format!("--provider-volume={}", providers.display()),
            "--additional-provider-volume-paths".into(),
            format!(
                "--plugin-registration-dir={}",
                node.plugins_registry_dir().display()
            ),
            format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            "--enable-secret-rotation=true".into(),
            format!("--rotation-poll-interval={}ms", POLL.as_millis()),
            "--metrics-addr=127.0.0.1:18095".into(),
            format!("--health-addr=127.0.0.1:{HEALTH_PORT}"),
            "-v=2".into(),
        ];
        let mut env = Env {
            driver: None,
            provider: None,
            node: Some(node),
            emu,
            _cp: cp,
            client,
            _hosts: hosts,
            driver_cmd,
            provider_cmd,
            provider_env,
            starts: 0,
            env_file,
            scratch,
            providers,
        };
        env.start_provider()?;
        env.start_driver()?;
        env.apply_classes().await?;
        Ok(env)
    }

    fn node(&self) -> &Node {
        self.node
            .as_ref()
            .expect("the node runs until the last scenario")
    }

    fn start_provider(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(&self.provider_cmd[0]);
        cmd.args(&self.provider_cmd[1..]);
        for (k, v) in &self.provider_env {
            cmd.env(k, v);
        }
        let log = self.scratch.join(format!("provider.{}.log", self.starts));
        self.provider = Some(ChildGuard::spawn("provider", cmd, &log)?);
        Ok(())
    }

    fn start_driver(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(&self.driver_cmd[0]);
        cmd.args(&self.driver_cmd[1..]);
        let log = self.scratch.join(format!("driver.{}.log", self.starts));
        self.driver = Some(ChildGuard::spawn("driver", cmd, &log)?);
        Ok(())
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.driver {
            s.push_str(&d.log_tail(4000));
        }
        if let Some(p) = &self.provider {
            s.push_str(&p.log_tail(4000));
        }
        s
    }

    /// The classes the scenarios use; every identity mode reads the same secret.
    async fn apply_classes(&self) -> anyhow::Result<()> {
        let objects = "array:\n  - |\n    objectName: plain\n    objectType: secret\n  - |\n    objectName: ec1\n    objectType: key\n";
        let sync = serde_json::json!([{
            "secretName": "synced-plain",
            "type": "Opaque",
            "data": [{ "objectName": "plain", "key": "value" }],
        }]);
        let env_file = self.env_file.display().to_string();
        // (name, parameters beyond the common ones, secretObjects)
        type ClassDef<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<serde_json::Value>);
        let classes: Vec<ClassDef<'_>> = vec![
            ("sp", vec![], Some(sync)),
            (
                "beyond",
                vec![("objects", BEYOND_OBJECTS), ("templates", BEYOND_TEMPLATES)],
                None,
            ),
            ("stale", vec![("maxStaleness", "1h")], None),
            (
                "sp-0640",
                vec![(
                    "objects",
                    "array:\n  - |\n    objectName: plain\n    objectType: secret\n    filePermission: \"0640\"\n",
                )],
                None,
            ),
            ("workload", vec![("clientID", WI)], None),
            ("pod-identity", vec![("usePodIdentity", "true")], None),
            (
                "vm-identity",
                vec![
                    ("useVMManagedIdentity", "true"),
                    ("userAssignedIdentityID", UAMI),
                ],
                None,
            ),
        ];
        let api: Api<SecretProviderClass> = Api::namespaced(self.client.clone(), NS);
        for (name, extra, secret_objects) in classes {
            let mut params = serde_json::json!({
                "keyvaultName": "kv1",
                "tenantId": TENANT,
                "cloudName": "AzureStackCloud",
                "cloudEnvFileName": env_file,
                "objects": objects,
            });
            for (k, v) in extra {
                params[k] = serde_json::Value::from(v);
            }
            let mut spec = serde_json::json!({ "provider": "azure", "parameters": params });
            if let Some(so) = secret_objects {
                spec["secretObjects"] = so;
            }
            let class: SecretProviderClass = serde_json::from_value(serde_json::json!({
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": { "name": name, "namespace": NS },
                "spec": spec,
            }))?;
            api.create(&PostParams::default(), &class).await?;
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        for (name, id, secret) in [
            ("sp-creds", SP, SP_SECRET),
            ("outsider-creds", OUTSIDER, OUTSIDER_SECRET),
        ] {
            let s: Secret = serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": NS },
                "stringData": { "clientid": id, "clientsecret": secret },
            }))?;
            secrets.create(&PostParams::default(), &s).await?;
        }
        Ok(())
    }

    async fn run_pod(&self, pod: Pod) -> anyhow::Result<Pod> {
        self.node()
            .run_pod(pod, POD_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    async fn pod(&self, name: &str) -> anyhow::Result<Pod> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), NS)
            .get(name)
            .await?)
    }

    fn cat(&self, pod: &Pod, path: &str) -> anyhow::Result<String> {
        Ok(self.node().exec(pod, "app", &["cat", path])?)
    }

    /// Waits until the container reads `want` at `path`; returns how long that took.
    async fn wait_content(
        &self,
        pod: &Pod,
        path: &str,
        want: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let got = self.cat(pod, path).unwrap_or_default();
            if got == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{path} in the container still reads {got:?} after {timeout:?}, not {want:?}\n{}\n{}",
                    self.logs(),
                    self.node().kubelet_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn set_secret(&self, value: &str) -> anyhow::Result<()> {
        self.emu.admin().set_secret("kv1", "plain", value).await?;
        Ok(())
    }

    /// Mount points inside the pod's folder of kubelet's root dir.
    fn pod_mounts(&self, pod: &Pod) -> Vec<PathBuf> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        Node::mounts_under(&self.node().kubelet_dir().join("pods").join(uid))
    }
}

// === pods ===

fn csi_volume(name: &str, class: &str, creds: Option<&str>) -> serde_json::Value {
    let mut csi = serde_json::json!({
        "driver": DRIVER,
        "readOnly": true,
        "volumeAttributes": { "secretProviderClass": class },
    });
    if let Some(c) = creds {
        csi["nodePublishSecretRef"] = serde_json::json!({ "name": c });
    }
    serde_json::json!({ "name": name, "csi": csi })
}

/// A hostNetwork busybox pod that mounts `volumes` at `/mnt/<volume name>` and sleeps.
fn pod(name: &str, service_account: &str, volumes: Vec<serde_json::Value>) -> Pod {
    let mounts: Vec<_> = volumes
        .iter()
        .map(|v| {
            let n = v["name"].as_str().unwrap_or_default();
            serde_json::json!({ "name": n, "mountPath": format!("/mnt/{n}"), "readOnly": true })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "hostNetwork": true,
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "app",
                "image": test_support::workload_image(),
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "ls /mnt/*; trap 'exit 0' TERM; while true; do sleep 1; done"],
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    }))
    .expect("a valid pod")
}

fn seed(cp: &ControlPlane) -> String {
    let ca: String = cp
        .ca_pem()
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        r#"
tenant: {TENANT}
vaults:
  - name: kv1
    access: [{SP}, {MI}, {UAMI}, {WI}]
    secrets:
      - {{ name: plain, value: "initial value" }}
      - {{ name: app-user, value: alice, tags: {{ team: web }} }}
      - {{ name: app-token, value: t0k3n, tags: {{ team: web }} }}
      - {{ name: db, value: '{{"username": "app", "password": "pw-1"}}' }}
    keys:
      - {{ name: ec1, kty: EC, crv: P-256 }}
identities:
  service_principals:
    - {{ client_id: {SP}, client_secret: {SP_SECRET} }}
    - {{ client_id: {OUTSIDER}, client_secret: {OUTSIDER_SECRET} }}
    - client_id: {WI}
      federated_credentials:
        - {{ issuer: "{issuer}", subject: "system:serviceaccount:{NS}:workload" }}
  managed_identities:
    - {{ client_id: {MI}, default: true }}
    - {{ client_id: {UAMI} }}
  pod_identities:
    - {{ namespace: {NS}, pod: identities, client_id: {MI} }}
issuers:
  - issuer: "{issuer}"
    jwks_uri: "{url}/openid/v1/jwks"
    bearer_token: "{token}"
    ca_pem: |
{ca}"#,
        issuer = cp.issuer(),
        url = cp.url().trim_end_matches('/'),
        token = cp.admin_token(),
    )
}

fn run(w: &mut World, f: impl AsyncFnOnce(&mut Env) -> anyhow::Result<()>) -> Result<(), Failed> {
    let World { rt, env } = w;
    rt.block_on(f(env))
        .map_err(|e| Failed::from(format!("{e:#}")))
}

// === scenarios ===

fn kubelet_registers_the_driver(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let api: Api<CSINode> = Api::all(env.client.clone());
        let node = env.node().name().to_owned();
        let start = Instant::now();
        loop {
            let drivers: Vec<String> = api
                .get_opt(&node)
                .await?
                .map(|n| {
                    n.spec
                        .drivers
                        .iter()
                        .map(|d| format!("{}={}", d.name, d.node_id))
                        .collect()
                })
                .unwrap_or_default();
            if drivers.iter().any(|d| d == &format!("{DRIVER}={node}")) {
                println!(
                    "kubelet registered {DRIVER} in CSINode {node} after {:?}",
                    start.elapsed()
                );
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "CSINode {node} lists {drivers:?}, not {DRIVER}\n{}\n{}",
                    env.logs(),
                    env.node().kubelet_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let verdict = env.node().kubelet_log_lines("Register new plugin");
        ensure!(!verdict.is_empty(), "kubelet never logged the registration");
        // The built-in liveness endpoint probes the same socket kubelet uses.
        let health = http_get(HEALTH_PORT, "/healthz").await?;
        ensure!(
            health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
            "{health}"
        );
        ensure!(health.ends_with("ok"), "{health}");
        Ok(())
    })
}

fn pod_reads_its_files(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let pod = env
            .run_pod(pod(
                "files",
                "default",
                vec![csi_volume("secrets", "sp", Some("sp-creds"))],
            ))
            .await?;
        ensure!(
            env.cat(&pod, "/mnt/secrets/plain")? == "initial value",
            "the secret file"
        );
        // The files were there when the container started (its first command lists them).
        let log = env.node().pod_log(&pod, "app")?;
        ensure!(
            log.lines().any(|l| l == "plain") && log.lines().any(|l| l == "ec1"),
            "container log: {log}"
        );
        let key = env.cat(&pod, "/mnt/secrets/ec1")?;
        ensure!(
            key.starts_with("-----BEGIN PUBLIC KEY-----"),
            "the key file: {key}"
        );
        let mounts = env.node().exec(&pod, "app", &["cat", "/proc/mounts"])?;
        ensure!(
            mounts.lines().any(|l| l.starts_with("tmpfs /mnt/secrets ")),
            "/mnt/secrets is not a tmpfs in the container:\n{mounts}"
        );
        // kubelet passed the pod's identity: the driver wrote its status object and synced.
        let statuses: Api<SecretProviderClassPodStatus> = Api::namespaced(env.client.clone(), NS);
        let name = secrets_store_api::pod_status_name("files", NS, "sp");
        let status = statuses.get(&name).await?.status.unwrap_or_default();
        ensure!(status.mounted && status.pod_name == "files", "{status:?}");
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        ensure!(
            status.target_path.contains(&uid),
            "target path {}",
            status.target_path
        );
        let mut ids: Vec<_> = status.objects.iter().map(|o| o.id.as_str()).collect();
        ids.sort_unstable();
        ensure!(ids == ["key/ec1", "secret/plain"], "objects {ids:?}");
        let secret = Api::<Secret>::namespaced(env.client.clone(), NS)
            .get("synced-plain")
            .await?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .map(|b| b.0.clone());
        ensure!(
            value.as_deref() == Some(b"initial value".as_slice()),
            "synced Secret"
        );
        Ok(())
    })
}

/// The pod's fsGroup reaches the driver (VOLUME_MOUNT_GROUP): with the object's
/// `filePermission: "0640"` the
/// files are root's and the fsGroup's, so the container's non-root user (kubelet gives it the
/// fsGroup as a supplementary group) reads them. Without the ownership it could not.
fn fs_group_owns_the_files(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let mut spec = pod(
            "fsgroup",
            "default",
            vec![csi_volume("secrets", "sp-0640", Some("sp-creds"))],
        );
        if let Some(s) = spec.spec.as_mut() {
            s.security_context = Some(serde_json::from_value(serde_json::json!({
                "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
            }))?);
        }
        let pod = env.run_pod(spec).await?;
        let stat = env.node().exec(
            &pod,
            "app",
            &["stat", "-L", "-c", "%u %g %a", "/mnt/secrets/plain"],
        )?;
        ensure!(stat.trim() == "0 2000 640", "owner, group, mode: {stat}");
        ensure!(
            env.cat(&pod, "/mnt/secrets/plain")? == "initial value",
            "uid 1000 with supplementary group 2000 reads the 0640 file"
        );
        let id = env.node().exec(&pod, "app", &["id"])?;
        ensure!(id.contains("uid=1000") && id.contains("2000"), "id: {id}");
        env.node().delete_pod(NS, "fsgroup", POD_TIMEOUT).await?;
        Ok(())
    })
}

/// Issue 16's class: a prefix selection into a folder, an optional object that does not exist,
/// JSON keys of a secret, and a template over all of them.
const BEYOND_OBJECTS: &str = r#"array:
  - |
    objectNamePrefix: app-
    objectType: secret
    objectAlias: app
  - |
    objectName: missing-one
    objectType: secret
    optional: "true"
  - |
    objectName: db
    objectType: secret
    jmesPath:
      - path: username
        objectAlias: db-user
      - path: password
        objectAlias: db-password
"#;

const BEYOND_TEMPLATES: &str = r#"- path: app.env
  template: |
    USER={{ files["app/app-user"] }}
    TOKEN={{ files["app/app-token"] }}
    DB_PASSWORD={{ files["db-password"] }}
    {% if files["missing-one"] is defined %}MISSING=present{% else %}MISSING=absent{% endif %}
"#;

/// Everything of issue 16 in one pod through kubelet, as a non-root user with an fsGroup: the
/// selected objects in their folder, no file and one Warning Event for the optional object,
/// the JSON keys as files, the rendered template, all group-owned by the fsGroup.
fn beyond_upstream_in_one_pod(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let mut spec = pod(
            "beyond",
            "default",
            vec![csi_volume("secrets", "beyond", Some("sp-creds"))],
        );
        if let Some(s) = spec.spec.as_mut() {
            s.security_context = Some(serde_json::from_value(serde_json::json!({
                "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
            }))?);
        }
        let pod = env.run_pod(spec).await?;
        for (path, want) in [
            ("app/app-user", "alice"),
            ("app/app-token", "t0k3n"),
            ("db-user", "app"),
            ("db-password", "pw-1"),
            (
                "app.env",
                "USER=alice\nTOKEN=t0k3n\nDB_PASSWORD=pw-1\nMISSING=absent\n",
            ),
        ] {
            let got = env.cat(&pod, &format!("/mnt/secrets/{path}"))?;
            ensure!(got == want, "/mnt/secrets/{path}: {got:?}, want {want:?}");
        }
        let listing = env
            .node()
            .exec(&pod, "app", &["ls", "-a", "/mnt/secrets"])?;
        ensure!(
            !listing.lines().any(|l| l == "missing-one"),
            "the optional object has no file: {listing}"
        );
        let groups = env.node().exec(
            &pod,
            "app",
            &[
                "stat",
                "-L",
                "-c",
                "%g",
                "/mnt/secrets/app.env",
                "/mnt/secrets/app/app-user",
                "/mnt/secrets/db-user",
            ],
        )?;
        ensure!(
            groups.lines().all(|g| g == "2000") && groups.lines().count() == 3,
            "fsGroup owns the files: {groups}"
        );
        let absent_event =
            |e: &String| e.starts_with("OptionalSecretObjectAbsent") && e.contains("missing-one");
        let events = env
            .node()
            .event_messages_until(NS, "beyond", Duration::from_secs(10), |events| {
                events.iter().any(absent_event)
            })
            .await;
        let absent: Vec<_> = events.iter().filter(|e| absent_event(e)).collect();
        ensure!(
            absent.len() == 1,
            "one Warning Event for the optional object: {events:?}"
        );
        env.node().delete_pod(NS, "beyond", POD_TIMEOUT).await?;
        Ok(())
    })
}

/// Issue 18 on the node: the SecretSync controller (in this process, as its Deployment would run
/// it) syncs a Key Vault secret into a Secret through the same provider, with a workload-identity
/// token it requests for the SecretSync's service account, no pod mounting anything; a pod
/// (kubelet resolves `secretKeyRef`) reads it from its environment. The test control plane has no
/// Deployment controller, so the consumer is a bare pod.
fn secret_sync_feeds_env(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let config = sync_controller::Config {
            provider_dirs: vec![env.providers.clone()],
            audiences: vec!["api://AzureADTokenExchange".into()],
            pod_name: "sync-controller".into(),
            pod_uid: "00000000-0000-4000-8000-00000000c0de".into(),
            retry_base: Duration::from_millis(500),
            ..sync_controller::Config::default()
        };
        let provider = Arc::new(driver::GrpcProviderClient::new(
            config.provider_dirs.clone(),
            config.max_recv_msg_size,
        ));
        let ctx = Arc::new(sync_controller::Context::new(
            env.client.clone(),
            provider,
            config,
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let controller = tokio::spawn(sync_controller::run(ctx, async move {
            let _ = stopped.await;
        }));
        let result = async {
            let ss: secrets_store_api::secretsync::SecretSync =
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
                    "kind": "SecretSync",
                    "metadata": { "name": "synced-env", "namespace": NS },
                    "spec": {
                        "serviceAccountName": "workload",
                        "secretProviderClassName": "workload",
                        "secretObject": {
                            "type": "Opaque",
                            "data": [{ "sourcePath": "plain", "targetKey": "value" }],
                        },
                    },
                }))?;
            Api::<secrets_store_api::secretsync::SecretSync>::namespaced(env.client.clone(), NS)
                .create(&PostParams::default(), &ss)
                .await?;
            let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let value = secrets
                    .get_opt("synced-env")
                    .await?
                    .and_then(|s| s.data)
                    .and_then(|d| d.get("value").map(|b| b.0.clone()));
                if value.as_deref() == Some(b"initial value".as_slice()) {
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the SecretSync's Secret did not appear within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut spec = pod("sync-env", "default", vec![]);
            if let Some(c) = spec.spec.as_mut().and_then(|s| s.containers.first_mut()) {
                c.env = Some(vec![serde_json::from_value(serde_json::json!({
                    "name": "SYNCED",
                    "valueFrom": { "secretKeyRef": { "name": "synced-env", "key": "value" } },
                }))?]);
                c.command = Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo \"SYNCED=$SYNCED\"; trap 'exit 0' TERM; while true; do sleep 1; done"
                        .into(),
                ]);
            }
            let pod = env.run_pod(spec).await?;
            let log = env.node().pod_log(&pod, "app")?;
            ensure!(
                log.lines().any(|l| l == "SYNCED=initial value"),
                "the synced Secret in the container's environment: {log}"
            );
            env.node().delete_pod(NS, "sync-env", POD_TIMEOUT).await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let _ = stop.send(());
        let _ = controller.await;
        result
    })
}

/// Issue 17 through kubelet: with `maxStaleness`, a new pod starts while Key Vault answers 503,
/// from the answer this node fetched for the same identity, with a `ServedStale` Event; another
/// identity is refused, and a disabled secret's 403 is never masked.
fn last_known_good(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let admin = env.emu.admin();
        let volume = |creds: &str| vec![csi_volume("secrets", "stale", Some(creds))];
        let first = env
            .run_pod(pod("lkg-first", "default", volume("sp-creds")))
            .await?;
        ensure!(env.cat(&first, "/mnt/secrets/plain")? == "initial value");
        for route in ["GetSecret", "GetKey"] {
            admin
                .inject_fault(
                    route,
                    Fault::ServerError {
                        count: 100_000,
                        status: 503,
                    },
                )
                .await?;
        }
        // Past the driver's max age (half its poll interval) a new mount asks Key Vault again.
        tokio::time::sleep(POLL / 2 + Duration::from_secs(1)).await;
        let second = env
            .run_pod(pod("lkg-second", "default", volume("sp-creds")))
            .await?;
        ensure!(
            env.cat(&second, "/mnt/secrets/plain")? == "initial value",
            "served from last-known-good"
        );
        let events = env
            .node()
            .event_messages_until(NS, "lkg-second", Duration::from_secs(10), |events| {
                events.iter().any(|e| e.starts_with("ServedStale"))
            })
            .await;
        ensure!(
            events.iter().any(|e| e.starts_with("ServedStale")),
            "a ServedStale Event on the pod: {events:?}"
        );

        // An identity without a fetch on this node, then a revoked object: both fail the mount.
        env.node()
            .create_pod(pod("lkg-outsider", "default", volume("outsider-creds")))
            .await?;
        expect_failed_mount(env, "lkg-outsider", "").await?;
        admin.clear_faults().await?;
        admin.set_secret_enabled("kv1", "plain", false).await?;
        tokio::time::sleep(POLL / 2 + Duration::from_secs(1)).await;
        env.node()
            .create_pod(pod("lkg-revoked", "default", volume("sp-creds")))
            .await?;
        let revoked = expect_failed_mount(env, "lkg-revoked", "403").await;
        admin.set_secret_enabled("kv1", "plain", true).await?;
        revoked?;
        for name in ["lkg-first", "lkg-second", "lkg-outsider", "lkg-revoked"] {
            env.node().delete_pod(NS, name, POD_TIMEOUT).await?;
        }
        Ok(())
    })
}

/// Waits up to 60 s for a FailedMount Event on `name` containing `needle`; the pod must not run
/// and must have no ServedStale Event.
async fn expect_failed_mount(env: &Env, name: &str, needle: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let events = env.node().event_messages(NS, name).await;
        if events
            .iter()
            .any(|e| e.starts_with("FailedMount") && e.contains(needle))
        {
            ensure!(
                !events.iter().any(|e| e.starts_with("ServedStale")),
                "pod {name} was served stale contents: {events:?}"
            );
            let p = env.pod(name).await?;
            ensure!(!test_support::pod_ready(&p), "pod {name} runs");
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("pod {name}: no FailedMount event naming {needle:?}: {events:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn every_identity_mode(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        env.set_secret("identity check").await?;
        let result = async {
            let pod = env
                .run_pod(pod(
                    "identities",
                    "workload",
                    vec![
                        csi_volume("workload", "workload", None),
                        csi_volume("sp", "sp", Some("sp-creds")),
                        csi_volume("pod-identity", "pod-identity", None),
                        csi_volume("vm-identity", "vm-identity", None),
                    ],
                ))
                .await?;
            // Each volume converges on the new value (a first mount asks for answers no older
            // than half the poll interval; a later republish refreshes).
            for v in ["workload", "sp", "pod-identity", "vm-identity"] {
                env.wait_content(&pod, &format!("/mnt/{v}/plain"), "identity check", SYNC * 3)
                    .await
                    .with_context(|| format!("volume {v}"))?;
            }
            anyhow::Ok(())
        }
        .await;
        env.node().delete_pod(NS, "identities", POD_TIMEOUT).await?;
        result
    })
}

/// Issue 15: with the provider's object cache on at its default TTL (2m, longer than the whole
/// bound), a new version reaches the container within the rotation poll interval + one kubelet
/// republish period (sync × 1.5 at most), every time: the driver asks for answers no older than
/// half the poll interval (`secrets-store.csi.k8s.io/maxAge`).
fn rotation_within_poll_and_republish(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        ensure!(
            !env.provider_cmd.iter().any(|a| a.contains("cache-ttl")),
            "the provider must run with its default cache TTL"
        );
        let pod = env.pod("files").await?;
        // Reading through `kubectl exec`-like calls every 250 ms adds a little.
        let bound = POLL + SYNC * 3 / 2;
        let slack = Duration::from_secs(3);
        let mut delays = Vec::new();
        // Changes at different points of the volume's refresh cycle.
        for (i, pause) in [0u64, 3, 7].into_iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(pause)).await;
            let value = format!("fresh-{i}");
            env.set_secret(&value).await?;
            let delay = env
                .wait_content(&pod, "/mnt/secrets/plain", &value, bound * 2 + slack)
                .await?;
            delays.push(delay);
        }
        let max = delays.iter().max().copied().unwrap_or_default();
        println!(
            "rotation with --cache-ttl at its default (2m): vault change -> container in {} s \
             (max {:.1} s; bound: poll {} s + republish <= {:.0} s = {:.0} s)",
            delays
                .iter()
                .map(|d| format!("{:.1}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            max.as_secs_f64(),
            POLL.as_secs(),
            (SYNC * 3 / 2).as_secs_f64(),
            bound.as_secs_f64(),
        );
        ensure!(
            max <= bound + slack,
            "a change took {max:?}, more than poll {POLL:?} + republish {:?}\n{}",
            SYNC * 3 / 2,
            env.logs()
        );
        Ok(())
    })
}

fn rotation_reaches_the_container(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let pod = env.pod("files").await?;
        env.set_secret("rotated-1").await?;
        let delay = env
            .wait_content(
                &pod,
                "/mnt/secrets/plain",
                "rotated-1",
                SYNC * 3 + Duration::from_secs(30),
            )
            .await?;
        println!(
            "rotation: vault change -> container sees it in {:.1}s (kubelet syncFrequency {}s, republish = sync x 1-1.5)",
            delay.as_secs_f64(),
            SYNC.as_secs()
        );
        // The synced Secret follows.
        let secrets = Api::<Secret>::namespaced(env.client.clone(), NS);
        let start = Instant::now();
        loop {
            let s = secrets.get("synced-plain").await?;
            if s.data
                .as_ref()
                .and_then(|d| d.get("value"))
                .is_some_and(|b| b.0 == b"rotated-1")
            {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "synced Secret not rotated"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    })
}

fn broken_classes(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        env.node()
            .create_pod(pod(
                "no-class",
                "default",
                vec![csi_volume("secrets", "does-not-exist", Some("sp-creds"))],
            ))
            .await?;
        env.node()
            .create_pod(pod(
                "no-access",
                "default",
                vec![csi_volume("secrets", "sp", Some("outsider-creds"))],
            ))
            .await?;
        let expect = [("no-class", "does-not-exist"), ("no-access", "403")];
        for (name, needle) in expect {
            let start = Instant::now();
            let events = loop {
                let events = env.node().event_messages(NS, name).await;
                if events
                    .iter()
                    .any(|e| e.starts_with("FailedMount") && e.contains(needle))
                {
                    break events;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    bail!(
                        "pod {name}: no FailedMount event naming {needle:?}: {events:?}\n{}",
                        env.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            let p = env.pod(name).await?;
            ensure!(!test_support::pod_ready(&p), "pod {name} runs");
            // kubelet keeps retrying, and a retry holds its tmpfs for the moment of the provider
            // call before cleaning up: between retries nothing may stay mounted.
            let since = Instant::now();
            loop {
                let mounts = env.pod_mounts(&p);
                if mounts.is_empty() {
                    break;
                }
                ensure!(
                    since.elapsed() < Duration::from_secs(20),
                    "pod {name}: left mounted for 20 s: {mounts:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!(
                "pod {name}: {}",
                events
                    .iter()
                    .find(|e| e.contains(needle))
                    .map(String::as_str)
                    .unwrap_or("")
            );
            env.node().delete_pod(NS, name, POD_TIMEOUT).await?;
        }
        Ok(())
    })
}

fn driver_restart(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let pod = env.pod("files").await?;
        let registered = env.node().kubelet_log_lines("Register new plugin").len();
        if let Some(mut d) = env.driver.take() {
            d.stop(Duration::from_secs(10));
        }
        ensure!(
            env.cat(&pod, "/mnt/secrets/plain")? == "rotated-1",
            "mount while the driver is down"
        );
        env.start_driver()?;
        let start = Instant::now();
        while env.node().kubelet_log_lines("Register new plugin").len() <= registered {
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "kubelet did not register the restarted driver\n{}",
                env.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        env.set_secret("rotated-2").await?;
        let delay = env
            .wait_content(
                &pod,
                "/mnt/secrets/plain",
                "rotated-2",
                SYNC * 3 + Duration::from_secs(30),
            )
            .await?;
        println!(
            "after a driver restart, rotation reached the container in {:.1}s",
            delay.as_secs_f64()
        );
        Ok(())
    })
}

fn provider_restart(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let pod = env.pod("files").await?;
        if let Some(mut p) = env.provider.take() {
            p.stop(Duration::from_secs(10));
        }
        env.set_secret("rotated-3").await?;
        // At least one republish falls into the outage; the files stay as they were.
        tokio::time::sleep(SYNC * 2).await;
        ensure!(
            env.cat(&pod, "/mnt/secrets/plain")? == "rotated-2",
            "contents changed while the provider was down"
        );
        env.start_provider()?;
        let delay = env
            .wait_content(
                &pod,
                "/mnt/secrets/plain",
                "rotated-3",
                SYNC * 3 + Duration::from_secs(30),
            )
            .await?;
        println!(
            "after the provider came back, rotation reached the container in {:.1}s",
            delay.as_secs_f64()
        );
        Ok(())
    })
}

fn kubelet_restart(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        env.node
            .as_mut()
            .expect("node")
            .restart_kubelet()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let pod = env.pod("files").await?;
        ensure!(
            test_support::pod_ready(&pod),
            "the pod stopped running across the kubelet restart"
        );
        ensure!(
            env.cat(&pod, "/mnt/secrets/plain")? == "rotated-3",
            "mount after kubelet restart"
        );
        env.set_secret("rotated-4").await?;
        let delay = env
            .wait_content(
                &pod,
                "/mnt/secrets/plain",
                "rotated-4",
                SYNC * 3 + Duration::from_secs(30),
            )
            .await?;
        println!(
            "after a kubelet restart, rotation reached the container in {:.1}s",
            delay.as_secs_f64()
        );
        Ok(())
    })
}

fn pod_deletion_unpublishes(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        let pod = env.pod("files").await?;
        let before = env.pod_mounts(&pod);
        ensure!(
            before
                .iter()
                .any(|m| m.ends_with("volumes/kubernetes.io~csi/secrets/mount")),
            "the CSI target is not mounted: {before:?}"
        );
        env.node().delete_pod(NS, "files", POD_TIMEOUT).await?;
        let after = env.pod_mounts(&pod);
        ensure!(after.is_empty(), "still mounted after deletion: {after:?}");
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let target = env
            .node()
            .kubelet_dir()
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~csi/secrets/mount");
        ensure!(!target.exists(), "{} is still there", target.display());
        Ok(())
    })
}

/// A plain HTTP/1.0 GET on loopback; the whole response as text.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: Option<u32>) -> u64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn bench_pod_startup(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        const N: usize = 20;
        let mut ours = Vec::new();
        let mut empty = Vec::new();
        for i in 0..N {
            for (kind, times) in [("csi", &mut ours), ("emptydir", &mut empty)] {
                let name = format!("bench-{kind}-{i}");
                let volume = if kind == "csi" {
                    csi_volume("secrets", "sp", Some("sp-creds"))
                } else {
                    serde_json::json!({ "name": "secrets", "emptyDir": {} })
                };
                let start = Instant::now();
                env.run_pod(pod(&name, "default", vec![volume])).await?;
                times.push(start.elapsed());
                env.node().delete_pod(NS, &name, POD_TIMEOUT).await?;
            }
        }
        ours.sort_unstable();
        empty.sort_unstable();
        println!(
            "bench: pod create -> Running over {N} pods: secrets-store volume p50 {:?} p99 {:?}; emptyDir p50 {:?} p99 {:?}",
            percentile(&ours, 0.5),
            percentile(&ours, 0.99),
            percentile(&empty, 0.5),
            percentile(&empty, 0.99)
        );

        const MANY: usize = 100;
        env.emu.admin().reset_counters().await?;
        let start = Instant::now();
        for i in 0..MANY {
            env.node()
                .create_pod(pod(
                    &format!("many-{i}"),
                    "default",
                    vec![csi_volume("secrets", "sp", Some("sp-creds"))],
                ))
                .await?;
        }
        for i in 0..MANY {
            env.node()
                .wait_running(NS, &format!("many-{i}"), Duration::from_secs(600))
                .await?;
        }
        let all_running = start.elapsed();
        let driver_rss = rss_kib(env.driver.as_ref().and_then(ChildGuard::id));
        let provider_rss = rss_kib(env.provider.as_ref().and_then(ChildGuard::id));
        let mut calls: std::collections::BTreeMap<String, u64> = Default::default();
        for row in env.emu.admin().counters().await? {
            *calls.entry(row.operation).or_default() += row.count;
        }
        let start = Instant::now();
        let api: Api<Pod> = Api::namespaced(env.client.clone(), NS);
        for i in 0..MANY {
            api.delete(&format!("many-{i}"), &DeleteParams::default())
                .await?;
        }
        loop {
            let left = api
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("many-"))
                })
                .count();
            if left == 0 {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(600),
                "{left} pods still there"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "bench: {MANY} pods with a secrets-store volume on one node: all Running after {:.1}s, all gone after {:.1}s more; driver RSS {} KiB, provider RSS {} KiB (with {MANY} volumes mounted); emulator requests while starting them (one service principal, 2 objects per volume): {calls:?}",
            all_running.as_secs_f64(),
            start.elapsed().as_secs_f64(),
            driver_rss,
            provider_rss
        );
        Ok(())
    })
}

fn node_stops_clean(w: &mut World) -> Result<(), Failed> {
    run(w, async |env| {
        if let Some(mut d) = env.driver.take() {
            d.stop(Duration::from_secs(10));
        }
        if let Some(mut p) = env.provider.take() {
            p.stop(Duration::from_secs(10));
        }
        let node = env.node.take().context("the node is already stopped")?;
        let dir = node.kubelet_dir();
        node.stop()?;
        ensure!(!dir.exists(), "{} is still there", dir.display());
        // No child of this process is left but the control plane, which outlives the node
        // (container shims re-parent to this process, a subreaper).
        let me = std::process::id().to_string();
        let children: Vec<String> = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    == Some(me.as_str())
            })
            .filter_map(|stat| {
                let comm = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
                (comm != "etcd" && comm != "kube-apiserver").then_some(comm)
            })
            .collect();
        ensure!(children.is_empty(), "processes left: {children:?}");
        Ok(())
    })
}
