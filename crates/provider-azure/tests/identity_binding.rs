//! AKS identity binding (`useAzureTokenProxy: "true"`) end to end: a service-account token for
//! `api://AKSIdentityBinding` minted by a real kube-apiserver, exchanged through the emulator
//! acting as the cluster's token proxy (TLS for its SNI name only, the rewritten token path);
//! the SNI name itself computed from the emulator's certificate standing in for the API
//! server's (`hcp-kubernetes.<cluster id>.svc.cluster.local`).

#![allow(clippy::unwrap_used)]

mod common;

use common::emu::*;
use common::*;
use entra_auth::token_proxy::sni_for_cluster;
use keyvault_emulator::{CounterFilter, TokenProxySettings};

const CLUSTER_ID: &str = "696995ccb303450001b31a18";
const SA: &str = "system:serviceaccount:default:workload";

fn tokens(audience: &str, token: &str) -> String {
    serde_json::json!({ audience: { "token": token, "expirationTimestamp": "2099-01-01T00:00:00Z" } })
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_binding_mounts_through_the_token_proxy() {
    let Some(cp) = test_support::ControlPlane::start().await else {
        return;
    };
    let cp = cp.expect("control plane starts");
    cp.create_service_account("default", "workload")
        .await
        .unwrap();
    // The principal's federated credential for api://AKSIdentityBinding stands for the
    // identity binding: only the proxy exchanges it.
    let seed = seed_with_issuer(&control_plane_issuer(&cp), cp.issuer(), SA).replace(
        &format!("subject: \"{SA}\" }}"),
        &format!("subject: \"{SA}\", audience: \"api://AKSIdentityBinding\" }}"),
    );
    assert!(seed.contains("api://AKSIdentityBinding"));
    let sni = sni_for_cluster(CLUSTER_ID);
    let proxy_port = test_support::free_port();
    let api_server = format!("hcp-kubernetes.{CLUSTER_ID}.svc.cluster.local");
    let env = start(&seed, &sni, proxy_port, &api_server).await;
    assert_eq!(
        env.emu.token_proxy_url().as_deref(),
        Some(format!("https://127.0.0.1:{proxy_port}").as_str())
    );
    assert_eq!(env.emu.token_proxy_sni(), Some(sni.as_str()));

    let good = cp
        .token_request("default", "workload", "api://AKSIdentityBinding", 3600)
        .await
        .unwrap();
    let objs = objects(&["objectName: secret1\nobjectType: secret"]);
    let ib_tokens = tokens("api://AKSIdentityBinding", &good);
    let attrs = env.attrs(&[
        ("useAzureTokenProxy", "true"),
        ("clientID", WI),
        ("csi.storage.k8s.io/serviceAccount.tokens", &ib_tokens),
        ("objects", &objs),
    ]);
    let mut client = connect(&env.sock).await;
    let r = client
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].path, "secret1");
    assert_eq!(r.files[0].contents, SEEDED_SECRET.as_bytes());
    let admin = env.emu.admin();
    let count = |op: &'static str, status: u16| {
        let admin = admin.clone();
        async move {
            admin
                .request_count(CounterFilter::operation(op).status(status))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("TokenProxy", 200).await,
        1,
        "one exchange at the proxy"
    );
    assert_eq!(count("TokenProxyTlsHandshake", 200).await, 1);
    assert_eq!(
        count("Token", 200).await,
        0,
        "nothing went to Entra directly"
    );

    // The same token presented to Entra directly (workload identity) is refused: Entra holds no
    // federated credential for the cluster's issuer, the binding is only honoured by the proxy.
    let wi_tokens = tokens("api://AzureADTokenExchange", &good);
    let attrs = env.attrs(&[
        ("clientID", WI),
        ("csi.storage.k8s.io/serviceAccount.tokens", &wi_tokens),
        ("objects", &objs),
    ]);
    let e = client
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains("AADSTS700211"), "{}", e.message());
    assert_eq!(count("Token", 400).await, 1);

    // A token for another audience through the proxy is refused by it.
    let wrong = cp
        .token_request("default", "workload", "api://AzureADTokenExchange", 3600)
        .await
        .unwrap();
    let wrong_tokens = tokens("api://AKSIdentityBinding", &wrong);
    let attrs = env.attrs(&[
        ("useAzureTokenProxy", "true"),
        ("clientID", WI),
        ("csi.storage.k8s.io/serviceAccount.tokens", &wrong_tokens),
        ("objects", &objs),
    ]);
    let e = client
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains("AADSTS700212"), "{}", e.message());
    assert_eq!(count("TokenProxy", 400).await, 1);

    // A client sending another SNI name never gets a handshake.
    let p = std::sync::Arc::new(
        entra_auth::TokenProxy::new(
            entra_auth::TokenProxyConfig {
                url: format!("https://127.0.0.1:{proxy_port}"),
                sni_name: "another.ests.aks".into(),
                ca_file: Some(env.ca_file.clone()),
                ..entra_auth::TokenProxyConfig::default()
            },
            entra_auth::HttpOptions::default(),
        )
        .unwrap(),
    );
    let cloud = entra_auth::Cloud::resolve("AzurePublicCloud", None).unwrap();
    let cred = entra_auth::IdentityBindingCredential::new(
        p,
        &cloud,
        TENANT,
        WI,
        entra_auth::SecretString::new(good.clone()),
    )
    .unwrap()
    .with_retry(entra_auth::RetryPolicy::none());
    use entra_auth::TokenCredential;
    let e = cred
        .get_token("https://vault.azure.net/.default")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "auth_unavailable", "{e}");
    assert!(count("TokenProxyTlsHandshake", 0).await >= 1);
}

/// The emulator as Key Vault, Entra ID, token proxy and (its HTTPS certificate naming
/// `hcp-kubernetes.<id>.svc.cluster.local`) API server; the provider without `--sni-name`, so
/// that it computes the name by dialling that "API server".
async fn start(seed: &str, sni: &str, proxy_port: u16, api_server: &str) -> Env {
    let https_port = test_support::free_port();
    let (sni, api_server) = (sni.to_owned(), api_server.to_owned());
    Env::start_full(
        seed,
        |c| keyvault_emulator::EmulatorConfig {
            listen: ([127, 0, 0, 1], https_port).into(),
            extra_tls_names: vec!["kubernetes.default.svc.cluster.local".into(), api_server],
            token_proxy: Some(TokenProxySettings {
                listen: ([127, 0, 0, 1], proxy_port).into(),
                sni,
                path: "/".into(),
            }),
            ..c
        },
        |cfg| {
            cfg.token_proxy = entra_auth::TokenProxyConfig {
                url: format!("https://127.0.0.1:{proxy_port}"),
                sni_name: String::new(),
                ca_file: cfg.http.ssl_cert_file.clone(),
                api_server_port: https_port,
                api_server_addr: Some(([127, 0, 0, 1], https_port).into()),
            };
        },
    )
    .await
}

/// Upstream's texts for a proxy that cannot be used: the SNI name cannot be computed (here: no
/// API server answers) → the mount fails before any request, naming the flag that helps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_token_proxy_fails_the_mount_with_upstreams_text() {
    let closed = test_support::free_port();
    let env = Env::start_with(&seed("[]", "none"), |cfg| {
        cfg.token_proxy = entra_auth::TokenProxyConfig {
            ca_file: cfg.http.ssl_cert_file.clone(),
            api_server_addr: Some(([127, 0, 0, 1], closed).into()),
            ..entra_auth::TokenProxyConfig::default()
        };
    })
    .await;
    let objs = objects(&["objectName: secret1\nobjectType: secret"]);
    let t = tokens("api://AKSIdentityBinding", "header.payload.signature");
    let attrs = env.attrs(&[
        ("useAzureTokenProxy", "true"),
        ("clientID", WI),
        ("csi.storage.k8s.io/serviceAccount.tokens", &t),
        ("objects", &objs),
    ]);
    let e = connect(&env.sock)
        .await
        .mount(mount_request(attrs, None, env.dir.path()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    assert!(
        e.message().starts_with(
            "failed to mount objects, error: failed to get keyvault client: proxy transport not available: compute SNI name: extract cluster ID from API server certificate: TLS connect to API server: "
        ),
        "{}",
        e.message()
    );
    assert!(
        e.message()
            .ends_with("(use --sni-name flag to skip automatic SNI detection)"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("header.payload.signature"));
}
