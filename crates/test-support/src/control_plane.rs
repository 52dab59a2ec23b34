//! A real Kubernetes control plane on loopback: etcd + kube-apiserver built from the Go module
//! proxy by `scripts/peers.sh`. RBAC authorization, service-account token issuance and the
//! TokenRequest API are on; the service-account issuer's OIDC discovery document and JWKS are
//! readable without credentials (as on clusters set up for workload identity). There is no
//! controller-manager, scheduler or kubelet: tests create what those would (service accounts,
//! namespaces) themselves.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::{ChildGuard, Peer, free_port, peer};

/// The `kubernetes` Service's cluster IP: the first address of `--service-cluster-ip-range`.
pub const KUBERNETES_SERVICE_IP: [u8; 4] = [10, 96, 0, 1];

/// How long etcd and kube-apiserver get to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything that can go wrong while starting or using the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// A file in the control plane's temporary folder could not be written.
    #[error("control plane I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate or key generation failed.
    #[error("generating control plane certificates: {0}")]
    Certificates(String),
    /// A peer did not become ready in time.
    #[error("{what} did not become ready within {timeout:?}\n{log}")]
    NotReady {
        what: &'static str,
        timeout: Duration,
        log: String,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The admin kubeconfig could not be loaded.
    #[error("admin kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A response was not what the API promises.
    #[error("unexpected API response: {0}")]
    Unexpected(String),
}

/// A running etcd + kube-apiserver pair; both stop when this value is dropped.
pub struct ControlPlane {
    // Field order is drop order: the apiserver stops before etcd, the folder goes last.
    apiserver: ChildGuard,
    etcd: ChildGuard,
    client: Client,
    url: String,
    ca_pem: String,
    admin_token: String,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on free loopback ports and waits until the apiserver is
    /// ready. Returns `None` (outside CI) when the peers are not installed; under `CI=true` a
    /// missing peer panics with the install command.
    pub async fn start() -> Option<Result<Self, ControlPlaneError>> {
        let etcd = peer(Peer::Etcd)?;
        let apiserver = peer(Peer::KubeApiserver)?;
        Some(Self::start_with(&etcd, &apiserver).await)
    }

    /// Starts the control plane from the given binaries.
    pub async fn start_with(
        etcd_bin: &Path,
        apiserver_bin: &Path,
    ) -> Result<Self, ControlPlaneError> {
        let dir = tempfile::Builder::new()
            .prefix("control-plane-")
            .tempdir()?;
        let d = dir.path();

        // --- etcd ---
        let (etcd_client, etcd_peer) = (free_port(), free_port());
        let mut cmd = Command::new(etcd_bin);
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=test=http://127.0.0.1:{etcd_peer}"
            ))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        let mut etcd = ChildGuard::spawn("etcd", cmd, &d.join("etcd.log"))?;
        wait_tcp(&mut etcd, "etcd", etcd_client).await?;

        // --- certificates and keys ---
        let port = free_port();
        let pki = Pki::generate()?;
        std::fs::write(d.join("serving.crt"), &pki.serving_cert_pem)?;
        std::fs::write(d.join("serving.key"), &pki.serving_key_pem)?;
        std::fs::write(d.join("ca.crt"), &pki.ca_pem)?;
        std::fs::write(d.join("sa.key"), &pki.sa_key_pem)?;
        std::fs::write(d.join("sa.pub"), &pki.sa_pub_pem)?;
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            d.join("tokens.csv"),
            format!("{admin_token},admin,admin-uid,\"system:masters\"\n"),
        )?;

        // --- kube-apiserver ---
        let url = format!("https://127.0.0.1:{port}");
        let mut cmd = Command::new(apiserver_bin);
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .arg(format!(
                "--tls-cert-file={}",
                d.join("serving.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("serving.key").display()
            ))
            .arg(format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-issuer={url}"))
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--enable-priority-and-fairness=false")
            .arg("--profiling=false")
            .arg("--allow-privileged=true")
            .arg("--v=1");
        let mut apiserver =
            ChildGuard::spawn("kube-apiserver", cmd, &d.join("kube-apiserver.log"))?;

        let kubeconfig = d.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&url, &pki.ca_pem, &admin_token, "admin"),
        )?;
        let client = client_from_kubeconfig(&kubeconfig).await?;
        wait_ready(&mut apiserver, &client).await?;

        let plane = Self {
            apiserver,
            etcd,
            client,
            url,
            ca_pem: pki.ca_pem,
            admin_token,
            kubeconfig,
            dir,
        };
        plane.allow_anonymous_issuer_discovery().await?;
        Ok(plane)
    }

    /// An admin (`system:masters`) client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The service-account token issuer (the apiserver's URL); discovery is at
    /// `<issuer>/.well-known/openid-configuration`, keys at `<issuer>/openid/v1/jwks`.
    pub fn issuer(&self) -> &str {
        &self.url
    }

    /// PEM of the CA that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Path of [`Self::ca_pem`] on disk.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The admin bearer token (for raw HTTP clients in tests).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A private folder that lives as long as the control plane.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last bytes of the apiserver's log, for failure messages.
    pub fn apiserver_log_tail(&self) -> String {
        self.apiserver.log_tail(8000)
    }

    /// True while both processes run.
    pub fn is_running(&mut self) -> bool {
        self.etcd.is_running() && self.apiserver.is_running()
    }

    /// Applies every `CustomResourceDefinition` in a (multi-document) YAML string with
    /// server-side apply and waits until each is established.
    pub async fn apply_crd_yaml(&self, yaml: &str) -> Result<Vec<String>, ControlPlaneError> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for doc in serde_saphyr::from_multiple::<CustomResourceDefinition>(yaml)
            .map_err(|e| ControlPlaneError::Unexpected(format!("CRD YAML: {e}")))?
        {
            let name = doc.metadata.name.clone().ok_or_else(|| {
                ControlPlaneError::Unexpected("a CRD in the YAML has no metadata.name".into())
            })?;
            let pp = kube::api::PatchParams::apply("test-support").force();
            api.patch(&name, &pp, &kube::api::Patch::Apply(&doc))
                .await?;
            names.push(name);
        }
        for name in &names {
            let cond = kube::runtime::wait::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(api.clone(), name, cond),
            )
            .await
            .map_err(|_| {
                ControlPlaneError::Unexpected(format!("CRD {name} not established in 30s"))
            })?
            .map_err(|e| ControlPlaneError::Unexpected(format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(names)
    }

    /// Creates a namespace (no error when it exists).
    pub async fn create_namespace(&self, name: &str) -> Result<(), ControlPlaneError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a service account (and its namespace when missing).
    pub async fn create_service_account(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<(), ControlPlaneError> {
        self.create_namespace(ns).await?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Mints a service-account token through the TokenRequest API, as kubelet does for
    /// `csi.storage.k8s.io/serviceAccount.tokens`.
    pub async fn token_request(
        &self,
        ns: &str,
        service_account: &str,
        audience: &str,
        seconds: i64,
    ) -> Result<String, ControlPlaneError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                expiration_seconds: Some(seconds),
                bound_object_ref: None,
            },
            status: None,
        };
        let response: TokenRequest = api
            .create_subresource("token", service_account, &PostParams::default(), &request)
            .await?;
        response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ControlPlaneError::Unexpected("TokenRequest returned no token".into()))
    }

    /// A kubeconfig that authenticates as `system:serviceaccount:<ns>:<sa>` with a fresh
    /// TokenRequest token (one hour), for running a component under its own least-privilege
    /// identity. The file lives in the control plane's folder.
    pub async fn service_account_kubeconfig(
        &self,
        ns: &str,
        service_account: &str,
    ) -> Result<PathBuf, ControlPlaneError> {
        let token = self
            .token_request(ns, service_account, &self.url, 3600)
            .await?;
        let path = self
            .dir
            .path()
            .join(format!("{ns}-{service_account}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.url, &self.ca_pem, &token, service_account),
        )?;
        Ok(path)
    }

    /// A client authenticated as the given service account (see
    /// [`Self::service_account_kubeconfig`]).
    pub async fn service_account_client(
        &self,
        ns: &str,
        service_account: &str,
    ) -> Result<Client, ControlPlaneError> {
        let path = self.service_account_kubeconfig(ns, service_account).await?;
        client_from_kubeconfig(&path).await
    }

    /// Lets unauthenticated callers read the issuer discovery document and JWKS, as clusters
    /// that federate with Entra ID do: the emulator validates assertions without credentials.
    async fn allow_anonymous_issuer_discovery(&self) -> Result<(), ControlPlaneError> {
        let api: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("test-support:anonymous-issuer-discovery".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "system:service-account-issuer-discovery".into(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Group".into(),
                name: "system:unauthenticated".into(),
                namespace: None,
            }]),
        };
        match api.create(&PostParams::default(), &binding).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin token stays out of Debug output.
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .finish()
    }
}

// === helpers ===

struct Pki {
    ca_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    sa_key_pem: String,
    sa_pub_pem: String,
}

impl Pki {
    fn generate() -> Result<Self, ControlPlaneError> {
        let err = |e: rcgen::Error| ControlPlaneError::Certificates(e.to_string());
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "test-support control plane CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(err)?;
        let mut serving =
            CertificateParams::new(vec!["localhost".into(), "kubernetes".into()]).map_err(err)?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        // The `kubernetes` Service's cluster IP (first of --service-cluster-ip-range), for pods
        // that reach the apiserver through a relay standing in for kube-proxy.
        serving
            .subject_alt_names
            .push(SanType::IpAddress(KUBERNETES_SERVICE_IP.into()));
        for name in ["kubernetes.default", "kubernetes.default.svc"] {
            serving
                .subject_alt_names
                .push(SanType::DnsName(name.try_into().map_err(err)?));
        }
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = serving.signed_by(&key, &issuer).map_err(err)?;

        // Service-account tokens are RS256, as on AKS and most clusters.
        let mut rng = rsa::rand_core::OsRng;
        let sa = rsa::RsaPrivateKey::new(&mut rng, 2048)
            .map_err(|e| ControlPlaneError::Certificates(format!("RSA key: {e}")))?;
        let sa_key_pem = sa
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| ControlPlaneError::Certificates(format!("RSA key PEM: {e}")))?
            .to_string();
        let sa_pub_pem = sa
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| ControlPlaneError::Certificates(format!("RSA public key PEM: {e}")))?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            serving_cert_pem: cert.pem(),
            serving_key_pem: key.serialize_pem(),
            sa_key_pem,
            sa_pub_pem,
        })
    }
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, token: &str, user: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n\
         current-context: test\n"
    )
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client, ControlPlaneError> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn wait_tcp(
    child: &mut ChildGuard,
    what: &'static str,
    port: u16,
) -> Result<(), ControlPlaneError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if !child.is_running() {
            break;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ControlPlaneError::NotReady {
        what,
        timeout: START_TIMEOUT,
        log: child.log_tail(4000),
    })
}

async fn wait_ready(child: &mut ChildGuard, client: &Client) -> Result<(), ControlPlaneError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if !child.is_running() {
            break;
        }
        if get_text(client, "/readyz")
            .await
            .is_ok_and(|body| body.trim() == "ok")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ControlPlaneError::NotReady {
        what: "kube-apiserver",
        timeout: START_TIMEOUT,
        log: child.log_tail(6000),
    })
}

/// GETs a raw API path (such as `/version` or `/openid/v1/jwks`) with the given client.
pub async fn get_text(client: &Client, path: &str) -> Result<String, ControlPlaneError> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| ControlPlaneError::Unexpected(format!("request for {path}: {e}")))?;
    Ok(client.request_text(request).await?)
}
