//! The `secrets-store-provider-azure` binary as deployed: flags as the Helm chart passes them, the
//! emulator reached like an Azure Stack cloud (env file, `SSL_CERT_FILE`, vault host through a
//! private /etc/hosts, IMDS through `AZURE_POD_IDENTITY_AUTHORITY_HOST`), `/healthz`, `--version`,
//! and a graceful stop on SIGTERM that removes the socket.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::emu::*;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_secrets-store-provider-azure");

#[test]
fn version_flag_prints_json() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["version"].as_str().unwrap().starts_with('v'));
    let out = Command::new(BIN)
        .arg("--metrics-backend=statsd")
        .arg("--endpoint=unix:///nonexistent/dir/x.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported metrics backend statsd"));
}

/// A token proxy URL that cannot work stops the provider at start, naming the flag's value and
/// the fix (upstream starts and fails every identity-binding mount).
#[test]
fn an_unusable_token_proxy_url_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg(format!(
            "--endpoint=unix://{}",
            dir.path().join("azure.sock").display()
        ))
        .arg("--healthz-port=0")
        .arg("--prometheus-port=0")
        .arg("--token-proxy-url=http://proxy.example")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "invalid identity-binding flag (--token-proxy-url, --sni-name): custom token endpoint URL \"http://proxy.example\" must use https scheme; give an https URL such as https://kubernetes.default.svc.cluster.local"
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("azure.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mounts_reports_health_and_stops_on_sigterm() {
    let env = Env::start(&seed("[]", "none")).await; // also serves an in-process provider; unused here
    let sock = env.dir.path().join("binary.sock");
    let healthz_port = test_support::free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg("--construct-pem-chain=true")
        .arg(format!("--healthz-port={healthz_port}"))
        .arg("--healthz-path=/healthz")
        .arg("--healthz-timeout=5s")
        .arg("--prometheus-port=0")
        .arg("--log-format-json=true")
        .arg("-v=2")
        .env("SSL_CERT_FILE", &env.ca_file)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", env.emu.imds_url());
    let hosts = test_support::HostsOverride::new(&[(
        &env.emu.vault_host("kv1"),
        "127.0.0.1".parse::<IpAddr>().unwrap(),
    )])
    .unwrap();
    let log = env.dir.path().join("provider.log");
    let mut child = hosts
        .wrap(&cmd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&sock) {
        assert!(
            Instant::now() < deadline,
            "no socket; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = connect(&sock).await;
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: cert1\nobjectType: secret",
    ]);
    let attrs = env.attrs(&[("useVMManagedIdentity", "true"), ("objects", &objs)]);
    let r = client
        .mount(mount_request(attrs, None, env.dir.path()))
        .await;
    let r = r
        .unwrap_or_else(|e| {
            panic!(
                "{e:?}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .into_inner();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());
    assert!(
        String::from_utf8_lossy(&r.files[1].contents).starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let http = entra_auth::build_client(&Default::default()).unwrap();
    let resp = http
        .get(format!("http://127.0.0.1:{healthz_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.text().await.unwrap().as_str()),
        (200, "ok")
    );

    let pid = child.id();
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let stop = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(10),
            "no graceful stop within 10s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "socket removed on SIGTERM");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("\"mount succeeded\"")),
        "JSON logs: {logs}"
    );
    assert!(!logs.contains(SEEDED_SECRET));
}
