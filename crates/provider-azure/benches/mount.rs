//! Mount latency and provider memory against keyvault-emulator.
//!
//! Runs the real `secrets-store-provider-azure` binary as a child process configured as an Azure
//! Stack user would (env file + `SSL_CERT_FILE`, vault host via a private /etc/hosts, IMDS via
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST`), drives `Mount` over its unix socket exactly as the driver
//! does, and prints p50/p99 per (objects, concurrent mounts) and the provider's RSS idle and under
//! load (VmRSS / VmHWM from /proc). `cargo bench -p provider-azure --bench mount`
//! (`BENCH_FETCH_CONCURRENCY=8` fetches 8 objects of a mount at a time; default 1 as upstream).

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use keyvault_emulator::{Emulator, EmulatorConfig};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const MI: &str = "22222222-2222-2222-2222-222222222222";

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The provider binary of the same profile (benches get no `CARGO_BIN_EXE_*`): built on demand.
fn provider_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = profile_dir.join("secrets-store-provider-azure");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-p",
        "provider-azure",
        "--bin",
        "secrets-store-provider-azure",
    ]);
    if release {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "building the provider binary failed"
    );
    bin
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut seed =
        format!("tenant: {TENANT}\nvaults:\n  - name: bench\n    access: [{MI}]\n    secrets:\n");
    for i in 0..50 {
        seed.push_str(&format!(
            "      - {{ name: s{i}, value: value-{i}-{} }}\n",
            "x".repeat(64)
        ));
    }
    seed.push_str(&format!(
        "identities:\n  managed_identities:\n    - {{ client_id: {MI}, default: true }}\n"
    ));
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    let env_file = dir.path().join("cloud.json");
    std::fs::write(&env_file, emu.azure_stack_environment().to_string()).unwrap();
    let sock = dir.path().join("azure.sock");
    let mut cmd = Command::new(provider_binary());
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg("--healthz-port=0")
        .arg("--prometheus-port=0")
        .arg(format!(
            "--fetch-concurrency={}",
            std::env::var("BENCH_FETCH_CONCURRENCY").unwrap_or_else(|_| "1".into())
        ))
        .env("SSL_CERT_FILE", &ca)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", emu.imds_url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let hosts = test_support::HostsOverride::new(&[(
        &emu.vault_host("bench"),
        "127.0.0.1".parse::<IpAddr>().unwrap(),
    )])
    .unwrap();
    let mut child = hosts
        .wrap(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "provider did not create its socket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle_rss, _) = rss_kib(pid);

    let client = connect(&sock).await;
    let attrs = |n: usize| {
        let items: Vec<String> = (0..n)
            .map(|i| format!("objectName: s{i}\nobjectType: secret"))
            .collect();
        let refs: Vec<&str> = items.iter().map(String::as_str).collect();
        driver_attributes(&[
            ("keyvaultName", "bench"),
            ("tenantId", TENANT),
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", env_file.to_str().unwrap()),
            ("useVMManagedIdentity", "true"),
            ("objects", &objects(&refs)),
        ])
    };
    // warm-up
    for _ in 0..3 {
        client
            .clone()
            .mount(mount_request(attrs(1), None, dir.path()))
            .await
            .unwrap();
    }
    println!(
        "\nMount latency against keyvault-emulator (provider binary, VM managed identity, release build)"
    );
    println!(
        "{:>8} {:>11} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "objects", "concurrent", "mounts", "p50 ms", "p99 ms", "mounts/s", "peak RSS KiB"
    );
    let admin = emu.admin();
    for &objects_n in &[1usize, 10, 50] {
        for &conc in &[1usize, 16, 64] {
            let rounds = if conc == 1 { 50 } else { 4 };
            let a = attrs(objects_n);
            admin.reset_counters().await.unwrap();
            let mut lat = Vec::new();
            let started = Instant::now();
            let mut peak = 0;
            for _ in 0..rounds {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..conc {
                    let mut c = client.clone();
                    let req = mount_request(a.clone(), None, dir.path());
                    set.spawn(async move {
                        let t = Instant::now();
                        let r = c.mount(req).await;
                        (t.elapsed(), r.map(|r| r.into_inner().files.len()))
                    });
                }
                while let Some(res) = set.join_next().await {
                    let (d, files) = res.unwrap();
                    assert_eq!(files.unwrap(), objects_n);
                    lat.push(d);
                }
                peak = peak.max(rss_kib(pid).0);
            }
            let total = started.elapsed();
            lat.sort();
            let (_, hwm) = rss_kib(pid);
            println!(
                "{:>8} {:>11} {:>8} {:>10.2} {:>10.2} {:>10.1} {:>12}",
                objects_n,
                conc,
                lat.len(),
                pct(&lat, 0.5).as_secs_f64() * 1e3,
                pct(&lat, 0.99).as_secs_f64() * 1e3,
                lat.len() as f64 / total.as_secs_f64(),
                hwm.max(peak),
            );
        }
    }
    let counters = admin.counters().await.unwrap();
    let last: Vec<String> = counters
        .iter()
        .map(|r| format!("{}:{}={}", r.operation, r.status, r.count))
        .collect();
    println!(
        "\nemulator requests in the last cell (50 objects × 64 concurrent × 4 rounds): {}",
        last.join(" ")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after_rss, hwm) = rss_kib(pid);
    println!(
        "provider RSS: idle {idle_rss} KiB, after load {after_rss} KiB, peak (VmHWM) {hwm} KiB"
    );
    // SIGTERM for a graceful stop
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stop = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            println!(
                "provider stopped on SIGTERM in {:?} ({status})",
                stop.elapsed()
            );
            break;
        }
        if stop.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            println!("provider did not stop within 10s of SIGTERM; killed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
