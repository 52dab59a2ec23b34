//! Shared helpers for the provider's integration tests: a gRPC client over the unix socket and the
//! attributes JSON exactly as the Secrets Store CSI driver builds it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod emu;

use std::collections::BTreeMap;
use std::path::Path;

use provider_proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use provider_proto::v1alpha1::{MountRequest, MountResponse};
use tonic::transport::Channel;

/// Connects to a provider socket the way the driver does (`:authority` = localhost).
pub async fn connect(path: &Path) -> CsiDriverProviderClient<Channel> {
    let ch = daemon::uds::channel(path)
        .await
        .expect("connect to provider socket");
    CsiDriverProviderClient::new(ch)
}

/// SecretProviderClass parameters plus the volume-context keys the driver lays over them.
pub fn driver_attributes(params: &[(&str, &str)]) -> String {
    let mut m: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    m.insert("csi.storage.k8s.io/pod.name".into(), "app-0".into());
    m.insert("csi.storage.k8s.io/pod.namespace".into(), "default".into());
    m.insert(
        "csi.storage.k8s.io/pod.uid".into(),
        "0b1c2d3e-0000-4000-8000-000000000001".into(),
    );
    m.insert(
        "csi.storage.k8s.io/serviceAccount.name".into(),
        "default".into(),
    );
    m.insert("csi.storage.k8s.io/ephemeral".into(), "false".into());
    m.insert("secretProviderClass".into(), "azure-spc".into());
    serde_json::to_string(&m).expect("json")
}

/// A `MountRequest` as the driver sends it: secrets `null` unless given, permission "420".
pub fn mount_request(attributes: String, secrets: Option<&str>, target: &Path) -> MountRequest {
    MountRequest {
        attributes,
        secrets: secrets.unwrap_or("null").to_owned(),
        target_path: target.display().to_string(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

/// `objects` in upstream's double-encoded `array:` form.
pub fn objects(items: &[&str]) -> String {
    let mut s = String::from("array:\n");
    for item in items {
        s.push_str("  - |\n");
        for line in item.lines() {
            s.push_str("    ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

/// Paths and contents of a response.
pub fn files(resp: &MountResponse) -> Vec<(String, i32, Vec<u8>)> {
    resp.files
        .iter()
        .map(|f| (f.path.clone(), f.mode, f.contents.clone()))
        .collect()
}
