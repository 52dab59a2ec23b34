//! The emulator harness shared by `emulator.rs` and `logs.rs`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use keyvault_emulator::{Emulator, EmulatorConfig};
use provider_azure::{ProviderConfig, Server, ServerConfig};

use super::driver_attributes;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SP: &str = "11111111-1111-1111-1111-111111111111";
pub const SP_SECRET: &str = "sp-client-secret-value-0001";
pub const OUTSIDER: &str = "33333333-3333-3333-3333-333333333333";
pub const OUTSIDER_SECRET: &str = "outsider-client-secret-0002";
pub const MI: &str = "22222222-2222-2222-2222-222222222222";
pub const UAMI: &str = "44444444-4444-4444-4444-444444444444";
pub const WI: &str = "55555555-5555-5555-5555-555555555555";
pub const SEEDED_SECRET: &str = "seeded-secret-value-c0ffee";

pub fn seed(extra_issuers: &str, wi_subject: &str) -> String {
    seed_with_issuer(extra_issuers, "https://issuer.invalid", wi_subject)
}

/// The seed with a workload-identity federated credential for `wi_issuer` / `wi_subject`.
pub fn seed_with_issuer(extra_issuers: &str, wi_issuer: &str, wi_subject: &str) -> String {
    format!(
        r#"
tenant: {TENANT}
vaults:
  - name: kv1
    access: [{SP}, {MI}, {UAMI}, {WI}]
    secrets:
      - {{ name: secret1, value: {SEEDED_SECRET} }}
    keys:
      - {{ name: rsa1, kty: RSA, key_size: 2048 }}
      - {{ name: ec1, kty: EC, crv: P-384 }}
    certificates:
      - name: cert1
        generate: {{ subject: CN=cert1.test, kty: EC, crv: P-256 }}
      - name: cert-pem
        content_type: application/x-pem-file
        generate: {{ subject: CN=pem.test, kty: EC, crv: P-256 }}
identities:
  service_principals:
    - {{ client_id: {SP}, client_secret: {SP_SECRET} }}
    - {{ client_id: {OUTSIDER}, client_secret: {OUTSIDER_SECRET} }}
    - client_id: {WI}
      federated_credentials:
        - {{ issuer: "{wi_issuer}", subject: "{wi_subject}" }}
  managed_identities:
    - {{ client_id: {MI}, default: true }}
    - {{ client_id: {UAMI} }}
  pod_identities:
    - {{ namespace: default, pod: app-0, client_id: {MI} }}
issuers: {extra_issuers}
"#
    )
}

pub struct Env {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub env_file: PathBuf,
    pub ca_file: PathBuf,
    /// The provider's Prometheus endpoint (loopback).
    pub metrics: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Env {
    pub async fn start(seed_yaml: &str) -> Env {
        Self::start_with(seed_yaml, |_| {}).await
    }

    /// Starts with provider settings adjusted by `tweak` (flags such as
    /// `--write-cert-and-key-in-separate-files`).
    pub async fn start_with(seed_yaml: &str, tweak: impl FnOnce(&mut ProviderConfig)) -> Env {
        Self::start_full(seed_yaml, |c| c, tweak).await
    }

    /// Starts with both the emulator and the provider settings adjusted.
    pub async fn start_full(
        seed_yaml: &str,
        emu_tweak: impl FnOnce(EmulatorConfig) -> EmulatorConfig,
        tweak: impl FnOnce(&mut ProviderConfig),
    ) -> Env {
        let emu = Emulator::start(emu_tweak(
            EmulatorConfig::default().seed_yaml(seed_yaml).unwrap(),
        ))
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, emu.ca_pem()).unwrap();
        let env_file = dir.path().join("azurestackcloud.json");
        std::fs::write(&env_file, emu.azure_stack_environment().to_string()).unwrap();
        let mut cfg = ProviderConfig::default();
        cfg.http.ssl_cert_file = Some(ca_file.clone());
        cfg.http.resolve = vec![(emu.vault_host("kv1"), emu.https_addr())];
        cfg.node.imds = url::Url::parse(&emu.imds_url()).unwrap();
        cfg.node.nmi = url::Url::parse(&emu.nmi_url()).unwrap();
        cfg.keyvault.retry.base_delay = Duration::from_millis(50);
        tweak(&mut cfg);
        let sock = dir.path().join("azure.sock");
        let mut server_cfg = ServerConfig::new(format!("unix://{}", sock.display()), cfg);
        server_cfg.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = Server::bind(server_cfg).await.unwrap();
        let metrics = server.metrics_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Env {
            emu,
            dir,
            sock,
            env_file,
            ca_file,
            metrics,
            _stop: tx,
        }
    }

    /// One scrape of the provider's `/metrics`.
    pub async fn scrape(&self) -> String {
        entra_auth::build_client(&entra_auth::HttpOptions::default())
            .unwrap()
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn attrs(&self, params: &[(&str, &str)]) -> String {
        let env_file = self.env_file.display().to_string();
        let mut p: Vec<(&str, &str)> = vec![
            ("keyvaultName", "kv1"),
            ("tenantId", TENANT),
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", env_file.as_str()),
        ];
        p.extend_from_slice(params);
        driver_attributes(&p)
    }
}

/// The seed's `issuers:` entry for a real control plane: its JWKS read with the admin token over
/// its own CA.
pub fn control_plane_issuer(cp: &test_support::ControlPlane) -> String {
    let ca: String = cp
        .ca_pem()
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "\n  - issuer: \"{}\"\n    jwks_uri: \"{}/openid/v1/jwks\"\n    bearer_token: \"{}\"\n    ca_pem: |\n{ca}",
        cp.issuer(),
        cp.url().trim_end_matches('/'),
        cp.admin_token(),
    )
}

/// The value of one sample line of a Prometheus text exposition.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub fn sp_secrets(id: &str, secret: &str) -> String {
    serde_json::json!({ "clientid": id, "clientsecret": secret }).to_string()
}

/// Starts a provider binary (ours or upstream's) on `<dir>/<name>.sock` against this emulator,
/// reaching it as a node would: `SSL_CERT_FILE`, the vault's name in a private /etc/hosts, NMI/IMDS
/// through `AZURE_POD_IDENTITY_AUTHORITY_HOST`. Returns once the socket accepts connections.
pub fn spawn(
    bin: &std::path::Path,
    env: &Env,
    name: &str,
    flags: &[&str],
) -> (std::process::Child, PathBuf) {
    let sock = env.dir.path().join(format!("{name}.sock"));
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg(format!("--healthz-port={}", test_support::free_port()))
        .arg(format!("--prometheus-port={}", test_support::free_port()))
        .args(flags)
        .env("SSL_CERT_FILE", &env.ca_file)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", env.emu.imds_url());
    let hosts = test_support::HostsOverride::new(&[(
        &env.emu.vault_host("kv1"),
        "127.0.0.1".parse::<IpAddr>().unwrap(),
    )])
    .unwrap();
    let child = hosts
        .wrap(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&sock) {
        assert!(std::time::Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, sock)
}

/// Stops a child started by [`spawn`] (SIGTERM, then waits).
pub fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// Upstream's NMI address is fixed (`localhost:2579`, no flag), so an emulator that serves
/// upstream's binary with pod identity listens there.
pub const UPSTREAM_NMI: &str = "127.0.0.1:2579";

/// Waits (up to 30 s) until [`UPSTREAM_NMI`] is free: other tests and benches take it too.
pub async fn wait_for_port_2579() {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpListener::bind(UPSTREAM_NMI).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port 2579 (upstream's fixed NMI port) is busy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An emulator configuration tweak: NMI on [`UPSTREAM_NMI`].
pub fn nmi_on_2579(c: EmulatorConfig) -> EmulatorConfig {
    EmulatorConfig {
        nmi_listen: UPSTREAM_NMI.parse().unwrap(),
        ..c
    }
}
