//! Smoke tests proving each installed peer is the real thing and behaves as the other tests
//! assume: the control plane serves the pinned Kubernetes version, accepts CRDs, enforces RBAC and
//! mints verifiable workload-identity tokens; csi-sanity runs; the Azure SDK for Python imports
//! at the pinned versions; the upstream Go Azure provider answers the provider API.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams},
};
use test_support::{ControlPlane, Peer, PythonSdk, get_text, require_peer, versions};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.test-support.invalid
spec:
  group: smoke.test-support.invalid
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;

fn https_client(ca_pem: &str) -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .expect("control plane CA is PEM");
    roots.add(der).expect("control plane CA is a certificate");
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_is_a_real_kube_apiserver() {
    let Some(plane) = ControlPlane::start().await else {
        return;
    };
    let plane = plane.expect("control plane starts");
    let admin = plane.client();

    // /version reports the pinned release.
    let version: serde_json::Value =
        serde_json::from_str(&get_text(&admin, "/version").await.expect("/version")).expect("json");
    assert_eq!(version["gitVersion"], versions::kubernetes(), "{version}");

    // A CRD is accepted, established and served.
    let names = plane.apply_crd_yaml(WIDGET_CRD).await.expect("CRD applies");
    assert_eq!(names, ["widgets.smoke.test-support.invalid"]);
    plane.create_namespace("smoke").await.expect("namespace");
    let gvk = GroupVersionKind::gvk("smoke.test-support.invalid", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "smoke", &ApiResource::from_gvk(&gvk));
    let mut w = DynamicObject::new("w1", &ApiResource::from_gvk(&gvk));
    w.data = serde_json::json!({"spec": {"size": 3}});
    widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create a Widget");
    let got = widgets.get("w1").await.expect("read the Widget back");
    assert_eq!(got.data["spec"]["size"], 3);

    // RBAC: a service account without any role is refused.
    plane
        .create_service_account("smoke", "nobody")
        .await
        .expect("service account");
    let nobody = plane
        .service_account_client("smoke", "nobody")
        .await
        .expect("SA client");
    let secrets: Api<Secret> = Api::namespaced(nobody, "smoke");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("system:serviceaccount:smoke:nobody"),
                "{status:?}"
            );
        }
        other => panic!("a service account without a role listed secrets: {other:?}"),
    }

    // TokenRequest mints a workload-identity token that verifies against the issuer's JWKS,
    // fetched without credentials the way Entra ID fetches it.
    plane
        .create_service_account("smoke", "workload")
        .await
        .expect("service account");
    let token = plane
        .token_request("smoke", "workload", "api://AzureADTokenExchange", 3600)
        .await
        .expect("TokenRequest");
    let http = https_client(plane.ca_pem());
    let discovery: serde_json::Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            plane.issuer()
        ))
        .send()
        .await
        .expect("discovery request")
        .error_for_status()
        .expect("anonymous discovery is allowed")
        .json()
        .await
        .expect("discovery json");
    assert_eq!(discovery["issuer"], plane.issuer());
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri").to_owned();
    // The advertised URI may name the external host; the keys are served on the apiserver.
    let jwks_path = url_path(&jwks_uri);
    let jwks: JwkSet = http
        .get(format!("{}{jwks_path}", plane.url()))
        .send()
        .await
        .expect("jwks request")
        .error_for_status()
        .expect("anonymous JWKS is allowed")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(&token).expect("JWT header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    let jwk = jwks.find(&kid).expect("the token's key is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("usable JWK");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["api://AzureADTokenExchange"]);
    validation.set_issuer(&[plane.issuer()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
        .expect("signature, audience, issuer and expiry verify")
        .claims;
    assert_eq!(claims["sub"], "system:serviceaccount:smoke:workload");

    // A token for another audience does not pass as a workload-identity token.
    let other = plane
        .token_request("smoke", "workload", "api://Other", 600)
        .await
        .expect("token");
    assert!(jsonwebtoken::decode::<serde_json::Value>(&other, &key, &validation).is_err());
}

fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

#[test]
fn csi_sanity_runs_its_node_suite() {
    let sanity = require_peer!(Peer::CsiSanity);
    // A dry run walks every spec without a driver: proves the binary runs and carries the suites
    // the driver's real sanity run (crates/driver) selects from.
    let out = std::process::Command::new(&sanity)
        .args(["--ginkgo.dry-run", "--ginkgo.no-color", "--ginkgo.v"])
        .arg("--csi.endpoint=unix:///nonexistent/csi.sock")
        .output()
        .expect("csi-sanity runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Node Service"), "{text}");
    assert!(text.contains("NodePublishVolume"), "{text}");
    assert!(text.contains("Identity Service"), "{text}");
}

#[test]
fn python_sdk_is_installed_at_the_pinned_versions() {
    let Some(py) = PythonSdk::require() else {
        return;
    };
    let out = py.run_code(
        "from importlib.metadata import version\n\
         import azure.identity, azure.keyvault.secrets, azure.keyvault.keys, \
         azure.keyvault.certificates, cryptography, grpc, grpc_tools\n\
         for p in ['azure-identity', 'azure-keyvault-secrets', 'azure-keyvault-keys', \
         'azure-keyvault-certificates', 'cryptography', 'grpcio', 'grpcio-tools']:\n\
         \x20   print(p, version(p))\n",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for (package, pin) in [
        ("azure-identity", "PY_AZURE_IDENTITY"),
        ("azure-keyvault-secrets", "PY_AZURE_KEYVAULT_SECRETS"),
        ("azure-keyvault-keys", "PY_AZURE_KEYVAULT_KEYS"),
        (
            "azure-keyvault-certificates",
            "PY_AZURE_KEYVAULT_CERTIFICATES",
        ),
        ("cryptography", "PY_CRYPTOGRAPHY"),
        ("grpcio", "PY_GRPCIO"),
    ] {
        let line = format!("{package} {}", versions::get(pin));
        assert!(
            text.lines().any(|l| l == line),
            "expected `{line}` in:\n{text}"
        );
    }
}

#[test]
fn python_sdk_runs_in_a_private_hosts_namespace() {
    let Some(py) = PythonSdk::require() else {
        return;
    };
    let py = py.hosts(&[("smoke.vault.test", "127.0.0.7")]);
    let out = py.run_code(
        "import socket; print(socket.gethostbyname('smoke.vault.test'))",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.7");
}

#[tokio::test]
async fn upstream_azure_provider_answers_the_provider_api() {
    use provider_proto::v1alpha1::{
        VersionRequest, csi_driver_provider_client::CsiDriverProviderClient,
    };
    let bin = require_peer!(Peer::UpstreamAzureProvider);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("azure.sock");
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg(format!("--endpoint=unix://{}", socket.display()))
        .arg(format!("--healthz-port={}", test_support::free_port()))
        .arg(format!("--prometheus-port={}", test_support::free_port()));
    let mut child =
        test_support::ChildGuard::spawn("upstream-azure-provider", cmd, &dir.path().join("log"))
            .expect("provider starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(child.is_running(), "{}", child.log_tail(4000));
        assert!(
            std::time::Instant::now() < deadline,
            "no socket\n{}",
            child.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = daemon::uds::channel(&socket)
        .await
        .expect("connect to the provider socket");
    let reply = CsiDriverProviderClient::new(channel)
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(reply.version, "v1alpha1");
    assert_eq!(
        reply.runtime_name,
        "secrets-store-csi-driver-provider-azure"
    );
}
