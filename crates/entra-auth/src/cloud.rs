//! Azure clouds: the four named public clouds and `AzureStackCloud` read from an environment file.
//!
//! Upstream resolves `AzureStackCloud` through the process-wide `AZURE_ENVIRONMENT_FILEPATH`
//! environment variable, which it sets per mount (a race between concurrent mounts). Here the env
//! file path is an argument, read on every resolution; nothing process-wide is touched.

use std::path::Path;

use serde::Deserialize;

/// The endpoints of one Azure cloud that the provider needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    /// Canonical name, e.g. `AzurePublicCloud` (for Azure Stack: the `name` in the env file).
    pub name: String,
    /// Entra authority host with a trailing `/`, e.g. `https://login.microsoftonline.com/`.
    pub active_directory_endpoint: String,
    /// Key Vault resource with a trailing `/`, e.g. `https://vault.azure.net/`.
    pub key_vault_endpoint: String,
    /// Key Vault DNS suffix, e.g. `vault.azure.net`.
    pub key_vault_dns_suffix: String,
}

/// Why a cloud name could not be resolved. The `Display` text matches upstream's.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// Not one of the known names.
    #[error("autorest/azure: There is no cloud environment matching the name \"{0}\"")]
    UnknownName(String),
    /// The Azure Stack environment file could not be read.
    #[error("open {path}: {reason}")]
    EnvFileRead {
        /// The path that was tried.
        path: String,
        /// Why it failed, e.g. `no such file or directory`.
        reason: String,
    },
    /// The Azure Stack environment file is not valid JSON of the expected shape.
    #[error("failed to parse environment file {path}: {reason}")]
    EnvFileParse {
        /// The path that was read.
        path: String,
        /// Parser message.
        reason: String,
    },
}

#[derive(Deserialize)]
struct EnvFile {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "activeDirectoryEndpoint")]
    active_directory_endpoint: String,
    #[serde(default, rename = "keyVaultEndpoint")]
    key_vault_endpoint: String,
    #[serde(default, rename = "keyVaultDNSSuffix")]
    key_vault_dns_suffix: String,
}

fn named(name: &str, aad: &str, kv: &str, suffix: &str) -> Cloud {
    Cloud {
        name: name.to_owned(),
        active_directory_endpoint: aad.to_owned(),
        key_vault_endpoint: kv.to_owned(),
        key_vault_dns_suffix: suffix.to_owned(),
    }
}

impl Cloud {
    /// The public cloud.
    pub fn public() -> Self {
        named(
            "AzurePublicCloud",
            "https://login.microsoftonline.com/",
            "https://vault.azure.net/",
            "vault.azure.net",
        )
    }

    /// Resolves a cloud name case-insensitively. `AzureStackCloud` reads `env_file` (JSON with the
    /// go-autorest `Environment` field names) now; an empty path is an error naming the empty path,
    /// as upstream.
    pub fn resolve(name: &str, env_file: Option<&Path>) -> Result<Self, CloudError> {
        let upper = name.trim().to_ascii_uppercase();
        match upper.as_str() {
            "AZUREPUBLICCLOUD" => Ok(Self::public()),
            "AZUREUSGOVERNMENTCLOUD" => Ok(named(
                "AzureUSGovernmentCloud",
                "https://login.microsoftonline.us/",
                "https://vault.usgovcloudapi.net/",
                "vault.usgovcloudapi.net",
            )),
            "AZURECHINACLOUD" => Ok(named(
                "AzureChinaCloud",
                "https://login.chinacloudapi.cn/",
                "https://vault.azure.cn/",
                "vault.azure.cn",
            )),
            "AZUREGERMANCLOUD" => Ok(named(
                "AzureGermanCloud",
                "https://login.microsoftonline.de/",
                "https://vault.microsoftazure.de/",
                "vault.microsoftazure.de",
            )),
            "AZURESTACKCLOUD" => Self::from_env_file(env_file.unwrap_or(Path::new(""))),
            _ => Err(CloudError::UnknownName(upper)),
        }
    }

    /// Reads an Azure Stack environment file.
    pub fn from_env_file(path: &Path) -> Result<Self, CloudError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CloudError::EnvFileRead {
            path: shown.clone(),
            reason: io_reason(&e),
        })?;
        let env: EnvFile =
            serde_json::from_slice(&bytes).map_err(|e| CloudError::EnvFileParse {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let with_slash = |s: String| {
            if s.is_empty() || s.ends_with('/') {
                s
            } else {
                format!("{s}/")
            }
        };
        Ok(Cloud {
            name: env.name,
            active_directory_endpoint: with_slash(env.active_directory_endpoint),
            key_vault_endpoint: with_slash(env.key_vault_endpoint),
            key_vault_dns_suffix: env.key_vault_dns_suffix.trim_start_matches('.').to_owned(),
        })
    }

    /// `https://<vault>.<suffix>/`.
    pub fn vault_url(&self, vault_name: &str) -> String {
        format!("https://{vault_name}.{}/", self.key_vault_dns_suffix)
    }

    /// The Key Vault resource without its trailing `/` (what NMI and IMDS are asked for).
    pub fn key_vault_resource(&self) -> &str {
        self.key_vault_endpoint.trim_end_matches('/')
    }
}

/// Go-style lower-case OS error text (`no such file or directory`), without Rust's `(os error 2)`.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_clouds_case_insensitive_with_upstream_suffixes() {
        for (n, suffix) in [
            ("AZUREPUBLICCLOUD", "vault.azure.net"),
            ("azurechinacloud", "vault.azure.cn"),
            ("AzureGermanCloud", "vault.microsoftazure.de"),
            ("AZUREUSGOVERNMENTCLOUD", "vault.usgovcloudapi.net"),
        ] {
            let c = Cloud::resolve(n, None).unwrap();
            assert_eq!(c.key_vault_dns_suffix, suffix);
            assert_eq!(c.vault_url("testkv"), format!("https://testkv.{suffix}/"));
        }
    }

    #[test]
    fn unknown_cloud_error_matches_upstream() {
        let e = Cloud::resolve("AzureCloud1", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "autorest/azure: There is no cloud environment matching the name \"AZURECLOUD1\""
        );
    }

    #[test]
    fn stack_cloud_from_file_and_missing_file() {
        let e = Cloud::resolve(
            "AzureStackCloud",
            Some(Path::new("/etc/kubernetes/akscustom.json")),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "open /etc/kubernetes/akscustom.json: no such file or directory"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.json");
        std::fs::write(
            &p,
            r#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://127.0.0.1:4443","keyVaultEndpoint":"https://vault.test/","keyVaultDNSSuffix":"vault.test"}"#,
        )
        .unwrap();
        let c = Cloud::resolve("AZURESTACKCLOUD", Some(&p)).unwrap();
        assert_eq!(c.name, "AzureStackCloud");
        assert_eq!(c.active_directory_endpoint, "https://127.0.0.1:4443/");
        assert_eq!(c.key_vault_resource(), "https://vault.test");
        assert_eq!(c.vault_url("kv1"), "https://kv1.vault.test/");
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(
            Cloud::resolve("AzureStackCloud", Some(&p)),
            Err(CloudError::EnvFileParse { .. })
        ));
    }
}
