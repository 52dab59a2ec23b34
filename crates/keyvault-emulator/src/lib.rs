//! A local Azure Key Vault (data plane) with Entra ID, IMDS and aad-pod-identity NMI, which the
//! official Azure SDKs accept; with request counters and fault injection for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyvault_emulator::Error> {
//! use keyvault_emulator::{Emulator, EmulatorConfig};
//! let config = EmulatorConfig::default().seed_yaml(r#"
//! vaults:
//!   - name: demo
//!     access: ["*"]
//!     secrets: [{ name: greeting, value: hello }]
//! identities:
//!   service_principals: [{ client_id: 11111111-1111-1111-1111-111111111111, client_secret: s }]
//! "#)?;
//! let emu = Emulator::start(config).await?;
//! println!("vault: {}  authority: {}", emu.vault_url("demo"), emu.authority_url());
//! # Ok(()) }
//! ```
//!
//! Addressing: vaults are `https://<vault>.<dns-suffix>:<port>/` by Host header. Plain
//! `https://127.0.0.1:<port>/` reaches the vault named by [`EmulatorConfig::default_vault`], or the
//! only vault when there is exactly one (the single-vault fallback). Clients resolve
//! `<vault>.<dns-suffix>` through a resolve override, or a private `/etc/hosts` in a mount
//! namespace — never by editing the machine's `/etc/hosts`.
//!
//! The Key Vault challenge is `Bearer authorization="<authority>/<tenant>",
//! resource="https://<dns-suffix>[:<port>]"`: the port is part of the resource unless it
//! is 443, so the SDKs' challenge-resource verification (request host must end with
//! `.<resource authority>`) passes on any port.
//!
//! See the crate README for the seed format, the admin API and the command line.

mod admin;
pub mod certs;
mod entra;
mod error;
pub mod keys;
mod persist;
pub mod seed;
mod server;
mod store;
mod tls;

pub use admin::{AdminClient, CounterFilter, CounterRow, Fault};
pub use error::Error;
pub use seed::Seed;
pub use tls::CaSource;

/// The audience of the service-account tokens the token proxy exchanges.
pub const IDENTITY_BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";

use rand::RngCore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// Configuration of one emulator instance.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// HTTPS listener (Key Vault + Entra). Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// IMDS listener (plain HTTP). Default `127.0.0.1:0`.
    pub imds_listen: SocketAddr,
    /// aad-pod-identity NMI listener (plain HTTP). Default `127.0.0.1:0`.
    pub nmi_listen: SocketAddr,
    /// Admin API listener (plain HTTP). Default `127.0.0.1:0`.
    pub admin_listen: SocketAddr,
    /// Vault DNS suffix. Default `vault.test`.
    pub dns_suffix: String,
    /// The CA signing the serving certificate.
    pub ca: CaSource,
    /// Extra DNS names / IPs for the serving certificate.
    pub extra_tls_names: Vec<String>,
    /// Host the Entra endpoints are published under (discovery documents, token issuer, the Key
    /// Vault challenge's authority), e.g. `login.microsoftonline.com` when third-party clients
    /// reach the emulator under that name through a private hosts file, so MSAL's authority and
    /// issuer checks hold. Added to the serving certificate. Default: the listen address.
    pub authority_host: Option<String>,
    /// Objects, identities and access declared at start.
    pub seed: Option<Seed>,
    /// Where every write is persisted (fsync + atomic rename). `None`: memory only.
    pub state_file: Option<PathBuf>,
    /// Vault answered on plain `127.0.0.1` / `localhost` hosts.
    pub default_vault: Option<String>,
    /// Lifetime of issued access tokens. Default one hour.
    pub token_lifetime: Duration,
    /// Additional token audiences the data plane accepts (e.g. `https://vault.azure.net`).
    pub extra_audiences: Vec<String>,
    /// Fixed admin token (default: random per start).
    pub admin_token: Option<String>,
    /// Also act as the AKS token proxy of identity binding. `None` (default): no proxy.
    pub token_proxy: Option<TokenProxySettings>,
    /// Offer only `http/1.1` in the TLS handshake of the main listener, as a vault behind a
    /// gateway that does not speak HTTP/2 (default false: `h2` and `http/1.1`).
    pub http1_only: bool,
}

/// The AKS token proxy (identity binding, `useAzureTokenProxy`): a TLS listener answering only
/// clients that send its SNI name, serving the Entra ID token endpoint (and OpenID
/// configuration) under `path`. Only assertions for audience `api://AKSIdentityBinding` that
/// match a federated credential with that audience are exchanged here; the plain Entra endpoints
/// refuse such credentials (they stand for an identity binding, not a federated credential).
#[derive(Clone, Debug)]
pub struct TokenProxySettings {
    /// Listener. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The TLS server name the proxy answers to (its certificate names it alone).
    pub sni: String,
    /// The path prefix the proxy is published under (`/` or e.g. `/proxy`).
    pub path: String,
}

impl TokenProxySettings {
    /// A proxy on a free loopback port for `sni`, at path `/`.
    pub fn new(sni: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sni: sni.to_string(),
            path: "/".into(),
        }
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        EmulatorConfig {
            listen: lo,
            imds_listen: lo,
            nmi_listen: lo,
            admin_listen: lo,
            dns_suffix: "vault.test".into(),
            ca: CaSource::Generate,
            extra_tls_names: Vec::new(),
            authority_host: None,
            seed: None,
            state_file: None,
            default_vault: None,
            token_lifetime: Duration::from_secs(3600),
            extra_audiences: Vec::new(),
            admin_token: None,
            token_proxy: None,
            http1_only: false,
        }
    }
}

impl EmulatorConfig {
    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = Some(seed);
        self
    }
    pub fn seed_yaml(self, yaml: &str) -> Result<Self, Error> {
        Ok(self.seed(Seed::from_yaml(yaml)?))
    }
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    pub fn dns_suffix(mut self, suffix: &str) -> Self {
        self.dns_suffix = suffix.trim_matches('.').to_string();
        self
    }
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }
    pub fn ca(mut self, ca: CaSource) -> Self {
        self.ca = ca;
        self
    }
    pub fn default_vault(mut self, vault: &str) -> Self {
        self.default_vault = Some(vault.to_string());
        self
    }
    pub fn token_lifetime(mut self, d: Duration) -> Self {
        self.token_lifetime = d;
        self
    }
    pub fn extra_audience(mut self, aud: &str) -> Self {
        self.extra_audiences.push(aud.to_string());
        self
    }
    pub fn token_proxy(mut self, proxy: TokenProxySettings) -> Self {
        self.token_proxy = Some(proxy);
        self
    }
}

/// A running emulator; stops every listener and connection when dropped ([`Emulator::shutdown`]
/// drains them instead).
pub struct Emulator {
    https_addr: SocketAddr,
    imds_addr: SocketAddr,
    nmi_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The token proxy's address, SNI name and path.
    token_proxy: Option<(SocketAddr, String, String)>,
    dns_suffix: String,
    ca_pem: String,
    admin_token: Zeroizing<String>,
    shared: Arc<server::Shared>,
    /// Set to `true` by [`Emulator::shutdown`]: the listeners drain.
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("https_addr", &self.https_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `addr`; returns the listener and the address it got (the port, when `addr` asks for 0).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    let bound = |source| Error::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bound)?;
    let local = listener.local_addr().map_err(bound)?;
    Ok((listener, local))
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, Error> {
        let seed = config.seed.clone().unwrap_or_default();
        let (https, https_addr) = bind(config.listen).await?;
        let (imds, imds_addr) = bind(config.imds_listen).await?;
        let (nmi, nmi_addr) = bind(config.nmi_listen).await?;
        let (admin, admin_addr) = bind(config.admin_listen).await?;
        let proxy = match &config.token_proxy {
            Some(p) => {
                let (listener, addr) = bind(p.listen).await?;
                let path = format!("/{}", p.path.trim_matches('/'));
                Some((listener, addr, p.sni.clone(), path))
            }
            None => None,
        };

        // The token-signing RSA key: generated on the blocking pool, while the rest starts up.
        let signer = tokio::task::spawn_blocking(entra::Signer::generate);

        // The listen address is the authority host: the serving certificate must name it.
        let mut tls_names = config.extra_tls_names.clone();
        tls_names.extend(config.authority_host.iter().cloned());
        if !https_addr.ip().is_unspecified() {
            tls_names.push(https_addr.ip().to_string());
        }
        let tls = tls::build(
            &config.ca,
            &config.dns_suffix,
            &tls_names,
            config.http1_only,
        )?;
        let proxy_tls = match &proxy {
            Some((_, _, sni, _)) => Some(tls.token_proxy(sni)?),
            None => None,
        };

        // Store: the state file wins; the seed adds what the state file lacks.
        let mut store = match &config.state_file {
            Some(p) => store::Store::load(p)?.unwrap_or_default(),
            None => store::Store::default(),
        };
        let mut dirty = false;
        for vs in &seed.vaults {
            if store.vault(&vs.name).is_some() {
                continue;
            }
            store.vaults.insert(
                vs.name.to_ascii_lowercase(),
                vs.build(seed.default_tenant())?,
            );
            dirty = true;
        }
        let persister = config.state_file.clone().map(persist::Persister::new);
        if dirty && let Some(p) = &persister {
            p.snapshot(&mut store)?.write().await?;
        }

        let mut tenants: Vec<String> = vec![seed.default_tenant().to_string()];
        tenants.extend(store.vaults.values().map(|v| v.tenant.clone()));
        tenants.extend(
            seed.identities
                .service_principals
                .iter()
                .filter_map(|s| s.tenant.clone()),
        );
        tenants.extend(
            seed.identities
                .managed_identities
                .iter()
                .filter_map(|s| s.tenant.clone()),
        );
        tenants.sort();
        tenants.dedup();

        let port_suffix = if https_addr.port() == 443 {
            String::new()
        } else {
            format!(":{}", https_addr.port())
        };
        // Like Key Vault's `https://vault.azure.net` for suffix `vault.azure.net`: the resource is
        // the suffix itself, so `<vault>.<suffix>` ends with `.<resource host>`.
        let resource = format!("https://{}{port_suffix}", config.dns_suffix);
        let mut audiences = vec![
            resource.clone(),
            format!("{resource}/"),
            format!("https://{}", config.dns_suffix),
            format!("https://{}/", config.dns_suffix),
        ];
        audiences.extend(config.extra_audiences.iter().cloned());
        let ip = match https_addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let authority = match &config.authority_host {
            Some(host) => format!("https://{host}{port_suffix}"),
            None => format!("https://{ip}{port_suffix}"),
        };
        let admin_token = Zeroizing::new(config.admin_token.clone().unwrap_or_else(|| {
            let mut b = [0u8; 24];
            rand::rng().fill_bytes(&mut b);
            hex::encode(b)
        }));
        let signer = signer
            .await
            .map_err(|e| Error::Tls(e.to_string()))?
            .map_err(Error::Tls)?;
        let shared = Arc::new(server::Shared {
            store: RwLock::new(store),
            persister,
            dir: entra::Directory::from_seed(&seed),
            signer,
            telemetry: admin::Telemetry::default(),
            dns_suffix: config.dns_suffix.clone(),
            authority,
            resource,
            audiences,
            token_lifetime: config.token_lifetime,
            admin_token: admin_token.clone(),
            default_vault: config
                .default_vault
                .as_ref()
                .map(|v| v.to_ascii_lowercase()),
            tenants,
            token_proxy_path: proxy
                .as_ref()
                .map(|(_, _, _, path)| path.clone())
                .unwrap_or_default(),
            token_proxy_hosts: std::sync::Mutex::new(std::collections::VecDeque::new()),
            mi_tokens: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = [
            (https, server::Endpoint::Https(tls.config.clone())),
            (imds, server::Endpoint::Imds),
            (nmi, server::Endpoint::Nmi),
            (admin, server::Endpoint::Admin),
        ]
        .into_iter()
        .map(|(listener, endpoint)| {
            server::spawn(listener, endpoint, shared.clone(), stopped.clone())
        })
        .collect::<Vec<_>>();
        let mut tasks = tasks;
        let mut token_proxy = None;
        if let (Some((listener, addr, sni, path)), Some(tls)) = (proxy, proxy_tls) {
            tasks.push(server::spawn(
                listener,
                server::Endpoint::TokenProxy(tls),
                shared.clone(),
                stopped.clone(),
            ));
            tracing::info!(token_proxy = %addr, sni = %sni, path = %path, "token proxy listening");
            token_proxy = Some((addr, sni, path));
        }
        tracing::info!(https = %https_addr, imds = %imds_addr, nmi = %nmi_addr, admin = %admin_addr, "keyvault-emulator listening");
        Ok(Emulator {
            https_addr,
            imds_addr,
            nmi_addr,
            admin_addr,
            token_proxy,
            dns_suffix: config.dns_suffix,
            ca_pem: tls.ca_pem,
            admin_token,
            shared,
            stop,
            tasks,
        })
    }

    /// Stops accepting connections, lets the requests in flight finish (and their state-file
    /// writes), and returns when every connection is closed. Dropping the emulator instead
    /// cuts everything at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }

    /// Key Vault data plane and Entra ID.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }
    pub fn dns_suffix(&self) -> &str {
        &self.dns_suffix
    }
    /// `<vault>.<suffix>`.
    pub fn vault_host(&self, vault: &str) -> String {
        format!("{vault}.{}", self.dns_suffix)
    }
    /// `https://<vault>.<suffix>:<port>/`.
    pub fn vault_url(&self, vault: &str) -> String {
        format!(
            "https://{}:{}/",
            self.vault_host(vault),
            self.https_addr.port()
        )
    }
    /// The Entra authority host, `https://127.0.0.1:<port>/`.
    pub fn authority_url(&self) -> String {
        format!("{}/", self.shared.authority)
    }
    /// The cloud environment file (`cloudEnvFileName` with `cloudName: AzureStackCloud`) that
    /// points a provider at this emulator, as an Azure Stack Hub user's file points it at their
    /// cloud: Entra authority, Key Vault resource, and the vault DNS suffix (with the port unless
    /// it is 443).
    pub fn azure_stack_environment(&self) -> serde_json::Value {
        let port = self.https_addr.port();
        let suffix = if port == 443 {
            self.dns_suffix.clone()
        } else {
            format!("{}:{port}", self.dns_suffix)
        };
        serde_json::json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": self.authority_url(),
            "keyVaultEndpoint": self.resource(),
            "keyVaultDNSSuffix": suffix,
        })
    }
    /// The resource (token audience) of the vaults: `https://<suffix>[:<port>]` (Key Vault: `https://vault.azure.net`).
    pub fn resource(&self) -> &str {
        &self.shared.resource
    }
    /// `http://127.0.0.1:<port>` — the value for `AZURE_POD_IDENTITY_AUTHORITY_HOST` (IMDS).
    pub fn imds_url(&self) -> String {
        format!("http://{}", self.imds_addr)
    }
    /// `http://127.0.0.1:<port>` — where the NMI `/host/token/` endpoint is.
    pub fn nmi_url(&self) -> String {
        format!("http://{}", self.nmi_addr)
    }
    /// `http://127.0.0.1:<port>` — the admin API.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
    /// The token proxy's URL, `https://127.0.0.1:<port><path>` (`--token-proxy-url`).
    pub fn token_proxy_url(&self) -> Option<String> {
        self.token_proxy.as_ref().map(|(addr, _, path)| {
            let path = if path == "/" { "" } else { path.as_str() };
            format!("https://{addr}{path}")
        })
    }
    /// The authority (`Host` / `:authority`) of the token proxy's last requests (at most 64),
    /// oldest first: a client that rewrites a token request to the proxy keeps the Entra
    /// authority there, as Go's does.
    pub fn token_proxy_hosts(&self) -> Vec<String> {
        lock(&self.shared.token_proxy_hosts)
            .iter()
            .cloned()
            .collect()
    }
    /// The SNI name the token proxy answers to (`--sni-name`).
    pub fn token_proxy_sni(&self) -> Option<&str> {
        self.token_proxy.as_ref().map(|(_, sni, _)| sni.as_str())
    }
    /// The admin API bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }
    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    /// A typed admin client.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.admin_url(), &self.admin_token)
    }
}

/// Locks a mutex, recovering it if a panicking thread poisoned it: the workspace's one policy
/// (nothing panics while holding these locks, so the data is whole; refusing would turn one bug
/// into a dead emulator).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
