//! Shared helpers for the emulator's HTTP-level integration tests.
#![allow(dead_code, unreachable_pub)]

use keyvault_emulator::Emulator;
use std::sync::Arc;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const APP: &str = "11111111-1111-1111-1111-111111111111";
pub const APP_SECRET: &str = "app-secret-for-tests";

/// A seed with vault `wire` readable by APP.
pub fn seed(extra_vault_yaml: &str) -> String {
    format!(
        "tenant: {TENANT}\nvaults:\n  - name: wire\n    access: [{APP}]\n{extra_vault_yaml}\nidentities:\n  service_principals:\n    - {{ client_id: {APP}, client_secret: {APP_SECRET} }}\n"
    )
}

/// A reqwest client trusting the emulator CA, resolving `<vault>.<suffix>` to the emulator.
pub fn client(emu: &Emulator, vaults: &[&str]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let (_, der) = der::pem::decode_vec(emu.ca_pem().as_bytes()).expect("CA PEM");
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut b = reqwest::Client::builder().tls_backend_preconfigured(tls);
    for v in vaults {
        b = b.resolve(&emu.vault_host(v), emu.https_addr());
    }
    b.build().expect("client")
}

/// An access token for APP from the emulator's Entra endpoint.
pub async fn token(emu: &Emulator, http: &reqwest::Client) -> String {
    let scope = format!("{}/.default", emu.resource());
    let resp: serde_json::Value = http
        .post(format!("{}{TENANT}/oauth2/v2.0/token", emu.authority_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", APP_SECRET),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    resp["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// Checks `value` against a fixture shape (see tests/fixtures/README.md); returns mismatches.
pub fn shape_mismatches(
    shape: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
) -> Vec<String> {
    use serde_json::Value;
    let mut out = Vec::new();
    match shape {
        Value::Object(fields) => {
            let Some(obj) = value.as_object() else {
                return vec![format!("{path}: expected an object, got {value}")];
            };
            for (k, t) in fields {
                let (name, optional) = match k.strip_suffix('?') {
                    Some(n) => (n, true),
                    None => (k.as_str(), false),
                };
                match obj.get(name) {
                    Some(v) => out.extend(shape_mismatches(t, v, &format!("{path}.{name}"))),
                    None if optional => {}
                    None => out.push(format!("{path}.{name}: missing")),
                }
            }
            for k in obj.keys() {
                if !fields.contains_key(k) && !fields.contains_key(&format!("{k}?")) {
                    out.push(format!("{path}.{k}: not in the recorded response"));
                }
            }
        }
        Value::String(t) => {
            let ok = match t.as_str() {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => false,
            };
            if !ok {
                out.push(format!("{path}: expected {t}, got {value}"));
            }
        }
        _ => out.push(format!("{path}: bad fixture")),
    }
    out
}
