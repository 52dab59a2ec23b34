//! The provider over its unix socket, exactly as the driver calls it, with an in-memory Key Vault
//! behind the `Connector` trait (failure injection and wire checks here; the real HTTP path is
//! covered against keyvault-emulator in `emulator.rs`).

#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use entra_auth::{BoxFuture, TokenCredential};
use keyvault_client::{
    CertificateBundle, Connector, Jwk, KeyBundle, KeyVault, KvError, ObjectKind, SecretBundle,
    SecretBytes, VersionItem,
};
use provider_azure::metrics::Metrics;
use provider_azure::{Provider, ProviderConfig, Server, ServerConfig};
use provider_proto::v1alpha1::VersionRequest;

const SECRET_VALUE: &str = "s3cr3t-value-never-logged";

#[derive(Default)]
struct FakeVault {
    secrets: HashMap<(String, String), SecretBundle>,
    versions: HashMap<String, Vec<VersionItem>>,
    calls: Mutex<Vec<String>>,
}

impl FakeVault {
    fn secret(&mut self, name: &str, version: &str, value: &str, created: i64, latest: bool) {
        let b = SecretBundle {
            id: Some(format!(
                "https://kv1.vault.azure.net/secrets/{name}/{version}"
            )),
            value: Some(SecretBytes::new(value.as_bytes().to_vec())),
            content_type: None,
            kid: None,
        };
        self.secrets
            .insert((name.into(), version.into()), b.clone());
        if latest {
            self.secrets.insert((name.into(), String::new()), b);
        }
        self.versions
            .entry(name.into())
            .or_default()
            .push(VersionItem {
                id: format!("https://kv1.vault.azure.net/secrets/{name}/{version}"),
                has_attributes: true,
                enabled: Some(true),
                created: Some(created),
            });
    }
}

struct FakeConn(Arc<FakeVault>);

impl Connector for FakeConn {
    fn connect(&self, _url: &url::Url, _c: Arc<dyn TokenCredential>) -> Arc<dyn KeyVault> {
        Arc::new(FakeKv(self.0.clone()))
    }
}

struct FakeKv(Arc<FakeVault>);

impl KeyVault for FakeKv {
    fn get_secret<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SecretBundle, KvError>> {
        Box::pin(async move {
            self.0
                .calls
                .lock()
                .unwrap()
                .push(format!("get secret {name}/{version}"));
            if name == "forbidden" {
                return Err(KvError::Forbidden {
                    code: "Forbidden".into(),
                    message: "caller is not authorized".into(),
                });
            }
            if name == "throttled" {
                return Err(KvError::Throttled {
                    retry_after: Some(Duration::from_secs(3)),
                });
            }
            self.0
                .secrets
                .get(&(name.to_owned(), version.to_owned()))
                .cloned()
                .ok_or(KvError::NotFound {
                    code: "SecretNotFound".into(),
                    message: format!(
                        "A secret with (name/id) {name}/{version} was not found in this key vault."
                    ),
                })
        })
    }
    fn get_key<'a>(
        &'a self,
        _n: &'a str,
        _v: &'a str,
    ) -> BoxFuture<'a, Result<KeyBundle, KvError>> {
        Box::pin(async {
            let jwks: Vec<Jwk> = serde_json::from_slice(
                &std::fs::read(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/jwks.json"
                ))
                .unwrap(),
            )
            .unwrap();
            Ok(KeyBundle {
                key: Some(jwks[0].clone()),
            })
        })
    }
    fn get_certificate<'a>(
        &'a self,
        _n: &'a str,
        _v: &'a str,
    ) -> BoxFuture<'a, Result<CertificateBundle, KvError>> {
        Box::pin(async {
            Ok(CertificateBundle {
                id: Some("https://kv1.vault.azure.net/certificates/c/cv1".into()),
                cer: Some(b"test".to_vec()),
            })
        })
    }
    fn list_versions<'a>(
        &'a self,
        _k: ObjectKind,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionItem>, KvError>> {
        Box::pin(async move {
            self.0.calls.lock().unwrap().push(format!("list {name}"));
            Ok(self.0.versions.get(name).cloned().unwrap_or_default())
        })
    }
    fn vault_url(&self) -> &str {
        "https://kv1.vault.azure.net/"
    }
}

async fn start(
    vault: FakeVault,
    tweak: impl FnOnce(&mut ProviderConfig),
) -> (tempfile::TempDir, Server, Arc<FakeVault>) {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(vault);
    let mut cfg = ProviderConfig::default();
    tweak(&mut cfg);
    let http = entra_auth::build_client(&cfg.http).unwrap();
    let provider = Provider::with_connector(
        cfg.clone(),
        http,
        Arc::new(FakeConn(vault.clone())),
        Metrics::new(),
    )
    .unwrap();
    let sock = dir.path().join("azure.sock");
    let mut sc = ServerConfig::new(format!("unix://{}", sock.display()), cfg);
    sc.healthz_addr = Some("127.0.0.1:0".parse().unwrap());
    sc.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::bind_with(sc, Arc::new(provider)).await.unwrap();
    (dir, server, vault)
}

fn vault() -> FakeVault {
    let mut v = FakeVault::default();
    v.secret("secret1", "v1", "old", 100, false);
    v.secret("secret1", "v2", "mid", 200, false);
    v.secret("secret1", "v3", SECRET_VALUE, 300, true);
    v
}

fn vm_mi(objs: &str) -> String {
    driver_attributes(&[
        ("keyvaultName", "kv1"),
        ("tenantId", "tid"),
        ("useVMManagedIdentity", "true"),
        ("objects", objs),
    ])
}

#[tokio::test]
async fn version_mount_health_metrics_and_shutdown_over_the_socket() {
    // concurrent fetching on: the response order must still be the SecretProviderClass order
    let (dir, server, fake) = start(vault(), |c| c.fetch_concurrency = 8).await;
    let sock = server.socket_path().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600,
        "socket must be owner-only"
    );
    let healthz = server.healthz_addr().unwrap();
    let metrics = server.metrics_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));
    let mut client = connect(&sock).await;

    let v = client
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.version.as_str(), v.runtime_name.as_str()),
        ("v1alpha1", "secrets-store-csi-driver-provider-azure")
    );
    assert!(v.runtime_version.starts_with('v'));

    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: secret1\nobjectAlias: old\nobjectType: secret\nobjectVersion: v1\nfilePermission: \"0600\"",
        "objectName: k\nobjectType: key",
        "objectName: c\nobjectAlias: certs/c.pem\nobjectType: cert",
    ]);
    let resp = client
        .mount(mount_request(vm_mi(&objs), None, dir.path()))
        .await
        .unwrap()
        .into_inner();
    let f = files(&resp);
    assert_eq!(
        f[0],
        ("secret1".into(), 0o644, SECRET_VALUE.as_bytes().to_vec())
    );
    assert_eq!(f[1], ("old".into(), 0o600, b"old".to_vec()));
    assert!(String::from_utf8_lossy(&f[2].2).starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(f[3].0, "certs/c.pem");
    let ids: Vec<(String, String)> = resp
        .object_version
        .iter()
        .map(|o| (o.id.clone(), o.version.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            ("secret/secret1", "v3"),
            ("secret/secret1", "v1"),
            ("key/k", "0123abcd"),
            ("cert/c", "cv1")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(resp.error.is_none());

    // gRPC health answers SERVING for any service name, as upstream
    let ch = daemon::uds::channel(&sock).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    for name in ["", "v1alpha1.CSIDriverProvider", "anything"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().status, 1, "SERVING for {name:?}");
    }

    // /healthz goes through gRPC health on the socket
    let http = entra_auth::build_client(&Default::default()).unwrap();
    let body = http
        .get(format!("http://{healthz}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.text().await.unwrap(), "ok");
    let text = http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "keyvault_request_count{operation=\"get\",object_type=\"secret\",result=\"ok\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains("grpc_code=\"OK\""), "{text}");
    assert!(
        !text.contains("secret1"),
        "object names must not be metric labels"
    );
    assert_eq!(
        fake.calls.lock().unwrap().len(),
        2,
        "one GET per secret object"
    );

    // graceful stop: in-flight requests finish, socket removed
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!sock.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("azure.sock");
    std::fs::write(&sock, b"stale").unwrap();
    let cfg = ProviderConfig::default();
    let server = Server::bind(ServerConfig::new(format!("unix://{}", sock.display()), cfg))
        .await
        .unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    drop(server);
}

#[tokio::test]
async fn version_history_returns_exactly_n_newest_first() {
    let (dir, server, _fake) = start(vault(), |_| {}).await;
    let sock = server.socket_path().unwrap().to_path_buf();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let mut client = connect(&sock).await;
    let objs = objects(&[
        "objectName: secret1\nobjectAlias: S\nobjectType: secret\nobjectVersionHistory: 2",
    ]);
    let resp = client
        .mount(mount_request(vm_mi(&objs), None, dir.path()))
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<String> = resp.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        paths,
        ["S/0", "S/1"],
        "N=2 of 3 versions: exactly 2 (upstream would return 3)"
    );
    assert_eq!(resp.files[0].contents, SECRET_VALUE.as_bytes());
    assert_eq!(resp.files[1].contents, b"mid");
    let ids: Vec<(&str, &str)> = resp
        .object_version
        .iter()
        .map(|o| (o.id.as_str(), o.version.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("secret/secret1/0", "v3"), ("secret/secret1/1", "v2")]
    );

    // start at a given version; more than exist → all remaining
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret\nobjectVersion: v2\nobjectVersionHistory: 5",
    ]);
    let resp = client
        .mount(mount_request(vm_mi(&objs), None, dir.path()))
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
        [("secret1/0", &b"mid"[..]), ("secret1/1", &b"old"[..])]
    );

    let objs = objects(&[
        "objectName: secret1\nobjectType: secret\nobjectVersion: nope\nobjectVersionHistory: 5",
    ]);
    let err = client
        .mount(mount_request(vm_mi(&objs), None, dir.path()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("objectVersion nope not found"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn failures_name_the_object_and_cause_and_return_no_files() {
    let (dir, server, _fake) = start(vault(), |c| {
        c.render.write_cert_and_key_in_separate_files = true
    })
    .await;
    let sock = server.socket_path().unwrap().to_path_buf();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let mut client = connect(&sock).await;
    let ok = "objectName: secret1\nobjectType: secret";
    let cases: Vec<(String, Option<&str>, tonic::Code, &str)> = vec![
        (
            vm_mi(&objects(&[ok, "objectName: missing\nobjectType: secret"])),
            None,
            tonic::Code::NotFound,
            "failed to mount objects, error: failed to get objectType:secret, objectName:missing, objectVersion:: not found (404 SecretNotFound)",
        ),
        (
            vm_mi(&objects(&[ok, "objectName: forbidden\nobjectType: secret"])),
            None,
            tonic::Code::PermissionDenied,
            "objectName:forbidden, objectVersion:: forbidden (403 Forbidden)",
        ),
        (
            vm_mi(&objects(&["objectName: throttled\nobjectType: secret"])),
            None,
            tonic::Code::ResourceExhausted,
            "throttled by Key Vault (429), retry after 3s",
        ),
        (
            vm_mi(&objects(&[
                "objectName: secret1\nobjectType: secret\nobjectEncoding: hex",
            ])),
            None,
            tonic::Code::FailedPrecondition,
            "objectEncoding hex: the stored value is not valid hex",
        ),
        (
            vm_mi(&objects(&[
                "objectName: a\nobjectAlias: ../x\nobjectType: secret",
            ])),
            None,
            tonic::Code::InvalidArgument,
            "file name must not contain '..'",
        ),
        (
            vm_mi(&objects(&[
                "objectName: a\nobjectType: secret\nfilePermission: \"0900\"",
            ])),
            None,
            tonic::Code::InvalidArgument,
            "invalid filePermission: \"0900\"",
        ),
        (
            vm_mi(&objects(&[
                ok,
                "objectName: b\nobjectAlias: secret1\nobjectType: secret",
            ])),
            None,
            tonic::Code::InvalidArgument,
            "collides with the path \"secret1\"",
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("objects", &objects(&[ok])),
            ]),
            None,
            tonic::Code::InvalidArgument,
            "failed to build auth config for mode None: failed to get credentials, nodePublishSecretRef secret is not set",
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("clientID", "c"),
                ("objects", &objects(&[ok])),
            ]),
            None,
            tonic::Code::InvalidArgument,
            "failed to parse workload identity tokens, error: service account tokens not found",
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("useVMManagedIdentity", "true"),
                ("cloudName", "AzureCloud1"),
                ("objects", &objects(&[ok])),
            ]),
            None,
            tonic::Code::InvalidArgument,
            "cloudName AzureCloud1 is not valid, error: autorest/azure: There is no cloud environment matching the name \"AZURECLOUD1\"",
        ),
        (
            driver_attributes(&[
                ("keyvaultName", "kv1"),
                ("tenantId", "t"),
                ("useVMManagedIdentity", "true"),
                ("cloudName", "AzureStackCloud"),
                ("cloudEnvFileName", "/nonexistent/env.json"),
                ("objects", &objects(&[ok])),
            ]),
            None,
            tonic::Code::InvalidArgument,
            "cloudName AzureStackCloud is not valid, error: open /nonexistent/env.json: no such file or directory",
        ),
        (
            "{not json".into(),
            None,
            tonic::Code::InvalidArgument,
            "failed to mount objects, error: failed to unmarshal attributes, error:",
        ),
        (
            vm_mi(&objects(&[ok])),
            Some("[1]"),
            tonic::Code::InvalidArgument,
            "failed to unmarshal secrets, error:",
        ),
    ];
    for (attrs, secrets, code, want) in cases {
        let err = client
            .mount(mount_request(attrs, secrets, dir.path()))
            .await
            .expect_err(want);
        assert_eq!(err.code(), code, "{want}: {}", err.message());
        assert!(
            err.message().contains(want),
            "want {want:?}\n got {:?}",
            err.message()
        );
        assert!(!err.message().contains(SECRET_VALUE));
    }
    // permission field malformed
    let mut req = mount_request(vm_mi(&objects(&[ok])), None, dir.path());
    req.permission = "rw".into();
    let err = client.mount(req).await.unwrap_err();
    assert!(
        err.message()
            .contains("failed to unmarshal file permission, error:")
    );
    // empty array: success with no files
    let resp = client
        .mount(mount_request(vm_mi("array:"), None, dir.path()))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.files.is_empty() && resp.object_version.is_empty());
    // nothing was written to the target by the provider, ever
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "azure.sock")
            .count(),
        0
    );
}
