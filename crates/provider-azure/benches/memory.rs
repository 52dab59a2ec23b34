//! Provider memory, ours next to upstream's Go provider (the test peer) in the same run.
//!
//! Both binaries serve the same keyvault-emulator the same way (AzureStackCloud env file,
//! `SSL_CERT_FILE`, a private /etc/hosts, pod identity through the emulator's NMI on upstream's
//! fixed `localhost:2579`), with their health and metrics listeners on, as in a cluster. Each in
//! turn: RSS (VmRSS) and threads one second after its socket appears, then 10 rounds of 64
//! concurrent `Mount`s of 3 objects, the peak (VmHWM) and the RSS a second after the load.
//!
//! `cargo bench -p provider-azure --bench memory`. `BENCH_OURS_BIN` runs another build of ours
//! (an earlier one, to compare), `BENCH_OURS_ARGS` adds flags to it (space-separated); the
//! bench's environment reaches both children (`MALLOC_ARENA_MAX`,
//! `TOKIO_WORKER_THREADS` to try allocator and runtime settings without a rebuild).

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use keyvault_emulator::{Emulator, EmulatorConfig};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const MI: &str = "22222222-2222-2222-2222-222222222222";
const ROUNDS: usize = 10;
const CONCURRENT: usize = 64;
const OBJECTS: usize = 3;

#[derive(Debug, Clone, Copy, Default)]
struct Status {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

fn status(pid: u32) -> Status {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Status {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        threads: field("Threads:"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The provider binary of the same profile (benches get no `CARGO_BIN_EXE_*`): built on demand;
/// `BENCH_OURS_BIN` instead when set.
fn our_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("BENCH_OURS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
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
    profile_dir.join("secrets-store-provider-azure")
}

struct Measured {
    idle: Status,
    peak_kib: u64,
    after: Status,
    load: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    name: &str,
    bin: &Path,
    extra_args: &[String],
    emu: &Emulator,
    dir: &Path,
    ca: &Path,
    attrs: &str,
) -> Measured {
    let sock = dir.join(format!("{name}.sock"));
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg(format!("--healthz-port={}", test_support::free_port()))
        .arg(format!("--prometheus-port={}", test_support::free_port()))
        .args(extra_args)
        .env("SSL_CERT_FILE", ca)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", emu.imds_url())
        .env("RUST_LOG", "warn");
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
            "{name} did not create its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status(pid);
    let client = connect(&sock).await;
    let started = Instant::now();
    let mut peak_kib = 0;
    for _ in 0..ROUNDS {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENT {
            let mut c = client.clone();
            let req = mount_request(attrs.to_owned(), None, dir);
            set.spawn(async move { c.mount(req).await });
        }
        while let Some(res) = set.join_next().await {
            let files = res.unwrap().unwrap().into_inner().files.len();
            assert_eq!(files, OBJECTS, "{name}: files of a mount");
        }
        peak_kib = peak_kib.max(status(pid).rss_kib);
    }
    let load = started.elapsed();
    drop(client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status(pid);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stop = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stop.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Measured {
        idle,
        peak_kib: peak_kib.max(after.hwm_kib),
        after,
        load,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut seed =
        format!("tenant: {TENANT}\nvaults:\n  - name: bench\n    access: [{MI}]\n    secrets:\n");
    for i in 0..OBJECTS {
        seed.push_str(&format!(
            "      - {{ name: s{i}, value: value-{i}-{} }}\n",
            "x".repeat(64)
        ));
    }
    seed.push_str(&format!(
        "identities:\n  managed_identities:\n    - {{ client_id: {MI}, default: true }}\n  pod_identities:\n    - {{ namespace: default, pod: app-0, client_id: {MI} }}\n"
    ));
    common::emu::wait_for_port_2579().await;
    let emu = Emulator::start(EmulatorConfig {
        nmi_listen: common::emu::UPSTREAM_NMI.parse().unwrap(),
        ..EmulatorConfig::default().seed_yaml(&seed).unwrap()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    let env_file = dir.path().join("cloud.json");
    std::fs::write(&env_file, emu.azure_stack_environment().to_string()).unwrap();
    let items: Vec<String> = (0..OBJECTS)
        .map(|i| format!("objectName: s{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    let attrs = driver_attributes(&[
        ("keyvaultName", "bench"),
        ("tenantId", TENANT),
        ("cloudName", "AzureStackCloud"),
        ("cloudEnvFileName", env_file.to_str().unwrap()),
        ("usePodIdentity", "true"),
        ("objects", &objects(&refs)),
    ]);

    let ours_args: Vec<String> = std::env::var("BENCH_OURS_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let ours = measure(
        "ours",
        &our_binary(),
        &ours_args,
        &emu,
        dir.path(),
        &ca,
        &attrs,
    )
    .await;
    let upstream_bin = test_support::Peer::UpstreamAzureProvider.path();
    let upstream = if upstream_bin.exists() {
        Some(
            measure(
                "upstream",
                &upstream_bin,
                &[],
                &emu,
                dir.path(),
                &ca,
                &attrs,
            )
            .await,
        )
    } else {
        println!(
            "upstream provider not installed ({}); run `{}`",
            upstream_bin.display(),
            test_support::INSTALL_COMMAND
        );
        None
    };

    println!(
        "\nProvider memory: idle, then {ROUNDS} rounds of {CONCURRENT} concurrent mounts of {OBJECTS} objects (pod identity, keyvault-emulator)"
    );
    println!(
        "| | threads idle | RSS idle (anon + file) | peak RSS (VmHWM) | RSS after load (anon + file) | load time |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, m: &Measured| {
        println!(
            "| {name} | {} | {:.1} MiB ({:.1} + {:.1}) | {:.1} MiB | {:.1} MiB ({:.1} + {:.1}) | {:.2} s |",
            m.idle.threads,
            mib(m.idle.rss_kib),
            mib(m.idle.anon_kib),
            mib(m.idle.file_kib),
            mib(m.peak_kib),
            mib(m.after.rss_kib),
            mib(m.after.anon_kib),
            mib(m.after.file_kib),
            m.load.as_secs_f64()
        );
    };
    row("ours", &ours);
    if let Some(up) = &upstream {
        row("upstream", up);
        println!(
            "| ours / upstream | | {:.2} | {:.2} | {:.2} | {:.2} |",
            ours.idle.rss_kib as f64 / up.idle.rss_kib as f64,
            ours.peak_kib as f64 / up.peak_kib as f64,
            ours.after.rss_kib as f64 / up.after.rss_kib as f64,
            ours.load.as_secs_f64() / up.load.as_secs_f64()
        );
    }
}
