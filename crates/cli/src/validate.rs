//! `secrets-store validate FILE…`: lints SecretProviderClass YAML offline with the same parameter
//! parser the Azure provider runs on every mount. Every finding names the file, the document, the
//! class, the field and the fix.

use std::collections::{BTreeMap, BTreeSet};

use provider_azure::params::{MountParams, WORKLOAD_IDENTITY_AUDIENCE};
use serde::Serialize;
use serde_json::Value;

/// The API group of SecretProviderClass.
const GROUP: &str = "secrets-store.csi.x-k8s.io";
/// Secret types the driver can sync (as upstream documents them).
const SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/basic-auth",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/service-account-token",
    "kubernetes.io/tls",
];

/// One problem found in one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file, as given on the command line.
    pub file: String,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// `namespace/name` of the SecretProviderClass, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The field at fault, e.g. `spec.parameters.objects` or `spec.secretObjects[0].type`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(class) = &self.class {
            write!(f, " (SecretProviderClass {class})")?;
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

/// The result of validating one file.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// SecretProviderClass documents checked.
    pub classes: usize,
    /// Documents of other kinds, left alone.
    pub skipped: usize,
    /// Problems, in document order.
    pub findings: Vec<Finding>,
}

/// Validates the text of one file (`file` is only used in findings).
pub fn validate_text(file: &str, text: &str) -> Report {
    let mut report = Report::default();
    let documents = match serde_saphyr::from_multiple::<Value>(text) {
        Ok(docs) => docs,
        Err(e) => {
            report.findings.push(Finding {
                file: file.to_owned(),
                document: 1,
                class: None,
                field: "(yaml)".into(),
                message: format!("not valid YAML: {e}"),
            });
            return report;
        }
    };
    for (i, doc) in documents.iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let mut ctx = Ctx {
            file,
            document: i + 1,
            class: None,
            findings: &mut report.findings,
        };
        if is_class(doc) {
            report.classes += 1;
            check_class(&mut ctx, doc);
        } else if doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(GROUP))
            && doc["kind"]
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("secretproviderclass"))
        {
            ctx.push(
                "apiVersion",
                format!(
                    "unknown apiVersion {:?} for a SecretProviderClass: use \"{GROUP}/v1\"",
                    doc["apiVersion"].as_str().unwrap_or_default()
                ),
            );
        } else {
            report.skipped += 1;
        }
    }
    report
}

fn is_class(doc: &Value) -> bool {
    doc["kind"] == "SecretProviderClass"
        && matches!(doc["apiVersion"].as_str(), Some(v) if v == format!("{GROUP}/v1") || v == format!("{GROUP}/v1alpha1"))
}

struct Ctx<'a> {
    file: &'a str,
    document: usize,
    class: Option<String>,
    findings: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            file: self.file.to_owned(),
            document: self.document,
            class: self.class.clone(),
            field: field.to_owned(),
            message: message.into(),
        });
    }
}

fn check_class(ctx: &mut Ctx<'_>, doc: &Value) {
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    if name.is_empty() {
        ctx.push("metadata.name", "missing: every SecretProviderClass needs a name, which pods reference in volumeAttributes.secretProviderClass");
    } else {
        ctx.class = Some(format!("{namespace}/{name}"));
    }
    // The driver's change-notification annotation (issue 17): refused at mount when unknown.
    if let Some(v) = doc["metadata"]["annotations"][driver::notify::ON_CHANGE_ANNOTATION].as_str() {
        let annotations = BTreeMap::from([(
            driver::notify::ON_CHANGE_ANNOTATION.to_owned(),
            v.to_owned(),
        )]);
        if let Err(e) = driver::notify::OnChange::from_annotations(Some(&annotations)) {
            ctx.push(
                &format!(
                    "metadata.annotations[{}]",
                    driver::notify::ON_CHANGE_ANNOTATION
                ),
                e,
            );
        }
    }
    let spec = &doc["spec"];
    if !spec.is_object() {
        ctx.push("spec", "missing: add spec.provider and spec.parameters");
        return;
    }

    let provider = spec["provider"].as_str().unwrap_or_default();
    if provider.is_empty() {
        ctx.push(
            "spec.provider",
            "missing: set the provider that serves this class, e.g. \"azure\"",
        );
    } else if provider.len() > 30
        || !provider
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        ctx.push("spec.provider", format!(
            "{provider:?} is not a valid provider name: up to 30 letters, digits, '-' or '_' (it names the provider's socket)"
        ));
    }

    // parameters is map[string]string in the CRD: a YAML boolean or number is refused by the
    // API server, so catch it here with the quoting fix.
    let mut parameters = BTreeMap::new();
    match &spec["parameters"] {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        parameters.insert(k.clone(), s.clone());
                    }
                    other => ctx.push(
                        &format!("spec.parameters.{k}"),
                        format!(
                            "must be a string, found {}: quote it, e.g. {k}: \"{}\"",
                            kind_of(other),
                            plain(other)
                        ),
                    ),
                }
            }
        }
        other => ctx.push(
            "spec.parameters",
            format!("must be a map of strings, found {}", kind_of(other)),
        ),
    }

    let mut file_names = None;
    if provider == "azure" {
        file_names = check_azure(ctx, &parameters);
    }
    check_secret_objects(ctx, &spec["secretObjects"], file_names.as_ref());
}

/// Runs the provider's own parser with placeholder runtime values (pod, tokens, credentials)
/// that only exist at mount time, so that only the class itself is judged. Returns the file
/// names the class produces.
fn check_azure(
    ctx: &mut Ctx<'_>,
    parameters: &BTreeMap<String, String>,
) -> Option<BTreeSet<String>> {
    let mut attrs = parameters.clone();
    attrs.insert("csi.storage.k8s.io/pod.name".into(), "validate".into());
    attrs.insert("csi.storage.k8s.io/pod.namespace".into(), "validate".into());
    attrs.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        serde_json::json!({ WORKLOAD_IDENTITY_AUDIENCE: {"token": "placeholder", "expirationTimestamp": "2100-01-01T00:00:00Z"},
                            "api://AKSIdentityBinding": {"token": "placeholder", "expirationTimestamp": "2100-01-01T00:00:00Z"} })
            .to_string(),
    );
    // A cloud env file lives on the node, not here: judge everything else.
    if attrs
        .get("cloudName")
        .is_some_and(|c| c.eq_ignore_ascii_case("AzureStackCloud"))
    {
        attrs.remove("cloudEnvFileName");
        attrs.insert("cloudName".into(), "AzurePublicCloud".into());
    }
    let secrets: BTreeMap<String, String> = [
        ("clientid".to_owned(), "placeholder".to_owned()),
        ("clientsecret".to_owned(), "placeholder".to_owned()),
    ]
    .into_iter()
    .collect();
    match MountParams::from_maps(&attrs, Some(&secrets)) {
        // A selection's file names are known only once the vault is listed: then any name may
        // be a mounted file.
        Ok(params) if params.objects.iter().any(|o| o.selector.is_some()) => None,
        Ok(params) => Some(
            params
                .objects
                .iter()
                .flat_map(|o| o.known_paths())
                .map(str::to_owned)
                .chain(params.templates.iter().map(|t| t.path.clone()))
                .collect(),
        ),
        Err(e) => {
            ctx.push(&azure_field(&e.to_string()), e.to_string());
            None
        }
    }
}

/// The parameter an Azure provider error is about, for the finding's field.
fn azure_field(message: &str) -> String {
    const NAMES: &[&str] = &[
        "keyvaultName",
        "tenantId",
        "tenantID",
        "cloudName",
        "cloudEnvFileName",
        "usePodIdentity",
        "useVMManagedIdentity",
        "useAzureTokenProxy",
        "userAssignedIdentityID",
        "clientID",
    ];
    if message.starts_with("only one identity mode") {
        return "spec.parameters".into();
    }
    if message.starts_with("invalid templates") {
        return "spec.parameters.templates".into();
    }
    if message.contains("objectType:")
        || message.contains("objects")
        || message.contains("keyVaultObjects")
    {
        return "spec.parameters.objects".into();
    }
    NAMES
        .iter()
        .find(|n| message.contains(*n))
        .map(|n| format!("spec.parameters.{n}"))
        .unwrap_or_else(|| "spec.parameters".into())
}

fn check_secret_objects(ctx: &mut Ctx<'_>, value: &Value, files: Option<&BTreeSet<String>>) {
    let Some(list) = value.as_array() else {
        if !value.is_null() {
            ctx.push(
                "spec.secretObjects",
                format!("must be a list, found {}", kind_of(value)),
            );
        }
        return;
    };
    let mut names = BTreeSet::new();
    for (i, so) in list.iter().enumerate() {
        let at = |f: &str| format!("spec.secretObjects[{i}].{f}");
        let secret_name = so["secretName"].as_str().unwrap_or_default();
        if secret_name.is_empty() {
            ctx.push(
                &at("secretName"),
                "missing: name the Kubernetes Secret to create",
            );
        } else if !names.insert(secret_name.to_owned()) {
            ctx.push(
                &at("secretName"),
                format!("{secret_name:?} is synced twice: merge the two entries"),
            );
        }
        let ty = so["type"].as_str().unwrap_or_default();
        if ty.is_empty() {
            ctx.push(
                &at("type"),
                "missing: set a Secret type, e.g. Opaque or kubernetes.io/tls",
            );
        } else if !SECRET_TYPES.contains(&ty) {
            ctx.push(
                &at("type"),
                format!(
                    "unsupported Secret type {ty:?}: use one of {}",
                    SECRET_TYPES.join(", ")
                ),
            );
        }
        let Some(data) = so["data"].as_array().filter(|d| !d.is_empty()) else {
            ctx.push(
                &at("data"),
                "missing: list at least one {objectName, key} pair",
            );
            continue;
        };
        for (j, d) in data.iter().enumerate() {
            let at = |f: &str| format!("spec.secretObjects[{i}].data[{j}].{f}");
            let object = d["objectName"].as_str().unwrap_or_default().trim();
            let key = d["key"].as_str().unwrap_or_default().trim();
            if object.is_empty() {
                ctx.push(&at("objectName"), "missing: name a mounted object (its objectAlias, or objectName when it has no alias)");
            } else if let Some(files) = files.filter(|f| !f.contains(object)) {
                ctx.push(
                    &at("objectName"),
                    format!(
                        "{object:?} is not a file this class mounts: use one of {}",
                        files
                            .iter()
                            .map(|f| format!("{f:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if key.is_empty() {
                ctx.push(&at("key"), "missing: name the key in the Secret's data");
            } else if ty == "kubernetes.io/tls" && key != "tls.crt" && key != "tls.key" {
                ctx.push(
                    &at("key"),
                    format!(
                        "{key:?} is not valid in a kubernetes.io/tls Secret: use tls.crt or tls.key"
                    ),
                );
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
