//! Workload identity: a service-account token minted by the local kube-apiserver is the client
//! assertion; the emulator fetches the apiserver's JWKS (`<issuer>/openid/v1/jwks`, anonymous,
//! over HTTPS with the control plane's CA) and matches the federated credential. Driven by the
//! official Python SDK's `ClientAssertionCredential`.

use keyvault_emulator::{CounterFilter, Emulator, EmulatorConfig};
use std::path::PathBuf;
use test_support::{ControlPlane, PythonSdk};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "44444444-4444-4444-4444-444444444444";
const VAULT: &str = "wivault";
const AUDIENCE: &str = "api://AzureADTokenExchange";

fn q(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::Value::String(s.to_string()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_assertion_with_kube_apiserver_token() {
    let Some(sdk) = PythonSdk::require() else {
        return;
    };
    let Some(cp) = ControlPlane::start().await else {
        return;
    };
    let cp = cp.expect("control plane starts");
    cp.create_service_account("apps", "workload")
        .await
        .expect("service account");
    cp.create_service_account("apps", "intruder")
        .await
        .expect("service account");

    let seed = format!(
        r#"
tenant: {TENANT}
vaults:
  - name: {VAULT}
    access: [{APP}]
    secrets: [{{ name: seeded, value: from-seed }}]
identities:
  service_principals:
    - client_id: {APP}
      federated_credentials:
        - {{ issuer: {issuer}, subject: "system:serviceaccount:apps:workload" }}
issuers:
  - issuer: {issuer}
    jwks_uri: {jwks}
    ca_pem: {ca}
"#,
        issuer = q(cp.issuer()),
        jwks = q(&format!("{}/openid/v1/jwks", cp.issuer())),
        ca = q(cp.ca_pem()),
    );
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed).expect("seed"))
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, emu.ca_pem()).expect("CA");
    let host = emu.vault_host(VAULT);
    let sdk = sdk.hosts(&[(host.as_str(), "127.0.0.1")]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kv_sdk.py");

    let run = |scenario: &'static str, assertion: String, expect: &'static str| {
        let sdk = sdk.clone();
        let script = script.clone();
        let envs: Vec<(String, String)> = vec![
            ("VAULT_URL".into(), emu.vault_url(VAULT)),
            ("AUTHORITY".into(), emu.authority_url()),
            ("TENANT_ID".into(), TENANT.into()),
            ("CLIENT_ID".into(), APP.into()),
            ("REQUESTS_CA_BUNDLE".into(), ca_path.display().to_string()),
            ("ASSERTION".into(), assertion),
            ("EXPECT_CODE".into(), expect.into()),
        ];
        tokio::task::spawn_blocking(move || {
            let envs: Vec<(&str, &str)> =
                envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            sdk.run(&script, &[scenario], &envs)
        })
    };
    let check = |out: std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // The right service account, audience api://AzureADTokenExchange: accepted.
    let good = cp
        .token_request("apps", "workload", AUDIENCE, 3600)
        .await
        .expect("token");
    check(
        run("assertion", good, "").await.expect("runner"),
        "workload identity",
    );

    // Another service account of the same cluster: wrong subject.
    let other = cp
        .token_request("apps", "intruder", AUDIENCE, 3600)
        .await
        .expect("token");
    check(
        run("assertion-rejected", other, "AADSTS700213")
            .await
            .expect("runner"),
        "wrong subject",
    );

    // The right subject for another audience: no federated credential matches.
    let wrong_aud = cp
        .token_request("apps", "workload", "api://something-else", 3600)
        .await
        .expect("token");
    check(
        run("assertion-rejected", wrong_aud, "AADSTS700212")
            .await
            .expect("runner"),
        "wrong audience",
    );

    // The good token's header and claims with another token's (well-formed) signature.
    let good = cp
        .token_request("apps", "workload", AUDIENCE, 3600)
        .await
        .expect("token");
    let donor = cp
        .token_request("apps", "intruder", AUDIENCE, 3600)
        .await
        .expect("token");
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[2] = donor.split('.').nth(2).expect("signature").to_string();
    check(
        run("assertion-rejected", parts.join("."), "AADSTS700027")
            .await
            .expect("runner"),
        "bad signature",
    );

    let admin = emu.admin();
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("Token").status(200))
            .await
            .expect("counters"),
        1
    );
    assert_eq!(
        admin
            .request_count(CounterFilter::operation("GetSecret").status(200))
            .await
            .expect("counters"),
        1
    );
}

/// AKS identity binding: the emulator as the cluster's token proxy, driven by the official Python
/// SDK's `WorkloadIdentityCredential(enable_azure_proxy=True)` (azure-identity's own proxy
/// transport: SNI name, CA file, rewritten token path). The binding (a federated credential for
/// api://AKSIdentityBinding) is honoured through the proxy only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_identity_binding_through_the_token_proxy() {
    let Some(sdk) = PythonSdk::require() else {
        return;
    };
    let Some(cp) = ControlPlane::start().await else {
        return;
    };
    let cp = cp.expect("control plane starts");
    cp.create_service_account("apps", "workload")
        .await
        .expect("service account");
    let seed = format!(
        r#"
tenant: {TENANT}
vaults:
  - name: {VAULT}
    access: [{APP}]
    secrets: [{{ name: seeded, value: from-seed }}]
identities:
  service_principals:
    - client_id: {APP}
      federated_credentials:
        - {{ issuer: {issuer}, subject: "system:serviceaccount:apps:workload", audience: "api://AKSIdentityBinding" }}
issuers:
  - issuer: {issuer}
    jwks_uri: {jwks}
    ca_pem: {ca}
"#,
        issuer = q(cp.issuer()),
        jwks = q(&format!("{}/openid/v1/jwks", cp.issuer())),
        ca = q(cp.ca_pem()),
    );
    let sni = "aeaf29ip1hi5q38ebc3u4daum81u0unk52t5bg50j25234fmuj78g.ests.aks";
    let emu = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&seed)
            .expect("seed")
            .token_proxy(keyvault_emulator::TokenProxySettings {
                path: "/proxy".into(),
                ..keyvault_emulator::TokenProxySettings::new(sni)
            }),
    )
    .await
    .expect("emulator");
    let proxy_url = emu.token_proxy_url().expect("proxy");
    assert!(proxy_url.ends_with("/proxy"), "{proxy_url}");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, emu.ca_pem()).expect("CA");
    let host = emu.vault_host(VAULT);
    let sdk = sdk.hosts(&[(host.as_str(), "127.0.0.1")]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kv_sdk.py");
    let run = |scenario: &'static str, sni: &str, assertion: String, expect: &'static str| {
        let sdk = sdk.clone();
        let script = script.clone();
        let envs: Vec<(String, String)> = vec![
            ("VAULT_URL".into(), emu.vault_url(VAULT)),
            ("AUTHORITY".into(), emu.authority_url()),
            ("TENANT_ID".into(), TENANT.into()),
            ("CLIENT_ID".into(), APP.into()),
            ("REQUESTS_CA_BUNDLE".into(), ca_path.display().to_string()),
            ("WORK_DIR".into(), dir.path().display().to_string()),
            ("AZURE_KUBERNETES_TOKEN_PROXY".into(), proxy_url.clone()),
            ("AZURE_KUBERNETES_SNI_NAME".into(), sni.to_string()),
            (
                "AZURE_KUBERNETES_CA_FILE".into(),
                ca_path.display().to_string(),
            ),
            ("ASSERTION".into(), assertion),
            ("EXPECT_CODE".into(), expect.into()),
        ];
        tokio::task::spawn_blocking(move || {
            let envs: Vec<(&str, &str)> =
                envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            sdk.run(&script, &[scenario], &envs)
        })
    };
    let check = |out: std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ib = cp
        .token_request("apps", "workload", "api://AKSIdentityBinding", 3600)
        .await
        .expect("token");

    // Through the proxy: accepted.
    check(
        run("identity-binding", sni, ib.clone(), "")
            .await
            .expect("runner"),
        "identity binding",
    );
    // The same token to Entra directly: no federated credential outside the proxy.
    check(
        run("assertion-rejected", sni, ib.clone(), "AADSTS700211")
            .await
            .expect("runner"),
        "identity-binding token sent to Entra directly",
    );
    // A workload-identity token through the proxy: the binding's audience does not match.
    let wi = cp
        .token_request("apps", "workload", AUDIENCE, 3600)
        .await
        .expect("token");
    check(
        run("identity-binding-rejected", sni, wi, "AADSTS700212")
            .await
            .expect("runner"),
        "workload-identity token through the proxy",
    );

    let admin = emu.admin();
    let count = |op: &'static str, status: Option<u16>| {
        let admin = admin.clone();
        async move {
            let mut f = CounterFilter::operation(op);
            f.status = status;
            admin.request_count(f).await.expect("counters")
        }
    };
    assert_eq!(count("TokenProxy", Some(200)).await, 1);
    assert_eq!(count("TokenProxy", Some(400)).await, 1);
    // (azure-identity for Python rewrites the token request only; its MSAL reads the OpenID
    // configuration from the authority. Go's azidentity sends both through the proxy.)
    assert_eq!(count("TokenProxyOpenIdConfiguration", None).await, 0);
    assert_eq!(count("Token", Some(200)).await, 0);
    assert_eq!(count("GetSecret", Some(200)).await, 1);
    // A client sending another SNI name never completes a handshake with the proxy.
    let refused_before = count("TokenProxyTlsHandshake", Some(0)).await;
    let out = run("identity-binding-rejected", "another.ests.aks", ib, "")
        .await
        .expect("runner");
    assert!(!out.status.success(), "a wrong SNI name must fail");
    assert!(count("TokenProxyTlsHandshake", Some(0)).await > refused_before);
}
