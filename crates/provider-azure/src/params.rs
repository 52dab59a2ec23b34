//! Typed mount parameters: the `attributes` JSON (SecretProviderClass `parameters` plus the
//! driver's volume context), the `secrets` JSON (`nodePublishSecretRef` data) and the request's
//! default `permission`. Parsed once at the edge; every error names the parameter or object and
//! the fix.
//!
//! Validation order and the upstream error strings are kept (tests and users match on them);
//! refusals we add on top (paths escaping the target, duplicate paths, unknown objectType,
//! invalid filePermission, identity binding) say what to change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sensitive::SecretString;
use serde::Deserialize;

/// The audience kubelet must mint the workload-identity token for.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The service-account token audience of AKS identity binding (`useAzureTokenProxy`).
pub const IDENTITY_BINDING_AUDIENCE: &str = entra_auth::IDENTITY_BINDING_AUDIENCE;
/// The driver attribute carrying service-account tokens.
pub const SA_TOKENS_ATTRIBUTE: &str = "csi.storage.k8s.io/serviceAccount.tokens";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// The driver attribute bounding how old cached "latest" answers may be (a Go duration; our
/// driver sets it on rotation to half its poll interval; upstream drivers never send it).
pub const MAX_AGE_ATTRIBUTE: &str = "secrets-store.csi.k8s.io/maxAge";

/// A parameter problem; the text is what the user sees (after `failed to mount objects, error: `).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    /// The request itself (attributes/secrets/permission JSON) is malformed.
    #[error("{0}")]
    Request(String),
    /// A SecretProviderClass parameter is missing or invalid.
    #[error("{0}")]
    Parameter(String),
    /// One entry of `objects` is invalid.
    #[error(
        "failed to get objectType:{object_type}, objectName:{object_name}, objectVersion:{object_version}: {cause}"
    )]
    Object {
        /// As written.
        object_type: String,
        /// As written.
        object_name: String,
        /// As written.
        object_version: String,
        /// What is wrong and how to fix it.
        cause: String,
    },
}

/// The identity a mount authenticates as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMode {
    /// Service principal with a client secret from `nodePublishSecretRef`.
    ServicePrincipal {
        /// `clientid` key.
        client_id: String,
        /// `clientsecret` key.
        client_secret: SecretString,
    },
    /// Workload identity (`clientID` set): the SA token for `api://AzureADTokenExchange`.
    WorkloadIdentity {
        /// `clientID`.
        client_id: String,
        /// The service-account token.
        assertion: SecretString,
    },
    /// `useVMManagedIdentity: "true"`.
    VmManagedIdentity {
        /// `userAssignedIdentityID` (client id); `None` = system-assigned.
        user_assigned_identity_id: Option<String>,
    },
    /// `usePodIdentity: "true"`.
    PodIdentity,
    /// `useAzureTokenProxy: "true"` (AKS identity binding): the SA token for
    /// `api://AKSIdentityBinding`, exchanged through the cluster's token proxy.
    IdentityBinding {
        /// `clientID` (the user-assigned managed identity).
        client_id: String,
        /// The service-account token.
        assertion: SecretString,
    },
}

impl IdentityMode {
    /// Upstream's mode name in `failed to build auth config for mode <…>`.
    pub fn upstream_name(&self) -> &'static str {
        match self {
            Self::ServicePrincipal { .. } | Self::WorkloadIdentity { .. } => "None",
            Self::VmManagedIdentity { .. } => "VMManagedIdentity",
            Self::PodIdentity => "PodIdentity",
            Self::IdentityBinding { .. } => "AzureTokenProxy",
        }
    }

    /// Bounded label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ServicePrincipal { .. } => "service_principal",
            Self::WorkloadIdentity { .. } => "workload_identity",
            Self::VmManagedIdentity { .. } => "vm_managed_identity",
            Self::PodIdentity => "pod_identity",
            Self::IdentityBinding { .. } => "identity_binding",
        }
    }
}

/// What to fetch from Key Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// `secret`
    Secret,
    /// `key`
    Key,
    /// `cert`
    Cert,
}

impl ObjectType {
    /// As written in `objectType` and in `ObjectVersion.id`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Key => "key",
            Self::Cert => "cert",
        }
    }
}

/// `objectFormat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    /// default
    Pem,
    /// base64 PFX as stored
    Pfx,
}

/// `objectEncoding` (secrets only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectEncoding {
    /// default: bytes as stored
    Utf8,
    /// the stored text is base64; the file gets the decoded bytes
    Base64,
    /// the stored text is hex; the file gets the decoded bytes
    Hex,
}

/// Which objects an entry of `objects` selects instead of naming one (issue 16): every object of
/// its type whose name starts with `prefix` (ASCII case-insensitive, as Key Vault names) and
/// whose tags include all of `tags`. Both empty = every object (`objectName: "*"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// `objectNamePrefix`.
    pub prefix: String,
    /// `objectTags`: all must be present with these values.
    pub tags: BTreeMap<String, String>,
}

impl Selector {
    /// Whether an object of this name and these tags is selected.
    pub fn matches(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        name.len() >= self.prefix.len()
            && name.as_bytes()[..self.prefix.len()].eq_ignore_ascii_case(self.prefix.as_bytes())
            && self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
    }

    /// How the selection reads in messages, e.g. `objectNamePrefix "app-"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.prefix.is_empty() {
            parts.push(format!("objectNamePrefix \"{}\"", self.prefix));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("objectTags {{{}}}", tags.join(", ")));
        }
        if parts.is_empty() {
            "objectName \"*\"".to_owned()
        } else {
            parts.join(" and ")
        }
    }
}

/// One `jmesPath` entry of a secret: a JMESPath expression over the secret's JSON value and the
/// file its result is written to (the AWS provider's names, issue 16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JmesPathSpec {
    /// `path`: the expression.
    pub path: String,
    /// `objectAlias`: the file.
    pub alias: String,
}

/// One entry of the `templates` class parameter: a file rendered from the mounted files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateSpec {
    /// `path`: the file, relative to the volume.
    pub path: String,
    /// `template`: the template text (minijinja).
    pub template: String,
}

/// One validated entry of `objects`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `objectName`.
    pub name: String,
    /// `objectAlias` (empty = none).
    pub alias: String,
    /// `objectType`.
    pub object_type: ObjectType,
    /// `objectVersion` (empty = latest).
    pub version: String,
    /// `objectVersionHistory` (≤ 1 = single version).
    pub version_history: u32,
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// `filePermission`, or `None` to use the request's default.
    pub file_permission: Option<u32>,
    /// `objectName: "*"`, `objectNamePrefix`, `objectTags`: many objects (`name` is then `*` or
    /// empty, and `alias`, when set, is the folder they go in).
    pub selector: Option<Selector>,
    /// `optional: "true"`: a missing or disabled object leaves its file out instead of failing.
    pub optional: bool,
    /// `jmesPath`: files extracted from the secret's JSON value.
    pub jmes_path: Vec<JmesPathSpec>,
}

impl ObjectSpec {
    /// The paths this entry is known to write before anything is fetched: its file (or folder)
    /// and its `jmesPath` files; a selection without `objectAlias` writes names known only
    /// after listing.
    pub fn known_paths(&self) -> Vec<&str> {
        if self.selector.is_some() {
            return if self.alias.is_empty() {
                Vec::new()
            } else {
                vec![self.alias.as_str()]
            };
        }
        let mut paths = vec![self.file_name()];
        paths.extend(self.jmes_path.iter().map(|j| j.alias.as_str()));
        paths
    }

    /// The file (or, with version history, directory) name: alias or name.
    pub fn file_name(&self) -> &str {
        if self.alias.is_empty() {
            &self.name
        } else {
            &self.alias
        }
    }

    /// `ObjectVersion.id`: `<type>/<name>` (the alias is not used, as upstream).
    pub fn uid(&self) -> String {
        format!("{}/{}", self.object_type.as_str(), self.name)
    }
}

/// Everything a mount needs, typed.
#[derive(Clone, Debug)]
pub struct MountParams {
    /// Pod name (driver attribute).
    pub pod_name: String,
    /// Pod namespace (driver attribute).
    pub pod_namespace: String,
    /// `keyvaultName`.
    pub keyvault_name: String,
    /// `tenantID` (or legacy `tenantId`).
    pub tenant_id: String,
    /// `cloudName` (empty = the provider's `--cloud-name`).
    pub cloud_name: String,
    /// `cloudEnvFileName`.
    pub cloud_env_file: Option<PathBuf>,
    /// Identity.
    pub identity: IdentityMode,
    /// Objects, in SecretProviderClass order.
    pub objects: Vec<ObjectSpec>,
    /// SecretProviderClass name, when the driver passes it (logs only).
    pub class_name: Option<String>,
    /// [`MAX_AGE_ATTRIBUTE`]: cached "latest" answers older than this are fetched again
    /// (`None`: the whole `--cache-ttl`).
    pub max_age: Option<Duration>,
    /// `templates`: files rendered from the fetched ones (issue 16).
    pub templates: Vec<TemplateSpec>,
    /// `maxStaleness` (not upstream): serve a new mount from this node's last good answer for
    /// the same identity and objects, at most this old, when Key Vault or Entra ID is
    /// unreachable (`crate::last_good`). `None`: never.
    pub max_staleness: Option<Duration>,
}

#[derive(Deserialize)]
struct SaToken {
    #[serde(default)]
    token: String,
}

fn parse_bool(attrs: &BTreeMap<String, String>, key: &str) -> Result<bool, ParamError> {
    let v = get(attrs, key);
    match v.as_str() {
        "" => Ok(false),
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(ParamError::Parameter(format!(
            "failed to parse {key} flag, error: strconv.ParseBool: parsing \"{other}\": invalid syntax"
        ))),
    }
}

fn get(attrs: &BTreeMap<String, String>, key: &str) -> String {
    attrs
        .get(key)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Parses the request's `permission` field (decimal JSON number, e.g. `"420"` = 0644).
pub fn parse_permission(permission: &str) -> Result<u32, ParamError> {
    let p = permission.trim();
    serde_json::from_str::<u32>(p)
        .map_err(|e| {
            ParamError::Request(format!("failed to unmarshal file permission, error: {e}"))
        })
        .and_then(|m| {
            if m > 0o7777 {
                Err(ParamError::Request(format!(
                    "failed to unmarshal file permission, error: {m} is not a file mode"
                )))
            } else {
                Ok(m)
            }
        })
}

impl MountParams {
    /// Parses and validates the driver's `attributes` and `secrets` JSON.
    pub fn parse(attributes_json: &str, secrets_json: &str) -> Result<Self, ParamError> {
        let attrs: BTreeMap<String, String> =
            serde_json::from_str(attributes_json).map_err(|e| {
                ParamError::Request(format!("failed to unmarshal attributes, error: {e}"))
            })?;
        let secrets: Option<BTreeMap<String, String>> = serde_json::from_str(secrets_json)
            .map_err(|e| {
                ParamError::Request(format!(
                    "failed to unmarshal secrets, error: {}",
                    json_error(&e)
                ))
            })?;
        Self::from_maps(&attrs, secrets.as_ref())
    }

    /// Same as [`MountParams::parse`] from already-decoded maps.
    pub fn from_maps(
        attrs: &BTreeMap<String, String>,
        secrets: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, ParamError> {
        let pod_name = get(attrs, POD_NAME);
        if pod_name.is_empty() {
            return Err(ParamError::Parameter("pod name is not provided".into()));
        }
        let pod_namespace = get(attrs, POD_NAMESPACE);
        if pod_namespace.is_empty() {
            return Err(ParamError::Parameter(
                "pod namespace is not provided".into(),
            ));
        }
        let use_pod_identity = parse_bool(attrs, "usePodIdentity")?;
        let use_vm_mi = parse_bool(attrs, "useVMManagedIdentity")?;
        let use_token_proxy = parse_bool(attrs, "useAzureTokenProxy")?;
        if [use_pod_identity, use_vm_mi, use_token_proxy]
            .iter()
            .filter(|b| **b)
            .count()
            > 1
        {
            return Err(ParamError::Parameter(
                "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy".into(),
            ));
        }
        let keyvault_name = get(attrs, "keyvaultName");
        if keyvault_name.is_empty() {
            return Err(ParamError::Parameter("keyvaultName is not provided".into()));
        }
        let mut tenant_id = get(attrs, "tenantID");
        if tenant_id.is_empty() {
            tenant_id = get(attrs, "tenantId");
        }
        if tenant_id.is_empty() {
            return Err(ParamError::Parameter("tenantId is not provided".into()));
        }
        let cloud_name = get(attrs, "cloudName");
        let env_file = get(attrs, "cloudEnvFileName");
        let cloud_env_file = (!env_file.is_empty()).then(|| PathBuf::from(env_file));

        let identity = if use_token_proxy {
            identity_binding(attrs).map_err(|e| {
                ParamError::Parameter(format!(
                    "failed to build auth config for mode AzureTokenProxy: {e}"
                ))
            })?
        } else if use_pod_identity {
            IdentityMode::PodIdentity
        } else if use_vm_mi {
            let id = get(attrs, "userAssignedIdentityID");
            IdentityMode::VmManagedIdentity {
                user_assigned_identity_id: (!id.is_empty()).then_some(id),
            }
        } else {
            let client_id = get(attrs, "clientID");
            if !client_id.is_empty() {
                let assertion = workload_identity_token(attrs).map_err(|e| {
                    ParamError::Parameter(format!(
                        "failed to build auth config for mode None: failed to parse workload identity tokens, error: {e}"
                    ))
                })?;
                IdentityMode::WorkloadIdentity {
                    client_id,
                    assertion,
                }
            } else {
                service_principal(secrets).map_err(|e| {
                    ParamError::Parameter(format!("failed to build auth config for mode None: {e}"))
                })?
            }
        };

        let objects_text = attrs
            .get("objects")
            .map(String::as_str)
            .unwrap_or("")
            .trim();
        if objects_text.is_empty() {
            return Err(ParamError::Parameter("objects is not set".into()));
        }
        let objects = parse_objects(objects_text)?;
        let templates = match attrs.get("templates").map(|t| t.trim()) {
            None | Some("") => Vec::new(),
            Some(text) => parse_templates(text, &objects)?,
        };
        check_vault_name(&keyvault_name)?;
        let class_name = attrs
            .get("secretProviderClass")
            .or_else(|| attrs.get("csi.storage.k8s.io/secretProviderClass"))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let max_age = match attrs.get(MAX_AGE_ATTRIBUTE).map(|s| s.trim()) {
            None | Some("") => None,
            Some(v) => Some(daemon::duration::parse_go_duration(v).map_err(|e| {
                ParamError::Parameter(format!("failed to parse {MAX_AGE_ATTRIBUTE}: {e}"))
            })?),
        };
        let max_staleness = match attrs.get("maxStaleness").map(|s| s.trim()) {
            None | Some("" | "0" | "0s") => None,
            Some(v) => Some(daemon::duration::parse_go_duration(v).map_err(|e| {
                ParamError::Parameter(format!(
                    "failed to parse maxStaleness {v:?}: {e}; use a Go duration such as 24h, or remove it"
                ))
            })?),
        };
        Ok(Self {
            pod_name,
            pod_namespace,
            keyvault_name,
            tenant_id,
            cloud_name,
            cloud_env_file,
            identity,
            objects,
            class_name,
            max_age,
            templates,
            max_staleness,
        })
    }
}

/// Identity binding's checks, in upstream's order and words: `clientID`, then the tokens
/// attribute, then the token for `api://AKSIdentityBinding` in it.
fn identity_binding(attrs: &BTreeMap<String, String>) -> Result<IdentityMode, String> {
    let client_id = get(attrs, "clientID");
    if client_id.is_empty() {
        return Err("clientID is required for identity binding".into());
    }
    if attrs
        .get(SA_TOKENS_ATTRIBUTE)
        .is_none_or(|t| t.trim().is_empty())
    {
        return Err("service account tokens are required for identity binding".into());
    }
    let assertion = token_for_audience(attrs, IDENTITY_BINDING_AUDIENCE).map_err(|e| {
        format!("failed to parse service account token for identity binding, error: {e}")
    })?;
    Ok(IdentityMode::IdentityBinding {
        client_id,
        assertion,
    })
}

fn workload_identity_token(attrs: &BTreeMap<String, String>) -> Result<SecretString, String> {
    token_for_audience(attrs, WORKLOAD_IDENTITY_AUDIENCE)
}

/// The token for `audience` in the driver's `serviceAccount.tokens` attribute.
fn token_for_audience(
    attrs: &BTreeMap<String, String>,
    audience: &str,
) -> Result<SecretString, String> {
    let raw = attrs
        .get(SA_TOKENS_ATTRIBUTE)
        .map(|s| s.trim())
        .unwrap_or("");
    if raw.is_empty() {
        return Err("service account tokens not found".into());
    }
    let tokens: BTreeMap<String, SaToken> = serde_json::from_str(raw).map_err(|e| {
        format!(
            "failed to unmarshal service account tokens, error: {}",
            json_error(&e)
        )
    })?;
    match tokens.get(audience) {
        Some(t) if !t.token.is_empty() => Ok(SecretString::new(t.token.clone())),
        _ => Err(format!("token for audience {audience} not found")),
    }
}

/// serde_json's message without the input's values: a type error quotes the value it found
/// (`invalid type: string "…"`), which in the secrets or the tokens is the secret itself.
fn json_error(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => format!(
            "not the expected JSON shape (an object of strings) at line {} column {}",
            e.line(),
            e.column()
        ),
        _ => e.to_string(),
    }
}

fn service_principal(secrets: Option<&BTreeMap<String, String>>) -> Result<IdentityMode, String> {
    let Some(secrets) = secrets else {
        return Err("failed to get credentials, nodePublishSecretRef secret is not set".into());
    };
    let find = |key: &str| {
        secrets
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_owned())
    };
    let client_id = find("clientid")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| "could not find clientid in secrets".to_owned())?;
    let client_secret = find("clientsecret")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| "could not find clientsecret in secrets".to_owned())?;
    Ok(IdentityMode::ServicePrincipal {
        client_id,
        client_secret: SecretString::new(client_secret),
    })
}

fn check_vault_name(name: &str) -> Result<(), ParamError> {
    let n = name.chars().count();
    if !(3..=24).contains(&n) {
        return Err(ParamError::Parameter(format!(
            "failed to get vault: Invalid vault name: \"{name}\", must be between 3 and 24 chars"
        )));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ParamError::Parameter(format!(
            "failed to get vault: Invalid vault name: \"{name}\", must match [-a-zA-Z0-9]{{3,24}}"
        )));
    }
    Ok(())
}

// === objects ===

/// One raw entry, all strings (yaml scalars keep their source text) except the history count.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawObject {
    object_name: String,
    object_alias: String,
    object_type: String,
    object_version: String,
    object_version_history: i64,
    object_format: String,
    object_encoding: String,
    file_permission: String,
    object_name_prefix: String,
    object_tags: BTreeMap<String, String>,
    optional: String,
    jmes_path: Vec<RawJmesPath>,
}

/// One `jmesPath` item as written.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
struct RawJmesPath {
    path: String,
    object_alias: String,
}

#[derive(Deserialize)]
struct ArrayForm<T> {
    array: Option<Vec<T>>,
}

fn first_line(e: impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").trim().to_owned()
}

/// Parses the `objects` parameter: upstream's `array:` of YAML strings; as an extension the array
/// items may be mappings, and a plain list (of strings or mappings) is accepted too.
fn parse_objects(text: &str) -> Result<Vec<ObjectSpec>, ParamError> {
    let raws: Vec<(usize, RawObject)> = if let Ok(a) =
        serde_saphyr::from_str::<ArrayForm<String>>(text)
    {
        let mut out = Vec::new();
        for (i, item) in a.array.unwrap_or_default().iter().enumerate() {
            let raw = serde_saphyr::from_str::<Option<RawObject>>(item).map_err(|e| {
                ParamError::Parameter(format!(
                    "unmarshal failed for keyVaultObjects at index {i}, error: {}",
                    first_line(e)
                ))
            })?;
            out.push((i, raw.unwrap_or_default()));
        }
        out
    } else if let Ok(a) = serde_saphyr::from_str::<ArrayForm<RawObject>>(text) {
        a.array
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .collect()
    } else if let Ok(l) = serde_saphyr::from_str::<Vec<RawObject>>(text) {
        l.into_iter().enumerate().collect()
    } else if let Ok(l) = serde_saphyr::from_str::<Vec<String>>(text) {
        let mut out = Vec::new();
        for (i, item) in l.iter().enumerate() {
            let raw = serde_saphyr::from_str::<Option<RawObject>>(item).map_err(|e| {
                ParamError::Parameter(format!(
                    "unmarshal failed for keyVaultObjects at index {i}, error: {}",
                    first_line(e)
                ))
            })?;
            out.push((i, raw.unwrap_or_default()));
        }
        out
    } else {
        let e = serde_saphyr::from_str::<ArrayForm<String>>(text)
            .err()
            .map(first_line)
            .unwrap_or_default();
        return Err(ParamError::Parameter(format!(
            "failed to yaml unmarshal objects, error: {e}. Write objects as `array:` followed by one `- |` block per object"
        )));
    };
    let mut specs = Vec::with_capacity(raws.len());
    for (_, raw) in raws {
        specs.push(validate_object(raw)?);
    }
    check_overlaps(&specs)?;
    Ok(specs)
}

fn validate_object(raw: RawObject) -> Result<ObjectSpec, ParamError> {
    let r = RawObject {
        object_name: raw.object_name.trim().to_owned(),
        object_alias: raw.object_alias.trim().to_owned(),
        object_type: raw.object_type.trim().to_owned(),
        object_version: raw.object_version.trim().to_owned(),
        object_version_history: raw.object_version_history,
        object_format: raw.object_format.trim().to_owned(),
        object_encoding: raw.object_encoding.trim().to_owned(),
        file_permission: raw.file_permission.trim().to_owned(),
        object_name_prefix: raw.object_name_prefix.trim().to_owned(),
        object_tags: raw
            .object_tags
            .iter()
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
        optional: raw.optional.trim().to_owned(),
        jmes_path: raw
            .jmes_path
            .iter()
            .map(|j| RawJmesPath {
                path: j.path.trim().to_owned(),
                object_alias: j.object_alias.trim().to_owned(),
            })
            .collect(),
    };
    let fail = |cause: String| ParamError::Object {
        object_type: r.object_type.clone(),
        object_name: r.object_name.clone(),
        object_version: r.object_version.clone(),
        cause,
    };
    let object_type = match r.object_type.as_str() {
        "secret" => ObjectType::Secret,
        "key" => ObjectType::Key,
        "cert" => ObjectType::Cert,
        _ => {
            return Err(fail(
                "Invalid vaultObjectTypes. Should be secret, key, or cert".into(),
            ));
        }
    };
    let format = match r.object_format.to_ascii_lowercase().as_str() {
        "" | "pem" => ObjectFormat::Pem,
        "pfx" => ObjectFormat::Pfx,
        _ => {
            return Err(fail(format!(
                "invalid objectFormat: {}, should be PEM or PFX",
                r.object_format
            )));
        }
    };
    if format == ObjectFormat::Pfx && object_type != ObjectType::Secret {
        return Err(fail(
            "PFX format only supported for objectType: secret".into(),
        ));
    }
    if !r.object_encoding.is_empty() && object_type != ObjectType::Secret {
        return Err(fail(
            "objectEncoding only supported for objectType: secret".into(),
        ));
    }
    let encoding = match r.object_encoding.to_ascii_lowercase().as_str() {
        "" | "utf-8" => ObjectEncoding::Utf8,
        "base64" => ObjectEncoding::Base64,
        "hex" => ObjectEncoding::Hex,
        _ => {
            return Err(fail(format!(
                "invalid objectEncoding: {}, should be hex, base64 or utf-8",
                r.object_encoding
            )));
        }
    };
    let optional = match r.optional.as_str() {
        "" => false,
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        other => {
            return Err(fail(format!(
                "invalid optional: \"{other}\", should be \"true\" or \"false\""
            )));
        }
    };
    let selector = selection(&r).map_err(fail)?;
    if selector.is_none() && r.object_name.is_empty() {
        return Err(fail(
            "objectName must not be empty: set objectName to the Key Vault object's name (or select many with objectName: \"*\", objectNamePrefix or objectTags)".into(),
        ));
    }
    if selector.is_some() {
        // The alias is the folder the selected objects go in.
        if !r.object_alias.is_empty() {
            check_file_name(&r.object_alias).map_err(fail)?;
        }
    } else {
        let file = if r.object_alias.is_empty() {
            &r.object_name
        } else {
            &r.object_alias
        };
        check_file_name(file).map_err(fail)?;
    }
    if r.object_version_history < 0 || r.object_version_history > 1000 {
        return Err(fail(format!(
            "invalid objectVersionHistory: {}, should be a number between 0 and 1000",
            r.object_version_history
        )));
    }
    let file_permission = if r.file_permission.is_empty() {
        None
    } else {
        Some(parse_octal_mode(&r.file_permission).map_err(fail)?)
    };
    let jmes_path =
        jmes_paths(&r, object_type, format, encoding, selector.is_some()).map_err(fail)?;
    Ok(ObjectSpec {
        name: r.object_name.clone(),
        alias: r.object_alias.clone(),
        object_type,
        version: r.object_version.clone(),
        version_history: r.object_version_history as u32,
        format,
        encoding,
        file_permission,
        selector,
        optional,
        jmes_path,
    })
}

/// `objectName: "*"`, `objectNamePrefix`, `objectTags` → the selection, or `None` for one named
/// object. A selection fetches each match at its latest version, into a file named after it.
fn selection(r: &RawObject) -> Result<Option<Selector>, String> {
    let star = r.object_name == "*";
    if !star && r.object_name_prefix.is_empty() && r.object_tags.is_empty() {
        return Ok(None);
    }
    if !star && !r.object_name.is_empty() {
        return Err(format!(
            "objectName \"{}\" names one object, but objectNamePrefix / objectTags select many: remove objectName (or write objectName: \"*\") to select, or remove objectNamePrefix and objectTags to fetch the one object",
            r.object_name
        ));
    }
    let what = "a selection (objectName \"*\", objectNamePrefix, objectTags) fetches the latest version of each object it matches";
    if !r.object_version.is_empty() {
        return Err(format!(
            "objectVersion cannot be used here: {what}; remove objectVersion"
        ));
    }
    if r.object_version_history > 1 {
        return Err(format!(
            "objectVersionHistory cannot be used here: {what}; remove objectVersionHistory"
        ));
    }
    if !r.object_name_prefix.is_empty()
        && !r
            .object_name_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "objectNamePrefix \"{}\" can never match: Key Vault object names hold only letters, digits and '-'",
            r.object_name_prefix
        ));
    }
    if r.object_tags.keys().any(String::is_empty) {
        return Err(
            "objectTags has an empty tag name: write objectTags as {name: value, ...}".into(),
        );
    }
    Ok(Some(Selector {
        prefix: r.object_name_prefix.clone(),
        tags: r.object_tags.clone(),
    }))
}

/// `jmesPath` items: secrets only, valid expressions, plain relative file names.
fn jmes_paths(
    r: &RawObject,
    object_type: ObjectType,
    format: ObjectFormat,
    encoding: ObjectEncoding,
    selection: bool,
) -> Result<Vec<JmesPathSpec>, String> {
    if r.jmes_path.is_empty() {
        return Ok(Vec::new());
    }
    if object_type != ObjectType::Secret {
        return Err(
            "jmesPath only supported for objectType: secret (its value must be JSON)".into(),
        );
    }
    if selection {
        return Err("jmesPath cannot be used with a selection (objectName \"*\", objectNamePrefix, objectTags): name the one secret whose JSON it reads".into());
    }
    if r.object_version_history > 1 {
        return Err("jmesPath cannot be used with objectVersionHistory: remove one of them".into());
    }
    if format != ObjectFormat::Pem || encoding != ObjectEncoding::Utf8 {
        return Err(
            "jmesPath reads the secret's JSON text: remove objectFormat and objectEncoding".into(),
        );
    }
    let mut out = Vec::with_capacity(r.jmes_path.len());
    for (i, j) in r.jmes_path.iter().enumerate() {
        if j.path.is_empty() {
            return Err(format!(
                "jmesPath[{i}].path is empty: write a JMESPath expression such as \"username\" or \"db.password\""
            ));
        }
        crate::extract::compile(&j.path).map_err(|e| {
            format!(
                "jmesPath[{i}].path \"{}\" is not a valid JMESPath expression: {e}",
                j.path
            )
        })?;
        if j.object_alias.is_empty() {
            return Err(format!(
                "jmesPath[{i}].objectAlias is empty: name the file the value of \"{}\" is written to",
                j.path
            ));
        }
        check_file_name(&j.object_alias).map_err(|e| format!("jmesPath[{i}].objectAlias: {e}"))?;
        out.push(JmesPathSpec {
            path: j.path.clone(),
            alias: j.object_alias.clone(),
        });
    }
    Ok(out)
}

/// Parses the `templates` class parameter: a YAML list of `{path, template}`; each path a plain
/// relative file name no object writes, each template valid.
fn parse_templates(text: &str, objects: &[ObjectSpec]) -> Result<Vec<TemplateSpec>, ParamError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawTemplate {
        #[serde(default)]
        path: String,
        #[serde(default)]
        template: String,
    }
    let fail = |m: String| ParamError::Parameter(format!("invalid templates: {m}"));
    let raws: Vec<RawTemplate> = serde_saphyr::from_str(text).map_err(|e| {
        fail(format!(
            "{}. Write templates as a YAML list of {{path, template}} items",
            first_line(e)
        ))
    })?;
    let mut out: Vec<TemplateSpec> = Vec::with_capacity(raws.len());
    for (i, t) in raws.into_iter().enumerate() {
        let path = t.path.trim().to_owned();
        if path.is_empty() {
            return Err(fail(format!(
                "item {i} has no path: name the file it renders, e.g. path: app.env"
            )));
        }
        check_file_name(&path).map_err(|e| fail(format!("path \"{path}\": {e}")))?;
        if t.template.is_empty() {
            return Err(fail(format!("\"{path}\" has an empty template")));
        }
        crate::template::check(&t.template).map_err(|e| fail(format!("\"{path}\": {e}")))?;
        let clash = |other: &str| {
            other == path
                || other
                    .strip_prefix(path.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                || path.strip_prefix(other).is_some_and(|r| r.starts_with('/'))
        };
        if let Some(o) = out.iter().find(|o| clash(&o.path)) {
            return Err(fail(format!(
                "path \"{path}\" collides with the template \"{}\": give each template its own path",
                o.path
            )));
        }
        if let Some(o) = objects
            .iter()
            .find(|o| o.known_paths().iter().any(|p| clash(p)))
        {
            return Err(fail(format!(
                "path \"{path}\" collides with a file of object \"{}\": give the template another path",
                o.name
            )));
        }
        out.push(TemplateSpec {
            path,
            template: t.template,
        });
    }
    Ok(out)
}

/// `filePermission`: octal digits, optional `0`/`0o` prefix, at most `0777`.
fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix("0o")
        .or_else(|| s.strip_prefix("0O"))
        .unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777);
    mode.ok_or_else(|| {
        format!("invalid filePermission: \"{s}\", should be an octal file mode such as \"0644\" or \"0400\"")
    })
}

/// Refuses names that would write outside the target or are ambiguous.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("file name must not be empty".into());
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("file name must be a relative path".into());
    }
    if name.contains("..") {
        return Err("file name must not contain '..'".into());
    }
    if name.contains('\0') {
        return Err("file name must not contain a NUL character".into());
    }
    for seg in name.split('/') {
        if seg.is_empty() || seg == "." {
            return Err(format!(
                "file name \"{name}\" has an empty or '.' path segment: write it as a plain relative path like \"dir/file\""
            ));
        }
    }
    Ok(())
}

/// Two objects must not write the same file, nor may one object's file be another's directory
/// (files named after selected objects are checked once they are listed).
fn check_overlaps(specs: &[ObjectSpec]) -> Result<(), ParamError> {
    let paths: Vec<(&ObjectSpec, &str)> = specs
        .iter()
        .flat_map(|s| s.known_paths().into_iter().map(move |p| (s, p)))
        .collect();
    for (i, (a, pa)) in paths.iter().enumerate() {
        for (b, pb) in &paths[..i] {
            let (pa, pb) = (*pa, *pb);
            let clash = pa == pb
                || pa.strip_prefix(pb).is_some_and(|r| r.starts_with('/'))
                || pb.strip_prefix(pa).is_some_and(|r| r.starts_with('/'));
            if clash {
                return Err(ParamError::Object {
                    object_type: a.object_type.as_str().into(),
                    object_name: a.name.clone(),
                    object_version: a.version.clone(),
                    cause: format!(
                        "file path \"{pa}\" collides with the path \"{pb}\" of object \"{}\": give one of them a distinct objectAlias",
                        b.name
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
