//! One `Mount`: parameters → credential → Key Vault → files. With `--cache-ttl` above zero,
//! tokens come from a shared [`TokenCache`] and Key Vault answers from a principal-scoped,
//! coalescing [`CachingConnector`] (issue 7); with 0 every mount fetches everything, as upstream.
//! A mount carrying the driver's `secrets-store.csi.k8s.io/maxAge` gets "latest" answers no older
//! than that (rotation, issue 15); pinned versions stay cached.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_auth::{
    AssertionVerifier, AuthError, ClientAssertionCredential, ClientSecretCredential, Cloud,
    HttpOptions, IdentityBindingCredential, ManagedIdentityCredential, NodeEndpoints,
    PodIdentityCredential, PrincipalKey, TokenCache, TokenCacheStats, TokenCredential, TokenProxy,
    TokenProxyConfig,
};
use futures::{StreamExt, TryStreamExt};
use keyvault_client::{
    CacheOptions, CacheStats, CachingConnector, ClientOptions, Connector, DirectOptions,
    HttpConnector, KeyVault, ObjectKind,
};
use provider_proto::v1alpha1::{File, MountRequest, MountResponse, ObjectVersion};
use tracing::Instrument;

use crate::error::{MountError, ObjectError};
use crate::last_good;
use crate::metrics::Metrics;
use crate::params::{
    IdentityMode, MountParams, ObjectSpec, ObjectType, Selector, parse_permission,
};
use crate::render::{self, RenderOptions, Rendered, RenderedFile};

/// Provider-wide settings (from flags and the environment).
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// `--cloud-name`: used when the SecretProviderClass has no `cloudName`.
    pub default_cloud: String,
    /// `--construct-pem-chain`, `--write-cert-and-key-in-separate-files`.
    pub render: RenderOptions,
    /// IMDS / NMI locations.
    pub node: NodeEndpoints,
    /// TLS roots, resolve overrides, timeouts.
    pub http: HttpOptions,
    /// Key Vault call timeout and retries.
    pub keyvault: ClientOptions,
    /// Objects fetched concurrently within one mount (default 1, as upstream).
    pub fetch_concurrency: usize,
    /// `--max-selected-objects`: most objects one selection may match (default 100).
    pub max_selected_objects: usize,
    /// `--cache-ttl`: lifetime of cached "latest" answers and of a principal's acceptance by a
    /// vault; zero (the library default) turns token and object caching off.
    pub cache_ttl: Duration,
    /// `--workload-identity-issuers`: service-account token issuers whose tokens are verified
    /// locally (against the issuer's published keys) so that the pods of one service account
    /// share one Entra token while caching is on. Empty: one token per distinct assertion.
    pub workload_identity_issuers: Vec<String>,
    /// `--token-proxy-url`, `--sni-name` and the service-account CA: the AKS token proxy of
    /// identity binding (`useAzureTokenProxy`).
    pub token_proxy: TokenProxyConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            default_cloud: "AzurePublicCloud".into(),
            render: RenderOptions::default(),
            node: NodeEndpoints::default(),
            http: HttpOptions::default(),
            keyvault: ClientOptions::default(),
            fetch_concurrency: 1,
            max_selected_objects: 100,
            cache_ttl: Duration::ZERO,
            workload_identity_issuers: Vec::new(),
            token_proxy: TokenProxyConfig::default(),
        }
    }
}

/// The provider: shared HTTP client, Key Vault connector, metrics.
pub struct Provider {
    config: ProviderConfig,
    http: reqwest::Client,
    connector: Arc<dyn Connector>,
    /// Set when caching is on (`cache_ttl` > 0).
    cache: Option<Caches>,
    metrics: Arc<Metrics>,
    /// The AKS token proxy, shared by every identity-binding mount (SNI name computed once,
    /// CA file followed).
    token_proxy: Arc<TokenProxy>,
    /// Last-known-good answers (`maxStaleness`), in memory only.
    last_good: last_good::LastGood,
}

/// The process-wide caches.
struct Caches {
    tokens: Arc<TokenCache>,
    objects: CachingConnector,
    /// Set when `workload_identity_issuers` is not empty.
    assertions: Option<AssertionVerifier>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Provider construction failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// TLS roots or the HTTP client.
    #[error(transparent)]
    Http(#[from] entra_auth::HttpError),
    /// `--cloud-name` does not resolve.
    #[error("failed validating default cloud environment: {0}")]
    DefaultCloud(entra_auth::CloudError),
    /// `--token-proxy-url` or `--sni-name` is not usable.
    #[error("invalid identity-binding flag (--token-proxy-url, --sni-name): {0}")]
    TokenProxy(#[from] entra_auth::TokenProxyError),
}

/// One resolved file-producing fetch.
struct Job {
    spec: ObjectSpec,
    version: String,
    file_name: String,
    uid: String,
    /// Optional and known absent before any fetch (a selection that matched nothing, a
    /// version history of a missing object): no fetch, reported absent.
    empty_selection: bool,
}

impl Provider {
    /// Builds the provider with the real HTTP Key Vault connector.
    pub fn new(config: ProviderConfig, metrics: Arc<Metrics>) -> Result<Self, ProviderError> {
        let (http, tls) = entra_auth::build_client_and_tls(&config.http)?;
        let mut options = config.keyvault;
        // The scope is a cache too: with caching off, every mount probes, as upstream.
        options.share_challenge_scope &= !config.cache_ttl.is_zero();
        let connector = Arc::new(
            HttpConnector::new(http.clone(), options)
                .with_direct(DirectOptions::new(tls, &config.http))
                .with_observer(metrics.clone()),
        );
        Self::with_connector(config, http, connector, metrics)
    }

    /// Builds the provider over any connector (tests use fakes; a cache wraps the real one).
    pub fn with_connector(
        config: ProviderConfig,
        http: reqwest::Client,
        connector: Arc<dyn Connector>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ProviderError> {
        if !config.default_cloud.eq_ignore_ascii_case("AzureStackCloud") {
            Cloud::resolve(&config.default_cloud, None).map_err(ProviderError::DefaultCloud)?;
        }
        let cache = (!config.cache_ttl.is_zero()).then(|| Caches {
            tokens: Arc::new(TokenCache::default()),
            objects: CachingConnector::new(
                connector.clone(),
                CacheOptions::with_ttl(config.cache_ttl),
            ),
            assertions: (!config.workload_identity_issuers.is_empty()).then(|| {
                AssertionVerifier::new(http.clone(), config.workload_identity_issuers.clone())
            }),
        });
        let token_proxy = Arc::new(TokenProxy::new(
            config.token_proxy.clone(),
            config.http.clone(),
        )?);
        if let Some(c) = &cache {
            let (tokens, objects) = (c.tokens.clone(), c.objects.cache().clone());
            metrics.set_cache_source(Box::new(move || Some((tokens.stats(), objects.stats()))));
        }
        Ok(Self {
            config,
            http,
            connector,
            cache,
            metrics,
            token_proxy,
            last_good: last_good::LastGood::default(),
        })
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Token and object cache counters (`None` when caching is off).
    pub fn cache_stats(&self) -> Option<(TokenCacheStats, CacheStats)> {
        self.cache
            .as_ref()
            .map(|c| (c.tokens.stats(), c.objects.cache().stats()))
    }

    /// Handles one `Mount` (the gRPC layer adds only status mapping and logging).
    pub async fn mount(&self, req: MountRequest) -> Result<MountResponse, MountError> {
        self.mount_reporting(req).await.map(|(r, _)| r)
    }

    /// [`Self::mount`], and the age of the answer when it was served from last-known-good.
    pub async fn mount_reporting(
        &self,
        req: MountRequest,
    ) -> Result<(MountResponse, Option<Duration>), MountError> {
        let params = MountParams::parse(&req.attributes, &req.secrets)?;
        let default_mode = parse_permission(&req.permission)?;
        drop(req); // zeroes the attributes (tokens) and secrets now that they are parsed
        // One span per mount: every line below carries the pod, namespace, class and vault.
        let span = tracing::info_span!(
            "mount",
            pod = %params.pod_name,
            namespace = %params.pod_namespace,
            class = params.class_name.as_deref().unwrap_or(""),
            vault = %params.keyvault_name,
        );
        let started = Instant::now();
        let result = self
            .mount_params_reporting(&params, default_mode)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        let identity = params.identity.kind();
        match &result {
            Ok((resp, _)) => {
                self.metrics.mount("ok", identity);
                tracing::info!(
                    identity,
                    files = resp.files.len(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "mount succeeded"
                );
            }
            Err(e) => {
                self.metrics.mount(e.kind(), identity);
                tracing::warn!(
                    identity,
                    kind = e.kind(),
                    error = %daemon::error::Chain(e),
                    "failed to process mount request"
                );
            }
        }
        result
    }

    /// The mount after parsing (the CLI's one-shot mode calls this with parsed parameters).
    pub async fn mount_params(
        &self,
        params: &MountParams,
        default_mode: u32,
    ) -> Result<MountResponse, MountError> {
        self.mount_params_reporting(params, default_mode)
            .await
            .map(|(r, _)| r)
    }

    /// [`Self::mount_params`], and the age of the answer when served from last-known-good.
    async fn mount_params_reporting(
        &self,
        params: &MountParams,
        default_mode: u32,
    ) -> Result<(MountResponse, Option<Duration>), MountError> {
        if params.objects.is_empty() {
            return Ok((MountResponse::default(), None));
        }
        let cloud_name = if params.cloud_name.is_empty() {
            self.config.default_cloud.as_str()
        } else {
            params.cloud_name.as_str()
        };
        // `cloudEnvFileName` is read (capped, regular files only) on the blocking pool.
        let cloud = Cloud::resolve_async(cloud_name, params.cloud_env_file.as_deref())
            .await
            .map_err(|source| MountError::Cloud {
                name: cloud_name.to_owned(),
                source,
            })?;
        let url = cloud.vault_url(&params.keyvault_name);
        let vault_url =
            url::Url::parse(&url).map_err(|source| MountError::VaultUrl { url, source })?;
        // The cloud names the Key Vault resource: no unauthenticated challenge probe (issue 15).
        self.connector
            .configure_resource(&vault_url, cloud.key_vault_resource());
        let credential = self.credential(params, &cloud).await?;
        tracing::debug!(credential = ?credential.identity(), "mounting");
        let mut last_good_key = None;
        let kv = match &self.cache {
            Some(c) => {
                let principal = principal(params, credential.as_ref(), c).await;
                if params.max_staleness.is_some() {
                    last_good_key = Some(last_good::Key::new(
                        principal.clone(),
                        vault_url.as_str(),
                        format!("{:?}", params.objects),
                        default_mode,
                    ));
                }
                let credential = c.tokens.wrap(credential, principal.clone());
                c.objects
                    .connect_as(&vault_url, credential, principal, params.max_age)
            }
            None => self.connector.connect(&vault_url, credential),
        };
        let result = self.fetch_all(params, default_mode, kv).await;
        let (Some(key), Some(max_staleness)) = (last_good_key, params.max_staleness) else {
            return result.map(|r| (r, None));
        };
        match result {
            Ok(resp) => {
                self.last_good.keep(key, max_staleness, &resp);
                Ok((resp, None))
            }
            Err(e) if last_good::may_fall_back(&e) => match self.last_good.get(&key, max_staleness)
            {
                Some((resp, age)) => {
                    self.metrics.served_stale(age);
                    tracing::warn!(
                        age_secs = age.as_secs(),
                        kind = e.kind(),
                        error = %daemon::error::Chain(&e),
                        "Azure unreachable: serving this node's last good answer for the same identity and objects (maxStaleness)"
                    );
                    Ok((resp, Some(age)))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Phases 1 and 2 of a mount: list versions and selections, fetch and render every object,
    /// render the templates.
    async fn fetch_all(
        &self,
        params: &MountParams,
        default_mode: u32,
        kv: Arc<dyn KeyVault>,
    ) -> Result<MountResponse, MountError> {
        // Phase 1: resolve version-history objects into concrete versions and selections into
        // the objects they match (list calls).
        let expanded: Vec<Vec<Job>> = futures::stream::iter(params.objects.clone())
            .map(|spec| {
                let kv = kv.clone();
                async move { self.expand(kv.as_ref(), spec, params).await }
            })
            .buffered(self.config.fetch_concurrency.max(1))
            .try_collect()
            .await?;
        let jobs: Vec<Job> = expanded.into_iter().flatten().collect();

        // Phase 2: fetch and render, order preserved, first failure aborts (an optional object
        // that is missing or disabled is `None`).
        let rendered: Vec<(Job, Option<Rendered>)> = futures::stream::iter(jobs)
            .map(|job| {
                let kv = kv.clone();
                async move {
                    let r = self.fetch(kv.as_ref(), &job).await?;
                    Ok::<_, MountError>((job, r))
                }
            })
            .buffered(self.config.fetch_concurrency.max(1))
            .try_collect()
            .await?;

        let mut resp = MountResponse::default();
        let mut seen = HashSet::new();
        for (job, r) in rendered {
            let Some(r) = r else {
                // The driver learns of it through the reserved version (it warns on the pod).
                resp.object_version.push(ObjectVersion {
                    id: job.uid.clone(),
                    version: provider_proto::ABSENT_OBJECT_VERSION.to_owned(),
                });
                continue;
            };
            let mode = job.spec.file_permission.unwrap_or(default_mode);
            for f in r.files {
                if !seen.insert(f.path.clone()) {
                    return Err(MountError::DuplicatePath(f.path));
                }
                tracing::debug!(
                    object = %job.spec.name, version = %r.version, file = %f.path, "file ready"
                );
                resp.object_version.push(ObjectVersion {
                    id: job.uid.clone(),
                    version: r.version.clone(),
                });
                resp.files.push(File {
                    path: f.path,
                    mode: mode as i32,
                    contents: f.contents.to_vec(),
                });
            }
        }
        if !params.templates.is_empty() {
            let context = crate::template::files_context(
                resp.files
                    .iter()
                    .map(|f| (f.path.as_str(), f.contents.as_slice())),
            );
            let templates: Vec<(String, String)> = params
                .templates
                .iter()
                .map(|t| (t.path.clone(), t.template.clone()))
                .collect();
            let rendered = tokio::task::spawn_blocking(move || {
                crate::template::render_all(templates, context)
            })
            .await
            .map_err(|_| {
                MountError::Template(crate::template::TemplateError {
                    path: String::new(),
                    reason: "the template task failed".into(),
                })
            })??;
            for (path, contents) in rendered {
                if !seen.insert(path.clone()) {
                    return Err(MountError::DuplicatePath(path));
                }
                tracing::debug!(file = %path, "template rendered");
                resp.files.push(File {
                    path,
                    mode: default_mode as i32,
                    contents: contents.to_vec(),
                });
            }
        }
        Ok(resp)
    }

    async fn credential(
        &self,
        params: &MountParams,
        cloud: &Cloud,
    ) -> Result<Arc<dyn TokenCredential>, MountError> {
        let http = self.http.clone();
        let fail = |source: AuthError| MountError::Credential { source };
        Ok(match &params.identity {
            IdentityMode::ServicePrincipal {
                client_id,
                client_secret,
            } => Arc::new(
                ClientSecretCredential::new(
                    http,
                    cloud,
                    &params.tenant_id,
                    client_id,
                    client_secret.clone(),
                )
                .map_err(fail)?,
            ),
            IdentityMode::WorkloadIdentity {
                client_id,
                assertion,
            } => Arc::new(
                ClientAssertionCredential::new(
                    http,
                    cloud,
                    &params.tenant_id,
                    client_id,
                    assertion.clone(),
                )
                .map_err(fail)?,
            ),
            IdentityMode::VmManagedIdentity {
                user_assigned_identity_id,
            } => Arc::new(ManagedIdentityCredential::new(
                http,
                &self.config.node,
                user_assigned_identity_id.as_deref(),
            )),
            IdentityMode::IdentityBinding {
                client_id,
                assertion,
            } => {
                // As upstream, a proxy that cannot be used fails here, before any request:
                // `failed to get keyvault client: proxy transport not available: …`.
                self.token_proxy
                    .ready()
                    .await
                    .map_err(|e| fail(AuthError::TokenProxy(e)))?;
                Arc::new(
                    IdentityBindingCredential::new(
                        self.token_proxy.clone(),
                        cloud,
                        &params.tenant_id,
                        client_id,
                        assertion.clone(),
                    )
                    .map_err(fail)?,
                )
            }
            IdentityMode::PodIdentity => Arc::new(
                PodIdentityCredential::new(
                    http,
                    &self.config.node,
                    cloud,
                    &params.pod_namespace,
                    &params.pod_name,
                )
                .map_err(fail)?,
            ),
        })
    }
}

/// Who a mount's credential proves to be: its identity plus a digest of the secret material.
/// Who is asking, for the caches: the credential's identity plus a digest of its proof, or for a
/// workload identity whose token verifies against a configured issuer, its issuer, subject and
/// audiences (so the pods of one service account share).
async fn principal(
    params: &MountParams,
    credential: &dyn TokenCredential,
    caches: &Caches,
) -> PrincipalKey {
    let proof = match &params.identity {
        IdentityMode::ServicePrincipal { client_secret, .. } => Some(client_secret.expose()),
        IdentityMode::WorkloadIdentity { assertion, .. } => {
            if let Some(v) = &caches.assertions {
                match v.verify(assertion.expose()).await {
                    Ok(subject) => return PrincipalKey::verified(credential.identity(), &subject),
                    Err(e) => tracing::debug!(
                        pod = %params.pod_name, namespace = %params.pod_namespace,
                        reason = %e, "workload-identity token not shared"
                    ),
                }
            }
            Some(assertion.expose())
        }
        IdentityMode::IdentityBinding { assertion, .. } => Some(assertion.expose()),
        IdentityMode::VmManagedIdentity { .. } | IdentityMode::PodIdentity => None,
    };
    PrincipalKey::new(credential.identity(), proof)
}

impl Provider {
    fn object_error(spec: &ObjectSpec, source: impl Into<ObjectError>) -> MountError {
        MountError::Object {
            object_type: spec.object_type.as_str(),
            object_name: spec.name.clone(),
            object_version: spec.version.clone(),
            source: Box::new(source.into()),
        }
    }

    async fn expand(
        &self,
        kv: &dyn KeyVault,
        spec: ObjectSpec,
        params: &MountParams,
    ) -> Result<Vec<Job>, MountError> {
        if let Some(selector) = &spec.selector {
            return self.select(kv, &spec, selector, params).await;
        }
        if spec.version_history <= 1 {
            return Ok(vec![Job {
                version: spec.version.clone(),
                file_name: spec.file_name().to_owned(),
                uid: spec.uid(),
                spec,
                empty_selection: false,
            }]);
        }
        let spec = &spec;
        let kind = kind_of(spec.object_type);
        let t = Instant::now();
        let listed = kv.list_versions(kind, &spec.name).await;
        self.observe(
            "list",
            spec,
            listed.as_ref().err().map(|e| e.kind()),
            t.elapsed(),
        );
        if spec.optional && matches!(listed, Err(keyvault_client::KvError::NotFound { .. })) {
            tracing::info!(object_type = spec.object_type.as_str(), object = %spec.name, "optional object absent; its versions are left out");
            return Ok(vec![Job {
                spec: spec.clone(),
                version: String::new(),
                file_name: String::new(),
                uid: spec.uid(),
                empty_selection: true,
            }]);
        }
        let mut items: Vec<_> = listed
            .map_err(|e| Self::object_error(spec, e))?
            .into_iter()
            .filter(|i| i.has_attributes && i.enabled != Some(false))
            .collect();
        // Newest first; ties broken by version id so the order is deterministic.
        items.sort_by(|a, b| {
            b.created
                .unwrap_or(0)
                .cmp(&a.created.unwrap_or(0))
                .then_with(|| a.version().cmp(b.version()))
        });
        let start = if spec.version.is_empty() || spec.version == "latest" {
            0
        } else {
            items
                .iter()
                .position(|i| i.version() == spec.version)
                .ok_or_else(|| {
                    Self::object_error(spec, ObjectError::VersionNotListed(spec.version.clone()))
                })?
        };
        // Exactly N versions (upstream returns N+1 when more than N exist; see crate docs).
        Ok(items
            .iter()
            .skip(start)
            .take(spec.version_history as usize)
            .enumerate()
            .map(|(i, item)| Job {
                spec: spec.clone(),
                version: item.version().to_owned(),
                file_name: format!("{}/{i}", spec.file_name()),
                uid: format!("{}/{i}", spec.uid()),
                empty_selection: false,
            })
            .collect())
    }

    /// A selection → one job per enabled, valid object it matches, in name order, each a file
    /// named after the object (in the `objectAlias` folder when set).
    async fn select(
        &self,
        kv: &dyn KeyVault,
        spec: &ObjectSpec,
        selector: &Selector,
        params: &MountParams,
    ) -> Result<Vec<Job>, MountError> {
        let kind = kind_of(spec.object_type);
        let collection = kind.segment();
        let t = Instant::now();
        let listed = kv.list_objects(kind).await;
        self.observe(
            "list",
            spec,
            listed.as_ref().err().map(|e| e.kind()),
            t.elapsed(),
        );
        let listed = listed.map_err(|e| match e {
            e @ keyvault_client::KvError::Forbidden { .. } => Self::object_error(
                spec,
                ObjectError::ListForbidden {
                    class: format!(
                        "{}/{}",
                        params.pod_namespace,
                        params.class_name.as_deref().unwrap_or("<unnamed>")
                    ),
                    collection,
                    vault: params.keyvault_name.clone(),
                    selection: selector.describe(),
                    source: e,
                },
            ),
            e => Self::object_error(spec, e),
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut names: Vec<String> = listed
            .into_iter()
            .filter(|i| i.is_usable_at(now) && selector.matches(&i.name, &i.tags))
            .map(|i| i.name)
            .collect();
        names.sort();
        names.dedup();
        if names.len() > self.config.max_selected_objects {
            return Err(Self::object_error(
                spec,
                ObjectError::TooManyMatches {
                    selection: selector.describe(),
                    collection,
                    count: names.len(),
                    cap: self.config.max_selected_objects,
                },
            ));
        }
        if names.is_empty() {
            if !spec.optional {
                return Err(Self::object_error(
                    spec,
                    ObjectError::NoMatch {
                        selection: selector.describe(),
                        collection,
                        vault: params.keyvault_name.clone(),
                    },
                ));
            }
            tracing::info!(object_type = spec.object_type.as_str(), selection = %selector.describe(), "optional selection matched nothing");
            return Ok(vec![Job {
                spec: spec.clone(),
                version: String::new(),
                file_name: String::new(),
                uid: format!("{}/{}", spec.object_type.as_str(), selector.describe()),
                empty_selection: true,
            }]);
        }
        names
            .into_iter()
            .map(|name| {
                // Key Vault names are letters, digits and '-'; anything else is not a file name.
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(Self::object_error(
                        spec,
                        keyvault_client::KvError::BadResponse(format!(
                            "the listing names an object {name:?}, which is not a Key Vault object name"
                        )),
                    ));
                }
                let file_name = if spec.alias.is_empty() {
                    name.clone()
                } else {
                    format!("{}/{name}", spec.alias)
                };
                let one = ObjectSpec {
                    name,
                    alias: String::new(),
                    selector: None,
                    ..spec.clone()
                };
                Ok(Job {
                    version: String::new(),
                    file_name,
                    uid: one.uid(),
                    spec: one,
                    empty_selection: false,
                })
            })
            .collect()
    }

    fn observe(&self, op: &'static str, spec: &ObjectSpec, err: Option<&'static str>, d: Duration) {
        self.metrics
            .keyvault(op, spec.object_type.as_str(), err.unwrap_or("ok"), d);
    }

    async fn fetch(&self, kv: &dyn KeyVault, job: &Job) -> Result<Option<Rendered>, MountError> {
        let spec = &job.spec;
        if job.empty_selection {
            return Ok(None);
        }
        let t = Instant::now();
        let result: Result<Rendered, ObjectError> = async {
            Ok(match spec.object_type {
                ObjectType::Secret => {
                    let b = kv.get_secret(&spec.name, &job.version).await?;
                    let mut r =
                        render::render_secret(spec, &job.file_name, &b, self.config.render)?;
                    if !spec.jmes_path.is_empty() {
                        if b.kid.is_some() {
                            return Err(ObjectError::ExtractFromCertificate);
                        }
                        let value = b
                            .value
                            .as_ref()
                            .ok_or(render::RenderError::Missing("secret value is nil"))?;
                        for j in &spec.jmes_path {
                            r.files.push(RenderedFile {
                                path: j.alias.clone(),
                                contents: crate::extract::extract(value.expose(), &j.path)?,
                            });
                        }
                    }
                    r
                }
                ObjectType::Key => {
                    let b = kv.get_key(&spec.name, &job.version).await?;
                    render::render_key(&job.file_name, &b)?
                }
                ObjectType::Cert => {
                    let b = kv.get_certificate(&spec.name, &job.version).await?;
                    render::render_cert(&job.file_name, &b)?
                }
            })
        }
        .await;
        let kind = result.as_ref().err().map(|e| match e {
            ObjectError::KeyVault(k) => k.kind(),
            ObjectError::Render(_)
            | ObjectError::Extract(_)
            | ObjectError::ExtractFromCertificate => "bad_format",
            ObjectError::VersionNotListed(_) | ObjectError::NoMatch { .. } => "not_found",
            ObjectError::ListForbidden { .. } => "forbidden",
            ObjectError::TooManyMatches { .. } => "invalid_parameters",
        });
        self.observe("get", spec, kind, t.elapsed());
        match result {
            Ok(r) => Ok(Some(r)),
            // An optional object Key Vault does not have (or has disabled): no file this time;
            // a later mount (rotation) writes it once it is there.
            Err(ObjectError::KeyVault(e))
                if spec.optional
                    && (matches!(e, keyvault_client::KvError::NotFound { .. })
                        || e.is_disabled()) =>
            {
                tracing::info!(
                    object_type = spec.object_type.as_str(), object = %spec.name,
                    reason = if e.is_disabled() { "disabled" } else { "not found" },
                    "optional object absent; its file is left out"
                );
                Ok(None)
            }
            Err(e) => Err(Self::object_error(spec, e)),
        }
    }
}

fn kind_of(t: ObjectType) -> ObjectKind {
    match t {
        ObjectType::Secret => ObjectKind::Secret,
        ObjectType::Key => ObjectKind::Key,
        ObjectType::Cert => ObjectKind::Certificate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(env_file: &str) -> MountRequest {
        let attributes = serde_json::json!({
            "keyvaultName": "kv1",
            "tenantId": "t",
            "csi.storage.k8s.io/pod.name": "web",
            "csi.storage.k8s.io/pod.namespace": "default",
            "cloudName": "AzureStackCloud",
            "cloudEnvFileName": env_file,
            "objects": "array:\n  - |\n    objectName: s\n    objectType: secret\n",
        });
        MountRequest {
            attributes: attributes.to_string(),
            secrets: r#"{"clientid":"c","clientsecret":"x"}"#.into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }

    /// A class naming `/dev/zero` (or a directory, a FIFO, a huge file) as `cloudEnvFileName`
    /// used to make every mount read it whole, on the async threads, until the provider ran out
    /// of memory. It is now an invalid-parameter error naming the parameter and the path.
    #[tokio::test]
    async fn a_cloud_env_file_that_is_not_a_regular_file_is_refused() {
        let provider = Provider::new(
            ProviderConfig {
                http: HttpOptions {
                    system_roots: false,
                    ..HttpOptions::default()
                },
                ..ProviderConfig::default()
            },
            Metrics::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 1 << 20]).unwrap_or_else(|e| panic!("{e}"));
        for (path, says) in [
            (
                "/dev/zero".to_owned(),
                "is a character device, not a regular file",
            ),
            (
                dir.path().display().to_string(),
                "is a directory, not a regular file",
            ),
            (big.display().to_string(), "is larger than 65536 bytes"),
        ] {
            let e = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                provider.mount(request(&path)),
            )
            .await
            .unwrap_or_else(|_| panic!("{path}: the mount did not finish"))
            .err()
            .unwrap_or_else(|| panic!("{path}: mounted"));
            assert_eq!(e.kind(), "invalid_parameters");
            let status = e.to_status();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status
                    .message()
                    .contains(&format!("cloudEnvFileName {path} {says}")),
                "{}",
                status.message()
            );
        }
    }
}
