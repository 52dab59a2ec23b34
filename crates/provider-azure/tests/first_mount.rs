//! The first mount's round trips (issue 15, goal 2), counted by keyvault-emulator: with the cache
//! on, a cloud that names the Key Vault resource (the four public clouds; an Azure Stack
//! environment file with `keyVaultEndpoint`) gets a token first and sends no unauthenticated
//! challenge probe; without it, the probe stays as the fallback; a configured resource the vault
//! does not accept is corrected by the vault's challenge.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::emu::*;
use common::*;
use keyvault_emulator::{AdminClient, CounterFilter};

const CLASS: &[&str] = &[
    "objectName: secret1\nobjectType: secret",
    "objectName: rsa1\nobjectType: key",
    "objectName: cert1\nobjectType: cert",
];

async fn count(admin: &AdminClient, op: &str, status: Option<u16>) -> u64 {
    let mut f = CounterFilter::operation(op);
    if let Some(s) = status {
        f = f.status(s);
    }
    admin.request_count(f).await.unwrap()
}

/// Starts the provider (cache on) and rewrites the environment file with `edit`.
async fn start(edit: impl FnOnce(&mut serde_json::Value)) -> Env {
    let env = Env::start_with(&seed("[]", "none"), |c| {
        c.cache_ttl = Duration::from_secs(120);
        c.fetch_concurrency = 8;
    })
    .await;
    let mut cloud = env.emu.azure_stack_environment();
    edit(&mut cloud);
    std::fs::write(&env.env_file, cloud.to_string()).unwrap();
    env.emu.admin().reset_counters().await.unwrap();
    env
}

async fn mount(env: &Env) {
    let secrets = sp_secrets(SP, SP_SECRET);
    let r = connect(&env.sock)
        .await
        .mount(mount_request(
            env.attrs(&[("objects", &objects(CLASS))]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files.len(), CLASS.len());
}

/// Key Vault requests of any kind (every data-plane operation the class uses), by status.
async fn kv(admin: &AdminClient, status: u16) -> u64 {
    let mut n = 0;
    for op in ["GetSecret", "GetKey", "GetCertificate"] {
        n += count(admin, op, Some(status)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_that_names_the_resource_gets_no_challenge_probe() {
    let env = start(|_| {}).await;
    let admin = env.emu.admin();
    mount(&env).await;
    // one token, then the three objects: no 401 at all
    assert_eq!(count(&admin, "Token", None).await, 1);
    assert_eq!(kv(&admin, 200).await, 3);
    assert_eq!(kv(&admin, 401).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_key_vault_endpoint_the_challenge_probe_stays() {
    let env = start(|c| {
        c.as_object_mut().unwrap().remove("keyVaultEndpoint");
    })
    .await;
    let admin = env.emu.admin();
    mount(&env).await;
    mount(&env).await;
    assert_eq!(count(&admin, "Token", None).await, 1);
    // one probe for the vault, remembered for the next mount
    assert_eq!(kv(&admin, 401).await, 1);
    assert_eq!(kv(&admin, 200).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_the_vault_refuses_is_corrected_by_its_challenge() {
    let env = start(|c| {
        c["keyVaultEndpoint"] = serde_json::json!("https://elsewhere.test");
    })
    .await;
    let admin = env.emu.admin();
    mount(&env).await;
    // the token for the configured resource is refused with the vault's challenge; the
    // challenge's resource (verified against the vault host) is used from then on
    assert!(kv(&admin, 401).await >= 1);
    assert_eq!(kv(&admin, 200).await, 3);
    admin.reset_counters().await.unwrap();
    let secrets = sp_secrets(SP, SP_SECRET);
    connect(&env.sock)
        .await
        .mount(mount_request(
            env.attrs(&[(
                "objects",
                &objects(&["objectName: s-new\nobjectType: secret"]),
            )]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap_err();
    assert_eq!(kv(&admin, 401).await, 0, "the learnt scope is kept");
}

/// The vault's connection opens while the first token is fetched, so the first GETs wait for
/// neither TCP nor TLS; the three parallel first requests share that one connection (HTTP/2
/// streams) instead of each opening its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_connection_opens_while_the_token_is_fetched() {
    let env = start(|_| {}).await;
    let admin = env.emu.admin();
    // The token takes 3 s: long enough to see what happens meanwhile.
    admin
        .inject_fault("Imds", keyvault_emulator::Fault::Latency { ms: 3000 })
        .await
        .unwrap();
    let attrs = env.attrs(&[
        ("useVMManagedIdentity", "true"),
        ("objects", &objects(CLASS)),
    ]);
    let mut client = connect(&env.sock).await;
    let dir = env.dir.path().to_path_buf();
    let mount = tokio::spawn(async move { client.mount(mount_request(attrs, None, &dir)).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&admin, "TlsHandshake", None).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS handshake with the vault while the token was on its way"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&admin, "Imds", None).await,
        0,
        "the handshake came before the token was answered"
    );
    assert_eq!(kv(&admin, 200).await + kv(&admin, 401).await, 0);
    let files = mount.await.unwrap().unwrap().into_inner().files;
    assert_eq!(files.len(), CLASS.len());
    assert_eq!(count(&admin, "Imds", Some(200)).await, 1);
    assert_eq!(kv(&admin, 200).await, 3);
    assert_eq!(
        count(&admin, "Connect", None).await,
        1,
        "one TCP connection"
    );
    assert_eq!(
        count(&admin, "TlsHandshake", None).await,
        1,
        "one TLS handshake"
    );
}

/// A vault that does not choose HTTP/2 in its TLS handshake (a gateway speaking HTTP/1.1 only)
/// is served through the HTTP/1.1 client; the handshake of the own connection is made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_without_http2_is_served_over_http1() {
    let env = Env::start_full(
        &seed("[]", "none"),
        |mut c| {
            c.http1_only = true;
            c
        },
        |c| c.cache_ttl = Duration::ZERO,
    )
    .await;
    std::fs::write(&env.env_file, env.emu.azure_stack_environment().to_string()).unwrap();
    let admin = env.emu.admin();
    for _ in 0..2 {
        mount(&env).await;
    }
    // cache off: both mounts fetch all three objects
    assert_eq!(kv(&admin, 200).await, 6);
    let handshakes = count(&admin, "TlsHandshake", None).await;
    // one refused own connection, then at most the HTTP/1.1 pool's connections (one per
    // concurrent request: 3) plus the token endpoint's
    assert!(handshakes <= 5, "{handshakes} TLS handshakes");
}
