//! NodePublishVolume end to end: the `secrets-store-csi-driver` binary (release build) on a unix
//! socket, called the way kubelet calls it, with an in-process fake provider on another unix
//! socket (2 small files per volume; no Key Vault) and the class read from a YAML file. As root
//! every volume is a real tmpfs mount. Prints p50/p99 latency at 1 and 16 concurrent callers
//! and the driver's RSS idle and with 1,000 published volumes.
//!
//! Run: `cargo bench -p driver --bench publish`

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Behaviour, FakeProvider, kubelet_context, kubelet_target, publish_request};
use csi_proto::v1 as csi;
use test_support::ChildGuard;

type Node = csi::node_client::NodeClient<tonic::transport::Channel>;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn publish_one(
    node: &mut Node,
    root: &Path,
    i: usize,
) -> anyhow::Result<(PathBuf, Duration)> {
    let uid = format!("uid-{i}");
    let target = kubelet_target(root, &uid, "secrets");
    let req = publish_request(
        &format!("csi-{i}"),
        &target,
        kubelet_context("kv", &format!("pod-{i}"), "default", &uid, "default", None),
    );
    let mut r = tonic::Request::new(req);
    r.set_timeout(Duration::from_secs(30));
    let start = Instant::now();
    node.node_publish_volume(r).await?;
    Ok((target, start.elapsed()))
}

async fn unpublish_all(node: &mut Node, targets: &[PathBuf]) -> anyhow::Result<()> {
    for (i, t) in targets.iter().enumerate() {
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: format!("csi-{i}"),
            target_path: t.display().to_string(),
        })
        .await?;
    }
    Ok(())
}

/// `n` publishes from `concurrency` callers; returns sorted latencies and the targets.
async fn run(
    node: &Node,
    root: &Path,
    start: usize,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<PathBuf>)> {
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let mut node = node.clone();
        let root = root.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = start + c;
            while i < start + n {
                out.push(publish_one(&mut node, &root, i).await?);
                i += concurrency;
            }
            anyhow::Ok(out)
        }));
    }
    let mut lat = Vec::new();
    let mut targets = Vec::new();
    for t in tasks {
        for (target, d) in t.await?? {
            lat.push(d);
            targets.push(target);
        }
    }
    lat.sort();
    Ok((lat, targets))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let providers = dir.path().join("providers");
    std::fs::create_dir_all(&providers)?;
    let fake = FakeProvider::start(&providers, "fake").await?;
    fake.state.set(Behaviour::Files(
        vec![
            ("username".into(), 0o644, b"admin".to_vec()),
            ("password".into(), 0o600, vec![b'p'; 64]),
        ],
        vec![
            ("secret/username".into(), "v1".into()),
            ("secret/password".into(), "v1".into()),
        ],
    ));
    let classes = dir.path().join("classes.yaml");
    std::fs::write(
        &classes,
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: kv, namespace: default}\nspec: {provider: fake, parameters: {keyvaultName: kv1}}\n",
    )?;
    let sock = dir.path().join("csi.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secrets-store-csi-driver"));
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg("--nodeid=bench-node")
        .arg(format!("--class-file={}", classes.display()))
        .arg(format!("--provider-volume={}", providers.display()))
        .arg("--additional-provider-volume-paths=")
        .arg("--metrics-addr=127.0.0.1:0")
        .env("RUST_LOG", "warn");
    if !rustix::process::geteuid().is_root() {
        cmd.arg("--no-tmpfs");
    }
    let driver = ChildGuard::spawn(
        "secrets-store-csi-driver",
        cmd,
        &dir.path().join("driver.log"),
    )?;
    let pid = driver.id().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "driver did not start:\n{}",
            driver.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kib(pid);
    let node: Node = csi::node_client::NodeClient::new(driver::provider::unix_channel(&sock));
    let root = dir.path().join("kubelet");

    // Warm-up (connections, page cache), not measured.
    let (_, warm) = run(&node, &root, 0, 20, 1).await?;
    unpublish_all(&mut node.clone(), &warm).await?;

    let (lat1, t1) = run(&node, &root, 1000, 300, 1).await?;
    unpublish_all(&mut node.clone(), &t1).await?;
    let (lat16, t16) = run(&node, &root, 2000, 800, 16).await?;
    unpublish_all(&mut node.clone(), &t16).await?;

    let (_, t1000) = run(&node, &root, 10_000, 1000, 16).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loaded = rss_kib(pid);
    let provider_calls = fake.state.calls();
    let started = Instant::now();
    unpublish_all(&mut node.clone(), &t1000).await?;
    let unpublish_1000 = started.elapsed();

    let tmpfs = if rustix::process::geteuid().is_root() {
        "tmpfs"
    } else {
        "plain dir (not root)"
    };
    let mut out = String::new();
    out.push_str(&format!("\nNodePublishVolume end to end (driver binary over unix socket, fake in-process provider, {tmpfs})\n"));
    out.push_str("| callers | publishes | p50 | p99 | max |\n|---|---|---|---|---|\n");
    for (c, lat) in [(1, &lat1), (16, &lat16)] {
        out.push_str(&format!(
            "| {c} | {} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            lat.len(),
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        ));
    }
    out.push_str(&format!(
        "\nDriver RSS: idle {:.1} MiB; with 1,000 published volumes {:.1} MiB\n",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0
    ));
    out.push_str(&format!(
        "Unpublish of 1,000 volumes: {:.2} s; provider Mount calls in total: {provider_calls}\n",
        unpublish_1000.as_secs_f64()
    ));
    eprint!("{out}");
    drop(driver);
    Ok(())
}
