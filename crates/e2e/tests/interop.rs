//! Interoperability: our CSI driver mounts a volume through the upstream Go Azure provider
//! (v1.8.2, built from the Go module proxy) against keyvault-emulator, and the same volume through
//! our Rust provider; the files must be identical byte for byte (paths, modes, contents).
//!
//! The Go provider reaches the emulator exactly as an Azure Stack Hub user's provider reaches its
//! cloud: `cloudName: AzureStackCloud` with a `cloudEnvFileName`, the CA through `SSL_CERT_FILE`,
//! and the vault host name through /etc/hosts — a private one, in the provider's own mount
//! namespace.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use driver::{Config, FileClassSource, GrpcProviderClient, NodeService, TmpfsMounter};
use keyvault_emulator::{Emulator, EmulatorConfig};
use provider_azure::ProviderConfig;
use secrets_store_cli::local::{LocalNode, PodInfo, kubelet_request, read_tree};
use test_support::{ChildGuard, HostsOverride, Peer, require_peer};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SP: &str = "11111111-1111-1111-1111-111111111111";
const SP_SECRET: &str = "interop-client-secret";

fn seed() -> String {
    format!(
        r#"
tenant: {TENANT}
vaults:
  - name: kv1
    access: [{SP}]
    secrets:
      - {{ name: plain, value: "interop value ✓" }}
      - {{ name: b64, value: aGVsbG8gd29ybGQ= }}
    keys:
      - {{ name: rsa, kty: RSA, key_size: 2048 }}
      - {{ name: ec256, kty: EC, crv: P-256 }}
      - {{ name: ec384, kty: EC, crv: P-384 }}
      - {{ name: ec521, kty: EC, crv: P-521 }}
    certificates:
      - name: web
        generate: {{ subject: CN=web.interop.test, kty: RSA, key_size: 2048, dns_names: [web.interop.test] }}
      - name: web-pem
        content_type: application/x-pem-file
        generate: {{ subject: CN=pem.interop.test, kty: EC, crv: P-256 }}
identities:
  service_principals:
    - {{ client_id: {SP}, client_secret: {SP_SECRET} }}
"#
    )
}

fn class_yaml(env_file: &Path) -> String {
    format!(
        r#"apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: interop
  namespace: default
spec:
  provider: azure
  parameters:
    keyvaultName: kv1
    tenantID: {TENANT}
    cloudName: AzureStackCloud
    cloudEnvFileName: {env}
    objects: |
      array:
        - |
          objectName: plain
          objectType: secret
        - |
          objectName: b64
          objectType: secret
          objectEncoding: base64
          objectAlias: decoded/b64.txt
        - |
          objectName: rsa
          objectType: key
        - |
          objectName: ec256
          objectType: key
        - |
          objectName: ec384
          objectType: key
        - |
          objectName: ec521
          objectType: key
        - |
          objectName: web
          objectType: cert
          objectAlias: web.crt
        - |
          objectName: web
          objectType: secret
          objectAlias: web.pem
          filePermission: "0600"
        - |
          objectName: web
          objectType: secret
          objectFormat: pfx
          objectAlias: web.pfx.b64
        - |
          objectName: web-pem
          objectType: secret
          objectAlias: web-pem.pem
"#,
        env = env_file.display()
    )
}

struct Fixture {
    emu: Emulator,
    dir: tempfile::TempDir,
    env_file: PathBuf,
    ca_file: PathBuf,
    class_file: PathBuf,
}

/// Entra ID's public authority host. MSAL (inside the Go provider) validates any other authority
/// through instance discovery on this host, so the test serves it — from the emulator, reached
/// through the private hosts file — instead of letting a lookup leave the machine.
const ENTRA_HOST: &str = "login.microsoftonline.com";

/// A loopback address of its own for this test process, so port 443 (no port in URLs, as in
/// Azure) never collides with another test.
fn loopback() -> std::net::Ipv4Addr {
    let n = std::process::id();
    std::net::Ipv4Addr::new(127, 77, ((n >> 8) & 0xff) as u8, ((n & 0xff) as u8).max(2))
}

async fn fixture() -> Fixture {
    let mut config = EmulatorConfig::default()
        .seed_yaml(&seed())
        .expect("seed")
        .listen(std::net::SocketAddr::from((loopback(), 443)));
    config.authority_host = Some(ENTRA_HOST.to_owned());
    let emu = Emulator::start(config)
        .await
        .expect("emulator on port 443 (tests run as root)");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, emu.ca_pem()).expect("ca");
    let env_file = dir.path().join("cloud.json");
    std::fs::write(&env_file, emu.azure_stack_environment().to_string()).expect("env file");
    let class_file = dir.path().join("class.yaml");
    std::fs::write(&class_file, class_yaml(&env_file)).expect("class");
    Fixture {
        emu,
        dir,
        env_file,
        ca_file,
        class_file,
    }
}

fn pod() -> PodInfo {
    PodInfo {
        class: "interop".into(),
        name: "interop-app".into(),
        namespace: "default".into(),
        uid: "7d1c0d6e-1111-4c1d-9a57-000000000042".into(),
        service_account: "default".into(),
        tokens: None,
    }
}

fn sp_secrets() -> HashMap<String, String> {
    [("clientid", SP), ("clientsecret", SP_SECRET)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Publishes through whatever provider listens in `providers` and returns the pod's view.
async fn publish(
    providers: &Path,
    class_file: &Path,
    target: &Path,
) -> Vec<(String, Vec<u8>, u32)> {
    let node = NodeService::new(
        Config::new("interop-node", vec![providers.to_path_buf()]),
        Arc::new(FileClassSource::new(class_file)),
        Arc::new(TmpfsMounter),
        Arc::new(GrpcProviderClient::new(
            vec![providers.to_path_buf()],
            4 << 20,
        )),
        None,
        Arc::new(driver::metrics::Metrics::new()),
    );
    node.publish(
        kubelet_request(target, &pod(), sp_secrets()),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("NodePublishVolume through {}: {e}", providers.display()));
    let files = read_tree(target).expect("read the volume");
    node.unpublish("interop", &target.display().to_string())
        .await
        .expect("NodeUnpublishVolume");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_driver_with_the_upstream_go_provider_writes_what_our_provider_writes() {
    let go_provider = require_peer!(Peer::UpstreamAzureProvider);
    let f = fixture().await;

    // --- the upstream Go provider, in a mount namespace whose /etc/hosts knows the vault ---
    let go_providers = f.dir.path().join("go-providers");
    std::fs::create_dir_all(&go_providers).expect("providers dir");
    let socket = go_providers.join("azure.sock");
    let ip = IpAddr::V4(loopback());
    let hosts = HostsOverride::new(&[(&f.emu.vault_host("kv1"), ip), (ENTRA_HOST, ip)])
        .expect("hosts file");
    let mut cmd = std::process::Command::new(&go_provider);
    cmd.arg(format!("--endpoint=unix://{}", socket.display()))
        .arg(format!("--healthz-port={}", test_support::free_port()))
        .arg(format!("--prometheus-port={}", test_support::free_port()))
        .arg("-v=5")
        .env("SSL_CERT_FILE", &f.ca_file)
        .env_remove("SSL_CERT_DIR");
    let mut go = ChildGuard::spawn(
        "upstream-azure-provider",
        hosts.wrap(&cmd),
        &f.dir.path().join("go.log"),
    )
    .expect("start the upstream provider");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&socket) {
        assert!(
            go.is_running(),
            "upstream provider exited\n{}",
            go.log_tail(4000)
        );
        assert!(
            Instant::now() < deadline,
            "no socket\n{}",
            go.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let go_target = f
        .dir
        .path()
        .join("pods/go/volumes/kubernetes.io~csi/v/mount");
    let via_go = tokio::time::timeout(
        Duration::from_secs(90),
        publish(&go_providers, &f.class_file, &go_target),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "mount through the Go provider timed out\n{}",
            go.log_tail(6000)
        )
    });

    // --- our provider, same class, same emulator ---
    let mut config = ProviderConfig::default();
    config.http.ssl_cert_file = Some(f.ca_file.clone());
    config.http.resolve = vec![
        (f.emu.vault_host("kv1"), f.emu.https_addr()),
        (ENTRA_HOST.to_owned(), f.emu.https_addr()),
    ];
    let rust_providers = f.dir.path().join("rust-providers");
    let local = LocalNode::start(
        &rust_providers,
        Some(config),
        &f.class_file,
        Arc::new(TmpfsMounter),
        false,
    )
    .await
    .expect("our provider");
    let rust_target = f
        .dir
        .path()
        .join("pods/rust/volumes/kubernetes.io~csi/v/mount");
    let via_rust = publish(&rust_providers, &f.class_file, &rust_target).await;
    local.stop().await;

    // Same files, same modes, same bytes.
    let names = |v: &[(String, Vec<u8>, u32)]| {
        v.iter()
            .map(|(p, _, m)| format!("{p} {:o}", m & 0o7777))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&via_rust), names(&via_go), "file sets differ");
    for ((path, ours, _), (_, theirs, _)) in via_rust.iter().zip(via_go.iter()) {
        assert!(
            ours == theirs,
            "{path} differs:\n--- ours ---\n{}\n--- upstream ---\n{}",
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(theirs)
        );
    }
    assert_eq!(via_go.len(), 10, "{:?}", names(&via_go));
    let _ = &f.env_file;
}
