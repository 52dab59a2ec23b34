//! `secrets-store mount --class FILE --target DIR`: a one-shot mount of a SecretProviderClass into
//! a plain directory, through the same provider and driver code a node runs, against a real or an
//! emulated vault. For debugging access (identity, permissions, names, formats) before deploying.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use driver::DirMounter;
use provider_azure::ProviderConfig;
use serde_json::Value;

use crate::local::{LocalNode, PodInfo, kubelet_request, read_tree};

/// Everything `mount` takes from the command line.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// The SecretProviderClass YAML file.
    pub class: PathBuf,
    /// Which class in the file, when it holds several.
    pub name: Option<String>,
    /// Where the files go (created if missing).
    pub target: PathBuf,
    /// A YAML or JSON map standing in for the volume's `nodePublishSecretRef` Secret (keys
    /// `clientid` and `clientsecret` for a service principal).
    pub secrets_file: Option<PathBuf>,
    /// A service-account token for `api://AzureADTokenExchange` (workload identity).
    pub token_file: Option<PathBuf>,
    /// The pod the mount pretends to be for (pod identity keys on it).
    pub pod: String,
    /// The pod's namespace (default: the class's namespace).
    pub namespace: Option<String>,
    /// The pod's service account.
    pub service_account: String,
    /// Extra CA bundle for the vault and Entra ID (instead of SSL_CERT_FILE; system roots stay).
    pub ca_file: Option<PathBuf>,
    /// `host=ip:port` overrides, for vaults without DNS (emulators).
    pub resolve: Vec<(String, SocketAddr)>,
    /// Show secret values instead of sizes.
    pub show_values: bool,
    /// Use the provider already serving `<dir>/azure.sock` instead of one in this process.
    pub provider_dir: Option<PathBuf>,
}

/// What went wrong; the message names the option or file to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MountCommandError(String);

fn err(message: impl Into<String>) -> MountCommandError {
    MountCommandError(message.into())
}

/// Parses `host=ip:port`.
pub fn parse_resolve(s: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = s.split_once('=').ok_or_else(|| {
        format!("--resolve {s:?}: expected HOST=IP:PORT, e.g. myvault.vault.test=127.0.0.1:8443")
    })?;
    let addr = addr
        .parse()
        .map_err(|e| format!("--resolve {s:?}: {addr:?} is not IP:PORT ({e})"))?;
    Ok((host.to_owned(), addr))
}

/// Runs the mount and reports the files written to `out`.
pub async fn run(options: &MountOptions, out: &mut dyn Write) -> Result<(), MountCommandError> {
    let text = std::fs::read_to_string(&options.class).map_err(|e| {
        err(format!(
            "--class {}: cannot read: {e}",
            options.class.display()
        ))
    })?;
    let class = pick_class(&text, options.name.as_deref())
        .map_err(|e| err(format!("--class {}: {e}", options.class.display())))?;
    let class_name = class["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let namespace = options
        .namespace
        .clone()
        .or_else(|| class["metadata"]["namespace"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "default".into());

    let secrets = match &options.secrets_file {
        None => HashMap::new(),
        Some(path) => read_secrets(path)?,
    };
    let tokens = match &options.token_file {
        None => None,
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| err(format!("--token-file {}: cannot read: {e}", path.display())))?;
            Some(
                serde_json::json!({
                    "api://AzureADTokenExchange": {"token": token.trim(), "expirationTimestamp": ""}
                })
                .to_string(),
            )
        }
    };

    // The driver reads the class from a file holding just this class, in the pod's namespace.
    let work = tempfile::Builder::new()
        .prefix("secrets-store-mount-")
        .tempdir()
        .map_err(|e| err(format!("cannot create a working folder: {e}")))?;
    let mut class = class.clone();
    class["metadata"]["namespace"] = Value::String(namespace.clone());
    let class_file = work.path().join("class.json");
    std::fs::write(&class_file, class.to_string())
        .map_err(|e| err(format!("cannot write the class: {e}")))?;

    let mut provider = ProviderConfig {
        http: entra_auth::HttpOptions::from_env(),
        node: entra_auth::NodeEndpoints::from_env().map_err(|e| {
            err(format!(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST or AZURE_NMI_ENDPOINT is not a URL: {e}"
            ))
        })?,
        ..ProviderConfig::default()
    };
    if let Some(ca) = &options.ca_file {
        // Takes the place of SSL_CERT_FILE; the system roots and SSL_CERT_DIR stay.
        provider.http.ssl_cert_file = Some(ca.clone());
    }
    provider.http.resolve = options.resolve.clone();

    let (providers, provider) = match &options.provider_dir {
        Some(dir) => (dir.clone(), None),
        None => (work.path().join("providers"), Some(provider)),
    };
    let local = LocalNode::start(
        &providers,
        provider,
        &class_file,
        Arc::new(DirMounter::default()),
        false,
    )
    .await
    .map_err(err)?;
    let pod = PodInfo {
        class: class_name.clone(),
        name: options.pod.clone(),
        namespace: namespace.clone(),
        uid: uuid_like(&options.pod),
        service_account: options.service_account.clone(),
        tokens,
    };
    let target = absolute(&options.target);
    let result = local
        .node()
        .publish(
            kubelet_request(&target, &pod, secrets),
            Duration::from_secs(120),
        )
        .await;
    local.stop().await;
    result.map_err(|e| {
        err(format!(
            "mount of {namespace}/{class_name} failed: {}",
            e.render()
        ))
    })?;

    let files =
        read_tree(&target).map_err(|e| err(format!("cannot read {}: {e}", target.display())))?;
    let _ = writeln!(
        out,
        "mounted {namespace}/{class_name} into {} ({} files)",
        target.display(),
        files.len()
    );
    for (path, bytes, mode) in files {
        let shown = if options.show_values {
            format!("{:?}", String::from_utf8_lossy(&bytes))
        } else {
            format!("{} bytes", bytes.len())
        };
        let _ = writeln!(out, "  {path:<30} {:o}  {shown}", mode & 0o777);
    }
    Ok(())
}

fn pick_class(text: &str, name: Option<&str>) -> Result<Value, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let classes: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["kind"] == "SecretProviderClass")
        .filter(|d| name.is_none_or(|n| d["metadata"]["name"] == n))
        .collect();
    match (classes.len(), name) {
        (1, _) => Ok(classes.into_iter().next().unwrap_or_default()),
        (0, Some(n)) => Err(format!("no SecretProviderClass named {n:?}")),
        (0, None) => Err("no SecretProviderClass in the file".into()),
        (n, _) => Err(format!(
            "{n} SecretProviderClasses in the file: pick one with --name"
        )),
    }
}

fn read_secrets(path: &Path) -> Result<HashMap<String, String>, MountCommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("--secrets {}: cannot read: {e}", path.display())))?;
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| {
        err(format!(
            "--secrets {}: not YAML or JSON: {e}",
            path.display()
        ))
    })?;
    // Accept a plain map, or a Kubernetes Secret manifest (stringData, or base64 data).
    let map = if value["kind"] == "Secret" {
        let mut m = HashMap::new();
        if let Some(data) = value["data"].as_object() {
            use base64::Engine as _;
            for (k, v) in data {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .map_err(|_| {
                        err(format!(
                            "--secrets {}: data.{k} is not base64",
                            path.display()
                        ))
                    })?;
                m.insert(k.clone(), String::from_utf8_lossy(&decoded).into_owned());
            }
        }
        if let Some(data) = value["stringData"].as_object() {
            for (k, v) in data {
                m.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
            }
        }
        m
    } else {
        value
            .as_object()
            .ok_or_else(|| {
                err(format!(
                    "--secrets {}: expected a map like {{clientid: …, clientsecret: …}}",
                    path.display()
                ))
            })?
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    };
    Ok(map)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// A stable UID-shaped id for the pretend pod (the driver only needs it to be present).
fn uuid_like(pod: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        h >> 32,
        h & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_overrides_parse_with_clear_errors() {
        assert_eq!(
            parse_resolve("kv.vault.test=127.0.0.1:8443").unwrap(),
            ("kv.vault.test".into(), "127.0.0.1:8443".parse().unwrap())
        );
        assert!(
            parse_resolve("kv.vault.test")
                .unwrap_err()
                .contains("HOST=IP:PORT")
        );
        assert!(
            parse_resolve("kv=localhost:1")
                .unwrap_err()
                .contains("not IP:PORT")
        );
    }

    #[test]
    fn a_file_with_several_classes_needs_a_name() {
        let two = "kind: SecretProviderClass\nmetadata: {name: a}\n---\nkind: SecretProviderClass\nmetadata: {name: b}\n";
        assert!(pick_class(two, None).unwrap_err().contains("--name"));
        assert_eq!(pick_class(two, Some("b")).unwrap()["metadata"]["name"], "b");
        assert!(
            pick_class(two, Some("c"))
                .unwrap_err()
                .contains("no SecretProviderClass named")
        );
    }
}
