//! The `keyvault-emulator` binary: `--help` documents the flags; a seed file and `--ca-out`
//! give a working vault; a bad seed exits non-zero naming the field.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_keyvault-emulator");

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--imds-listen",
        "--nmi-listen",
        "--admin-listen",
        "--dns-suffix",
        "--seed",
        "--state",
        "--ca-out",
        "--ca-cert",
        "--ca-key",
        "--tls-name",
        "--default-vault",
        "--token-lifetime-secs",
        "--extra-audience",
        "--admin-token",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "disable_instance_discovery",
        "/etc/hosts",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}:\n{help}");
    }
}

#[test]
fn bad_seed_exits_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "vaults:\n  - name: ok-vault\n    secrets: [{ name: 'no_underscores', value: x }]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--imds-listen",
            "127.0.0.1:0",
            "--nmi-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--seed",
        ])
        .arg(&seed)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no_underscores") && err.contains("seed.yaml"),
        "{err}"
    );
}

#[tokio::test]
async fn binary_serves_the_example_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed.yaml");
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--imds-listen",
            "127.0.0.1:0",
            "--nmi-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--seed",
        ])
        .arg(&seed)
        .arg("--ca-out")
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let guard = Kill(child);
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.contains("ca bundle"))
            .collect()
    })
    .await
    .expect("read stdout");
    let authority = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("authority"))
        .expect("authority line")
        .trim()
        .to_string();
    let port: u16 = authority
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port number");
    let pem = std::fs::read_to_string(&ca).expect("--ca-out written");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // Talk to it like a user would: trust the CA, resolve demo.vault.test, get a token, read.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            der::pem::decode_vec(pem.as_bytes()).expect("pem").1,
        ))
        .expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("demo.vault.test", addr)
        .build()
        .expect("client");
    let tok: serde_json::Value = http
        .post(format!(
            "{authority}72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-1111-1111-1111-111111111111"),
            ("client_secret", "not-a-real-client-secret"),
            ("scope", &format!("https://vault.test:{port}/.default")),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let secret: serde_json::Value = http
        .get(format!(
            "https://demo.vault.test:{port}/secrets/db-password/?api-version=7.4"
        ))
        .bearer_auth(tok["access_token"].as_str().expect("access token"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(secret["value"], "not-a-real-password");
    drop(guard);
}
