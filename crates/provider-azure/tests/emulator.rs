//! End to end against keyvault-emulator, through the gRPC socket exactly as the driver calls it.
//! The provider reaches the emulator the way an Azure Stack user reaches their cloud:
//! `cloudName: AzureStackCloud` + a `cloudEnvFileName` env file, the emulator CA as an extra trust
//! anchor (`SSL_CERT_FILE` → `HttpOptions::ssl_cert_file`), vault host names resolved through the
//! client's resolve override (in-process stand-in for DNS), IMDS/NMI at loopback overrides.

#![allow(clippy::unwrap_used)]

mod common;

use common::emu::*;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use keyvault_emulator::{CounterFilter, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_every_object_type_and_format() {
    let env = Env::start(&seed("[]", "none")).await;
    let mut client = connect(&env.sock).await;
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: rsa1\nobjectType: key",
        "objectName: ec1\nobjectAlias: keys/ec1.pem\nobjectType: key",
        "objectName: cert1\nobjectType: cert",
        "objectName: cert1\nobjectAlias: cert1-full.pem\nobjectType: secret",
        "objectName: cert1\nobjectAlias: cert1.pfx\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64",
        "objectName: cert-pem\nobjectType: secret",
    ]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let resp = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    let f = files(&resp);
    let text = |i: usize| String::from_utf8_lossy(&f[i].2).to_string();
    assert_eq!(
        f[0],
        ("secret1".into(), 0o644, SEEDED_SECRET.as_bytes().to_vec())
    );
    assert!(
        text(1).starts_with(
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"
        ),
        "{}",
        text(1)
    );
    assert_eq!(f[2].0, "keys/ec1.pem");
    assert!(
        text(2).starts_with("-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE"),
        "P-384 SPKI: {}",
        text(2)
    );
    assert!(
        text(3).starts_with("-----BEGIN CERTIFICATE-----\n")
            && text(3).matches("BEGIN").count() == 1
    );
    let full = text(4);
    assert!(
        full.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "key first: {full}"
    );
    assert!(full.contains("-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n"));
    assert!(
        full.contains(text(3).trim()),
        "leaf of the PFX equals the cert object"
    );
    assert_eq!(f[5].2[0], 0x30, "pfx + base64 → binary PFX");
    assert!(
        provider_azure::render::pkcs12::decode(&f[5].2).is_ok(),
        "the emulator's PFX decodes"
    );
    assert!(
        text(6).contains("PRIVATE KEY") && text(6).contains("CERTIFICATE"),
        "PEM-backed secret as stored"
    );
    let ids: Vec<&str> = resp.object_version.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "secret/secret1",
            "key/rsa1",
            "key/ec1",
            "cert/cert1",
            "secret/cert1",
            "secret/cert1",
            "secret/cert-pem"
        ]
    );
    assert!(resp.object_version.iter().all(|o| !o.version.is_empty()));

    // one token for the whole mount; one GET per object
    let admin = env.emu.admin();
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("Token").status(200))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(200))
            .await
            .unwrap(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_history_and_rotation() {
    let env = Env::start(&seed("[]", "none")).await;
    let admin = env.emu.admin();
    // Key Vault's `created` has one-second resolution: keep the three versions in distinct seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v2 = admin.set_secret("kv1", "secret1", "second").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct `created` seconds
    let v3 = admin.set_secret("kv1", "secret1", "third").await.unwrap();
    let mut client = connect(&env.sock).await;
    let objs = objects(&[
        "objectName: secret1\nobjectAlias: S\nobjectType: secret\nobjectVersionHistory: 2",
    ]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let resp = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, &[u8])> = resp
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.contents.as_slice()))
        .collect();
    assert_eq!(
        got,
        [("S/0", &b"third"[..]), ("S/1", &b"second"[..])],
        "exactly N=2 of 3 versions"
    );
    let versions: Vec<&str> = resp
        .object_version
        .iter()
        .map(|o| o.version.as_str())
        .collect();
    assert_eq!(versions, [v3.as_str(), v2.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_modes_and_their_failures() {
    let env = Env::start(&seed("[]", "none")).await;
    let client = connect(&env.sock).await;
    let objs = objects(&["objectName: secret1\nobjectType: secret"]);
    let mount = |attrs: String, secrets: Option<String>| {
        let mut c = client.clone();
        let dir = env.dir.path().to_path_buf();
        async move {
            c.mount(mount_request(attrs, secrets.as_deref(), &dir))
                .await
        }
    };
    // VM managed identity: system-assigned and user-assigned
    for extra in [
        vec![("useVMManagedIdentity", "true")],
        vec![
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", UAMI),
        ],
    ] {
        let mut p = extra.clone();
        p.push(("objects", &objs));
        let r = mount(env.attrs(&p), None).await.unwrap().into_inner();
        assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes(), "{extra:?}");
    }
    // pod identity via NMI (pod default/app-0 is bound to MI)
    let r = mount(
        env.attrs(&[("usePodIdentity", "true"), ("objects", &objs)]),
        None,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());

    // wrong client secret → Unauthenticated, no files
    let e = mount(
        env.attrs(&[("objects", &objs)]),
        Some(sp_secrets(SP, "wrong")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert!(
        e.message().contains("authentication failed"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("wrong") && !e.message().contains(SP_SECRET));
    // identity without access → PermissionDenied naming the object
    let e = mount(
        env.attrs(&[("objects", &objs)]),
        Some(sp_secrets(OUTSIDER, OUTSIDER_SECRET)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains("objectName:secret1") && e.message().contains("forbidden (403"),
        "{}",
        e.message()
    );
    // unknown user-assigned identity
    let e = mount(
        env.attrs(&[
            ("useVMManagedIdentity", "true"),
            (
                "userAssignedIdentityID",
                "99999999-0000-0000-0000-000000000000",
            ),
            ("objects", &objs),
        ]),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    // pod without a pod identity
    let mut attrs: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&env.attrs(&[("usePodIdentity", "true"), ("objects", &objs)]))
            .unwrap();
    attrs.insert("csi.storage.k8s.io/pod.name".into(), "other".into());
    let e = mount(serde_json::to_string(&attrs).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("nmi response failed with status code: 4"),
        "{}",
        e.message()
    );
    // missing object
    let e = mount(
        env.attrs(&[(
            "objects",
            &objects(&["objectName: nope\nobjectType: secret"]),
        )]),
        Some(sp_secrets(SP, SP_SECRET)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_retry_after() {
    let env = Env::start_with(&seed("[]", "none"), |c| {
        c.keyvault.throttle_budget = Duration::from_secs(3)
    })
    .await;
    let admin = env.emu.admin();
    admin
        .inject_fault(
            "GetSecret",
            Fault::Throttle {
                count: 2,
                retry_after: 1,
            },
        )
        .await
        .unwrap();
    let mut client = connect(&env.sock).await;
    let objs = objects(&["objectName: secret1\nobjectType: secret"]);
    let t = std::time::Instant::now();
    let secrets = sp_secrets(SP, SP_SECRET);
    let r = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "two Retry-After: 1 waits ({:?})",
        t.elapsed()
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(429))
            .await
            .unwrap(),
        2
    );
    // a storm longer than the throttle budget (then the retries) fails the mount as throttled
    admin
        .inject_fault(
            "GetSecret",
            Fault::Throttle {
                count: 10,
                retry_after: 1,
            },
        )
        .await
        .unwrap();
    let e = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_seeded_through_the_python_sdk() {
    let Some(sdk) = test_support::PythonSdk::require() else {
        return;
    };
    let env = Env::start(&seed("[]", "none")).await;
    let sdk = sdk.hosts(&[(env.emu.vault_host("kv1").as_str(), "127.0.0.1")]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_objects.py");
    let pfx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chain3-rsa.pfx.b64");
    let envs = [
        ("VAULT_URL".to_owned(), env.emu.vault_url("kv1")),
        ("AUTHORITY".to_owned(), env.emu.authority_url()),
        ("TENANT_ID".to_owned(), TENANT.to_owned()),
        ("CLIENT_ID".to_owned(), SP.to_owned()),
        ("CLIENT_SECRET".to_owned(), SP_SECRET.to_owned()),
        (
            "REQUESTS_CA_BUNDLE".to_owned(),
            env.ca_file.display().to_string(),
        ),
        (
            "SSL_CERT_FILE".to_owned(),
            env.ca_file.display().to_string(),
        ),
        ("PFX_B64_FILE".to_owned(), pfx.display().to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let e: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        sdk.run(&script, &[], &e)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut client = connect(&env.sock).await;
    let objs = objects(&[
        "objectName: py-secret\nobjectType: secret",
        "objectName: py-b64\nobjectType: secret\nobjectEncoding: base64",
        "objectName: py-chain\nobjectType: secret",
    ]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let r = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, b"value-from-python-sdk");
    assert_eq!(r.files[1].contents, b"\x00\x01binary\xff");
    // the imported PFX stored leaf, root, intermediate; we hand out key, leaf, intermediate, root
    let want = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chain3-rsa.expected.pem"
    ))
    .unwrap();
    let got = String::from_utf8_lossy(&r.files[2].contents).to_string();
    let want = String::from_utf8_lossy(&want).to_string();
    let certs = |s: &str| {
        s.split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        certs(&got),
        certs(&want),
        "chain order leaf → intermediate → root"
    );
    assert!(got.starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_with_a_real_service_account_token() {
    let Some(cp) = test_support::ControlPlane::start().await else {
        return;
    };
    let cp = cp.expect("control plane starts");
    cp.create_service_account("default", "workload")
        .await
        .unwrap();
    let issuers = control_plane_issuer(&cp);
    let env = Env::start(&seed_with_issuer(
        &issuers,
        cp.issuer(),
        "system:serviceaccount:default:workload",
    ))
    .await;
    let good = cp
        .token_request("default", "workload", "api://AzureADTokenExchange", 3600)
        .await
        .unwrap();
    let wrong_aud = cp
        .token_request("default", "workload", "api://SomethingElse", 3600)
        .await
        .unwrap();
    let tokens = |t: &str| {
        serde_json::json!({ "api://AzureADTokenExchange": { "token": t, "expirationTimestamp": "2099-01-01T00:00:00Z" } }).to_string()
    };
    let objs = objects(&["objectName: secret1\nobjectType: secret"]);
    let mut client = connect(&env.sock).await;
    let ok_tokens = tokens(&good);
    let attrs = env.attrs(&[
        ("clientID", WI),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            ok_tokens.as_str(),
        ),
        ("objects", &objs),
    ]);
    let r = client
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());

    // a token minted for another audience, presented as the exchange token → documented failure
    let bad_tokens = tokens(&wrong_aud);
    let attrs = env.attrs(&[
        ("clientID", WI),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            bad_tokens.as_str(),
        ),
        ("objects", &objs),
    ]);
    let e = client
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert!(
        e.message().contains("authentication failed"),
        "{}",
        e.message()
    );
    assert!(
        !e.message().contains(&wrong_aud) && !e.message().contains(&good),
        "no token in the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_key_vault_pfx_and_separate_files_through_the_emulator() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let pfx = std::fs::read_to_string(fixtures.join("kv-recorded.pfx.b64")).unwrap();
    let seed_yaml = seed("[]", "none").replacen(
        "    certificates:\n",
        &format!(
            "    certificates:\n      - {{ name: kvrec, pfx_base64: \"{}\" }}\n",
            pfx.trim()
        ),
        1,
    );
    let env = Env::start(&seed_yaml).await;
    let mut client = connect(&env.sock).await;
    let objs = objects(&[
        "objectName: kvrec\nobjectType: secret",
        "objectName: kvrec\nobjectAlias: kvrec-leaf\nobjectType: cert",
    ]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let r = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    let want = std::fs::read(fixtures.join("kv-recorded.expected.pem")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.files[0].contents),
        String::from_utf8_lossy(&want),
        "the recorded Key Vault certificate comes out as upstream writes it"
    );
    assert!(
        String::from_utf8_lossy(&want)
            .contains(String::from_utf8_lossy(&r.files[1].contents).trim())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_cert_and_key_files_and_concurrent_fetching() {
    let env = Env::start_with(&seed("[]", "none"), |c| {
        c.render.write_cert_and_key_in_separate_files = true;
        c.render.construct_pem_chain = false;
        c.fetch_concurrency = 8;
    })
    .await;
    let mut client = connect(&env.sock).await;
    let objs = objects(&[
        "objectName: cert1\nobjectAlias: tls\nobjectType: secret",
        "objectName: cert1\nobjectAlias: tls.pfx\nobjectType: secret\nobjectFormat: pfx",
        "objectName: secret1\nobjectType: secret",
        "objectName: rsa1\nobjectType: key",
    ]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let r = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "tls.crt",
            "tls.key",
            "tls",
            "tls.pfx.crt",
            "tls.pfx.key",
            "tls.pfx",
            "secret1",
            "rsa1"
        ]
    );
    let text = |i: usize| String::from_utf8_lossy(&r.files[i].contents).to_string();
    assert!(text(0).starts_with("-----BEGIN CERTIFICATE-----") && !text(0).contains("PRIVATE"));
    assert!(text(1).starts_with("-----BEGIN PRIVATE KEY-----") && !text(1).contains("CERTIFICATE"));
    assert_eq!(
        text(2),
        format!("{}{}", text(1), text(0)),
        "main file = key then cert"
    );
    assert!(
        r.files[3].contents.is_empty() && r.files[4].contents.is_empty(),
        "pfx: empty .crt/.key as upstream"
    );
    let ids: Vec<&str> = r.object_version.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids[..3], ["secret/cert1", "secret/cert1", "secret/cert1"]);

    // an alias colliding with a generated .crt file is refused, nothing returned
    let objs = objects(&[
        "objectName: cert1\nobjectAlias: tls\nobjectType: secret",
        "objectName: secret1\nobjectAlias: tls.crt\nobjectType: secret",
    ]);
    let e = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("two objects would write the same file \"tls.crt\""),
        "{}",
        e.message()
    );
}
