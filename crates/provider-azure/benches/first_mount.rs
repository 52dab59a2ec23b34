//! First-mount latency with a cold cache, ours against upstream's Go provider, counted and
//! delayed by keyvault-emulator (issue 15, goal 2).
//!
//! Each sample starts a fresh provider process (nothing cached: no token, no vault scope, no
//! connection), mounts 3 secrets over the unix socket as the driver does (pod identity through
//! NMI: the one identity upstream's binary can use against the emulator, see
//! tests/upstream_diff.rs), and stops it. Two network models, 20 ms per round trip:
//!
//! - **requests**: 20 ms on every HTTP request (Key Vault, NMI; the emulator's latency fault on
//!   each route by name), connections free — the round trips the issue counts;
//! - **requests + connections**: `*`, i.e. also 20 ms per TCP connection and per TLS handshake
//!   (both are round trips on a real network).
//!
//! Two kinds of provider process:
//!
//! - **fresh process**: a provider started for the sample, so its own first-call costs (code
//!   pages, lazy set-up) are in the figure;
//! - **running provider**: one provider process per (provider, model) serves all the samples, each
//!   sample the first mount of a new pod with its own identity (pod identity `warm-<n>`) and its
//!   own vault (`bench<n>`): no token, scope or connection to reuse, as when a new workload's
//!   first pod starts on a node whose provider has been running.
//!
//! Prints p50/p99 per (process, provider, model), the emulator's requests per route per mount
//! (connections and TLS handshakes included) and ours/upstream ratios.
//! `cargo bench -p provider-azure --bench first_mount` (`BENCH_SAMPLES`, default 30;
//! `BENCH_RTT_MS`, default 20).

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::emu::{MI, TENANT};
use common::*;
use keyvault_emulator::{Emulator, EmulatorConfig};

const OBJECTS: usize = 3;
/// Milliseconds per round trip: 20, or `BENCH_RTT_MS` (0 shows the part that is not waiting:
/// process, TLS and JSON work on both sides).
fn rtt_ms() -> u64 {
    std::env::var("BENCH_RTT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Our provider binary of the same profile (benches get no `CARGO_BIN_EXE_*`): built on demand.
fn our_binary() -> PathBuf {
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

/// One provider under test: its binary and extra flags.
struct Subject {
    label: &'static str,
    bin: PathBuf,
    flags: Vec<String>,
    upstream: bool,
}

struct Setup {
    emu: Emulator,
    dir: tempfile::TempDir,
    ca: PathBuf,
    env_file: PathBuf,
    /// The vaults a provider may reach (`bench`, then `bench0`...).
    hosts: Vec<String>,
}

/// How the provider process relates to the samples.
#[derive(Clone, Copy, PartialEq)]
enum Process {
    Fresh,
    Running,
}

impl Process {
    fn label(self) -> &'static str {
        match self {
            Process::Fresh => "fresh process",
            Process::Running => "running provider",
        }
    }
}

/// The managed identity of the running-provider samples' pod `warm-<n>`.
fn warm_identity(n: usize) -> String {
    format!("33333333-3333-4333-8333-{n:012}")
}

/// Starts `subject` on a fresh socket and waits for it.
fn start(setup: &Setup, subject: &Subject, n: usize) -> (std::process::Child, PathBuf) {
    let sock = setup.dir.path().join(format!("p{n}.sock"));
    let mut cmd = Command::new(&subject.bin);
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .args(&subject.flags)
        .env("SSL_CERT_FILE", &setup.ca)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", setup.emu.imds_url())
        .env("RUST_LOG", "warn");
    if subject.upstream {
        cmd.arg(format!("--healthz-port={}", test_support::free_port()))
            .arg(format!("--prometheus-port={}", test_support::free_port()));
    } else {
        cmd.arg("--healthz-port=0").arg("--prometheus-port=0");
    }
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let entries: Vec<(&str, IpAddr)> = setup.hosts.iter().map(|h| (h.as_str(), loopback)).collect();
    let hosts = test_support::HostsOverride::new(&entries).unwrap();
    let child = hosts
        .wrap(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&sock) {
        assert!(
            Instant::now() < deadline,
            "{} did not listen on its socket",
            subject.label
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, sock)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// The volume attributes of a mount of `vault`'s 3 secrets by pod `pod` (pod identity).
fn attrs(env_file: &Path, vault: &str, pod: &str) -> String {
    let items: Vec<String> = (0..OBJECTS)
        .map(|i| format!("objectName: s{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    let json = driver_attributes(&[
        ("keyvaultName", vault),
        ("tenantId", TENANT),
        ("cloudName", "AzureStackCloud"),
        ("cloudEnvFileName", env_file.to_str().unwrap()),
        ("usePodIdentity", "true"),
        ("objects", &objects(&refs)),
    ]);
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    map.insert("csi.storage.k8s.io/pod.name".into(), pod.into());
    serde_json::Value::Object(map).to_string()
}

/// A network model: how the emulator's latency is injected.
#[derive(Clone, Copy)]
enum Model {
    Requests,
    RequestsAndConnections,
}

impl Model {
    fn label(self) -> &'static str {
        match self {
            Model::Requests => "requests",
            Model::RequestsAndConnections => "requests + connections",
        }
    }
    async fn inject(self, emu: &Emulator) {
        let admin = emu.admin();
        admin.clear_faults().await.unwrap();
        let latency = keyvault_emulator::Fault::Latency { ms: rtt_ms() };
        let routes: &[&str] = match self {
            Model::Requests => &["GetSecret", "Nmi", "Token", "Imds"],
            Model::RequestsAndConnections => &["*"],
        };
        for r in routes {
            admin.inject_fault(r, latency.clone()).await.unwrap();
        }
    }
}

struct Figures {
    p50: Duration,
    p99: Duration,
    /// Per mount: "operation:status" → count.
    per_mount: BTreeMap<String, f64>,
}

/// Measures `samples` first mounts; `next_warm` hands out the running-provider samples' pods and
/// vaults (each used once).
async fn measure(
    setup: &Setup,
    subject: &Subject,
    model: Model,
    process: Process,
    samples: usize,
    next_warm: &mut usize,
) -> Figures {
    model.inject(&setup.emu).await;
    let admin = setup.emu.admin();
    let cold_attrs = attrs(&setup.env_file, "bench", "app-0");
    let mut lat = Vec::with_capacity(samples);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut running = match process {
        Process::Fresh => None,
        Process::Running => {
            let (child, sock) = start(setup, subject, 1_000_000);
            let client = connect(&sock).await;
            Some((child, sock, client))
        }
    };
    for n in 0..samples {
        let (resp, took) = match &mut running {
            None => {
                let (child, sock) = start(setup, subject, n);
                let mut client = connect(&sock).await;
                admin.reset_counters().await.unwrap();
                let t = Instant::now();
                let resp = client
                    .mount(mount_request(cold_attrs.clone(), None, setup.dir.path()))
                    .await;
                let took = t.elapsed();
                stop(child);
                let _ = std::fs::remove_file(&sock);
                (resp, took)
            }
            Some((_, _, client)) => {
                let k = *next_warm;
                *next_warm += 1;
                let attrs = attrs(&setup.env_file, &format!("bench{k}"), &format!("warm-{k}"));
                admin.reset_counters().await.unwrap();
                let t = Instant::now();
                let resp = client
                    .mount(mount_request(attrs, None, setup.dir.path()))
                    .await;
                (resp, t.elapsed())
            }
        };
        let resp = resp
            .unwrap_or_else(|e| panic!("{}: mount failed: {e:?}", subject.label))
            .into_inner();
        assert_eq!(resp.files.len(), OBJECTS, "{}", subject.label);
        lat.push(took);
        for row in admin.counters().await.unwrap() {
            *totals
                .entry(format!("{}:{}", row.operation, row.status))
                .or_default() += row.count;
        }
    }
    if let Some((child, sock, client)) = running {
        drop(client);
        stop(child);
        let _ = std::fs::remove_file(&sock);
    }
    lat.sort();
    Figures {
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        per_mount: totals
            .into_iter()
            .map(|(k, v)| (k, v as f64 / samples as f64))
            .collect(),
    }
}

fn routes(f: &Figures) -> String {
    f.per_mount
        .iter()
        .map(|(k, v)| {
            if v.fract() == 0.0 {
                format!("{k}={v}")
            } else {
                format!("{k}={v:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut seed =
        format!("tenant: {TENANT}\nvaults:\n  - name: bench\n    access: [{MI}]\n    secrets:\n");
    for i in 0..OBJECTS {
        seed.push_str(&format!("      - {{ name: s{i}, value: value-{i} }}\n"));
    }
    // One vault and one pod identity per running-provider sample: 2 models x 4 providers.
    let warm = 2 * 4 * samples;
    for k in 0..warm {
        seed.push_str(&format!(
            "  - name: bench{k}\n    access: [{}]\n    secrets:\n",
            warm_identity(k)
        ));
        for i in 0..OBJECTS {
            seed.push_str(&format!("      - {{ name: s{i}, value: value-{i} }}\n"));
        }
    }
    seed.push_str(&format!(
        "identities:\n  managed_identities:\n    - {{ client_id: {MI}, default: true }}\n"
    ));
    for k in 0..warm {
        seed.push_str(&format!("    - {{ client_id: {} }}\n", warm_identity(k)));
    }
    seed.push_str(&format!(
        "  pod_identities:\n    - {{ namespace: default, pod: app-0, client_id: {MI} }}\n"
    ));
    for k in 0..warm {
        seed.push_str(&format!(
            "    - {{ namespace: default, pod: warm-{k}, client_id: {} }}\n",
            warm_identity(k)
        ));
    }
    // Built before the emulator takes port 2579, which other tests wait for.
    let ours = our_binary();
    // Upstream's NMI address is fixed (localhost:2579); ours defaults to the same.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpListener::bind("127.0.0.1:2579").is_err() {
        assert!(Instant::now() < deadline, "port 2579 (NMI) stays busy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let mut hosts = vec![emu.vault_host("bench")];
    hosts.extend((0..warm).map(|k| emu.vault_host(&format!("bench{k}"))));
    let setup = Setup {
        emu,
        dir,
        ca,
        env_file,
        hosts,
    };

    let mut subjects = vec![
        Subject {
            label: "ours (defaults)",
            bin: ours.clone(),
            flags: vec![],
            upstream: false,
        },
        Subject {
            label: "ours --fetch-concurrency=1",
            bin: ours.clone(),
            flags: vec!["--fetch-concurrency=1".into()],
            upstream: false,
        },
        Subject {
            label: "ours --cache-ttl=0 (upstream's wire)",
            bin: ours,
            flags: vec!["--cache-ttl=0".into()],
            upstream: false,
        },
    ];
    let upstream = test_support::Peer::UpstreamAzureProvider.path();
    if upstream.exists() {
        subjects.push(Subject {
            label: "upstream (Go)",
            bin: upstream,
            flags: vec![],
            upstream: true,
        });
    } else {
        println!(
            "upstream's provider is not installed ({}): scripts/peers.sh",
            upstream.display()
        );
    }

    println!(
        "\nFirst mount, cold cache (fresh provider process per sample), {OBJECTS} secrets, pod identity (NMI), {} ms per round trip, {samples} samples",
        rtt_ms()
    );
    type Row = (Process, &'static str, &'static str, Figures);
    let mut results: Vec<Row> = Vec::new();
    let mut next_warm = 0;
    for process in [Process::Fresh, Process::Running] {
        for model in [Model::Requests, Model::RequestsAndConnections] {
            for s in &subjects {
                let f = measure(&setup, s, model, process, samples, &mut next_warm).await;
                results.push((process, model.label(), s.label, f));
            }
        }
    }
    println!(
        "\n| process | model | provider | p50 ms | p99 ms | p50 / upstream |\n|---|---|---|---:|---:|---:|"
    );
    for (process, model, label, f) in &results {
        let up = results
            .iter()
            .find(|(p, m, l, _)| p == process && m == model && *l == "upstream (Go)")
            .map(|(_, _, _, f)| f.p50);
        let ratio = up
            .map(|u| format!("{:.2}", f.p50.as_secs_f64() / u.as_secs_f64()))
            .unwrap_or_else(|| "—".into());
        println!(
            "| {} | {model} | {label} | {:.1} | {:.1} | {ratio} |",
            process.label(),
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "\nEmulator counters per mount, requests model (operation:status=count; Connect/TlsHandshake/NmiConnect are connections):"
    );
    for (process, model, label, f) in &results {
        if *model == Model::Requests.label() {
            println!("- {}, {label}: {}", process.label(), routes(f));
        }
    }
    setup.emu.shutdown().await;
}
