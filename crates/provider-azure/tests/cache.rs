//! Identity-scoped caching and coalescing (issue 7), counted by keyvault-emulator: the provider
//! runs in-process behind its gRPC socket, the emulator counts every Key Vault and Entra request.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::emu::*;
use common::*;
use keyvault_emulator::{AdminClient, CounterFilter};
use provider_proto::v1alpha1::MountResponse;

async fn count(admin: &AdminClient, op: &str, status: Option<u16>) -> u64 {
    let mut f = CounterFilter::operation(op);
    if let Some(s) = status {
        f = f.status(s);
    }
    admin.request_count(f).await.unwrap()
}

async fn mount(
    env: &Env,
    objs: &[&str],
    client: (&str, &str),
) -> Result<MountResponse, tonic::Status> {
    let objs = objects(objs);
    let secrets = sp_secrets(client.0, client.1);
    connect(&env.sock)
        .await
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn start(ttl: Duration) -> Env {
    Env::start_with(&seed("[]", "none"), |c| c.cache_ttl = ttl).await
}

const SECRET1: &str = "objectName: secret1\nobjectType: secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_per_identity_and_secret() {
    let env = start(Duration::from_secs(120)).await;
    let admin = env.emu.admin();
    for i in 0..10 {
        admin
            .set_secret("kv1", &format!("s{i}"), &format!("value-{i}"))
            .await
            .unwrap();
    }
    admin.reset_counters().await.unwrap();

    // ten mounts of one identity, each of an object no other mount asked for: ten GETs, one token
    for i in 0..10 {
        let obj = format!("objectName: s{i}\nobjectType: secret");
        let r = mount(&env, &[&obj], (SP, SP_SECRET)).await.unwrap();
        assert_eq!(r.files[0].contents, format!("value-{i}").as_bytes());
    }
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 10);
    assert_eq!(count(&admin, "Token", None).await, 1);
    // the cloud names the vault's resource: no unauthenticated challenge probe at all (issue 15;
    // tests/first_mount.rs has the fallback when it does not)
    assert_eq!(count(&admin, "GetSecret", Some(401)).await, 0);

    // the same client id with another (wrong) secret: its own token request, which fails
    let e = mount(
        &env,
        &["objectName: s0\nobjectType: secret"],
        (SP, "not-the-secret"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert!(!e.message().contains("value-0"));
    assert_eq!(count(&admin, "Token", None).await, 2);
    assert_eq!(count(&admin, "Token", Some(200)).await, 1);
    // ... and again: a failure is not cached
    mount(&env, &[SECRET1], (SP, "not-the-secret"))
        .await
        .unwrap_err();
    assert_eq!(count(&admin, "Token", None).await, 3);

    // another identity: its own token
    mount(
        &env,
        &["objectName: s1\nobjectType: secret"],
        (OUTSIDER, OUTSIDER_SECRET),
    )
    .await
    .unwrap_err();
    assert_eq!(count(&admin, "Token", Some(200)).await, 2);

    // the first identity still uses its cached token
    mount(&env, &[SECRET1], (SP, SP_SECRET)).await.unwrap();
    assert_eq!(count(&admin, "Token", Some(200)).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_mounts_make_one_get_per_object() {
    let env = std::sync::Arc::new(start(Duration::from_secs(120)).await);
    let admin = env.emu.admin();
    admin.reset_counters().await.unwrap();
    let class: &[&str] = &[
        SECRET1,
        "objectName: rsa1\nobjectType: key",
        "objectName: cert1\nobjectType: cert",
    ];
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move { mount(&env, class, (SP, SP_SECRET)).await })
        })
        .collect();
    let mut first: Option<Vec<(String, i32, Vec<u8>)>> = None;
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        let f = files(&r);
        assert_eq!(f.len(), 3);
        match &first {
            None => first = Some(f),
            Some(x) => assert_eq!(x, &f),
        }
    }
    for op in ["GetSecret", "GetKey", "GetCertificate"] {
        assert_eq!(count(&admin, op, Some(200)).await, 1, "{op}");
        // plus at most the unauthenticated challenge probe of the connection that fetched it
        assert!(count(&admin, op, None).await <= 2, "{op}");
    }
    assert_eq!(count(&admin, "Token", None).await, 1);

    // the provider's cache series say the same
    let m = env.scrape().await;
    let value = |series: &str| -> u64 {
        sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}")) as u64
    };
    assert_eq!(value(r#"cache_misses_total{cache="object"}"#), 3);
    assert_eq!(value(r#"cache_hits_total{cache="object"}"#), 597);
    assert_eq!(value(r#"cache_misses_total{cache="token"}"#), 1);
    assert!(value(r#"cache_coalesced_waits_total{cache="object"}"#) <= 597);
    assert_eq!(
        value(r#"keyvault_http_requests_total{operation="get_secret",status="200"}"#),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_without_access_is_refused_while_anothers_entry_is_cached() {
    let env = start(Duration::from_secs(120)).await;
    let admin = env.emu.admin();
    let a = mount(&env, &[SECRET1], (SP, SP_SECRET)).await.unwrap();
    assert_eq!(a.files[0].contents, SEEDED_SECRET.as_bytes());
    admin.reset_counters().await.unwrap();

    // B has a valid credential but no access to kv1: Key Vault answers 403, nothing from A's entry
    let e = mount(&env, &[SECRET1], (OUTSIDER, OUTSIDER_SECRET))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    assert!(!e.message().contains(SEEDED_SECRET));
    assert_eq!(count(&admin, "GetSecret", Some(403)).await, 1);
    // twice: refusals are not cached either
    mount(&env, &[SECRET1], (OUTSIDER, OUTSIDER_SECRET))
        .await
        .unwrap_err();
    assert_eq!(count(&admin, "GetSecret", Some(403)).await, 2);

    // A is still served from the cache
    let a2 = mount(&env, &[SECRET1], (SP, SP_SECRET)).await.unwrap();
    assert_eq!(files(&a2), files(&a));
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_version_is_picked_up_after_the_ttl() {
    let ttl = Duration::from_secs(2);
    let env = start(ttl).await;
    let admin = env.emu.admin();
    let v1 = mount(&env, &[SECRET1], (SP, SP_SECRET)).await.unwrap();
    assert_eq!(v1.files[0].contents, SEEDED_SECRET.as_bytes());
    let started = std::time::Instant::now();
    let new_version = admin.set_secret("kv1", "secret1", "rotated").await.unwrap();

    // within the TTL the cached answer stands (this is what saves the calls) ...
    let cached = mount(&env, &[SECRET1], (SP, SP_SECRET)).await.unwrap();
    if started.elapsed() < ttl {
        assert_eq!(cached.files[0].contents, SEEDED_SECRET.as_bytes());
        assert_eq!(cached.object_version, v1.object_version);
    }
    // ... and after it the new version is read
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let v2 = mount(&env, &[SECRET1], (SP, SP_SECRET)).await.unwrap();
    assert_eq!(v2.files[0].contents, b"rotated");
    assert_eq!(v2.object_version[0].version, new_version);
}

/// Issue 15: with the default TTL (2m), a mount carrying the driver's
/// `secrets-store.csi.k8s.io/maxAge` reads a new version as soon as the cached answer is older
/// than that, while mounts without it keep the cached one; 100 such mounts at once share one GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drivers_max_age_bounds_cached_latest_answers() {
    let env = start(Duration::from_secs(120)).await;
    let admin = env.emu.admin();
    let objs = objects(&[SECRET1]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let with_max_age = |max_age: Option<&str>| {
        let mut p = vec![("objects", objs.as_str())];
        if let Some(m) = max_age {
            p.push(("secrets-store.csi.k8s.io/maxAge", m));
        }
        mount_request(env.attrs(&p), Some(&secrets), env.dir.path())
    };
    let mut client = connect(&env.sock).await;
    let v1 = client
        .mount(with_max_age(Some("1s")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.files[0].contents, SEEDED_SECRET.as_bytes());
    admin.set_secret("kv1", "secret1", "rotated").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    admin.reset_counters().await.unwrap();

    // No max age (an upstream driver, or rotation off): the TTL stands.
    let cached = client.mount(with_max_age(None)).await.unwrap().into_inner();
    assert_eq!(cached.files[0].contents, SEEDED_SECRET.as_bytes());
    // A young-enough answer is served to a max-age mount too.
    let young = client
        .mount(with_max_age(Some("1m")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(young.files[0].contents, SEEDED_SECRET.as_bytes());
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 0);

    // Older than the max age: 100 mounts at once, one GET, all see the new version.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mut c = client.clone();
            let req = with_max_age(Some("1s"));
            tokio::spawn(async move { c.mount(req).await.map(tonic::Response::into_inner) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().files[0].contents, b"rotated");
    }
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 1);
    // ... and the refreshed entry serves mounts without a max age from then on.
    let after = client.mount(with_max_age(None)).await.unwrap().into_inner();
    assert_eq!(after.files[0].contents, b"rotated");
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 1);

    // A malformed value is an invalid parameter that names the key.
    let e = client.mount(with_max_age(Some("soon"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("secrets-store.csi.k8s.io/maxAge"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_off_fetches_on_every_mount_as_upstream() {
    let env = start(Duration::ZERO).await;
    let admin = env.emu.admin();
    admin.reset_counters().await.unwrap();
    for _ in 0..5 {
        let r = mount(
            &env,
            &[SECRET1, "objectName: rsa1\nobjectType: key"],
            (SP, SP_SECRET),
        )
        .await
        .unwrap();
        assert_eq!(r.files.len(), 2);
    }
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 5);
    assert_eq!(count(&admin, "GetKey", Some(200)).await, 5);
    // one challenge and one token per mount, as upstream's per-mount client
    assert_eq!(count(&admin, "Token", None).await, 5);
    assert_eq!(count(&admin, "GetSecret", Some(401)).await, 5);
}

/// Tokens of a real kube-apiserver: with the cluster's issuer configured, pods of one service
/// account share one Entra token; a forged or foreign token never rides on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_service_account_share_a_token_when_the_issuer_is_configured() {
    let Some(cp) = test_support::ControlPlane::start().await else {
        return;
    };
    let cp = cp.expect("control plane starts");
    for sa in ["workload", "other"] {
        cp.create_service_account("default", sa).await.unwrap();
    }
    let issuers = control_plane_issuer(&cp);
    let seed_yaml = seed_with_issuer(
        &issuers,
        cp.issuer(),
        "system:serviceaccount:default:workload",
    );
    let start = |share: bool| {
        let seed_yaml = seed_yaml.clone();
        let cp = &cp;
        async move {
            Env::start_with(&seed_yaml, |c| {
                c.cache_ttl = Duration::from_secs(120);
                if share {
                    c.workload_identity_issuers = vec![cp.issuer().to_owned()];
                }
                // the provider reads the issuer's keys over https: trust the apiserver's CA too
                let path = c.http.ssl_cert_file.clone().unwrap();
                let pem = std::fs::read_to_string(&path).unwrap() + cp.ca_pem();
                std::fs::write(&path, pem).unwrap();
            })
            .await
        }
    };
    let mut pod_tokens = Vec::new();
    for _ in 0..3 {
        pod_tokens.push(
            cp.token_request("default", "workload", "api://AzureADTokenExchange", 3600)
                .await
                .unwrap(),
        );
    }
    assert_ne!(pod_tokens[0], pod_tokens[1], "each pod has its own token");
    let other_sa = cp
        .token_request("default", "other", "api://AzureADTokenExchange", 3600)
        .await
        .unwrap();
    // the first pod's token with a claim changed (its subject kept): the signature no longer
    // matches, so it must not be taken for the service account and served the shared token
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = pod_tokens[0].split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["exp"] = (claims["exp"].as_i64().unwrap() + 86_400).into();
        let body = b64.encode(serde_json::to_vec(&claims).unwrap());
        format!("{}.{body}.{}", parts[0], parts[2])
    };

    let wi_mount = |env: &Env, token: &str| {
        let tokens = serde_json::json!({ "api://AzureADTokenExchange": { "token": token, "expirationTimestamp": "2099-01-01T00:00:00Z" } }).to_string();
        let objs = objects(&[SECRET1]);
        let attrs = env.attrs(&[
            ("clientID", WI),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens.as_str()),
            ("objects", &objs),
        ]);
        let req = mount_request(attrs, None, env.dir.path());
        let sock = env.sock.clone();
        async move { connect(&sock).await.mount(req).await }
    };

    // issuer configured: three pods, two mounts each → one token request
    let env = start(true).await;
    let admin = env.emu.admin();
    admin.reset_counters().await.unwrap();
    for token in pod_tokens.iter().chain(pod_tokens.iter()) {
        let r = wi_mount(&env, token).await.unwrap().into_inner();
        assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());
    }
    assert_eq!(count(&admin, "Token", None).await, 1);
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 1);
    // another service account (no federated credential) and the forged token each go to Entra
    // themselves, and are refused there
    for token in [&other_sa, &forged] {
        let e = wi_mount(&env, token).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    }
    assert_eq!(count(&admin, "Token", None).await, 3);
    assert_eq!(count(&admin, "Token", Some(200)).await, 1);
    assert_eq!(count(&admin, "GetSecret", Some(200)).await, 1);

    // issuer not configured: one token request per pod token
    let env = start(false).await;
    let admin = env.emu.admin();
    admin.reset_counters().await.unwrap();
    for token in pod_tokens.iter().chain(pod_tokens.iter()) {
        wi_mount(&env, token).await.unwrap();
    }
    assert_eq!(count(&admin, "Token", Some(200)).await, 3);
}
