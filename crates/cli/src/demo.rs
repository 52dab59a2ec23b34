//! `secrets-store demo`: the whole system on one machine, no cluster and no Azure. It starts
//! keyvault-emulator (seeded with a secret, an RSA key and a certificate with a chain), the Azure
//! provider and the CSI driver on temporary sockets, then does what kubelet does for a pod:
//! NodePublishVolume with the SecretProviderClass in `examples/demo/`, a new secret version and a
//! republish (rotation), and NodeUnpublishVolume.
//!
//! Everything runs in this process; the provider and the driver talk over a real unix socket with
//! the real gRPC API, and the provider reaches the emulator over HTTPS the way an Azure Stack Hub
//! user reaches their cloud (a cloud environment file and a CA bundle).

use std::{
    collections::HashMap,
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use driver::{DirMounter, Mounter, TmpfsMounter};
use keyvault_emulator::{Emulator, EmulatorConfig};
use provider_azure::ProviderConfig;

use crate::local::{LocalNode, PodInfo, is_root, kubelet_request, read_tree};

/// The class the demo mounts (also shipped as `examples/demo/secretproviderclass.yaml`).
pub const CLASS_YAML: &str = include_str!("../../../examples/demo/secretproviderclass.yaml");
const TENANT: &str = "00000000-0000-0000-0000-00000000a11e";
const CLIENT_ID: &str = "d3m0d3m0-0000-4000-8000-000000000001";
const VAULT: &str = "demo";
const POD_UID: &str = "5f0c2b7e-demo-4c1d-9a57-000000000001";
const FIRST_PASSWORD: &str = "correct-horse-battery-staple";
const SECOND_PASSWORD: &str = "rotated-horse-battery-staple";

/// How the demo runs.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Print secret values instead of masking them.
    pub show_values: bool,
    /// Keep the working folder (sockets, files, CA) instead of deleting it.
    pub keep: bool,
}

/// What went wrong, with the step it happened in.
#[derive(Debug, thiserror::Error)]
#[error("demo step {step} failed: {message}")]
pub struct DemoError {
    step: &'static str,
    message: String,
}

fn fail(step: &'static str) -> impl Fn(&dyn std::fmt::Display) -> DemoError {
    move |e| DemoError {
        step,
        message: e.to_string(),
    }
}

/// Runs the demo, writing progress to `out`.
pub async fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<(), DemoError> {
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("secrets-store-demo-")
        .tempdir()
        .map_err(|e| fail("setup")(&e))?;
    let dir = work.path().to_path_buf();
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
    };

    say(out, "secrets-store demo: the Secrets Store CSI driver and the Azure Key Vault provider, end to end on this machine".into());
    say(out, format!("working folder: {}", dir.display()));

    // --- 1. keyvault-emulator ---
    let seed = seed_yaml().map_err(|e| fail("emulator seed")(&e))?;
    let emulator = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&seed)
            .map_err(|e| fail("emulator seed")(&e))?,
    )
    .await
    .map_err(|e| fail("start keyvault-emulator")(&e))?;
    let ca_file = dir.join("emulator-ca.pem");
    std::fs::write(&ca_file, emulator.ca_pem()).map_err(|e| fail("write CA")(&e))?;
    say(
        out,
        format!(
            "[1/6] keyvault-emulator       {} (Entra ID at {})",
            emulator.vault_url(VAULT),
            emulator.authority_url()
        ),
    );
    say(out, "      seeded: secret db-password, RSA key signing-key, certificate web-tls (stored as leaf, root, intermediate), service principal with access".into());

    // --- 2. the Azure provider ---
    let env_file = dir.join("demo-cloud.json");
    let env = emulator.azure_stack_environment();
    std::fs::write(&env_file, env.to_string()).map_err(|e| fail("write cloud env file")(&e))?;
    let providers = dir.join("providers");
    let mut provider_config = ProviderConfig::default();
    provider_config.http.ssl_cert_file = Some(ca_file.clone());
    provider_config.http.resolve = vec![(emulator.vault_host(VAULT), emulator.https_addr())];
    let class_file = dir.join("secretproviderclass.yaml");
    let class = CLASS_YAML.replace(
        "/etc/kubernetes/demo-cloud.json",
        &env_file.display().to_string(),
    );
    std::fs::write(&class_file, class).map_err(|e| fail("write class")(&e))?;
    let root = is_root();
    let mounter: Arc<dyn Mounter> = if root {
        Arc::new(TmpfsMounter)
    } else {
        Arc::new(DirMounter::default())
    };
    let local = LocalNode::start(
        &providers,
        Some(provider_config),
        &class_file,
        mounter,
        true,
    )
    .await
    .map_err(|e| fail("start the provider and the driver")(&e))?;
    let node = local.node().clone();
    let socket = local.socket().to_path_buf();
    say(
        out,
        format!(
            "[2/6] Azure provider          serving v1alpha1.CSIDriverProvider on {}",
            socket.display()
        ),
    );
    say(
        out,
        format!(
            "      cloud: AzureStackCloud from {} + CA bundle {}",
            env_file.display(),
            ca_file.display()
        ),
    );

    // --- 3. the driver ---
    say(out, "[3/6] CSI driver              class default/demo from examples/demo/secretproviderclass.yaml (no API server)".into());
    if root {
        say(
            out,
            "      running as root: the volume is a tmpfs mount, as on a node".into(),
        );
    } else {
        say(out, "      not running as root: the volume is a plain directory (on disk, not tmpfs); run as root for tmpfs".into());
    }

    // --- 4. NodePublishVolume ---
    let target = dir.join(format!(
        "pods/{POD_UID}/volumes/kubernetes.io~csi/secrets/mount"
    ));
    let pod = PodInfo {
        class: "demo".into(),
        name: "demo-app".into(),
        namespace: "default".into(),
        uid: POD_UID.into(),
        service_account: "default".into(),
        tokens: None,
    };
    // The pod's volume names a nodePublishSecretRef holding the service principal.
    let secrets: HashMap<String, String> = [
        ("clientid", CLIENT_ID),
        ("clientsecret", "demo-client-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let request = kubelet_request(&target, &pod, secrets);
    let t = Instant::now();
    node.publish(request.clone(), Duration::from_secs(60))
        .await
        .map_err(|e| fail("NodePublishVolume")(&e.render()))?;
    say(
        out,
        format!(
            "[4/6] NodePublishVolume       pod default/demo-app → {} ({} ms)",
            target.display(),
            t.elapsed().as_millis()
        ),
    );
    let before = read_tree(&target).map_err(|e| fail("read volume")(&e))?;
    for (path, bytes, mode) in &before {
        say(
            out,
            format!(
                "      {path:<26} {:o}  {}",
                mode & 0o777,
                describe(path, bytes, options.show_values)
            ),
        );
    }

    // --- 5. rotation ---
    let version = emulator
        .admin()
        .set_secret(VAULT, "db-password", SECOND_PASSWORD)
        .await
        .map_err(|e| fail("new secret version")(&e))?;
    say(
        out,
        format!(
            "[5/6] Rotation                new version {version} of db-password in the vault; kubelet republishes"
        ),
    );
    node.publish(request, Duration::from_secs(60))
        .await
        .map_err(|e| fail("republish")(&e.render()))?;
    let after = read_tree(&target).map_err(|e| fail("read volume")(&e))?;
    let mut changed = 0;
    for ((path, old, _), (_, new, _)) in before.iter().zip(after.iter()) {
        if old != new {
            changed += 1;
            say(
                out,
                format!(
                    "      changed: {path:<17} {} → {}",
                    describe(path, old, options.show_values),
                    describe(path, new, options.show_values)
                ),
            );
        }
    }
    say(
        out,
        format!(
            "      {changed} file(s) changed, {} unchanged (rewritten atomically through the ..data symlink)",
            after.len() - changed
        ),
    );

    // --- 6. cleanup ---
    node.unpublish(&format!("csi-{POD_UID}"), &target.display().to_string())
        .await
        .map_err(|e| fail("NodeUnpublishVolume")(&e.render()))?;
    local.stop().await;
    drop(emulator);
    say(
        out,
        format!(
            "[6/6] NodeUnpublishVolume     volume removed{}; provider and emulator stopped",
            if root { ", tmpfs unmounted" } else { "" }
        ),
    );
    if options.keep {
        let kept = work.keep();
        say(out, format!("kept {}", kept.display()));
    }
    say(
        out,
        format!("done in {:.1} s", started.elapsed().as_secs_f64()),
    );
    Ok(())
}

/// A one-line description of a file: PEM block types, or the value (masked by default).
fn describe(path: &str, bytes: &[u8], show: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let blocks: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
        })
        .collect();
    if !blocks.is_empty() {
        let mut counted: Vec<(String, usize)> = Vec::new();
        for b in blocks {
            match counted.last_mut() {
                Some((name, n)) if name == b => *n += 1,
                _ => counted.push((b.to_owned(), 1)),
            }
        }
        let summary = counted
            .iter()
            .map(|(b, n)| {
                if *n == 1 {
                    b.clone()
                } else {
                    format!("{n} × {b}")
                }
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let chain = certificate_subjects(bytes);
        let chain = if chain.len() > 1 {
            format!("; chain {}", chain.join(" → "))
        } else {
            String::new()
        };
        return if show || !summary.contains("PRIVATE KEY") {
            format!("PEM: {summary}{chain}")
        } else {
            format!("PEM: {summary} (key material masked){chain}")
        };
    }
    if show {
        format!("{text:?}")
    } else {
        let _ = path;
        format!("******** ({} bytes; --show-values prints it)", bytes.len())
    }
}

/// The common names of the certificates in a PEM file, in file order.
fn certificate_subjects(pem: &[u8]) -> Vec<String> {
    use x509_cert::der::DecodePem;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    for block in text.split_inclusive("-----END CERTIFICATE-----") {
        let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
            continue;
        };
        let Ok(cert) = x509_cert::Certificate::from_pem(&block[start..]) else {
            continue;
        };
        let subject = cert.tbs_certificate().subject().to_string();
        let cn = subject.strip_prefix("CN=").unwrap_or(&subject).to_owned();
        out.push(cn);
    }
    out
}

/// The emulator's seed: the objects the class mounts, and a service principal allowed to read
/// them. The certificate is issued by a fresh intermediate and root, stored leaf, root,
/// intermediate — shuffled on purpose, so the mounted file shows the provider's chain ordering.
fn seed_yaml() -> Result<String, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |cn: &str| -> Result<(CertificateParams, KeyPair), rcgen::Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        Ok((p, KeyPair::generate()?))
    };
    let (root_params, root_key) = ca("Demo Root CA")?;
    let root_cert = root_params.self_signed(&root_key)?;
    let root = Issuer::new(root_params, root_key);
    let (int_params, int_key) = ca("Demo Intermediate CA")?;
    let int_cert = int_params.signed_by(&int_key, &root)?;
    let intermediate = Issuer::new(int_params, int_key);
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec!["web.demo.test".into()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "web.demo.test");
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &intermediate)?;
    let pem = format!(
        "{}{}{}{}",
        leaf_key.serialize_pem(),
        leaf_cert.pem(),
        root_cert.pem(),
        int_cert.pem()
    );
    let indented: String = pem.lines().map(|l| format!("          {l}\n")).collect();
    Ok(format!(
        "tenant: {TENANT}\n\
         vaults:\n\
         \x20 - name: {VAULT}\n\
         \x20   access: [{CLIENT_ID}]\n\
         \x20   secrets:\n\
         \x20     - {{ name: db-password, value: {FIRST_PASSWORD} }}\n\
         \x20   keys:\n\
         \x20     - {{ name: signing-key, kty: RSA, key_size: 2048 }}\n\
         \x20   certificates:\n\
         \x20     - name: web-tls\n\
         \x20       pem: |\n{indented}\
         identities:\n\
         \x20 service_principals:\n\
         \x20   - {{ client_id: {CLIENT_ID}, client_secret: demo-client-secret }}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_unless_asked() {
        assert!(describe("db-password", b"hunter2", false).starts_with("********"));
        assert!(!describe("db-password", b"hunter2", false).contains("hunter2"));
        assert_eq!(describe("db-password", b"hunter2", true), "\"hunter2\"");
        let pem = b"-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            describe("tls", pem, false),
            "PEM: PRIVATE KEY + 2 × CERTIFICATE (key material masked)"
        );
    }

    #[test]
    fn the_seed_parses_and_holds_the_shuffled_chain() {
        let seed = seed_yaml().expect("seed");
        let parsed = EmulatorConfig::default().seed_yaml(&seed);
        assert!(parsed.is_ok(), "{seed}");
        assert_eq!(seed.matches("BEGIN CERTIFICATE").count(), 3);
    }
}
