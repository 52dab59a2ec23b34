//! The Secrets Store Sync Controller: serves `secret-sync.x-k8s.io/v1alpha1` `SecretSync` the way
//! kubernetes-sigs/secrets-store-sync-controller does, with the same provider gRPC API the CSI
//! driver uses, so one provider serves both mounts and syncs.
//!
//! One reconcile of a SecretSync `<ns>/<name>`:
//!
//! 1. refuse reserved labels/annotations (`secrets-store.sync.x-k8s.io`);
//! 2. read the SecretProviderClass `spec.secretProviderClassName` in `<ns>`;
//! 3. request a 10-minute token (TokenRequest) for `spec.serviceAccountName` per configured
//!    audience, laid out as kubelet's `csi.storage.k8s.io/serviceAccount.tokens`;
//! 4. call the provider's Mount over `<provider dir>/<provider>.sock` with the class
//!    parameters plus the pod keys a driver would send (the controller's own pod name/UID);
//! 5. map the returned files to Secret keys (`sourcePath` → `targetKey`; `kubernetes.io/tls`
//!    splits certificate chain and key as the driver does);
//! 6. skip the write when `status.syncHash` is unchanged and no failure is pending; else refuse
//!    a Secret that exists without an owner reference to this SecretSync, and write the Secret
//!    `<ns>/<name>` by server-side apply (field manager `secrets-store-sync-controller`) with an
//!    owner reference to the SecretSync, so deleting the SecretSync deletes the Secret (garbage
//!    collector), as upstream;
//! 7. report `SecretCreated` / `SecretUpdated` conditions, `syncHash`, `lastSuccessfulSyncTime`.
//!
//! Rotation: every SecretSync is synced again `rotation_interval` after its last sync (upstream:
//! `--rotation-poll-interval`, 12 h). Forced re-sync: changing `spec.forceSynchronization` (a
//! spec change, so a new generation) syncs at once. Status-only changes do not call the provider.

pub mod conditions;
pub mod error;
pub mod hash;
pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use secrets_store_api::secretsync::{CONTROLLER_LABEL, SecretSync, SecretSyncStatus};
use secrets_store_api::v1::SecretProviderClass;
use sensitive::{SecretBytes, SecretString};

use driver::provider::{MountCall, ProviderClient};
pub use error::SyncError;

/// The field manager of every Secret write: upstream's, so Secrets written by the upstream
/// controller are taken over without conflicts.
pub const FIELD_MANAGER: &str = "secrets-store-sync-controller";

/// The target path sent in Mount. Providers that return files (all current ones) do not write
/// there; the controller never creates it.
pub const TARGET_PATH: &str = "/mnt/secrets-store";

/// Token lifetime requested (upstream's, and what its admission policy requires).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;

/// Everything the controller needs besides the API client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folders searched for `<provider>.sock`, in order.
    pub provider_dirs: Vec<PathBuf>,
    /// Audiences of the service-account tokens given to the provider (may be empty).
    pub audiences: Vec<String>,
    /// Re-sync period for rotation; `None` turns rotation off (upstream `0s`).
    pub rotation_interval: Option<Duration>,
    /// Largest provider response accepted, bytes.
    pub max_recv_msg_size: usize,
    /// Deadline of one provider call.
    pub provider_timeout: Duration,
    /// The controller's pod name and UID, sent as `csi.storage.k8s.io/pod.name` / `pod.uid`.
    pub pod_name: String,
    pub pod_uid: String,
    /// First retry delay after a failure (doubles up to 5 minutes).
    pub retry_base: Duration,
    /// SecretSyncs reconciled at once (upstream: one at a time). Bounds the burst of provider
    /// calls and TokenRequests when many SecretSyncs are due together.
    pub concurrency: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            provider_dirs: vec![PathBuf::from("/provider")],
            audiences: Vec::new(),
            rotation_interval: Some(Duration::from_secs(12 * 3600)),
            max_recv_msg_size: 4 * 1024 * 1024,
            provider_timeout: Duration::from_secs(60),
            pod_name: String::new(),
            pod_uid: String::new(),
            retry_base: Duration::from_secs(5),
            concurrency: 4,
        }
    }
}

/// What the controller remembers of each SecretSync between reconciles.
#[derive(Debug, Clone)]
struct Last {
    generation: Option<i64>,
    at: Instant,
    ok: bool,
    failures: u32,
}

/// Shared state of the reconciler.
pub struct Context {
    client: Client,
    provider: Arc<dyn ProviderClient>,
    config: Config,
    last: Mutex<HashMap<String, Last>>,
    metrics: metrics::Metrics,
}

impl Context {
    pub fn new(client: Client, provider: Arc<dyn ProviderClient>, config: Config) -> Self {
        Self {
            client,
            provider,
            config,
            last: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::new(),
        }
    }

    /// The controller's Prometheus metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<String, Last>> {
        // Single inserts and reads: still valid after a panic elsewhere.
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<SecretSync> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// The retry delay after `failures` consecutive failures.
fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1u32 << failures.min(10).saturating_sub(1))
        .min(Duration::from_secs(300))
}

fn error_policy(ss: Arc<SecretSync>, _e: &SyncError, ctx: Arc<Context>) -> Action {
    let failures = ctx
        .last()
        .get(&ss.uid().unwrap_or_default())
        .map_or(1, |l| l.failures.max(1));
    Action::requeue(backoff(ctx.config.retry_base, failures))
}

async fn reconcile(ss: Arc<SecretSync>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let started = Instant::now();
    let result = reconcile_inner(&ss, &ctx).await;
    ctx.metrics
        .reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(ss: &SecretSync, ctx: &Context) -> Result<Action, SyncError> {
    // Being deleted (e.g. foreground deletion waiting for the garbage collector to remove the
    // Secret): writing the Secret again would race the collector.
    if ss.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = ss.uid().unwrap_or_default();
    let generation = ss.meta().generation;
    let interval = ctx.config.rotation_interval;
    // A watch event for the same generation (our own status write, a resync): nothing to do
    // until the rotation is due, or, after a failure, until the retry is due (a failure's status
    // write is itself an event, and a message that differs each time must not make a loop).
    if let Some(last) = ctx.last().get(&uid).cloned()
        && last.generation == generation
    {
        let due = if last.ok {
            match interval {
                Some(interval) => last.at + interval,
                None => return Ok(Action::await_change()),
            }
        } else {
            last.at + backoff(ctx.config.retry_base, last.failures)
        };
        let now = Instant::now();
        if now < due {
            return Ok(Action::requeue(due - now));
        }
    }
    let result = sync(ss, ctx).await;
    let mut last = ctx.last();
    // Forget SecretSyncs not seen for a long time (deleted ones are never reconciled again); a
    // live one forgotten costs one provider call and no write on its next event.
    let keep = interval.map_or(Duration::from_secs(24 * 3600), |i| i.saturating_mul(3));
    last.retain(|_, l| l.at.elapsed() < keep);
    let entry = last.entry(uid).or_insert(Last {
        generation,
        at: Instant::now(),
        ok: false,
        failures: 0,
    });
    entry.generation = generation;
    entry.at = Instant::now();
    match result {
        Ok(()) => {
            entry.ok = true;
            entry.failures = 0;
            Ok(interval.map_or_else(Action::await_change, Action::requeue))
        }
        Err(e) => {
            entry.ok = false;
            entry.failures = entry.failures.saturating_add(1);
            Err(e)
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One sync attempt, conditions included.
async fn sync(ss: &SecretSync, ctx: &Context) -> Result<(), SyncError> {
    let ns = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = ss.status.clone().unwrap_or_default();
    let condition_type = if status.sync_hash.is_empty() {
        conditions::TYPE_CREATE
    } else {
        conditions::TYPE_UPDATE
    };
    if status.conditions.len() < 2 {
        let t = now();
        conditions::set(
            &mut status.conditions,
            conditions::TYPE_CREATE,
            "Unknown",
            conditions::REASON_SYNC_STARTING,
            "",
            &t,
        );
        conditions::set(
            &mut status.conditions,
            conditions::TYPE_UPDATE,
            "Unknown",
            conditions::REASON_NO_UPDATE_YET,
            "",
            &t,
        );
    }
    match fetch_and_write(ss, ctx, &ns, &name, &status).await {
        Ok(None) => {
            // Unchanged: only conditions initialised above (first reconcile) need writing.
            if ss.status.as_ref().map(|s| s.conditions.len()) != Some(status.conditions.len()) {
                write_status(&api, &name, &status).await?;
            }
            tracing::debug!(namespace = %ns, secretsync = %name, "secret unchanged");
            Ok(())
        }
        Ok(Some(hash)) => {
            let t = now();
            if condition_type == conditions::TYPE_CREATE {
                conditions::set(
                    &mut status.conditions,
                    conditions::TYPE_CREATE,
                    "True",
                    conditions::REASON_CREATE_SUCCESSFUL,
                    conditions::MESSAGE_CREATE_SUCCESSFUL,
                    &t,
                );
            }
            conditions::set(
                &mut status.conditions,
                conditions::TYPE_UPDATE,
                "True",
                conditions::REASON_UP_TO_DATE,
                conditions::MESSAGE_UPDATE_SUCCESSFUL,
                &t,
            );
            status.sync_hash = hash;
            status.last_successful_sync_time = Some(t);
            write_status(&api, &name, &status).await?;
            tracing::info!(namespace = %ns, secretsync = %name, "secret synced");
            Ok(())
        }
        Err(e) => {
            let message = daemon::error::render(&e);
            tracing::warn!(namespace = %ns, secretsync = %name, reason = e.reason().unwrap_or(""), error = %message, "sync failed");
            if let Some(reason) = e.reason() {
                conditions::set(
                    &mut status.conditions,
                    condition_type,
                    "False",
                    reason,
                    &message,
                    &now(),
                );
                write_status(&api, &name, &status).await?;
            }
            Err(e)
        }
    }
}

async fn write_status(
    api: &Api<SecretSync>,
    name: &str,
    status: &SecretSyncStatus,
) -> Result<(), SyncError> {
    // A merge patch replaces `conditions` as a whole: the list is ours.
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| SyncError::Status(Box::new(e)))?;
    Ok(())
}

/// Fetches, and writes when the digest changed or a failure is pending. Returns the new digest
/// when the Secret was written.
async fn fetch_and_write(
    ss: &SecretSync,
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &SecretSyncStatus,
) -> Result<Option<String>, SyncError> {
    let spec = &ss.spec;
    let obj = &spec.secret_object;
    if obj
        .labels
        .get(CONTROLLER_LABEL)
        .is_some_and(|v| !v.is_empty())
    {
        return Err(SyncError::ReservedLabel(CONTROLLER_LABEL));
    }
    if obj.annotations.contains_key(CONTROLLER_LABEL) {
        return Err(SyncError::ReservedAnnotation(CONTROLLER_LABEL));
    }
    let classes: Api<SecretProviderClass> = Api::namespaced(ctx.client.clone(), ns);
    let class = classes
        .get(&spec.secret_provider_class_name)
        .await
        .map_err(|source| SyncError::Class {
            name: spec.secret_provider_class_name.clone(),
            source: Box::new(source),
        })?;
    if class.spec.provider.is_empty() {
        return Err(SyncError::NoProvider {
            name: spec.secret_provider_class_name.clone(),
        });
    }
    let attributes = attributes(ctx, &class, ns, &spec.service_account_name).await?;
    let out = ctx
        .provider
        .mount(MountCall {
            provider: class.spec.provider.clone(),
            attributes,
            secrets: SecretString::new("{}"),
            target_path: TARGET_PATH.into(),
            permission: "420".into(),
            current_object_versions: Vec::new(),
            timeout: ctx.config.provider_timeout,
        })
        .await
        .map_err(|e| SyncError::Provider(Box::new(e)))?;
    let files: BTreeMap<String, SecretBytes> = out
        .files
        .into_iter()
        .map(|f| (f.path, f.contents))
        .collect();
    let data = secret_data(&obj.type_, &obj.data, &files)?;
    let hash = hash::sync_hash(
        &data,
        hash::HashInputs {
            class_uid: class.metadata.uid.as_deref().unwrap_or_default(),
            class_generation: class.metadata.generation.unwrap_or_default(),
            sync_uid: ss.metadata.uid.as_deref().unwrap_or_default(),
            sync_generation: ss.metadata.generation.unwrap_or_default(),
            force_synchronization: &spec.force_synchronization,
        },
    );
    if hash == status.sync_hash && !conditions::has_failure(&status.conditions) {
        return Ok(None);
    }
    write_secret(ctx, ss, ns, name, data).await?;
    Ok(Some(hash))
}

/// The class parameters plus the keys the CSI driver would add for a pod, with this
/// controller's pod name and UID and the SecretSync's namespace and service account.
async fn attributes(
    ctx: &Context,
    class: &SecretProviderClass,
    ns: &str,
    service_account: &str,
) -> Result<SecretString, SyncError> {
    let mut attrs: BTreeMap<String, String> = class.spec.parameters.clone();
    attrs.insert(
        "csi.storage.k8s.io/pod.name".into(),
        ctx.config.pod_name.clone(),
    );
    attrs.insert(
        "csi.storage.k8s.io/pod.uid".into(),
        ctx.config.pod_uid.clone(),
    );
    attrs.insert("csi.storage.k8s.io/pod.namespace".into(), ns.to_string());
    attrs.insert(
        "csi.storage.k8s.io/serviceAccount.name".into(),
        service_account.to_string(),
    );
    if !ctx.config.audiences.is_empty() {
        let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
        let mut tokens = serde_json::Map::new();
        for audience in &ctx.config.audiences {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![audience.clone()],
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    bound_object_ref: None,
                },
                ..Default::default()
            };
            let got = sas
                .create_token_request(service_account, &PostParams::default(), &request)
                .await
                .map_err(|source| SyncError::Token {
                    namespace: ns.to_string(),
                    service_account: service_account.to_string(),
                    audience: audience.clone(),
                    source: Box::new(source),
                })?;
            let Some(status) = got.status else {
                return Err(SyncError::Token {
                    namespace: ns.to_string(),
                    service_account: service_account.to_string(),
                    audience: audience.clone(),
                    source: Box::new(kube::Error::Service(
                        "the TokenRequest response has no status".into(),
                    )),
                });
            };
            // kubelet's layout: audience -> {token, expirationTimestamp}.
            tokens.insert(
                audience.clone(),
                serde_json::json!({
                    "token": status.token,
                    "expirationTimestamp": status.expiration_timestamp,
                }),
            );
        }
        let tokens =
            SecretString::new(serde_json::to_string(&tokens).map_err(SyncError::Attributes)?);
        attrs.insert(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            tokens.expose().to_string(),
        );
    }
    let json = serde_json::to_string(&attrs).map_err(SyncError::Attributes)?;
    // The map holds the token: overwrite it before it is dropped.
    if let Some(t) = attrs.get_mut("csi.storage.k8s.io/serviceAccount.tokens") {
        zero_string(t);
    }
    Ok(SecretString::new(json))
}

fn zero_string(s: &mut String) {
    let len = s.len();
    s.clear();
    s.extend(std::iter::repeat_n('\0', len));
}

/// Secret data from the provider's files: `sourcePath` → `targetKey`; for `kubernetes.io/tls`,
/// `tls.crt` gets the certificate chain and `tls.key` the private key (PEM or PKCS#12 input).
pub fn secret_data(
    type_: &str,
    items: &[secrets_store_api::secretsync::SecretObjectData],
    files: &BTreeMap<String, SecretBytes>,
) -> Result<BTreeMap<String, SecretBytes>, SyncError> {
    let mut out = BTreeMap::new();
    for item in items {
        let (source, key) = (item.source_path.trim(), item.target_key.trim());
        if source.is_empty() {
            return Err(SyncError::Data(
                "source path in secretObject.data is empty".into(),
            ));
        }
        if key.is_empty() {
            return Err(SyncError::Data(
                "target key in secretObject.data is empty".into(),
            ));
        }
        let Some(content) = files.get(source) else {
            return Err(SyncError::Data(format!(
                "file matching sourcePath {source} not found in the provider's response \
                 (it returned: {}); use the object's file name or objectAlias",
                files.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let value = if type_ == "kubernetes.io/tls" {
            match key {
                "tls.crt" => driver::tls::certificate_chain(source, content),
                "tls.key" => driver::tls::private_key(source, content),
                other => {
                    return Err(SyncError::Data(format!(
                        "failed to get cert data for {other}: key '{other}' is not supported. \
                         Only 'tls.key' and 'tls.crt' are supported"
                    )));
                }
            }
            .map_err(|e| {
                SyncError::Data(format!(
                    "failed to get cert data for {key}: {}",
                    daemon::error::render(&e)
                ))
            })?
        } else {
            content.clone()
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Server-side apply of the Secret, unless a Secret of that name exists that this SecretSync
/// does not own.
async fn write_secret(
    ctx: &Context,
    ss: &SecretSync,
    ns: &str,
    name: &str,
    data: BTreeMap<String, SecretBytes>,
) -> Result<(), SyncError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let uid = ss.metadata.uid.clone().unwrap_or_default();
    if let Some(existing) =
        secrets
            .get_metadata_opt(name)
            .await
            .map_err(|source| SyncError::ReadSecret {
                name: name.to_string(),
                source: Box::new(source),
            })?
        && !existing.owner_references().iter().any(|o| o.uid == uid)
    {
        return Err(SyncError::NotOwned {
            name: name.to_string(),
        });
    }
    let obj = &ss.spec.secret_object;
    let mut labels = obj.labels.clone();
    labels.insert(CONTROLLER_LABEL.into(), String::new());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: (!obj.annotations.is_empty()).then(|| obj.annotations.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: SecretSync::api_version(&()).into_owned(),
                kind: SecretSync::kind(&()).into_owned(),
                name: name.to_string(),
                uid,
                ..Default::default()
            }]),
            ..Default::default()
        },
        type_: Some(if obj.type_.is_empty() {
            "Opaque".into()
        } else {
            obj.type_.clone()
        }),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|source| SyncError::Patch {
            name: name.to_string(),
            source: Box::new(source),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_store_api::secretsync::SecretObjectData;

    fn item(source: &str, key: &str) -> SecretObjectData {
        SecretObjectData {
            source_path: source.into(),
            target_key: key.into(),
        }
    }

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, SecretBytes> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn maps_source_paths_to_keys() -> Result<(), SyncError> {
        let out = secret_data(
            "Opaque",
            &[item("db", "password"), item("db", "copy")],
            &files(&[("db", "s3cret"), ("other", "x")]),
        )?;
        assert_eq!(out.len(), 2);
        assert_eq!(out["password"].expose(), b"s3cret");
        assert_eq!(out["copy"].expose(), b"s3cret");
        Ok(())
    }

    #[test]
    fn a_missing_source_names_it_and_what_the_provider_returned_without_values() {
        let e = secret_data("Opaque", &[item("nope", "k")], &files(&[("db", "s3cret")]))
            .expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("sourcePath nope") && msg.contains("returned: db"),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "{msg}");
        assert_eq!(e.reason(), Some(conditions::REASON_FETCH_FAILED));
    }

    #[test]
    fn tls_takes_only_tls_crt_and_tls_key() {
        let e = secret_data(
            "kubernetes.io/tls",
            &[item("c", "ca.crt")],
            &files(&[("c", "x")]),
        )
        .expect_err("other key");
        assert!(
            e.to_string().contains("Only 'tls.key' and 'tls.crt'"),
            "{e}"
        );
        let e = secret_data(
            "kubernetes.io/tls",
            &[item("c", "tls.crt")],
            &files(&[("c", "no pem")]),
        )
        .expect_err("not a certificate");
        assert!(
            e.to_string()
                .contains("failed to get cert data for tls.crt"),
            "{e}"
        );
        assert!(!e.to_string().contains("no pem"), "{e}");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 2), Duration::from_secs(10));
        assert_eq!(backoff(base, 4), Duration::from_secs(40));
        assert_eq!(backoff(base, 30), Duration::from_secs(300));
    }
}
