//! NodeUnpublishVolume with 2,000 mounts on the node: the cost of one call, before and after the
//! mount-point check became one `statx(2)`.
//!
//! Root only (tmpfs mounts). The bench re-runs itself under `unshare --mount --propagation
//! private`, so every mount it makes lives in a private mount namespace and goes away with it,
//! whatever happens. In there:
//!
//! 1. 1,000 tmpfs mounts stand for the other pods of the node;
//! 2. the `secrets-store-csi-driver` binary (release build) publishes 1,000 volumes (a fake
//!    in-process provider, 2 small files each), so the node has about 2,000 mounts;
//! 3. the mount-point check alone, per call: the `/proc/self/mountinfo` scan the driver used
//!    before against the `statx` it uses now, on a mounted and on an unmounted target;
//! 4. the cleanup an unpublish does (check, unmount, remove the directory), in-process, per call,
//!    with each check, on 200 volumes each;
//! 5. the 1,000 volumes unpublished one after another through the driver's socket, as kubelet
//!    does: per-call p50/p99 and the total, next to upstream's 4.8 s (issue 15).
//!
//! Run: `cargo bench -p driver --bench unpublish`

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Behaviour, FakeProvider, kubelet_context, kubelet_target, publish_request};
use csi_proto::v1 as csi;
use driver::mounter::{Mounter, TmpfsMounter, is_mount_point, is_mount_point_by_mountinfo};
use test_support::ChildGuard;

type Node = csi::node_client::NodeClient<tonic::transport::Channel>;

/// Set in the re-run inside the private mount namespace.
const IN_NAMESPACE: &str = "UNPUBLISH_BENCH_IN_PRIVATE_MOUNT_NS";
const OTHER_MOUNTS: usize = 1000;
const VOLUMES: usize = 1000;
/// Upstream's figure from issue 15: 1,000 sequential unpublishes.
const UPSTREAM_1000_S: f64 = 4.8;

fn main() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("unpublish bench: needs root (tmpfs mounts); skipped");
        return Ok(());
    }
    if std::env::var_os(IN_NAMESPACE).is_none() {
        let status = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(IN_NAMESPACE, "1")
            .status()?;
        anyhow::ensure!(
            status.success(),
            "the bench in its mount namespace: {status}"
        );
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (VmRSS KiB, VmHWM KiB, threads) of a process.
fn proc_status(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

fn mounts_on_node() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Mean time of `f` over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

/// What an unpublish does to its target, with the given mount-point check.
fn cleanup(target: &Path, check: fn(&Path) -> std::io::Result<bool>) -> anyhow::Result<()> {
    if check(target)? {
        TmpfsMounter.unmount(target)?;
    }
    std::fs::remove_dir_all(target)?;
    Ok(())
}

/// Mounts 200 targets, cleans them up one by one with `check`; sorted per-call times.
fn cleanup_run(
    root: &Path,
    check: fn(&Path) -> std::io::Result<bool>,
) -> anyhow::Result<Vec<Duration>> {
    let targets: Vec<PathBuf> = (0..200).map(|i| root.join(format!("t{i}"))).collect();
    for t in &targets {
        std::fs::create_dir_all(t)?;
        TmpfsMounter.mount(t)?;
        std::fs::write(t.join("secret"), b"value")?;
    }
    let mut lat = Vec::with_capacity(targets.len());
    for t in &targets {
        let start = Instant::now();
        cleanup(t, check)?;
        lat.push(start.elapsed());
    }
    lat.sort();
    Ok(lat)
}

async fn bench() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // 1. The node's other mounts.
    let others = dir.path().join("other-pods");
    for i in 0..OTHER_MOUNTS {
        let p = others.join(format!("m{i}"));
        std::fs::create_dir_all(&p)?;
        TmpfsMounter.mount(&p)?;
    }

    // 2. The driver with 1,000 published volumes.
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
    let driver = ChildGuard::spawn(
        "secrets-store-csi-driver",
        cmd,
        &dir.path().join("driver.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "driver did not start:\n{}",
            driver.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = driver.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proc_status(pid);
    let node: Node = csi::node_client::NodeClient::new(driver::provider::unix_channel(&sock));
    let root = dir.path().join("kubelet");
    let mut tasks = Vec::new();
    for c in 0..16 {
        let mut node = node.clone();
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            let mut targets = Vec::new();
            for i in (c..VOLUMES).step_by(16) {
                let uid = format!("uid-{i}");
                let target = kubelet_target(&root, &uid, "secrets");
                let req = publish_request(
                    &format!("csi-{i}"),
                    &target,
                    kubelet_context("kv", &format!("pod-{i}"), "default", &uid, "default", None),
                );
                node.node_publish_volume(req).await?;
                targets.push((i, target));
            }
            anyhow::Ok(targets)
        }));
    }
    let mut volumes = Vec::new();
    for t in tasks {
        volumes.extend(t.await??);
    }
    volumes.sort();
    let mounts = mounts_on_node();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = proc_status(pid);

    // 3. The check alone.
    let (mounted, unmounted) = (volumes[0].1.clone(), dir.path().to_path_buf());
    for (p, want) in [(&mounted, true), (&unmounted, false)] {
        anyhow::ensure!(is_mount_point(p)? == want && is_mount_point_by_mountinfo(p)? == want);
    }
    let check = |f: fn(&Path) -> std::io::Result<bool>, p: &Path, n: u32| {
        per_call(n, || {
            let _ = std::hint::black_box(f(std::hint::black_box(p)));
        })
    };
    let scan_mounted = check(is_mount_point_by_mountinfo, &mounted, 200);
    let scan_unmounted = check(is_mount_point_by_mountinfo, &unmounted, 200);
    let statx_mounted = check(is_mount_point, &mounted, 20_000);
    let statx_unmounted = check(is_mount_point, &unmounted, 20_000);

    // 4. The cleanup, in-process, with each check (the driver's volumes still mounted).
    let scratch = dir.path().join("scratch");
    let before = tokio::task::spawn_blocking({
        let s = scratch.join("before");
        move || cleanup_run(&s, is_mount_point_by_mountinfo)
    })
    .await??;
    let after = tokio::task::spawn_blocking({
        let s = scratch.join("after");
        move || cleanup_run(&s, is_mount_point)
    })
    .await??;

    // 5. Unpublish through the driver, one after another.
    let mut lat = Vec::with_capacity(volumes.len());
    let mut client = node.clone();
    let started = Instant::now();
    for (i, target) in &volumes {
        let t = Instant::now();
        client
            .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: format!("csi-{i}"),
                target_path: target.display().to_string(),
            })
            .await?;
        lat.push(t.elapsed());
    }
    let total = started.elapsed();
    lat.sort();
    for (_, target) in &volumes {
        anyhow::ensure!(!target.exists(), "{} left behind", target.display());
    }
    let mounts_after = mounts_on_node();
    drop(driver);
    for i in 0..OTHER_MOUNTS {
        let _ = TmpfsMounter.unmount(&others.join(format!("m{i}")));
    }

    let mut out = String::new();
    out.push_str(&format!(
        "\nNodeUnpublishVolume with {mounts} mounts on the node (private mount namespace, tmpfs)\n"
    ));
    out.push_str("| | mountinfo scan (before) | statx (now) | ratio |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| mount-point check, mounted target | {:.3} ms | {:.4} ms | {:.0}× |\n",
        ms(scan_mounted),
        ms(statx_mounted),
        scan_mounted.as_secs_f64() / statx_mounted.as_secs_f64()
    ));
    out.push_str(&format!(
        "| mount-point check, plain directory | {:.3} ms | {:.4} ms | {:.0}× |\n",
        ms(scan_unmounted),
        ms(statx_unmounted),
        scan_unmounted.as_secs_f64() / statx_unmounted.as_secs_f64()
    ));
    out.push_str(&format!(
        "| cleanup (check, umount, rmdir), in-process, p50 / p99 of 200 | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.0}× |\n",
        ms(percentile(&before, 0.5)),
        ms(percentile(&before, 0.99)),
        ms(percentile(&after, 0.5)),
        ms(percentile(&after, 0.99)),
        percentile(&before, 0.5).as_secs_f64() / percentile(&after, 0.5).as_secs_f64()
    ));
    out.push_str(&format!(
        "\nNodeUnpublishVolume through the driver binary, {} volumes one after another ({mounts} → {mounts_after} mounts)\n",
        volumes.len()
    ));
    out.push_str("| per call p50 | p99 | max | total | upstream total (issue 15) | ours / upstream |\n|---|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| {:.3} ms | {:.3} ms | {:.3} ms | {:.2} s | {UPSTREAM_1000_S} s | {:.2} |\n",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        total.as_secs_f64(),
        total.as_secs_f64() / UPSTREAM_1000_S
    ));
    out.push_str(&format!(
        "\nDriver RSS (no API server: classes from a file): idle {:.1} MiB, {} threads; with {} volumes published {:.1} MiB (peak {:.1} MiB), {} threads\n",
        idle.0 as f64 / 1024.0,
        idle.2,
        volumes.len(),
        loaded.0 as f64 / 1024.0,
        loaded.1 as f64 / 1024.0,
        loaded.2
    ));
    eprint!("{out}");
    Ok(())
}
