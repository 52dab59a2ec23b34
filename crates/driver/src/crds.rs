//! `secrets-store-csi-driver crds apply`: installs or upgrades the SecretProviderClass,
//! SecretProviderClassPodStatus and SecretSync CRDs built into this binary, by server-side apply.
//!
//! Helm creates the CRDs of a chart's `crds/` folder on first install and never changes them
//! afterwards, so the chart runs this as a pre-install/pre-upgrade hook Job (with the driver's own
//! image). Server-side apply with `force` takes over the fields Helm (or an older release) set, and
//! `versions` is an atomic list, so the served schema becomes exactly this binary's. The command
//! needs only `get` and `patch` on those CRDs by name.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// The field manager the CRDs are applied with.
pub const FIELD_MANAGER: &str = "secrets-store-csi-driver";

/// What can go wrong while applying the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The CRDs could not be built from the Rust types (a bug, caught by unit tests).
    #[error("building the CRDs: {0}")]
    Build(String),
    /// The API server refused the apply (for example for lack of RBAC).
    #[error("applying CRD {name}: {source}")]
    Apply {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading the CRD back failed.
    #[error("reading CRD {name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The CRD was applied but not reported Established in time.
    #[error("CRD {name} is not Established after {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
}

/// One applied CRD: its name and the generation the API server reports after the apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: String,
    pub generation: Option<i64>,
}

/// Applies every CRD and waits (up to `timeout` each) until the API server serves them.
pub async fn apply(client: &Client, timeout: Duration) -> Result<Vec<Applied>, CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let crds = secrets_store_api::crds::all().map_err(|e| CrdError::Build(e.to_string()))?;
    let mut applied = Vec::with_capacity(crds.len());
    for (_, crd) in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let result = api
            .patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| CrdError::Apply {
                name: name.clone(),
                source,
            })?;
        tracing::info!(crd = %name, generation = ?result.metadata.generation, "applied");
        applied.push(Applied {
            name,
            generation: result.metadata.generation,
        });
    }
    for crd in &applied {
        wait_established(&api, &crd.name, timeout).await?;
        tracing::info!(crd = %crd.name, "established");
    }
    Ok(applied)
}

/// `timeout` from now, or `None` (no deadline) when that is past the clock's range: `--timeout`
/// takes any Go duration, and `Instant + Duration` panics on overflow.
fn deadline_after(timeout: Duration) -> Option<tokio::time::Instant> {
    tokio::time::Instant::now().checked_add(timeout)
}

/// Polls the CRD with `get` (the only read the hook's RBAC grants) until it is Established.
async fn wait_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    timeout: Duration,
) -> Result<(), CrdError> {
    let deadline = deadline_after(timeout);
    loop {
        let crd = api.get(name).await.map_err(|source| CrdError::Get {
            name: name.to_owned(),
            source,
        })?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(CrdError::NotEstablished {
                name: name.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds apply --timeout=5124095576030431h` parses (it fits a `Duration`) but used to panic
    /// in `Instant::now() + timeout`; such a deadline is now "none".
    #[test]
    fn a_timeout_past_the_clock_means_no_deadline() {
        let huge = daemon::parse_go_duration("5124095576030431h").unwrap_or(Duration::MAX);
        assert!(deadline_after(huge).is_none());
        assert!(deadline_after(Duration::MAX).is_none());
        assert!(deadline_after(Duration::from_secs(60)).is_some());
    }
}
