//! Differential test: the upstream Go provider (test peer) and ours answer the same `MountRequest`
//! against the same emulator; files, modes and object versions must be identical byte for byte.
//! Both reach the emulator the same way (AzureStackCloud env file, `SSL_CERT_FILE`, a private
//! /etc/hosts for the vault host). The identity is pod identity: upstream's NMI address is fixed
//! (`localhost:2579`), so the emulator's NMI listens there. (VM managed identity cannot be used:
//! the upstream build ignores `AZURE_POD_IDENTITY_AUTHORITY_HOST` and would call
//! 169.254.169.254.)

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::emu::*;
use common::*;

/// Upstream's NMI port is fixed; the tests of this binary take turns on it.
static PORT_2579: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_files_as_the_upstream_go_provider() {
    let upstream = test_support::require_peer!(test_support::Peer::UpstreamAzureProvider);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let pfx = |n: &str| {
        std::fs::read_to_string(fixtures.join(n))
            .unwrap()
            .trim()
            .to_owned()
    };
    let seed_yaml = seed("[]", "none").replacen(
        "    certificates:\n",
        &format!(
            "    certificates:\n      - {{ name: kvrec, pfx_base64: \"{}\" }}\n      - {{ name: chain, pfx_base64: \"{}\" }}\n",
            pfx("kv-recorded.pfx.b64"),
            pfx("chain3-ec.pfx.b64")
        ),
        1,
    );
    let _port = PORT_2579.lock().await;
    wait_for_port_2579().await;
    let env = Env::start_full(&seed_yaml, nmi_on_2579, |_| {}).await;
    let sock = env.dir.path().join("upstream.sock");
    let mut cmd = Command::new(&upstream);
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg(format!("--healthz-port={}", test_support::free_port()))
        .arg(format!("--prometheus-port={}", test_support::free_port()))
        .env("SSL_CERT_FILE", &env.ca_file)
        // belt and braces: never let it reach for the real IMDS address
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", env.emu.imds_url());
    let hosts = test_support::HostsOverride::new(&[(
        &env.emu.vault_host("kv1"),
        "127.0.0.1".parse::<IpAddr>().unwrap(),
    )])
    .unwrap();
    let log = env.dir.path().join("upstream.log");
    let mut child = hosts
        .wrap(&cmd)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&sock) {
        assert!(
            Instant::now() < deadline,
            "upstream provider did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: secret1\nobjectAlias: secret1-hex-free\nobjectType: secret\nfilePermission: \"0600\"",
        "objectName: rsa1\nobjectType: key",
        "objectName: ec1\nobjectType: key",
        "objectName: cert1\nobjectType: cert",
        "objectName: cert1\nobjectAlias: cert1-secret\nobjectType: secret",
        "objectName: cert-pem\nobjectType: secret",
        "objectName: kvrec\nobjectType: secret",
        "objectName: chain\nobjectType: secret",
        "objectName: chain\nobjectAlias: chain.pfx\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64",
    ]);
    let attrs = env.attrs(&[("usePodIdentity", "true"), ("objects", &objs)]);
    let theirs = connect(&sock)
        .await
        .mount(mount_request(attrs.clone(), None, env.dir.path()))
        .await;
    let ours = connect(&env.sock)
        .await
        .mount(mount_request(attrs, None, env.dir.path()))
        .await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let theirs = theirs
        .unwrap_or_else(|e| {
            panic!(
                "upstream: {e:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .into_inner();
    let ours = ours.unwrap().into_inner();
    assert_eq!(theirs.files.len(), ours.files.len());
    for (t, o) in theirs.files.iter().zip(&ours.files) {
        assert_eq!(t.path, o.path);
        assert_eq!(t.mode, o.mode, "{}", t.path);
        assert_eq!(
            String::from_utf8_lossy(&t.contents),
            String::from_utf8_lossy(&o.contents),
            "{}",
            t.path
        );
    }
    let ids = |r: &provider_proto::v1alpha1::MountResponse| {
        r.object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&theirs), ids(&ours));
}

/// Both binaries with the same flags: separate cert/key files without chain construction,
/// encodings and permissions; then version history, where upstream's off-by-one shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_files_with_flags_and_the_documented_history_difference() {
    let upstream = test_support::require_peer!(test_support::Peer::UpstreamAzureProvider);
    let ours_bin = PathBuf::from(env!("CARGO_BIN_EXE_secrets-store-provider-azure"));
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let chain = std::fs::read_to_string(fixtures.join("chain3-rsa.pfx.b64")).unwrap();
    let seed_yaml = seed("[]", "none")
        .replacen("    certificates:\n", &format!("    certificates:\n      - {{ name: chain, pfx_base64: \"{}\" }}\n", chain.trim()), 1)
        .replacen(
            "    secrets:\n",
            "    secrets:\n      - { name: b64, value: \"AAECAwQ=\" }\n      - { name: hx, value: \"48657821\" }\n",
            1,
        );
    let _port = PORT_2579.lock().await;
    wait_for_port_2579().await;
    let env = Env::start_full(&seed_yaml, nmi_on_2579, |_| {}).await;
    let flags = [
        "--write-cert-and-key-in-separate-files=true",
        "--construct-pem-chain=false",
    ];
    let (theirs_child, theirs_sock) = spawn(&upstream, &env, "upstream", &flags);
    let (ours_child, ours_sock) = spawn(&ours_bin, &env, "ours", &flags);
    let objs = objects(&[
        "objectName: chain\nobjectType: secret",
        "objectName: chain\nobjectAlias: c.pfx\nobjectType: secret\nobjectFormat: pfx",
        "objectName: b64\nobjectType: secret\nobjectEncoding: base64\nfilePermission: \"0400\"",
        "objectName: hx\nobjectType: secret\nobjectEncoding: HEX",
        "objectName: cert1\nobjectAlias: dir/cert1\nobjectType: cert",
    ]);
    let attrs = env.attrs(&[("usePodIdentity", "true"), ("objects", &objs)]);
    let theirs = connect(&theirs_sock)
        .await
        .mount(mount_request(attrs.clone(), None, env.dir.path()))
        .await
        .unwrap()
        .into_inner();
    let ours = connect(&ours_sock)
        .await
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(files(&theirs), files(&ours));
    let ids = |r: &provider_proto::v1alpha1::MountResponse| {
        r.object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&theirs), ids(&ours));
    assert_eq!(
        ours.files
            .iter()
            .find(|f| f.path == "b64")
            .unwrap()
            .contents,
        [0, 1, 2, 3, 4]
    );

    // objectVersionHistory: 2 with three versions — upstream returns 3 files (N+1), we return 2
    let admin = env.emu.admin();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    admin.set_secret("kv1", "secret1", "second").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    admin.set_secret("kv1", "secret1", "third").await.unwrap();
    let objs = objects(&["objectName: secret1\nobjectType: secret\nobjectVersionHistory: 2"]);
    let attrs = env.attrs(&[("usePodIdentity", "true"), ("objects", &objs)]);
    let theirs = connect(&theirs_sock)
        .await
        .mount(mount_request(attrs.clone(), None, env.dir.path()))
        .await
        .unwrap()
        .into_inner();
    let ours = connect(&ours_sock)
        .await
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap()
        .into_inner();
    stop(theirs_child);
    stop(ours_child);
    let paths = |r: &provider_proto::v1alpha1::MountResponse| {
        r.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        paths(&theirs),
        ["secret1/0", "secret1/1", "secret1/2"],
        "upstream's N+1"
    );
    assert_eq!(paths(&ours), ["secret1/0", "secret1/1"]);
    assert_eq!(files(&theirs)[..2], files(&ours)[..]);
}

/// Refusals where we keep upstream's text: the same message from both binaries (upstream answers
/// with code Unknown, we with a specific code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_error_texts_as_upstream() {
    let upstream = test_support::require_peer!(test_support::Peer::UpstreamAzureProvider);
    let ours_bin = PathBuf::from(env!("CARGO_BIN_EXE_secrets-store-provider-azure"));
    let _port = PORT_2579.lock().await;
    wait_for_port_2579().await;
    let env = Env::start_full(&seed("[]", "none"), nmi_on_2579, |_| {}).await;
    let (theirs_child, theirs_sock) = spawn(&upstream, &env, "upstream", &[]);
    let (ours_child, ours_sock) = spawn(&ours_bin, &env, "ours", &[]);
    let ok = objects(&["objectName: secret1\nobjectType: secret"]);
    let obj = |body: &str| objects(&[body]);
    let pi = ("usePodIdentity", "true");
    let mut cases: Vec<(String, Option<&str>)> = vec![
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("objects", &ok),
                ("usePodIdentity", "tru"),
            ]),
            None,
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("objects", &ok),
                pi,
                ("useVMManagedIdentity", "true"),
            ]),
            None,
        ),
        (
            driver_attributes(&[("tenantId", "t"), ("objects", &ok), pi]),
            None,
        ),
        (
            driver_attributes(&[("keyvaultName", "kv1"), ("objects", &ok), pi]),
            None,
        ),
        (
            driver_attributes(&[("keyvaultName", "kv1"), ("tenantId", "t"), ("objects", &ok)]),
            None,
        ),
        (
            driver_attributes(&[("keyvaultName", "kv1"), ("tenantId", "t"), ("objects", &ok)]),
            Some(r#"{"clientsecret":"x"}"#),
        ),
        (
            driver_attributes(&[("keyvaultName", "kv1"), ("tenantId", "t"), ("objects", &ok)]),
            Some(r#"{"clientid":"x"}"#),
        ),
        (
            driver_attributes(&[("keyvaultName", "kv1"), ("tenantId", "t"), pi]),
            None,
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("cloudName", "AzureCloud1"),
                ("objects", &ok),
                pi,
            ]),
            None,
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv"),
                ("tenantId", "t"),
                ("objects", &ok),
                pi,
            ]),
            None,
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv_1"),
                ("tenantId", "t"),
                ("objects", &ok),
                pi,
            ]),
            None,
        ),
    ];
    for body in [
        "objectName: a\nobjectType: secret\nobjectFormat: pkcs",
        "objectName: a\nobjectType: secret\nobjectEncoding: utf-16",
        "objectName: a\nobjectType: cert\nobjectFormat: pfx",
        "objectName: a\nobjectType: key\nobjectEncoding: base64",
        "objectName: a\nobjectAlias: /abs\nobjectType: secret",
        "objectName: a\nobjectAlias: x/../y\nobjectType: secret",
    ] {
        cases.push((
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("objects", &obj(body)),
                pi,
            ]),
            None,
        ));
    }
    for (attrs, secrets) in cases {
        let t = connect(&theirs_sock)
            .await
            .mount(mount_request(attrs.clone(), secrets, env.dir.path()))
            .await
            .unwrap_err();
        let o = connect(&ours_sock)
            .await
            .mount(mount_request(attrs.clone(), secrets, env.dir.path()))
            .await
            .unwrap_err();
        assert_eq!(o.message(), t.message(), "attributes: {attrs}");
    }
    stop(theirs_child);
    stop(ours_child);
}

/// AKS identity binding (`useAzureTokenProxy: "true"`): both binaries exchange the same
/// kube-apiserver-minted `api://AKSIdentityBinding` token through the emulator acting as the
/// cluster's token proxy (`--token-proxy-url`, `--sni-name`; TLS for that name only) and write
/// the same files; the parameter refusals of the mode read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_binding_through_the_token_proxy_as_upstream() {
    let upstream = test_support::require_peer!(test_support::Peer::UpstreamAzureProvider);
    let ours_bin = PathBuf::from(env!("CARGO_BIN_EXE_secrets-store-provider-azure"));
    let Some(cp) = test_support::ControlPlane::start().await else {
        return;
    };
    let cp = cp.expect("control plane starts");
    cp.create_service_account("default", "workload")
        .await
        .unwrap();
    let sa = "system:serviceaccount:default:workload";
    let seed_yaml = seed_with_issuer(&control_plane_issuer(&cp), cp.issuer(), sa).replace(
        &format!("subject: \"{sa}\" }}"),
        &format!("subject: \"{sa}\", audience: \"api://AKSIdentityBinding\" }}"),
    );
    assert!(seed_yaml.contains("audience: \"api://AKSIdentityBinding\""));
    let sni = entra_auth::token_proxy::sni_for_cluster("696995ccb303450001b31a18");
    let proxy_sni = sni.clone();
    let _port = PORT_2579.lock().await;
    wait_for_port_2579().await;
    let env = Env::start_full(
        &seed_yaml,
        |c| keyvault_emulator::EmulatorConfig {
            nmi_listen: "127.0.0.1:2579".parse().unwrap(),
            token_proxy: Some(keyvault_emulator::TokenProxySettings::new(&proxy_sni)),
            ..c
        },
        |_| {},
    )
    .await;
    let proxy_url = env.emu.token_proxy_url().unwrap();
    let flags = [
        format!("--token-proxy-url={proxy_url}"),
        format!("--sni-name={sni}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (theirs_child, theirs_sock) = spawn(&upstream, &env, "upstream", &flags);
    let (ours_child, ours_sock) = spawn(&ours_bin, &env, "ours", &flags);

    let token = cp
        .token_request("default", "workload", "api://AKSIdentityBinding", 3600)
        .await
        .unwrap();
    let tokens = serde_json::json!({
        "api://AKSIdentityBinding": { "token": token, "expirationTimestamp": "2099-01-01T00:00:00Z" },
    })
    .to_string();
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: rsa1\nobjectType: key",
        "objectName: ec1\nobjectType: key",
        "objectName: cert1\nobjectType: cert",
        "objectName: cert1\nobjectAlias: cert1-secret\nobjectType: secret",
        "objectName: cert-pem\nobjectType: secret\nfilePermission: \"0600\"",
    ]);
    let attrs = env.attrs(&[
        ("useAzureTokenProxy", "true"),
        ("clientID", WI),
        ("csi.storage.k8s.io/serviceAccount.tokens", &tokens),
        ("objects", &objs),
    ]);
    let admin = env.emu.admin();
    let exchanges = || async {
        admin
            .request_count(keyvault_emulator::CounterFilter::operation("TokenProxy").status(200))
            .await
            .unwrap()
    };
    let theirs = connect(&theirs_sock)
        .await
        .mount(mount_request(attrs.clone(), None, env.dir.path()))
        .await;
    let after_theirs = exchanges().await;
    let ours = connect(&ours_sock)
        .await
        .mount(mount_request(attrs, None, env.dir.path()))
        .await;
    let after_ours = exchanges().await;
    // Both keep the Entra authority as the Host of what they send to the proxy.
    let hosts = env.emu.token_proxy_hosts();
    let authority = format!("127.0.0.1:{}", env.emu.https_addr().port());
    assert!(hosts.len() >= 2, "{hosts:?}");
    assert!(
        hosts.iter().all(|h| *h == authority),
        "{hosts:?} vs {authority}"
    );
    let theirs = theirs
        .unwrap_or_else(|e| panic!("upstream: {}", e.message()))
        .into_inner();
    let ours = ours
        .unwrap_or_else(|e| panic!("ours: {}", e.message()))
        .into_inner();
    assert_eq!(theirs.files.len(), 6);
    assert_eq!(files(&theirs), files(&ours));
    let ids = |r: &provider_proto::v1alpha1::MountResponse| {
        r.object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&theirs), ids(&ours));
    // Each got its token from the proxy; nobody went to Entra directly.
    assert!(after_theirs >= 1, "upstream's exchange at the proxy");
    assert!(after_ours > after_theirs, "our exchange at the proxy");
    assert_eq!(
        admin
            .request_count(keyvault_emulator::CounterFilter::operation("Token"))
            .await
            .unwrap(),
        0
    );
    // Upstream's MSAL also reads the OpenID configuration through the proxy (we do not need it).
    assert!(
        admin
            .request_count(keyvault_emulator::CounterFilter::operation(
                "TokenProxyOpenIdConfiguration"
            ))
            .await
            .unwrap()
            >= 1
    );

    // The mode's parameter refusals, word for word.
    let ok = objects(&["objectName: secret1\nobjectType: secret"]);
    let wi_only = serde_json::json!({
        "api://AzureADTokenExchange": { "token": "x", "expirationTimestamp": "2099-01-01T00:00:00Z" },
    })
    .to_string();
    let base = |extra: &[(&str, &str)]| {
        let mut p = vec![
            ("keyvaultName", "kv1"),
            ("tenantId", "t"),
            ("objects", ok.as_str()),
        ];
        p.extend_from_slice(extra);
        driver_attributes(&p)
    };
    let cases = [
        base(&[("useAzureTokenProxy", "yes")]),
        base(&[
            ("useAzureTokenProxy", "true"),
            ("useVMManagedIdentity", "true"),
        ]),
        base(&[
            ("useAzureTokenProxy", "true"),
            ("csi.storage.k8s.io/serviceAccount.tokens", &wi_only),
        ]),
        base(&[("useAzureTokenProxy", "true"), ("clientID", WI)]),
        base(&[
            ("useAzureTokenProxy", "true"),
            ("clientID", WI),
            ("csi.storage.k8s.io/serviceAccount.tokens", &wi_only),
        ]),
    ];
    for attrs in cases {
        let t = connect(&theirs_sock)
            .await
            .mount(mount_request(attrs.clone(), None, env.dir.path()))
            .await
            .unwrap_err();
        let o = connect(&ours_sock)
            .await
            .mount(mount_request(attrs.clone(), None, env.dir.path()))
            .await
            .unwrap_err();
        assert_eq!(o.message(), t.message(), "attributes: {attrs}");
    }
    stop(theirs_child);
    stop(ours_child);

    // Without --sni-name (and without the service-account CA file, outside a pod) the SNI name
    // cannot be computed: the same text from both.
    if !std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").exists() {
        let flags = [format!("--token-proxy-url={proxy_url}")];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (theirs_child, theirs_sock) = spawn(&upstream, &env, "upstream-nosni", &flags);
        let (ours_child, ours_sock) = spawn(&ours_bin, &env, "ours-nosni", &flags);
        let attrs = env.attrs(&[
            ("useAzureTokenProxy", "true"),
            ("clientID", WI),
            ("csi.storage.k8s.io/serviceAccount.tokens", &tokens),
            ("objects", &ok),
        ]);
        let t = connect(&theirs_sock)
            .await
            .mount(mount_request(attrs.clone(), None, env.dir.path()))
            .await
            .unwrap_err();
        let o = connect(&ours_sock)
            .await
            .mount(mount_request(attrs, None, env.dir.path()))
            .await
            .unwrap_err();
        stop(theirs_child);
        stop(ours_child);
        assert_eq!(o.message(), t.message());
        assert!(
            o.message()
                .contains("proxy transport not available: compute SNI name"),
            "{}",
            o.message()
        );
    }
}
