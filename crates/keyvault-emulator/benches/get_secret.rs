//! GET-secret throughput and latency against the emulator on loopback, for 1, 16 and 64
//! concurrent clients. Run: `cargo bench -p keyvault-emulator --bench get_secret`.
//!
//! The emulator and the load generator share this process (and the machine's cores), so the
//! figures are a floor for the emulator alone.

use keyvault_emulator::{CounterFilter, Emulator, EmulatorConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";
const SECRET: &str = "bench-client-secret";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const RUN: Duration = Duration::from_secs(4);
const WARMUP: Duration = Duration::from_millis(500);

fn client(ca_pem: &str, host: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let (_, der) = der::pem::decode_vec(ca_pem.as_bytes()).expect("CA PEM");
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(host, addr)
        .pool_max_idle_per_host(128)
        .build()
        .expect("client")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` passes `--bench`-less args; only run when invoked as a bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seed = format!(
        "tenant: {TENANT}\nvaults:\n  - name: bench\n    access: [{CLIENT_ID}]\n    secrets:\n      - {{ name: s1, value: {} }}\nidentities:\n  service_principals:\n    - {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }}\n",
        "x".repeat(64)
    );
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed).expect("seed"))
        .await
        .expect("start");
    let host = emu.vault_host("bench");
    let http = client(emu.ca_pem(), &host, emu.https_addr());
    let token: serde_json::Value = http
        .post(format!("{}{TENANT}/oauth2/v2.0/token", emu.authority_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", &format!("{}/.default", emu.resource())),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    let bearer = format!(
        "Bearer {}",
        token["access_token"].as_str().expect("access_token")
    );
    let url = format!("{}secrets/s1/?api-version=7.4", emu.vault_url("bench"));
    let rss_start = rss_kib();

    #[allow(clippy::print_stdout)]
    {
        println!(
            "keyvault-emulator GET secret, loopback HTTPS, {}s per row (client and server in one process)",
            RUN.as_secs()
        );
        println!(
            "{:>8} {:>10} {:>12} {:>10} {:>10} {:>10}",
            "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"
        );
    }
    for concurrency in [1usize, 16, 64] {
        let admin = emu.admin();
        admin.reset_counters().await.expect("reset");
        let warm_until = Instant::now() + WARMUP;
        let stop_at = warm_until + RUN;
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let http = http.clone();
            let url = url.clone();
            let bearer = bearer.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < stop_at {
                    let t = Instant::now();
                    let ok = match http.get(&url).header("authorization", &bearer).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if t >= warm_until {
                        if ok {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("worker");
            all.extend(l);
            errors += e;
        }
        all.sort();
        let served = admin
            .request_count(CounterFilter::operation("GetSecret").status(200))
            .await
            .expect("counters");
        #[allow(clippy::print_stdout)]
        {
            println!(
                "{:>8} {:>10} {:>12.0} {:>10.3} {:>10.3} {:>10}",
                concurrency,
                all.len(),
                all.len() as f64 / RUN.as_secs_f64(),
                percentile(&all, 0.50).as_secs_f64() * 1e3,
                percentile(&all, 0.99).as_secs_f64() * 1e3,
                errors
            );
            assert!(
                served >= all.len() as u64,
                "server counted {served} < client {}",
                all.len()
            );
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "process RSS: {} KiB at start of load, {} KiB at end",
            rss_start,
            rss_kib()
        );
    }
}
