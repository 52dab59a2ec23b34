//! The two CustomResourceDefinitions, shaped like upstream's: v1 served and stored, v1alpha1
//! served and deprecated, no subresources, no required top-level fields.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

use crate::{secretsync, v1, v1alpha1};

/// The file name (under `deploy/crds/`) and the CRD, for every resource.
pub fn all() -> anyhow::Result<Vec<(&'static str, CustomResourceDefinition)>> {
    Ok(vec![
        (
            "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml",
            shape(merge_crds(
                vec![
                    v1::SecretProviderClass::crd(),
                    v1alpha1::SecretProviderClass::crd(),
                ],
                "v1",
            )?),
        ),
        (
            "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml",
            shape(merge_crds(
                vec![
                    v1::SecretProviderClassPodStatus::crd(),
                    v1alpha1::SecretProviderClassPodStatus::crd(),
                ],
                "v1",
            )?),
        ),
        (
            "secret-sync.x-k8s.io_secretsyncs.yaml",
            shape_secret_sync(secretsync::SecretSync::crd()),
        ),
    ])
}

/// Render one CRD as YAML (with the leading document marker kubectl output has).
pub fn to_yaml(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    Ok(format!("---\n{}", serde_saphyr::to_string(crd)?))
}

/// Upstream writes the pod status through the main resource (no status subresource), allows
/// objects without `spec`, and has no conversion webhook. kube-derive adds a status subresource
/// whenever the Rust type has a status and marks `spec` required, so both are taken out here.
fn shape(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        version.subresources = None;
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_required(schema);
        }
    }
    crd
}

/// The SecretSync CRD keeps its status subresource (upstream has one); the top-level
/// `required`, `title` and `nullable` status go, and, as in upstream's controller-gen output, the
/// list kind and the `apiVersion`, `kind` and `metadata` properties are spelled out.
fn shape_secret_sync(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_required(schema);
            let props = schema.properties.get_or_insert_with(Default::default);
            for (name, ty, description) in [
                (
                    "apiVersion",
                    "string",
                    "The versioned schema of this representation of an object.",
                ),
                (
                    "kind",
                    "string",
                    "The REST resource this object represents, in CamelCase.",
                ),
                ("metadata", "object", ""),
            ] {
                props.entry(name.to_string()).or_insert(JSONSchemaProps {
                    type_: Some(ty.to_string()),
                    description: (!description.is_empty()).then(|| description.to_string()),
                    ..Default::default()
                });
            }
        }
    }
    crd
}

/// Drops what upstream's schema does not have: the `required` list, the `title`, and the
/// `nullable` schemars adds to the optional `status`.
fn drop_required(schema: &mut JSONSchemaProps) {
    schema.required = None;
    schema.title = None;
    if let Some(status) = schema.properties.as_mut().and_then(|p| p.get_mut("status")) {
        status.nullable = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_crds_have_v1_storage_and_deprecated_v1alpha1() -> anyhow::Result<()> {
        for (_, crd) in all()? {
            if crd.spec.group == secretsync::GROUP {
                continue;
            }
            assert_eq!(crd.spec.group, crate::GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            let names: Vec<_> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.storage, v.served))
                .collect();
            assert!(names.contains(&("v1", true, true)), "{names:?}");
            assert!(names.contains(&("v1alpha1", false, true)), "{names:?}");
            for v in &crd.spec.versions {
                assert!(v.subresources.is_none(), "{} has subresources", v.name);
                if v.name == "v1alpha1" {
                    assert_eq!(v.deprecated, Some(true));
                    assert_eq!(
                        v.deprecation_warning.as_deref(),
                        Some(v1alpha1::DEPRECATION_WARNING)
                    );
                }
            }
        }
        Ok(())
    }

    /// Descriptions removed, the SecretSync CRD is upstream's
    /// (config/crd/bases/secret-sync.x-k8s.io_secretsyncs.yaml, controller-gen output, kept as
    /// JSON without descriptions in tests/fixtures).
    #[test]
    fn secret_sync_schema_is_upstreams() -> anyhow::Result<()> {
        // Descriptions go; numbers compare as numbers (`minimum` is a float in the Rust type).
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.remove("description");
                    m.values_mut().for_each(strip);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
                serde_json::Value::Number(n) => {
                    if let Some(f) = n.as_f64() {
                        *v = serde_json::json!(f);
                    }
                }
                _ => {}
            }
        }
        let (_, crd) = all()?
            .into_iter()
            .find(|(n, _)| n.starts_with("secret-sync"))
            .ok_or_else(|| anyhow::anyhow!("no SecretSync CRD"))?;
        let mut ours = serde_json::to_value(&crd)?;
        strip(&mut ours);
        let mut want: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/upstream-secretsyncs.json"))?;
        strip(&mut want);
        assert_eq!(
            serde_json::to_string_pretty(&ours)?,
            serde_json::to_string_pretty(&want)?
        );
        Ok(())
    }
}
