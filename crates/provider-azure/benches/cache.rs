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

#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;

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
    let entra = admin
        .request_count(CounterFilter::operation("Token"))
        .await
        .unwrap();
    (kv, entra)
}

struct Wave {
    kv: u64,
    entra: u64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

async fn wave(env: &Arc<Env>, clients: &[CsiDriverProviderClient<Channel>], n: usize) -> Wave {
    let admin = env.emu.admin();
    admin.reset_counters().await.unwrap();
    let objs = objects(CLASS);
    let secrets = sp_secrets(SP, SP_SECRET);
    let attrs = env.attrs(&[("objects", &objs)]);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let req = mount_request(attrs.clone(), Some(&secrets), env.dir.path());
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
         KV = Key Vault requests incl. 401 challenges, Entra = token requests"
    );
    println!();
    println!("| N | cache | wave | KV requests | Entra requests | failed | p50 ms | p99 ms |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    for n in [1usize, 10, 100, 1000].into_iter().filter(|n| *n <= max_n) {
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
                let w = wave(&env, &clients, n).await;
                println!(
                    "| {n} | {label} | {name} | {} | {} | {} | {} | {} |",
                    w.kv,
                    w.entra,
                    w.failed,
                    ms(w.p50),
                    ms(w.p99)
                );
            }
        }
    }
}
