//! Azure clouds: the four named public clouds and `AzureStackCloud` read from an environment file.
//!
//! Upstream resolves `AzureStackCloud` through the process-wide `AZURE_ENVIRONMENT_FILEPATH`
//! environment variable, which it sets per mount (a race between concurrent mounts). Here the env
//! file path is an argument, read on every resolution; nothing process-wide is touched.

use std::io::Read as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use serde::Deserialize;

/// Largest Azure Stack environment file read (`cloudEnvFileName`); real ones are about 1 KiB.
pub const MAX_ENV_FILE: u64 = 64 * 1024;

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
    /// `cloudEnvFileName` names something other than a regular file (a directory, a device such
    /// as `/dev/zero`, a FIFO, a socket); it is refused before it is opened.
    #[error(
        "cloudEnvFileName {path} is a {kind}, not a regular file: name the Azure Stack environment JSON file"
    )]
    EnvFileNotRegular {
        /// The path as given.
        path: String,
        /// What it is, e.g. `character device`.
        kind: &'static str,
    },
    /// `cloudEnvFileName` names a file larger than [`MAX_ENV_FILE`].
    #[error(
        "cloudEnvFileName {path} is larger than {limit} bytes: name the Azure Stack environment JSON file (about 1 KiB)"
    )]
    EnvFileTooLarge {
        /// The path as given.
        path: String,
        /// [`MAX_ENV_FILE`].
        limit: u64,
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

    /// [`Cloud::resolve`] for async code: a name that reads the environment file (Azure Stack)
    /// does so on tokio's blocking pool, never on an async worker thread.
    pub async fn resolve_async(name: &str, env_file: Option<&Path>) -> Result<Self, CloudError> {
        if !name.trim().eq_ignore_ascii_case("AzureStackCloud") {
            return Self::resolve(name, env_file);
        }
        let (name, env) = (name.to_owned(), env_file.map(Path::to_path_buf));
        let shown = env
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || Self::resolve(&name, env.as_deref()))
            .await
            .unwrap_or_else(|e| {
                Err(CloudError::EnvFileRead {
                    path: shown,
                    reason: format!("the reading task failed: {e}"),
                })
            })
    }

    /// Reads an Azure Stack environment file: a regular file of at most [`MAX_ENV_FILE`] bytes.
    /// Blocking: async callers use [`Cloud::resolve_async`].
    pub fn from_env_file(path: &Path) -> Result<Self, CloudError> {
        let shown = path.display().to_string();
        #[cfg(test)]
        tests::READ_THREADS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(std::thread::current().id());
        let bytes = read_env_file(path, &shown)?;
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

/// The file's bytes, refusing what is not a regular file before opening it (opening a FIFO
/// blocks until a writer comes; `/dev/zero` never ends) and reading at most [`MAX_ENV_FILE`] + 1
/// bytes. What was opened is checked again, in case the path changed in between.
fn read_env_file(path: &Path, shown: &str) -> Result<Vec<u8>, CloudError> {
    let read_err = |e: std::io::Error| CloudError::EnvFileRead {
        path: shown.to_owned(),
        reason: io_reason(&e),
    };
    let check = |meta: &std::fs::Metadata| {
        let t = meta.file_type();
        let kind = if t.is_file() {
            return Ok(());
        } else if t.is_dir() {
            "directory"
        } else if t.is_char_device() {
            "character device"
        } else if t.is_block_device() {
            "block device"
        } else if t.is_fifo() {
            "named pipe"
        } else if t.is_socket() {
            "socket"
        } else {
            "special file"
        };
        Err(CloudError::EnvFileNotRegular {
            path: shown.to_owned(),
            kind,
        })
    };
    let too_large = || CloudError::EnvFileTooLarge {
        path: shown.to_owned(),
        limit: MAX_ENV_FILE,
    };
    check(&std::fs::metadata(path).map_err(read_err)?)?;
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check(&meta)?;
    if meta.len() > MAX_ENV_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENV_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(too_large());
    }
    Ok(bytes)
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

    /// Threads that read an environment file.
    pub(super) static READ_THREADS: std::sync::Mutex<Vec<std::thread::ThreadId>> =
        std::sync::Mutex::new(Vec::new());

    fn reads_on_this_thread() -> usize {
        let me = std::thread::current().id();
        READ_THREADS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|t| **t == me)
            .count()
    }

    /// `cloudEnvFileName: /dev/zero` used to be read to the end (never): the provider's memory
    /// grew until it was killed. Anything but a regular file is refused before it is opened,
    /// with an error naming the parameter and the path.
    #[test]
    fn env_file_must_be_a_regular_file() {
        for (path, kind) in [
            ("/dev/zero", "character device"),
            ("/dev/urandom", "character device"),
            ("/tmp", "directory"),
        ] {
            let e = Cloud::resolve("AzureStackCloud", Some(Path::new(path)))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(
                e,
                format!(
                    "cloudEnvFileName {path} is a {kind}, not a regular file: name the Azure Stack environment JSON file"
                )
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        // A FIFO would block the open until a writer came.
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let e = Cloud::from_env_file(&fifo).unwrap_err().to_string();
            assert!(e.contains("is a named pipe"), "{e}");
        }
    }

    /// A regular file over the cap is refused without reading it into memory.
    #[test]
    fn env_file_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.json");
        let mut big = br#"{"name":"AzureStackCloud","pad":""#.to_vec();
        big.resize(MAX_ENV_FILE as usize + 1, b' ');
        std::fs::write(&p, &big).unwrap();
        let e = Cloud::from_env_file(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cloudEnvFileName {} is larger than 65536 bytes: name the Azure Stack environment JSON file (about 1 KiB)",
                p.display()
            )
        );
        // At the cap it is read (and then fails as JSON, being padding).
        big.truncate(MAX_ENV_FILE as usize);
        std::fs::write(&p, &big).unwrap();
        assert!(matches!(
            Cloud::from_env_file(&p),
            Err(CloudError::EnvFileParse { .. })
        ));
    }

    /// Async callers read the file on the blocking pool: on a current-thread runtime, never on
    /// the test's own thread. Named clouds read nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn resolve_async_reads_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.json");
        std::fs::write(
            &p,
            r#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://login.test","keyVaultEndpoint":"https://vault.test/","keyVaultDNSSuffix":"vault.test"}"#,
        )
        .unwrap();
        let before = reads_on_this_thread();
        let c = Cloud::resolve_async("azurestackcloud", Some(&p))
            .await
            .unwrap();
        assert_eq!(c.vault_url("kv"), "https://kv.vault.test/");
        let e = Cloud::resolve_async("AzureStackCloud", Some(Path::new("/dev/zero")))
            .await
            .unwrap_err();
        assert!(matches!(e, CloudError::EnvFileNotRegular { .. }), "{e}");
        assert_eq!(
            Cloud::resolve_async("AzureChinaCloud", Some(Path::new("/dev/zero")))
                .await
                .unwrap()
                .key_vault_dns_suffix,
            "vault.azure.cn"
        );
        assert_eq!(reads_on_this_thread(), before);
    }

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
