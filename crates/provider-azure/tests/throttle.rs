//! A 429 storm (issue 7): keyvault-emulator enforces a per-vault service limit, as Key Vault does,
//! and a burst of mounts with caching off (every mount fetches) must all succeed inside the
//! driver's mount deadline. With pacing off (upstream's per-request retries) the same burst fails
//! mounts and draws far more 429s. The provider's Prometheus series must agree with the emulator.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::emu::*;
use common::*;
use keyvault_client::PacingOptions;
use keyvault_emulator::{CounterFilter, Fault};

/// Mounts in the burst; the vault admits `LIMIT` requests per second.
const MOUNTS: usize = 120;
const LIMIT: u32 = 20;
/// What the driver gives a mount by default (kubelet's NodePublishVolume deadline is 2 min).
const MOUNT_DEADLINE: Duration = Duration::from_secs(120);

struct Storm {
    ok: usize,
    failed: Vec<tonic::Status>,
    throttled: u64,
    served: u64,
    elapsed: Duration,
    metrics: String,
}

async fn storm(pacing: PacingOptions) -> Storm {
    let env = Arc::new(
        Env::start_with(&seed("[]", "none"), |c| {
            c.cache_ttl = Duration::ZERO;
            c.keyvault.pacing = pacing;
        })
        .await,
    );
    let admin = env.emu.admin();
    admin
        .inject_fault_for(
            "*",
            Some("kv1"),
            Fault::RateLimit {
                limit: LIMIT,
                window_ms: 1000,
            },
        )
        .await
        .unwrap();
    admin.reset_counters().await.unwrap();

    let started = Instant::now();
    let tasks: Vec<_> = (0..MOUNTS)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move {
                let objs = objects(&["objectName: secret1\nobjectType: secret"]);
                let secrets = sp_secrets(SP, SP_SECRET);
                let mut req = tonic::Request::new(mount_request(
                    env.attrs(&[("objects", &objs)]),
                    Some(&secrets),
                    env.dir.path(),
                ));
                // as the driver does: the mount's deadline travels as grpc-timeout
                req.set_timeout(MOUNT_DEADLINE);
                connect(&env.sock).await.mount(req).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut failed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.get_ref().files[0].contents, SEEDED_SECRET.as_bytes());
                ok += 1;
            }
            Err(e) => failed.push(e),
        }
    }
    let elapsed = started.elapsed();
    let get = |status: u16| {
        let admin = admin.clone();
        async move {
            admin
                .request_count(CounterFilter::operation("GetSecret").status(status))
                .await
                .unwrap()
        }
    };
    Storm {
        ok,
        failed,
        throttled: get(429).await,
        served: get(200).await,
        elapsed,
        metrics: env.scrape().await,
    }
}

fn sample_or_zero(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_absorbed_within_the_mount_deadline() {
    let paced = storm(PacingOptions::default()).await;
    let upstream = storm(PacingOptions::off()).await;
    println!(
        "{MOUNTS} mounts, vault limit {LIMIT}/s, cache off:\n  paced:    {} ok, {} failed, {} × 429, {} × 200, {:.1} s\n  \
         unpaced:  {} ok, {} failed, {} × 429, {} × 200, {:.1} s",
        paced.ok,
        paced.failed.len(),
        paced.throttled,
        paced.served,
        paced.elapsed.as_secs_f64(),
        upstream.ok,
        upstream.failed.len(),
        upstream.throttled,
        upstream.served,
        upstream.elapsed.as_secs_f64(),
    );

    // paced: every mount succeeds, well inside the deadline, after a real storm
    assert!(
        paced.failed.is_empty(),
        "{:?}",
        paced
            .failed
            .first()
            .map(|e| (e.code(), e.message().to_owned()))
    );
    assert_eq!(paced.ok, MOUNTS);
    assert_eq!(paced.served, MOUNTS as u64, "one successful GET per mount");
    // how many of the first wave collide depends on how close together the mounts arrive (34
    // to 89 seen); that the vault refused some at all is what makes this a storm
    assert!(paced.throttled > 0, "the burst never met the vault's limit");
    assert!(paced.elapsed < MOUNT_DEADLINE / 2, "{:?}", paced.elapsed);

    // upstream's per-request retries: mounts fail once their retries are spent, and the vault
    // sees many more 429s (which throttle every other client of the vault too)
    assert!(
        !upstream.failed.is_empty(),
        "no mount failed without pacing"
    );
    for e in &upstream.failed {
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{}", e.message());
        assert!(e.message().contains("429"), "{}", e.message());
    }
    assert!(
        upstream.throttled > paced.throttled * 3 / 2,
        "pacing cut the 429s: {} vs {}",
        paced.throttled,
        upstream.throttled
    );

    // the provider's own series agree with what the vault saw
    let m = &paced.metrics;
    assert_eq!(
        sample_or_zero(
            m,
            r#"keyvault_http_requests_total{operation="get_secret",status="429"}"#
        ),
        paced.throttled as f64,
        "{m}"
    );
    assert_eq!(
        sample_or_zero(
            m,
            r#"keyvault_http_requests_total{operation="get_secret",status="200"}"#
        ),
        MOUNTS as f64
    );
    assert!(
        sample_or_zero(m, "keyvault_throttle_waits_total") >= 1.0,
        "{m}"
    );
    assert!(
        sample_or_zero(m, "keyvault_throttle_wait_seconds_total") > 0.5,
        "{m}"
    );
    assert_eq!(
        sample_or_zero(&upstream.metrics, "keyvault_throttle_waits_total"),
        0.0,
        "no pacer, no waits"
    );
}
