//! Where SecretProviderClasses come from: the Kubernetes API (production) or a YAML file (the
//! demo and the CLI, when no API server is given).

use std::path::{Path, PathBuf};

use kube::Api;
use secrets_store_api::{v1, v1alpha1};
use serde::Deserialize;

use crate::error::PublishError;

/// Looks up a SecretProviderClass by namespace and name.
#[tonic::async_trait]
pub trait ClassSource: Send + Sync + 'static {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<v1::SecretProviderClass, PublishError>;
}

// === impl KubeClassSource ===

/// Reads `secretproviderclasses.v1.secrets-store.csi.x-k8s.io` with a direct GET (RBAC: `get`
/// only). Objects created through v1alpha1 are served as v1 by the apiserver (same schema).
#[derive(Clone)]
pub struct KubeClassSource {
    client: kube::Client,
}

impl KubeClassSource {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[tonic::async_trait]
impl ClassSource for KubeClassSource {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<v1::SecretProviderClass, PublishError> {
        // Read untyped first: upstream accepts a class without `spec` (every field is
        // optional) and then reports "provider not set", while the typed decode would fail.
        let resource = kube::api::ApiResource::erase::<v1::SecretProviderClass>(&());
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        match api.get(name).await {
            Ok(mut obj) => {
                if obj.data.get("spec").is_none_or(serde_json::Value::is_null) {
                    obj.data["spec"] = serde_json::json!({});
                }
                let value = serde_json::to_value(&obj)
                    .map_err(|e| PublishError::internal("re-encoding a SecretProviderClass", e))?;
                v1::SecretProviderClass::deserialize(value).map_err(|e| {
                    PublishError::ClassInvalid {
                        namespace: namespace.into(),
                        name: name.into(),
                        reason: "not a valid SecretProviderClass".into(),
                        source: Some(e),
                    }
                })
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Err(PublishError::ClassNotFound {
                namespace: namespace.into(),
                name: name.into(),
                hint: format!(
                    "not found: create the SecretProviderClass {name} in namespace {namespace}, or fix \
                     volumeAttributes.secretProviderClass in the pod"
                ),
            }),
            Err(e) => Err(PublishError::ClassUnreadable {
                namespace: namespace.into(),
                name: name.into(),
                source: Box::new(e),
            }),
        }
    }
}

// === impl FileClassSource ===

/// Why `--class-file` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClassFileError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML")]
    Yaml {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{path} document {document}: apiVersion {api_version:?} is not \
         secrets-store.csi.x-k8s.io/v1 or v1alpha1"
    )]
    ApiVersion {
        path: String,
        document: usize,
        api_version: String,
    },
    #[error("{path} document {document} is not a valid SecretProviderClass")]
    Document {
        path: String,
        document: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Classes read from a YAML file (one or more documents, `v1` or `v1alpha1`). A document
/// without `metadata.namespace` matches any namespace. The file is re-read on every lookup so
/// edits show up on the next mount or rotation.
#[derive(Clone, Debug)]
pub struct FileClassSource {
    path: PathBuf,
}

impl FileClassSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Vec<v1::SecretProviderClass>, ClassFileError> {
        let path = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|source| ClassFileError::Read {
            path: path.clone(),
            source,
        })?;
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| ClassFileError::Yaml {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let mut out = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            let api_version = doc
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
            if kind != "SecretProviderClass" {
                continue;
            }
            let mut doc = doc;
            if doc.get("spec").is_none_or(serde_json::Value::is_null) {
                doc["spec"] = serde_json::json!({});
            }
            let spc = match api_version.as_str() {
                "secrets-store.csi.x-k8s.io/v1" => v1::SecretProviderClass::deserialize(doc),
                "secrets-store.csi.x-k8s.io/v1alpha1" => {
                    v1alpha1::SecretProviderClass::deserialize(doc).map(Into::into)
                }
                other => {
                    return Err(ClassFileError::ApiVersion {
                        path,
                        document: i + 1,
                        api_version: other.to_string(),
                    });
                }
            }
            .map_err(|source| ClassFileError::Document {
                path: path.clone(),
                document: i + 1,
                source,
            })?;
            out.push(spc);
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl ClassSource for FileClassSource {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<v1::SecretProviderClass, PublishError> {
        let this = self.clone();
        let classes = tokio::task::spawn_blocking(move || this.load())
            .await
            .map_err(|e| PublishError::internal("reading the class file", e))?
            .map_err(|e| PublishError::ClassUnreadable {
                namespace: namespace.into(),
                name: name.into(),
                source: Box::new(e),
            })?;
        classes
            .into_iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(name)
                    && c.metadata
                        .namespace
                        .as_deref()
                        .is_none_or(|ns| ns == namespace)
            })
            .ok_or_else(|| PublishError::ClassNotFound {
                namespace: namespace.into(),
                name: name.into(),
                hint: format!("not found in {}", self.path.display()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_source_reads_v1_and_v1alpha1() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("classes.yaml");
        std::fs::write(
            &path,
            r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: a, namespace: prod}
spec: {provider: azure, parameters: {k: v}}
---
apiVersion: secrets-store.csi.x-k8s.io/v1alpha1
kind: SecretProviderClass
metadata: {name: b}
spec: {provider: fake, parameters: {k: w}}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: nospec}
"#,
        )?;
        let src = FileClassSource::new(&path);
        assert_eq!(src.get("prod", "a").await?.spec.provider, "azure");
        assert_eq!(src.get("any", "b").await?.spec.parameters["k"], "w");
        assert!(src.get("any", "nospec").await?.spec.provider.is_empty());
        let err = src
            .get("dev", "a")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("dev/a") && err.contains("not found"), "{err}");
        Ok(())
    }
}
