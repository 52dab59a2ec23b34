//! `maxStaleness` (issue 17): a new mount of the same objects for the same identity is served
//! from this provider's last good answer while keyvault-emulator injects an outage (503,
//! dropped connections, Entra ID down); an identity without a prior fetch is refused, a 403
//! (disabled secret) is never masked, a class without `maxStaleness` never falls back, and the
//! fallback ends once the answer is older than the `maxStaleness` asked for.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::emu::*;
use common::*;
use keyvault_emulator::Fault;
use provider_proto::v1alpha1::MountResponse;

const SECRET1: &str = "objectName: secret1\nobjectType: secret";

async fn mount(
    env: &Env,
    client: (&str, &str),
    max_staleness: Option<&str>,
) -> Result<MountResponse, tonic::Status> {
    let objs = objects(&[SECRET1]);
    let secrets = sp_secrets(client.0, client.1);
    let mut params = vec![("objects", objs.as_str())];
    if let Some(m) = max_staleness {
        params.push(("maxStaleness", m));
    }
    connect(&env.sock)
        .await
        .mount(mount_request(
            env.attrs(&params),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Clears the faults and mounts successfully, so the kept answer is fresh.
async fn fresh(env: &Env, stale: Option<&str>) {
    env.emu.admin().clear_faults().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    mount(env, (SP, SP_SECRET), stale).await.unwrap();
}

fn served(env_metrics: &str) -> f64 {
    sample(env_metrics, "served_stale_age_seconds_count").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_mounts_are_served_last_known_good_during_an_outage_only() {
    // A short cache TTL, so that every mount below really goes to the emulator.
    let ttl = Duration::from_millis(200);
    // Short-lived tokens, so that Entra ID is asked again after a while.
    let env = Env::start_full(
        &seed("[]", "none"),
        |e| e.token_lifetime(Duration::from_secs(1)),
        |c| {
            c.cache_ttl = ttl;
            c.keyvault.call_timeout = Duration::from_secs(2);
        },
    )
    .await;
    let admin = env.emu.admin();
    // Long enough for Entra ID's own retries (about 10 s) below.
    let stale = Some("30s");

    // A bad value is refused naming the parameter.
    let e = mount(&env, (SP, SP_SECRET), Some("a day"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("maxStaleness"), "{}", e.message());

    let first = mount(&env, (SP, SP_SECRET), stale).await.unwrap();
    assert_eq!(first.files[0].contents, SEEDED_SECRET.as_bytes());
    let version = first.object_version[0].version.clone();

    // Key Vault answers 503: a new mount of the same identity gets the last good answer.
    tokio::time::sleep(ttl * 2).await;
    admin
        .inject_fault(
            "GetSecret",
            Fault::ServerError {
                count: 1000,
                status: 503,
            },
        )
        .await
        .unwrap();
    let objs = objects(&[SECRET1]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let reply = connect(&env.sock)
        .await
        .mount(mount_request(
            env.attrs(&[("objects", &objs), ("maxStaleness", "30s")]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap();
    // The driver learns it through a response header (ignored by upstream's driver).
    let age: u64 = reply
        .metadata()
        .get("x-secrets-store-stale-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(age <= 5, "{age}");
    let r = reply.into_inner();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());
    assert_eq!(r.object_version[0].version, version);
    assert_eq!(served(&env.scrape().await), 1.0);

    // The same class without maxStaleness: the outage shows.
    let e = mount(&env, (SP, SP_SECRET), None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("503"), "{}", e.message());
    // Another identity that never fetched here: refused, never given SP's answer.
    let e = mount(&env, (OUTSIDER, OUTSIDER_SECRET), stale)
        .await
        .unwrap_err();
    assert!(!e.message().contains(SEEDED_SECRET));
    // The same client id with a wrong secret is another principal too.
    mount(&env, (SP, "not-the-secret"), stale)
        .await
        .unwrap_err();

    // Dropped connections.
    fresh(&env, stale).await;
    admin
        .inject_fault("GetSecret", Fault::Drop { count: 1000 })
        .await
        .unwrap();
    tokio::time::sleep(ttl * 2).await;
    let r = mount(&env, (SP, SP_SECRET), stale).await.unwrap();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());

    // Entra ID down (token endpoint 503) once the cached token is gone.
    fresh(&env, stale).await;
    admin
        .inject_fault(
            "Token",
            Fault::ServerError {
                count: 1000,
                status: 503,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = mount(&env, (SP, SP_SECRET), stale).await;
    let r = r.unwrap();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());
    assert_eq!(served(&env.scrape().await), 3.0);

    // Revocation wins: a disabled secret (403) is never masked.
    admin.clear_faults().await.unwrap();
    admin
        .set_secret_enabled("kv1", "secret1", false)
        .await
        .unwrap();
    tokio::time::sleep(ttl * 2).await;
    let e = mount(&env, (SP, SP_SECRET), stale).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    admin
        .set_secret_enabled("kv1", "secret1", true)
        .await
        .unwrap();
    assert_eq!(served(&env.scrape().await), 3.0);

    // Past maxStaleness (counted from the last successful fetch): the fallback ends.
    fresh(&env, stale).await;
    admin
        .inject_fault(
            "GetSecret",
            Fault::ServerError {
                count: 1000,
                status: 503,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = mount(&env, (SP, SP_SECRET), Some("1s")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    assert_eq!(served(&env.scrape().await), 3.0);
    // Within it, the same outage is served.
    mount(&env, (SP, SP_SECRET), Some("10s")).await.unwrap();
    assert_eq!(served(&env.scrape().await), 4.0);
}
