//! The binary with trace-level JSON logs: a publish carrying a service-account token,
//! nodePublishSecretRef data and secret file contents (canaries) leaves none of them in the log,
//! the metrics or an error message, and `/metrics` serves upstream's metric names.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Behaviour, FakeProvider, MountGuard, assert_no_canary, canary, kubelet_context, kubelet_target,
    publish_request,
};
use csi_proto::v1 as csi;
use test_support::ChildGuard;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_secrets_and_metrics_are_served() -> anyhow::Result<()> {
    let (token, npsr, content) = (canary(), canary(), canary());
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    fake.state.set(Behaviour::Files(
        vec![("foo".into(), 0o644, content.as_bytes().to_vec())],
        vec![("secret/foo".into(), "1".into())],
    ));
    let classes = dir.path().join("classes.yaml");
    std::fs::write(
        &classes,
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: kv}\nspec: {provider: fake, parameters: {a: b}}\n",
    )?;
    let sock = dir.path().join("csi.sock");
    let metrics_port = test_support::free_port();
    let log = dir.path().join("driver.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secrets-store-csi-driver"));
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg("--nodeid=log-node")
        .arg(format!("--class-file={}", classes.display()))
        .arg(format!("--provider-volume={}", providers.display()))
        .arg("--additional-provider-volume-paths=")
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg("--log-format-json")
        .arg("-v=6")
        .env("RUST_LOG", "trace");
    if !common::is_root() {
        cmd.arg("--no-tmpfs");
    }
    let mut driver = ChildGuard::spawn("secrets-store-csi-driver", cmd, &log)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&sock) {
        anyhow::ensure!(
            driver.is_running() && Instant::now() < deadline,
            "driver did not start:\n{}",
            driver.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut node = csi::node_client::NodeClient::new(driver::provider::unix_channel(&sock));
    let target = kubelet_target(dir.path(), "uid-l", "secrets");
    let _g = MountGuard(vec![target.clone()]);
    let tokens = format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{token}","expirationTimestamp":"2099-01-01T00:00:00Z"}}}}"#
    );
    let mut req = publish_request(
        "csi-l",
        &target,
        kubelet_context("kv", "web", "default", "uid-l", "default", Some(&tokens)),
    );
    req.secrets.insert("clientsecret".into(), npsr.clone());
    node.node_publish_volume(req.clone()).await?;
    // A failing publish too (provider error), so error paths are logged as well.
    fake.state.set(Behaviour::ErrorCode("Boom".into()));
    let target2 = kubelet_target(dir.path(), "uid-m", "secrets");
    let _g2 = MountGuard(vec![target2.clone()]);
    let mut req2 = req.clone();
    req2.target_path = target2.display().to_string();
    let failed = node.node_publish_volume(req2).await.err();
    assert_no_canary(
        "an error message",
        failed
            .as_ref()
            .map(tonic::Status::message)
            .ok_or_else(|| anyhow::anyhow!("the failing publish succeeded"))?,
    );
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: "csi-l".into(),
        target_path: target.display().to_string(),
    })
    .await?;

    let body = http_get(metrics_port).await?;
    for name in [
        "node_publish_total",
        "node_publish_error_total",
        "node_unpublish_total",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    assert_no_canary("/metrics", &body);

    driver.stop(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log)?;
    assert!(
        text.contains("volume contents written"),
        "the log has the publish:\n{text}"
    );
    assert!(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.trim_start().starts_with('{')),
        "JSON lines:\n{text}"
    );
    assert_no_canary("the driver's log", &text);
    Ok(())
}

/// A plain HTTP/1.1 GET of /metrics over a TCP socket (no HTTP client dependency needed).
async fn http_get(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    Ok(out)
}

#[test]
fn version_prints_json() -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_secrets-store-csi-driver"))
        .arg("--version")
        .output()?;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["BuildVersion"], driver::VERSION);
    Ok(())
}
