//! The official Azure SDK for Python (test-peers virtualenv) against the emulator.
//!
//! Vault hosts reach the emulator through a private /etc/hosts (mount namespace); the CA goes in
//! through REQUESTS_CA_BUNDLE, exactly as a user would configure it.

use keyvault_emulator::{CounterFilter, Emulator, EmulatorConfig, Fault};
use std::path::PathBuf;
use test_support::PythonSdk;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SP: &str = "11111111-1111-1111-1111-111111111111";
const SP_SECRET: &str = "sp-secret-for-tests";
const OUTSIDER: &str = "33333333-3333-3333-3333-333333333333";
const MI: &str = "22222222-2222-2222-2222-222222222222";
const VAULT: &str = "sdkvault";

fn seed() -> String {
    format!(
        r#"
tenant: {TENANT}
vaults:
  - name: {VAULT}
    access: [{SP}, {MI}]
    secrets:
      - {{ name: seeded, value: from-seed }}
identities:
  service_principals:
    - {{ client_id: {SP}, client_secret: {SP_SECRET} }}
    - {{ client_id: {OUTSIDER}, client_secret: outsider-secret }}
  managed_identities:
    - {{ client_id: {MI}, default: true }}
"#
    )
}

struct Harness {
    emu: Emulator,
    sdk: PythonSdk,
    _dir: tempfile::TempDir,
    ca_path: PathBuf,
}

impl Harness {
    async fn start(seed_yaml: &str) -> Option<Harness> {
        let sdk = PythonSdk::require()?;
        let emu = Emulator::start(
            EmulatorConfig::default()
                .seed_yaml(seed_yaml)
                .expect("seed"),
        )
        .await
        .expect("emulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, emu.ca_pem()).expect("write CA");
        let host = emu.vault_host(VAULT);
        let sdk = sdk.hosts(&[(host.as_str(), "127.0.0.1")]);
        Some(Harness {
            emu,
            sdk,
            _dir: dir,
            ca_path,
        })
    }

    /// Runs a scenario of kv_sdk.py with the standard environment plus `extra`.
    async fn run(
        &self,
        scenario: &str,
        client_id: &str,
        secret: &str,
        extra: &[(&str, &str)],
    ) -> std::process::Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kv_sdk.py");
        let mut envs: Vec<(String, String)> = vec![
            ("VAULT_URL".into(), self.emu.vault_url(VAULT)),
            ("AUTHORITY".into(), self.emu.authority_url()),
            ("TENANT_ID".into(), TENANT.into()),
            ("CLIENT_ID".into(), client_id.into()),
            ("CLIENT_SECRET".into(), secret.into()),
            (
                "REQUESTS_CA_BUNDLE".into(),
                self.ca_path.display().to_string(),
            ),
            ("SSL_CERT_FILE".into(), self.ca_path.display().to_string()),
        ];
        envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sdk = self.sdk.clone();
        let scenario = scenario.to_string();
        tokio::task::spawn_blocking(move || {
            let envs: Vec<(&str, &str)> =
                envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            sdk.run(&script, &[&scenario], &envs)
        })
        .await
        .expect("python runner")
    }
}

fn assert_ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_secrets_round_trip() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let out = h.run("secrets", SP, SP_SECRET, &[]).await;
    assert_ok(&out, "secrets scenario");
    let admin = h.emu.admin();
    // Each client's first call is a challenge (401, not counted as 200) and then the real call.
    let count = |op: &'static str, status: u16| {
        let admin = admin.clone();
        async move {
            admin
                .request_count(CounterFilter::operation(op).status(status))
                .await
                .expect("counters")
        }
    };
    assert_eq!(count("SetSecret", 200).await, 4);
    assert_eq!(count("SetSecret", 409).await, 1, "deleted name reused");
    assert!(count("Token", 200).await >= 1);
    assert_eq!(count("GetSecret", 403).await, 1, "disabled secret");
    assert_eq!(count("GetSecret", 404).await, 1, "missing secret");
    assert_eq!(count("DeleteSecret", 200).await, 2);
    assert_eq!(count("RecoverDeletedSecret", 200).await, 1);
    assert_eq!(count("PurgeDeletedSecret", 204).await, 1);
}

/// Listing as selection by prefix or tags uses it (issue 16): `maxresults` pages with
/// `nextLink`, tags, disabled and expired entries listed with their attributes, certificate-backed
/// secrets and keys flagged `managed`, list items without values and versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_lists_with_paging_tags_and_flags() {
    let seed = format!(
        r#"
tenant: {TENANT}
vaults:
  - name: {VAULT}
    access: [{SP}]
    secrets:
      - {{ name: app-db, value: a, content_type: text/plain, tags: {{ app: web, env: prod }} }}
      - {{ name: app-api, value: b, tags: {{ app: web }} }}
      - {{ name: app-off, value: c, enabled: false }}
      - {{ name: app-old, value: d, exp: 1000000000 }}
      - {{ name: app-later, value: e, nbf: 4000000000 }}
      - {{ name: other, value: f }}
    keys:
      - {{ name: k1, kty: EC, crv: P-256, tags: {{ team: a }} }}
      - {{ name: k2, kty: EC, crv: P-256, enabled: false }}
    certificates:
      - name: web-tls
        tags: {{ app: web }}
        generate: {{ subject: CN=web.test, kty: EC, crv: P-256 }}
identities:
  service_principals:
    - {{ client_id: {SP}, client_secret: {SP_SECRET} }}
"#
    );
    let Some(h) = Harness::start(&seed).await else {
        return;
    };
    let out = h.run("listing", SP, SP_SECRET, &[]).await;
    let stdout = assert_ok(&out, "listing scenario");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary JSON");
    let secrets = &summary["secrets"];
    let names: Vec<&str> = secrets
        .as_object()
        .expect("secrets map")
        .keys()
        .map(String::as_str)
        .collect();
    // 6 secrets + the certificate's backing secret, 3 a page: 3 pages.
    assert_eq!(names.len(), 7, "{names:?}");
    assert_eq!(summary["pages"], 3, "{summary}");
    assert_eq!(secrets["app-db"]["tags"]["env"], "prod");
    assert_eq!(secrets["app-db"]["content_type"], "text/plain");
    assert_eq!(secrets["app-db"]["managed"], serde_json::Value::Null);
    assert_eq!(
        secrets["app-db"]["version"],
        serde_json::Value::Null,
        "list items name no version"
    );
    assert_eq!(secrets["app-off"]["enabled"], false);
    assert_eq!(secrets["app-old"]["expires"], 1_000_000_000);
    assert_eq!(secrets["app-later"]["not_before"], 4_000_000_000i64);
    assert_eq!(secrets["web-tls"]["managed"], true);
    assert_eq!(secrets["web-tls"]["content_type"], "application/x-pkcs12");
    assert_eq!(summary["keys"]["k1"]["tags"]["team"], "a");
    assert_eq!(summary["keys"]["k2"]["enabled"], false);
    assert_eq!(summary["keys"]["web-tls"]["managed"], true);
    assert_eq!(summary["certificates"]["web-tls"]["tags"]["app"], "web");
    let admin = h.emu.admin();
    let count = |op: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .request_count(CounterFilter::operation(op).status(200))
                .await
                .expect("counter")
        }
    };
    assert_eq!(count("ListSecrets").await, 3);
    assert_eq!(count("ListKeys").await, 2, "3 keys, 2 a page");
    assert_eq!(count("ListCertificates").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_certificates_pfx_and_pem_with_chain() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let pfx_out = h._dir.path().join("backing.pfx");
    let pfx_env = pfx_out.display().to_string();
    // Import of a legacy PFX: `openssl pkcs12 -export -legacy` (crates/pfx/tests/fixtures/README.md).
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../pfx/tests/fixtures/");
    let legacy_pfx = format!("{fixtures}rc2-40.pfx");
    let legacy_cert = format!("{fixtures}cert.der");
    let out = h
        .run(
            "certs",
            SP,
            SP_SECRET,
            &[
                ("PFX_OUT", &pfx_env),
                ("LEGACY_PFX", &legacy_pfx),
                ("LEGACY_PFX_CERT", &legacy_cert),
                ("LEGACY_PFX_PASSWORD", "fixture-pw"),
            ],
        )
        .await;
    assert_ok(&out, "certs scenario");
    // The backing PFX uses Key Vault's legacy encoding: 3DES bags, SHA-1 MAC, 2000 iterations.
    match std::process::Command::new("openssl")
        .args(["pkcs12", "-info", "-noout", "-passin", "pass:", "-in"])
        .arg(&pfx_out)
        .output()
    {
        Ok(o) => {
            let info = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(info.contains("MAC: sha1, Iteration 2000"), "MAC: {info}");
            assert!(
                info.contains(
                    "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2000"
                ),
                "certs: {info}"
            );
            assert!(
                info.contains("Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2000"),
                "key: {info}"
            );
        }
        Err(e) => eprintln!(
            "openssl not available ({e}); PFX algorithms checked by the Rust decoder only"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_keys_rsa_and_ec() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let out = h.run("keys", SP, SP_SECRET, &[]).await;
    assert_ok(&out, "keys scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_retries_429_with_retry_after_and_succeeds() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let admin = h.emu.admin();
    admin
        .inject_fault(
            "GetSecret",
            Fault::Throttle {
                count: 2,
                retry_after: 1,
            },
        )
        .await
        .expect("inject");
    let started = std::time::Instant::now();
    let out = h.run("get-secret", SP, SP_SECRET, &[]).await;
    assert_ok(&out, "throttled get");
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(429))
            .await
            .expect("counters"),
        2
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(200))
            .await
            .expect("counters"),
        1
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "the SDK waited Retry-After twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_server_errors_and_dropped_connections_are_retried() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let admin = h.emu.admin();
    admin
        .inject_fault(
            "GetSecret",
            Fault::ServerError {
                count: 1,
                status: 503,
            },
        )
        .await
        .expect("inject");
    admin
        .inject_fault("GetSecret", Fault::Drop { count: 1 })
        .await
        .expect("inject");
    let out = h.run("get-secret", SP, SP_SECRET, &[]).await;
    assert_ok(&out, "get after 503 and a dropped connection");
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(503))
            .await
            .expect("counters"),
        1
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(0))
            .await
            .expect("counters"),
        1
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(200))
            .await
            .expect("counters"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_wrong_client_secret_is_client_authentication_error() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let out = h.run("wrong-secret", SP, SP_SECRET, &[]).await;
    assert_ok(&out, "wrong secret");
    assert_eq!(
        h.emu
            .admin()
            .request_count(CounterFilter::operation("Token").status(401))
            .await
            .expect("counters"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_identity_without_access_gets_403() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let out = h.run("no-access", OUTSIDER, "outsider-secret", &[]).await;
    assert_ok(&out, "no access");
    assert_eq!(
        h.emu
            .admin()
            .request_count(CounterFilter::operation("GetSecret").status(403))
            .await
            .expect("counters"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_managed_identity_via_imds() {
    let Some(h) = Harness::start(&seed()).await else {
        return;
    };
    let imds = h.emu.imds_url();
    let out = h
        .run(
            "managed-identity",
            "",
            "",
            &[
                ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds),
                ("MI_CLIENT_ID", MI),
            ],
        )
        .await;
    assert_ok(&out, "managed identity (user-assigned)");
    let out = h
        .run(
            "managed-identity",
            "",
            "",
            &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds)],
        )
        .await;
    assert_ok(&out, "managed identity (default)");
    assert_eq!(
        h.emu
            .admin()
            .request_count(CounterFilter::operation("Imds").status(200))
            .await
            .expect("counters"),
        2
    );
}

/// The emulator on 127.0.0.2:443, posing as login.microsoftonline.com in the private hosts file:
/// MSAL's default instance discovery is answered locally, and the challenge resource has no port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_default_instance_discovery_with_emulator_on_443() {
    let Some(sdk) = PythonSdk::require() else {
        return;
    };
    let addr: std::net::SocketAddr = "127.0.0.2:443".parse().expect("addr");
    let config = EmulatorConfig::default()
        .seed_yaml(&seed())
        .expect("seed")
        .listen(addr);
    let mut config = config;
    config
        .extra_tls_names
        .push("login.microsoftonline.com".into());
    let emu = match Emulator::start(config).await {
        Ok(e) => e,
        Err(keyvault_emulator::Error::Bind { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            eprintln!(
                "!!! SKIPPED: binding 127.0.0.2:443 needs root (or CAP_NET_BIND_SERVICE); the port-443 mode is untested here"
            );
            return;
        }
        Err(e) => panic!("emulator on 127.0.0.2:443: {e}"),
    };
    assert_eq!(emu.resource(), "https://vault.test");
    assert_eq!(emu.authority_url(), "https://127.0.0.2/");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, emu.ca_pem()).expect("CA");
    let host = emu.vault_host(VAULT);
    let sdk = sdk.hosts(&[
        (host.as_str(), "127.0.0.2"),
        ("login.microsoftonline.com", "127.0.0.2"),
    ]);
    let h = Harness {
        emu,
        sdk,
        _dir: dir,
        ca_path,
    };
    let out = h
        .run("get-secret", SP, SP_SECRET, &[("INSTANCE_DISCOVERY", "1")])
        .await;
    assert_ok(&out, "default instance discovery");
    let admin = h.emu.admin();
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("InstanceDiscovery").status(200))
            .await
            .expect("counters"),
        1
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(200))
            .await
            .expect("counters"),
        1
    );
}
