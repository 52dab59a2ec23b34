//! The two CustomResourceDefinitions, shaped like upstream's: v1 served and stored, v1alpha1
//! served and deprecated, no subresources, no required top-level fields.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

use crate::{v1, v1alpha1};

/// The file name (under `deploy/crds/`) and the CRD, for both resources.
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
}
