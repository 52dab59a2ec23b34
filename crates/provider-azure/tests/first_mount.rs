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
