//! Key Vault and Entra requests per mount wave, and mount latency, with `--cache-ttl` on and off.
//!
//! For N = 1, 10, 100, 1000 pods on one node sharing one SecretProviderClass (a secret, a key and
//! a certificate, service-principal identity), runs two waves of N concurrent `Mount` calls over
//! the provider's unix socket: the first mount of every pod, then a republish wave (what the
//! driver's rotation poll sends every 2 minutes), then a republish wave after the TTL has passed
//! (the steady state with `--cache-ttl` equal to the poll interval; the TTL is 2 s here so the
//! bench does not wait 2 minutes). keyvault-emulator counts the requests. The
//! provider and the emulator run in this process (one Tokio runtime, 2 worker threads), as in
//! tests/cache.rs. `cargo bench -p provider-azure --bench cache` (`BENCH_CACHE_MAX_N=100` stops
//! earlier).
//!
//! Then rotation (issue 15): with the default `--cache-ttl` (2m), N pods refresh every half poll
//! interval at spread phases, as the driver does with rotation on, for two poll intervals (the
//! poll interval is scaled down to `BENCH_ROTATION_POLL_MS`, default 4 s); the secret changes in
//! the middle. Printed: Key Vault GETs per object per poll interval, and how long after the
//! change the last pod's refresh returned the new value, with and without the driver's
//! `secrets-store.csi.k8s.io/maxAge` (half the poll interval), and with the cache off.
//!
//! Upstream's Go provider (the test peer, `scripts/peers.sh`) runs the same waves and the same
//! rotation in the same run, on its own socket against the same emulator (service principal
//! too), and the ratios ours/upstream are printed. Under `CI=true` a missing peer fails the bench.

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::emu::*;
use common::*;
use keyvault_emulator::{AdminClient, CounterFilter};
use provider_proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use tonic::transport::Channel;

const CLASS: &[&str] = &[
    "objectName: secret1\nobjectType: secret",
    "objectName: rsa1\nobjectType: key",
    "objectName: cert1\nobjectType: cert",
];
/// gRPC connections the N pods' mounts are spread over (kubelet's driver keeps one per provider;
/// a few avoid queueing behind one HTTP/2 connection's stream limit).
const CHANNELS: usize = 16;
/// Cache TTL of the "on" runs.
const TTL: Duration = Duration::from_secs(2);

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn counts(admin: &AdminClient) -> (u64, u64) {
    let mut kv = 0;
    for op in [
        "GetSecret",
        "GetKey",
        "GetCertificate",
        "ListSecretVersions",
        "ListKeyVersions",
        "ListCertificateVersions",
    ] {
        kv += admin
            .request_count(CounterFilter::operation(op))
            .await
            .unwrap();
    }
    let mut entra = 0;
    for op in ["Token", "Nmi"] {
        entra += admin
            .request_count(CounterFilter::operation(op))
            .await
            .unwrap();
    }
    (kv, entra)
}

/// How the pods authenticate: ours with a service principal (nodePublishSecretRef); upstream's
/// binary with pod identity through the emulator's NMI on its fixed `localhost:2579` (against
/// the emulator its service-principal flow first validates the authority on the internet, which
/// a test may not reach; see tests/upstream_diff.rs).
#[derive(Clone, Copy, PartialEq)]
enum Identity {
    ServicePrincipal,
    PodIdentity,
}

impl Identity {
    fn attrs(self, env: &Env, objs: &str, extra: &[(&str, &str)]) -> String {
        let mut params = vec![("objects", objs)];
        if self == Identity::PodIdentity {
            params.push(("usePodIdentity", "true"));
        }
        params.extend_from_slice(extra);
        env.attrs(&params)
    }

    fn secrets(self) -> Option<String> {
        match self {
            Identity::ServicePrincipal => Some(sp_secrets(SP, SP_SECRET)),
            Identity::PodIdentity => None,
        }
    }
}

struct Wave {
    kv: u64,
    entra: u64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

async fn wave(
    env: &Arc<Env>,
    clients: &[CsiDriverProviderClient<Channel>],
    n: usize,
    who: Identity,
) -> Wave {
    let admin = env.emu.admin();
    admin.reset_counters().await.unwrap();
    let objs = objects(CLASS);
    let secrets = who.secrets();
    let attrs = who.attrs(env, &objs, &[]);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let req = mount_request(attrs.clone(), secrets.as_deref(), env.dir.path());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(120), client.mount(req)).await;
                (t.elapsed(), matches!(r, Ok(Ok(_))))
            })
        })
        .collect();
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        times.push(d);
        failed += usize::from(!ok);
    }
    times.sort();
    let (kv, entra) = counts(&admin).await;
    Wave {
        kv,
        entra,
        p50: pct(&times, 0.5),
        p99: pct(&times, 0.99),
        failed,
    }
}

/// Key Vault GETs (not listings, not challenges' 401s) since the counters were reset.
async fn gets(admin: &AdminClient) -> u64 {
    let mut n = 0;
    for op in ["GetSecret", "GetKey", "GetCertificate"] {
        n += admin
            .request_count(CounterFilter::operation(op).status(200))
            .await
            .unwrap();
    }
    n
}

struct RotationRun {
    gets_per_object_per_poll: f64,
    /// The slowest pod: change -> first refresh that returned the new value (None: some pod
    /// never saw it within the run).
    slowest: Option<Duration>,
    refreshes: usize,
    failed: usize,
}

/// N pods refreshing every `poll / 2` (phases spread over it) for two poll intervals; the
/// secret changes at 0.75 × poll.
async fn rotation_run(
    env: &Arc<Env>,
    clients: &[CsiDriverProviderClient<Channel>],
    n: usize,
    poll: Duration,
    max_age: Option<Duration>,
    who: Identity,
) -> RotationRun {
    let admin = env.emu.admin();
    let objs = objects(CLASS);
    let secrets = who.secrets();
    let max_age_text = max_age.map(|m| format!("{}ms", m.as_millis()));
    let mut extra = Vec::new();
    if let Some(m) = &max_age_text {
        extra.push(("secrets-store.csi.k8s.io/maxAge", m.as_str()));
    }
    let attrs = who.attrs(env, &objs, &extra);
    // First mounts fill the cache; counting starts after them.
    let _ = wave(env, clients, n, who).await;
    admin.reset_counters().await.unwrap();
    let period = poll / 2;
    let run = poll * 2;
    let start = tokio::time::Instant::now();
    let change_at = start + poll * 3 / 4;
    let new_value = format!("rotated-{}", std::process::id());
    let changer = {
        let admin = env.emu.admin();
        let v = new_value.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(change_at).await;
            admin.set_secret("kv1", "secret1", &v).await.unwrap();
            tokio::time::Instant::now()
        })
    };
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let attrs = attrs.clone();
            let secrets = secrets.clone();
            let dir = env.dir.path().to_owned();
            let want = new_value.clone().into_bytes();
            tokio::spawn(async move {
                let phase = period.mul_f64(i as f64 / n as f64);
                let (mut refreshes, mut failed, mut seen) = (0usize, 0usize, None);
                let mut next = start + phase;
                while next < start + run {
                    tokio::time::sleep_until(next).await;
                    let req = mount_request(attrs.clone(), secrets.as_deref(), &dir);
                    refreshes += 1;
                    match tokio::time::timeout(Duration::from_secs(60), client.mount(req)).await {
                        Ok(Ok(r)) => {
                            let new = r
                                .into_inner()
                                .files
                                .iter()
                                .any(|f| f.path == "secret1" && f.contents == want);
                            if new && seen.is_none() {
                                seen = Some(tokio::time::Instant::now());
                            }
                        }
                        _ => failed += 1,
                    }
                    next += period;
                }
                (refreshes, failed, seen)
            })
        })
        .collect();
    let (mut refreshes, mut failed, mut seen_all) = (0, 0, Some(start));
    for t in tasks {
        let (r, f, seen) = t.await.unwrap();
        refreshes += r;
        failed += f;
        seen_all = match (seen_all, seen) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    let changed = changer.await.unwrap();
    let got = gets(&admin).await;
    RotationRun {
        gets_per_object_per_poll: got as f64 / CLASS.len() as f64 / 2.0,
        slowest: seen_all.map(|s| s.saturating_duration_since(changed)),
        refreshes,
        failed,
    }
}

/// Upstream's provider binary, or None (with a notice) when it is not installed outside CI.
fn upstream_binary() -> Option<PathBuf> {
    let bin = test_support::Peer::UpstreamAzureProvider.path();
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        !test_support::in_ci(),
        "upstream provider not installed ({}); run `bash scripts/peers.sh`",
        bin.display()
    );
    println!(
        "NOTICE: upstream provider not installed ({}); its rows are left out",
        bin.display()
    );
    None
}

/// An emulator whose NMI listens on upstream's fixed `127.0.0.1:2579` (waits for the port: the
/// provider tests and the other benches use it too).
async fn upstream_env() -> Env {
    wait_for_port_2579().await;
    Env::start_full(&seed("[]", "none"), nmi_on_2579, |_| {}).await
}

/// `count` clients on `sock`.
async fn clients_on(sock: &std::path::Path, count: usize) -> Vec<CsiDriverProviderClient<Channel>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(connect(sock).await);
    }
    clients
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let max_n: usize = std::env::var("BENCH_CACHE_MAX_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    println!(
        "Mount waves of N pods sharing one class (secret + key + cert, service principal); \
         KV = Key Vault requests incl. 401 challenges, Entra = token requests (Entra or NMI)"
    );
    println!();
    println!("| N | cache | wave | KV requests | Entra requests | failed | p50 ms | p99 ms |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    let upstream = upstream_binary();
    let mut ratios = Vec::new();
    for n in [1usize, 10, 100, 1000].into_iter().filter(|n| *n <= max_n) {
        let mut ours_republish = None;
        for (label, ttl) in [("off", Duration::ZERO), ("on, ttl 2s", TTL)] {
            let env = Arc::new(
                Env::start_with(&seed("[]", "none"), |c| {
                    c.cache_ttl = ttl;
                    c.keyvault.call_timeout = Duration::from_secs(60);
                })
                .await,
            );
            let mut clients = Vec::with_capacity(CHANNELS);
            for _ in 0..CHANNELS.min(n) {
                clients.push(connect(&env.sock).await);
            }
            for name in ["first mount", "republish", "republish after TTL"] {
                if name == "republish after TTL" {
                    if ttl.is_zero() {
                        continue;
                    }
                    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
                }
                let w = wave(&env, &clients, n, Identity::ServicePrincipal).await;
                println!(
                    "| {n} | {label} | {name} | {} | {} | {} | {} | {} |",
                    w.kv,
                    w.entra,
                    w.failed,
                    ms(w.p50),
                    ms(w.p99)
                );
                if name == "republish after TTL" {
                    ours_republish = Some(w);
                }
            }
        }
        if let Some(bin) = &upstream {
            let env = Arc::new(upstream_env().await);
            let (child, sock) = spawn(bin, &env, "upstream", &[]);
            let clients = clients_on(&sock, CHANNELS.min(n)).await;
            let mut up_republish = None;
            for name in ["first mount", "republish"] {
                let w = wave(&env, &clients, n, Identity::PodIdentity).await;
                println!(
                    "| {n} | upstream (no cache; pod identity) | {name} | {} | {} | {} | {} | {} |",
                    w.kv,
                    w.entra,
                    w.failed,
                    ms(w.p50),
                    ms(w.p99)
                );
                up_republish = Some(w);
            }
            stop(child);
            if let (Some(o), Some(u)) = (ours_republish.take(), up_republish) {
                ratios.push((n, o, u));
            }
        }
    }
    if !ratios.is_empty() {
        println!();
        println!(
            "Steady state, a republish wave once the cache's TTL has passed (ours, cache on) / a \
             republish wave of upstream's (no cache): Key Vault + token requests, p50 latency"
        );
        println!();
        println!("| N | requests ours | requests upstream | ratio | p50 ours / upstream |");
        println!("|---:|---:|---:|---:|---:|");
        for (n, o, u) in &ratios {
            let (ro, ru) = (o.kv + o.entra, u.kv + u.entra);
            println!(
                "| {n} | {ro} | {ru} | {:.4} | {:.2} |",
                ro as f64 / ru.max(1) as f64,
                o.p50.as_secs_f64() / u.p50.as_secs_f64().max(1e-9)
            );
        }
    }

    let poll = Duration::from_millis(
        std::env::var("BENCH_ROTATION_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4000),
    );
    println!();
    println!(
        "Rotation: N pods sharing one class and identity refresh every poll/2 (poll {:.1} s) for \
         two poll intervals; the secret changes at 0.75 poll. Provider --cache-ttl at its \
         default (2m) unless off. Bound with max age: the last pod has the change within one poll.",
        poll.as_secs_f64()
    );
    println!();
    println!(
        "| N | cache | max age | refreshes | failed | KV GETs per object per poll interval | last pod has the change after |"
    );
    println!("|---:|---|---|---:|---:|---:|---|");
    for n in [10usize, 100, 1000].into_iter().filter(|n| *n <= max_n) {
        let modes: &[(&str, Duration, Option<Duration>)] = &[
            ("ttl 2m", Duration::from_secs(120), Some(poll / 2)),
            ("ttl 2m", Duration::from_secs(120), None),
            ("off", Duration::ZERO, Some(poll / 2)),
        ];
        for (label, ttl, max_age) in modes {
            if ttl.is_zero() && n > 100 {
                continue;
            }
            let ttl = *ttl;
            let env = Arc::new(
                Env::start_with(&seed("[]", "none"), |c| {
                    c.cache_ttl = ttl;
                    c.keyvault.call_timeout = Duration::from_secs(60);
                })
                .await,
            );
            let mut clients = Vec::with_capacity(CHANNELS);
            for _ in 0..CHANNELS.min(n) {
                clients.push(connect(&env.sock).await);
            }
            let r = rotation_run(
                &env,
                &clients,
                n,
                poll,
                *max_age,
                Identity::ServicePrincipal,
            )
            .await;
            print_rotation(n, label, *max_age, &r, poll);
        }
        // Upstream: every refresh fetches every object (no cache, no max age). Up to 100 pods:
        // at 1,000 its 4 requests per refresh per pod outrun this 2-core machine.
        if let Some(bin) = upstream.as_ref().filter(|_| n <= 100) {
            let env = Arc::new(upstream_env().await);
            let (child, sock) = spawn(bin, &env, "upstream", &[]);
            let clients = clients_on(&sock, CHANNELS.min(n)).await;
            let r = rotation_run(&env, &clients, n, poll, None, Identity::PodIdentity).await;
            stop(child);
            print_rotation(n, "upstream (no cache; pod identity)", None, &r, poll);
        }
    }
}

fn print_rotation(
    n: usize,
    label: &str,
    max_age: Option<Duration>,
    r: &RotationRun,
    poll: Duration,
) {
    println!(
        "| {n} | {label} | {} | {} | {} | {:.1} | {} |",
        max_age.map_or("none".to_owned(), |m| format!("{:.1} s", m.as_secs_f64())),
        r.refreshes,
        r.failed,
        r.gets_per_object_per_poll,
        r.slowest
            .map_or("not within the run".to_owned(), |d| format!(
                "{:.2} s ({:.2} poll)",
                d.as_secs_f64(),
                d.as_secs_f64() / poll.as_secs_f64()
            )),
    );
}
