//! The sync controller against a real kube-apiserver (etcd + kube-apiserver from test-support,
//! CRDs from deploy/crds), running under its own ServiceAccount bound to
//! deploy/rbac-sync-controller.yaml, with the real Azure provider (in process, on a unix
//! socket) reading from the Key Vault emulator through workload identity: the controller
//! requests the service-account token, the emulator validates it against the apiserver's JWKS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use keyvault_emulator::{Emulator, EmulatorConfig};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use provider_azure::{ProviderConfig, Server, ServerConfig};
use secrets_store_api::secretsync::SecretSync;
use secrets_store_api::v1::SecretProviderClass;
use sync_controller::{Config, Context};
use test_support::ControlPlane;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const WI: &str = "55555555-5555-5555-5555-555555555555";
const SEEDED: &str = "seeded-secret-value-c0ffee";
const SECOND: &str = "second-secret-value-beef";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const NS: &str = "apps";

/// Every log line of this test process (controller, provider, emulator), at trace level.
#[derive(Clone, Default)]
struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Buffer {
    static BUFFER: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Buffer::default();
            let writer = buffer.clone();
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .try_init();
            buffer
        })
        .clone()
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
    access: [{WI}]
    secrets:
      - {{ name: secret1, value: {SEEDED} }}
      - {{ name: secret2, value: {SECOND} }}
    certificates:
      - name: cert1
        generate: {{ subject: CN=cert1.test, kty: EC, crv: P-256 }}
identities:
  service_principals:
    - client_id: {WI}
      federated_credentials:
        - {{ issuer: "{issuer}", subject: "system:serviceaccount:{NS}:workload" }}
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

struct Harness {
    cp: ControlPlane,
    ctx: Arc<Context>,
    emu: Emulator,
    dir: tempfile::TempDir,
    admin: Client,
    _provider_stop: tokio::sync::oneshot::Sender<()>,
    _controller_stop: tokio::sync::oneshot::Sender<()>,
}

async fn apply_rbac(cp: &ControlPlane) {
    cp.create_namespace("kube-system").await.unwrap();
    let yaml = std::fs::read_to_string(
        test_support::project_root().join("deploy/rbac-sync-controller.yaml"),
    )
    .unwrap();
    let client = cp.client();
    let pp = PostParams::default();
    for doc in serde_saphyr::from_multiple::<serde_json::Value>(&yaml).unwrap() {
        match doc["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                Api::<ServiceAccount>::namespaced(client.clone(), "kube-system")
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap();
            }
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap();
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

async fn start() -> Option<Harness> {
    let cp = ControlPlane::start().await?.expect("control plane starts");
    let root = test_support::project_root();
    for f in [
        "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml",
        "secret-sync.x-k8s.io_secretsyncs.yaml",
    ] {
        cp.apply_crd_yaml(&std::fs::read_to_string(root.join("deploy/crds").join(f)).unwrap())
            .await
            .unwrap();
    }
    cp.create_service_account(NS, "workload").await.unwrap();
    cp.create_service_account(NS, "other").await.unwrap();
    apply_rbac(&cp).await;

    // Key Vault emulator + the Azure provider on <dir>/providers/azure.sock.
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed(&cp)).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, format!("{}\n{}", emu.ca_pem(), cp.ca_pem())).unwrap();
    std::fs::write(
        dir.path().join("azurestackcloud.json"),
        emu.azure_stack_environment().to_string(),
    )
    .unwrap();
    let mut cfg = ProviderConfig::default();
    cfg.http.ssl_cert_file = Some(ca_file);
    cfg.http.resolve = vec![(emu.vault_host("kv1"), emu.https_addr())];
    cfg.node.imds = url::Url::parse(&emu.imds_url()).unwrap();
    cfg.node.nmi = url::Url::parse(&emu.nmi_url()).unwrap();
    cfg.keyvault.retry.base_delay = Duration::from_millis(50);
    let sock = providers.join("azure.sock");
    let server = Server::bind(ServerConfig::new(format!("unix://{}", sock.display()), cfg))
        .await
        .unwrap();
    let (provider_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));

    // The controller, as its own ServiceAccount.
    let client = cp
        .service_account_client("kube-system", "secrets-store-sync-controller")
        .await
        .unwrap();
    let config = Config {
        provider_dirs: vec![providers.clone()],
        audiences: vec![AUDIENCE.into()],
        rotation_interval: Some(Duration::from_secs(2)),
        pod_name: "sync-controller-0".into(),
        pod_uid: "00000000-0000-4000-8000-00000000abcd".into(),
        retry_base: Duration::from_millis(500),
        ..Config::default()
    };
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(driver::GrpcProviderClient::new(
            vec![providers],
            config.max_recv_msg_size,
        )),
        config,
    ));
    let (controller_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sync_controller::run(ctx.clone(), async move {
        let _ = rx.await;
    }));
    let admin = cp.client();
    Some(Harness {
        cp,
        ctx,
        emu,
        dir,
        admin,
        _provider_stop: provider_stop,
        _controller_stop: controller_stop,
    })
}

fn class_yaml(h: &Harness, name: &str, objects: &str) -> serde_json::Value {
    let env_file: PathBuf = h.dir.path().join("azurestackcloud.json");
    serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "provider": "azure",
            "parameters": {
                "keyvaultName": "kv1",
                "tenantId": TENANT,
                "clientID": WI,
                "cloudName": "AzureStackCloud",
                "cloudEnvFileName": env_file.display().to_string(),
                "objects": objects,
            }
        }
    })
}

fn objects(items: &[&str]) -> String {
    let mut s = String::from("array:\n");
    for item in items {
        s.push_str("  - |\n");
        for line in item.lines() {
            s.push_str("    ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

async fn apply<K>(client: &Client, value: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = value["metadata"]["name"].as_str().unwrap().to_string();
    Api::<K>::namespaced(client.clone(), NS)
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap();
}

fn sync_yaml(
    name: &str,
    class: &str,
    sa: &str,
    type_: &str,
    data: &[(&str, &str)],
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "serviceAccountName": sa,
            "secretProviderClassName": class,
            "secretObject": {
                "type": type_,
                "data": data.iter().map(|(s, t)| serde_json::json!({"sourcePath": s, "targetKey": t})).collect::<Vec<_>>(),
                "labels": {"team": "payments"},
                "annotations": {"example.com/note": "synced"},
            }
        }
    })
}

/// Polls `f` every 200 ms for up to `secs` seconds.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition<'a>(
    ss: &'a SecretSync,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ss.status
        .as_ref()?
        .conditions
        .iter()
        .map(|c| &c.0)
        .find(|c| c.type_ == type_)
}

async fn secret_value(client: &Client, name: &str, key: &str) -> Option<Vec<u8>> {
    let s = Api::<Secret>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()?;
    s.data?.get(key).map(|ByteString(b)| b.clone())
}

/// Waits until the SecretSync's `type_` condition has `reason`, and returns the object.
async fn wait_reason(client: &Client, name: &str, type_: &str, reason: &str) -> SecretSync {
    let api = Api::<SecretSync>::namespaced(client.clone(), NS);
    wait_for(&format!("{name}: {type_} reason {reason}"), 60, || async {
        let ss = api.get(name).await.ok()?;
        (condition(&ss, type_)?.reason == reason).then_some(ss)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_syncs_against_a_real_apiserver_and_the_azure_provider() {
    let logs = capture_logs();
    let Some(h) = start().await else {
        return;
    };
    let admin = h.admin.clone();
    apply::<SecretProviderClass>(
        &admin,
        class_yaml(
            &h,
            "kv",
            &objects(&[
                "objectName: secret1\nobjectType: secret",
                "objectName: cert1\nobjectType: secret",
            ]),
        ),
    )
    .await;

    // --- create: an Opaque Secret with the mapped key, labels, annotations, owner ---
    let started = std::time::Instant::now();
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "app-secret",
            "kv",
            "workload",
            "Opaque",
            &[("secret1", "password")],
        ),
    )
    .await;
    let ss = wait_reason(&admin, "app-secret", "SecretCreated", "CreateSuccessful").await;
    eprintln!(
        "SecretSync applied -> Secret written and status reported: {:?}",
        started.elapsed()
    );
    let created = condition(&ss, "SecretCreated").unwrap();
    assert_eq!(created.status, "True");
    assert_eq!(created.message, "Secret created successfully.");
    let updated = condition(&ss, "SecretUpdated").unwrap();
    assert_eq!(
        (updated.status.as_str(), updated.reason.as_str()),
        ("True", "SecretUpToDate")
    );
    let status = ss.status.clone().unwrap();
    assert!(status.sync_hash.starts_with("v1:"), "{}", status.sync_hash);
    assert!(status.last_successful_sync_time.is_some());
    let secret = Api::<Secret>::namespaced(admin.clone(), NS)
        .get("app-secret")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert!(
        secret.data.as_ref().unwrap().get("password").unwrap().0 == SEEDED.as_bytes(),
        "the Secret holds the Key Vault value"
    );
    assert_eq!(
        secret.data.as_ref().unwrap().len(),
        1,
        "only the mapped key"
    );
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("secrets-store.sync.x-k8s.io")
            .map(String::as_str),
        Some("")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("example.com/note")
            .map(String::as_str),
        Some("synced")
    );
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "SecretSync");
    assert_eq!(owners[0].api_version, "secret-sync.x-k8s.io/v1alpha1");
    assert_eq!(owners[0].name, "app-secret");
    assert_eq!(Some(&owners[0].uid), ss.metadata.uid.as_ref());
    let managers: Vec<_> = secret
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some((m.manager?, m.operation?)))
        .collect();
    assert_eq!(
        managers,
        [(
            "secrets-store-sync-controller".to_string(),
            "Apply".to_string()
        )],
        "written by server-side apply under the controller's own field manager"
    );

    // --- kubernetes.io/tls: certificate chain and private key split from the provider's PEM ---
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "tls-secret",
            "kv",
            "workload",
            "kubernetes.io/tls",
            &[("cert1", "tls.crt"), ("cert1", "tls.key")],
        ),
    )
    .await;
    wait_reason(&admin, "tls-secret", "SecretCreated", "CreateSuccessful").await;
    let secret = Api::<Secret>::namespaced(admin.clone(), NS)
        .get("tls-secret")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap();
    let crt = String::from_utf8(data["tls.crt"].0.clone()).unwrap();
    let key = String::from_utf8(data["tls.key"].0.clone()).unwrap();
    assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"), "{crt:.40}");
    assert!(
        !crt.contains("PRIVATE KEY"),
        "tls.crt holds certificates only"
    );
    assert!(key.starts_with("-----BEGIN ") && key.contains("PRIVATE KEY-----"));
    assert!(!key.contains("CERTIFICATE"), "tls.key holds the key only");

    // --- rotation: a new version in Key Vault reaches the Secret on the next refresh ---
    let before = ss.status.clone().unwrap();
    h.emu
        .admin()
        .set_secret("kv1", "secret1", "rotated-value-0002")
        .await
        .unwrap();
    wait_for("the rotated value in the Secret", 30, || async {
        (secret_value(&admin, "app-secret", "password").await? == b"rotated-value-0002")
            .then_some(())
    })
    .await;
    let ss = wait_for("a new syncHash", 30, || async {
        let ss = Api::<SecretSync>::namespaced(admin.clone(), NS)
            .get("app-secret")
            .await
            .ok()?;
        (ss.status.as_ref()?.sync_hash != before.sync_hash).then_some(ss)
    })
    .await;
    let after = ss.status.clone().unwrap();
    assert_ne!(
        after.last_successful_sync_time,
        before.last_successful_sync_time
    );
    assert_eq!(
        condition(&ss, "SecretUpdated").unwrap().reason,
        "SecretUpToDate"
    );
    assert_eq!(
        condition(&ss, "SecretCreated").unwrap().reason,
        "CreateSuccessful"
    );

    // --- a class change (secret2 under the alias secret1) reaches the Secret on refresh ---
    apply::<SecretProviderClass>(
        &admin,
        class_yaml(
            &h,
            "kv",
            &objects(&[
                "objectName: secret2\nobjectAlias: secret1\nobjectType: secret",
                "objectName: cert1\nobjectType: secret",
            ]),
        ),
    )
    .await;
    wait_for("the class change in the Secret", 30, || async {
        (secret_value(&admin, "app-secret", "password").await? == SECOND.as_bytes()).then_some(())
    })
    .await;

    // --- a SecretSync change (a second key) is synced at once ---
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "app-secret",
            "kv",
            "workload",
            "Opaque",
            &[("secret1", "password"), ("cert1", "bundle.pem")],
        ),
    )
    .await;
    wait_for("the new key", 30, || async {
        secret_value(&admin, "app-secret", "bundle.pem")
            .await
            .map(|_| ())
    })
    .await;

    // --- refreshes with nothing changed leave the Secret and the hash alone ---
    let secrets = Api::<Secret>::namespaced(admin.clone(), NS);
    let syncs = Api::<SecretSync>::namespaced(admin.clone(), NS);
    let version = secrets
        .get("app-secret")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let hash = syncs
        .get("app-secret")
        .await
        .unwrap()
        .status
        .unwrap()
        .sync_hash;
    tokio::time::sleep(Duration::from_secs(5)).await; // two refresh periods
    assert_eq!(
        secrets
            .get("app-secret")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version,
        "an unchanged refresh does not write the Secret"
    );
    assert_eq!(
        syncs
            .get("app-secret")
            .await
            .unwrap()
            .status
            .unwrap()
            .sync_hash,
        hash
    );

    // --- forceSynchronization: a new value forces a sync (a new hash) ---
    syncs
        .patch(
            "app-secret",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"forceSynchronization": "rotate-now-1"}})),
        )
        .await
        .unwrap();
    wait_for("a forced sync", 30, || async {
        let s = syncs.get("app-secret").await.ok()?.status?;
        (s.sync_hash != hash).then_some(())
    })
    .await;

    // --- a Secret it does not own is left alone, with a clear condition ---
    let foreign = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_string(), "keep-me".to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "taken",
            "kv",
            "workload",
            "Opaque",
            &[("secret1", "password")],
        ),
    )
    .await;
    let ss = wait_reason(&admin, "taken", "SecretCreated", "ControllerPatchError").await;
    let c = condition(&ss, "SecretCreated").unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("not owned by this SecretSync"),
        "{}",
        c.message
    );
    assert!(c.message.contains("\"taken\""), "{}", c.message);
    let secret = Api::<Secret>::namespaced(admin.clone(), NS)
        .get("taken")
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"keep-me");
    assert!(secret.metadata.owner_references.is_none());
    assert!(
        !secret
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("secrets-store.sync.x-k8s.io")
    );

    // --- an identity without access: a clear condition, no Secret, no token in the message ---
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "denied",
            "kv",
            "other",
            "Opaque",
            &[("secret1", "password")],
        ),
    )
    .await;
    let ss = wait_reason(&admin, "denied", "SecretCreated", "ProviderError").await;
    let c = condition(&ss, "SecretCreated").unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message
            .starts_with("fetching secrets from the provider failed"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("azure"),
        "names the provider: {}",
        c.message
    );
    assert!(
        !c.message.contains("eyJ"),
        "no token in the condition: {}",
        c.message
    );
    assert!(
        Api::<Secret>::namespaced(admin.clone(), NS)
            .get_opt("denied")
            .await
            .unwrap()
            .is_none()
    );

    // --- a missing class ---
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "no-class",
            "missing",
            "workload",
            "Opaque",
            &[("secret1", "password")],
        ),
    )
    .await;
    let ss = wait_reason(
        &admin,
        "no-class",
        "SecretCreated",
        "SecretProviderClassMisconfigured",
    )
    .await;
    let c = condition(&ss, "SecretCreated").unwrap();
    assert!(
        c.message
            .contains("failed to get SecretProviderClass \"missing\""),
        "{}",
        c.message
    );

    // --- a sourcePath the provider did not return ---
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "bad-path",
            "kv",
            "workload",
            "Opaque",
            &[("nope", "password")],
        ),
    )
    .await;
    let ss = wait_reason(
        &admin,
        "bad-path",
        "SecretCreated",
        "RemoteSecretStoreFetchFailed",
    )
    .await;
    let c = condition(&ss, "SecretCreated").unwrap();
    assert!(c.message.contains("sourcePath nope"), "{}", c.message);

    // --- deletion: the Secret is left to the garbage collector through its owner reference
    // (checked above); the controller itself neither deletes nor rewrites it ---
    Api::<SecretSync>::namespaced(admin.clone(), NS)
        .delete("tls-secret", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        Api::<Secret>::namespaced(admin.clone(), NS)
            .get_opt("tls-secret")
            .await
            .unwrap()
            .is_some(),
        "no kube-controller-manager here: the Secret stays until the garbage collector runs"
    );

    // --- a SecretSync being deleted (held by a finalizer) is not synced again ---
    let before = secret_value(&admin, "app-secret", "password")
        .await
        .unwrap();
    syncs
        .patch(
            "app-secret",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["example.com/hold"]}})),
        )
        .await
        .unwrap();
    syncs
        .delete("app-secret", &DeleteParams::default())
        .await
        .unwrap();
    h.emu
        .admin()
        .set_secret("kv1", "secret2", "after-deletion-0003")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // two refresh periods
    // (compared without printing: the values are the test's canaries)
    let after = secret_value(&admin, "app-secret", "password")
        .await
        .unwrap();
    assert!(
        after == before,
        "no sync while the SecretSync is being deleted"
    );
    syncs
        .patch(
            "app-secret",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();

    // --- metrics: upstream's reconcile counters, no object names ---
    let metrics = h.ctx.metrics().encode();
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    assert!(
        sample("controller_runtime_reconcile_total{controller=\"secretsync\",result=\"success\"}")
            >= 5.0
    );
    assert!(sample("controller_runtime_reconcile_errors_total{controller=\"secretsync\"}") >= 4.0);
    assert!(
        !metrics.contains("app-secret") && !metrics.contains(NS),
        "{metrics}"
    );

    // --- no value, key or token in any log line of the controller, provider or emulator ---
    let text =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        text.contains("secret synced"),
        "the capture sees the controller's lines"
    );
    assert!(text.contains("sync failed"), "and its failures");
    for canary in [
        SEEDED,
        SECOND,
        "rotated-value-0002",
        "after-deletion-0003",
        "PRIVATE KEY",
        "eyJ",
    ] {
        assert!(!text.contains(canary), "a log line carries {canary:?}");
    }
    drop(h.cp);
}

/// The chart's ValidatingAdmissionPolicies (rendered by helm from the provider chart's own
/// templates) on the real apiserver: the controller still creates and rotates Secrets under
/// them, and they stop what upstream's stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_admission_policies_allow_the_controller_and_stop_the_rest() {
    let Some(helm) = test_support::peer(test_support::Peer::Helm) else {
        return;
    };
    let Some(h) = start().await else {
        return;
    };
    let admin = h.admin.clone();
    let policies = render_policies(&helm, h.dir.path());
    assert_eq!(
        policies
            .iter()
            .filter(|p| p["kind"] == "ValidatingAdmissionPolicy")
            .count(),
        8
    );
    let discovery = kube::discovery::Discovery::new(admin.clone())
        .run()
        .await
        .unwrap();
    for p in &policies {
        let (group, version) = p["apiVersion"].as_str().unwrap().split_once('/').unwrap();
        let gvk = kube::api::GroupVersionKind::gvk(group, version, p["kind"].as_str().unwrap());
        let (ar, _) = discovery.resolve_gvk(&gvk).expect("policy kind served");
        Api::<kube::api::DynamicObject>::all_with(admin.clone(), &ar)
            .patch(
                p["metadata"]["name"].as_str().unwrap(),
                &PatchParams::apply("test").force(),
                &Patch::Apply(p),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", p["metadata"]["name"]));
    }

    // As the controller: a Secret without a SecretSync owner is refused (once the policies are
    // loaded, which takes the apiserver a moment).
    let controller =
        h.cp.service_account_client("kube-system", "secrets-store-sync-controller")
            .await
            .unwrap();
    let as_controller = Api::<Secret>::namespaced(controller.clone(), NS);
    let stray = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("stray".into()),
            ..Default::default()
        },
        string_data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    let denied = wait_for("the policies to be enforced", 60, || async {
        match as_controller.create(&PostParams::default(), &stray).await {
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => Some(e.message),
            Ok(_) => {
                let _ = Api::<Secret>::namespaced(admin.clone(), NS)
                    .delete("stray", &DeleteParams::default())
                    .await;
                None
            }
            Err(_) => None,
        }
    })
    .await;
    assert!(
        denied.contains("owned by exactly one SecretSync"),
        "{denied}"
    );

    // The controller works under them: create, then rotate (an UPDATE).
    apply::<SecretProviderClass>(
        &admin,
        class_yaml(
            &h,
            "kv",
            &objects(&["objectName: secret1\nobjectType: secret"]),
        ),
    )
    .await;
    apply::<SecretSync>(
        &admin,
        sync_yaml(
            "guarded",
            "kv",
            "workload",
            "Opaque",
            &[("secret1", "password")],
        ),
    )
    .await;
    wait_reason(&admin, "guarded", "SecretCreated", "CreateSuccessful").await;
    h.emu
        .admin()
        .set_secret("kv1", "secret1", "rotated-under-policy")
        .await
        .unwrap();
    wait_for("the rotation under the policies", 30, || async {
        (secret_value(&admin, "guarded", "password").await? == b"rotated-under-policy")
            .then_some(())
    })
    .await;

    // The controller may not delete Secrets: its RBAC has no `delete`, and even granted one
    // (a mistaken extra binding), the policy refuses.
    let e = as_controller
        .delete("guarded", &DeleteParams::default())
        .await
        .expect_err("delete refused");
    assert!(format!("{e}").contains("cannot delete"), "{e}");
    let grant: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "extra-delete", "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "extra-delete", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extra-delete"},
            "subjects": [{"kind": "ServiceAccount", "name": "secrets-store-sync-controller", "namespace": "kube-system"}]
        }))
        .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let e = wait_for("the extra grant to reach the authorizer", 30, || async {
        match as_controller
            .delete("guarded", &DeleteParams::default())
            .await
        {
            Err(e) if !format!("{e}").contains("cannot delete") => Some(e),
            Err(_) => None,
            Ok(_) => panic!("the controller deleted a Secret despite the policy"),
        }
    })
    .await;
    assert!(format!("{e}").contains("may not delete Secrets"), "{e}");

    // Tokens: 600 s for a configured audience only.
    let sas = Api::<ServiceAccount>::namespaced(controller.clone(), NS);
    let token = |aud: &str, secs: i64| k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            audiences: vec![aud.into()],
            expiration_seconds: Some(secs),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    sas.create_token_request("workload", &PostParams::default(), &token(AUDIENCE, 600))
        .await
        .expect("the controller's own request shape is allowed");
    for (aud, secs) in [(AUDIENCE, 3600), ("api://other", 600)] {
        let e = sas
            .create_token_request("workload", &PostParams::default(), &token(aud, secs))
            .await
            .expect_err("refused");
        assert!(format!("{e}").contains("600-second tokens"), "{e}");
    }

    // Any user: a SecretSync with a malformed label key is refused.
    let mut bad = sync_yaml(
        "bad-label",
        "kv",
        "workload",
        "Opaque",
        &[("secret1", "password")],
    );
    bad["spec"]["secretObject"]["labels"] = serde_json::json!({"bad key!": "x"});
    let e = Api::<SecretSync>::namespaced(admin.clone(), NS)
        .patch(
            "bad-label",
            &PatchParams::apply("test"),
            &Patch::Apply(&bad),
        )
        .await
        .expect_err("malformed label refused");
    assert!(format!("{e}").contains("invalid key or value"), "{e}");
}

/// The chart's policy templates rendered with the chart's default values (syncController on),
/// from a copy holding only what they need (no dependency build).
fn render_policies(helm: &std::path::Path, scratch: &std::path::Path) -> Vec<serde_json::Value> {
    let chart = test_support::project_root().join("charts/csi-secrets-store-provider-azure");
    let copy = scratch.join("policies-chart");
    std::fs::create_dir_all(copy.join("templates")).unwrap();
    std::fs::write(
        copy.join("Chart.yaml"),
        "apiVersion: v2\nname: policies\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::copy(chart.join("values.yaml"), copy.join("values.yaml")).unwrap();
    for t in ["_helpers.tpl", "sync-controller-policies.yaml"] {
        std::fs::copy(
            chart.join("templates").join(t),
            copy.join("templates").join(t),
        )
        .unwrap();
    }
    let out = std::process::Command::new(helm)
        .args(["template", "x"])
        .arg(&copy)
        .args([
            "--namespace",
            "kube-system",
            "--kube-version",
            test_support::versions::kubernetes(),
            "--set",
            "syncController.enabled=true",
        ])
        .env("HELM_CACHE_HOME", scratch.join("helm-cache"))
        .env("HELM_CONFIG_HOME", scratch.join("helm-config"))
        .env("HELM_DATA_HOME", scratch.join("helm-data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple::<serde_json::Value>(&String::from_utf8_lossy(&out.stdout))
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}
