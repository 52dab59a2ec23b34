//! Key Vault objects → file bytes, as pure functions (no I/O), byte-compatible with upstream.

pub mod chain;
pub mod keys;
pub mod pem;
pub use pfx as pkcs12;

use base64::Engine as _;
use keyvault_client::{CertificateBundle, KeyBundle, SecretBundle, last_segment};
use zeroize::Zeroizing;

use crate::params::{ObjectEncoding, ObjectFormat, ObjectSpec};

/// Process-wide rendering switches (provider flags).
#[derive(Clone, Copy, Debug)]
pub struct RenderOptions {
    /// `--construct-pem-chain` (default true).
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files` (default false).
    pub write_cert_and_key_in_separate_files: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            construct_pem_chain: true,
            write_cert_and_key_in_separate_files: false,
        }
    }
}

/// One file to hand back to the driver; contents zeroized on drop, redacted in `Debug`.
pub struct RenderedFile {
    /// Path relative to the target.
    pub path: String,
    /// Bytes.
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RenderedFile({}, <{} bytes>)",
            self.path,
            self.contents.len()
        )
    }
}

/// What a fetched object becomes: files and the version that was fetched.
#[derive(Debug)]
pub struct Rendered {
    /// Files in upstream's order.
    pub files: Vec<RenderedFile>,
    /// The Key Vault version id.
    pub version: String,
}

/// Rendering failed (the object's content is not what its settings say).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// A required field is absent from the Key Vault response (upstream's texts).
    #[error("{0}")]
    Missing(&'static str),
    /// Unknown contentType on a certificate-backed secret.
    #[error("failed to get certificate. unknown content type '{0}'")]
    UnknownContentType(String),
    /// The PFX secret is not base64.
    #[error("the certificate's PFX value is not valid base64: {0}")]
    PfxBase64(String),
    /// PKCS#12 decoding failed.
    #[error(transparent)]
    Pkcs12(#[from] pkcs12::Pkcs12Error),
    /// Key conversion failed.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// Chain construction failed.
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    /// objectEncoding did not apply to the stored value.
    #[error(
        "objectEncoding {encoding}: the stored value is not valid {encoding} ({reason}); fix the value in Key Vault or remove objectEncoding"
    )]
    Encoding {
        /// base64 / hex
        encoding: &'static str,
        /// decoder message
        reason: String,
    },
}

fn file(path: String, contents: Zeroizing<Vec<u8>>) -> RenderedFile {
    RenderedFile { path, contents }
}

/// Applies `objectEncoding` (secrets only).
pub fn apply_encoding(
    encoding: ObjectEncoding,
    bytes: Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>, RenderError> {
    match encoding {
        ObjectEncoding::Utf8 => Ok(bytes),
        ObjectEncoding::Base64 => {
            let cleaned: Zeroizing<Vec<u8>> = Zeroizing::new(
                bytes
                    .iter()
                    .copied()
                    .filter(|b| *b != b'\r' && *b != b'\n')
                    .collect(),
            );
            base64::engine::general_purpose::STANDARD
                .decode(&cleaned[..])
                .map(Zeroizing::new)
                .map_err(|e| RenderError::Encoding {
                    encoding: "base64",
                    reason: e.to_string(),
                })
        }
        ObjectEncoding::Hex => {
            hex::decode(&bytes[..])
                .map(Zeroizing::new)
                .map_err(|e| RenderError::Encoding {
                    encoding: "hex",
                    reason: e.to_string(),
                })
        }
    }
}

/// PFX (base64 text as stored) → PEM: PKCS#8 keys first, then certificates (chain-ordered when
/// asked and complete, else in bag order).
pub fn pfx_to_pem(
    value: &[u8],
    construct_pem_chain: bool,
) -> Result<Zeroizing<Vec<u8>>, RenderError> {
    let cleaned: Zeroizing<Vec<u8>> = Zeroizing::new(
        value
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let der = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&cleaned[..])
            .map_err(|e| RenderError::PfxBase64(e.to_string()))?,
    );
    let items = pkcs12::decode(&der)?;
    let mut keys_pem = Zeroizing::new(String::new());
    let mut certs: Vec<Vec<u8>> = Vec::new();
    for item in items {
        match item {
            pkcs12::Pkcs12Item::Key(k) => {
                let p8 = keys::to_pkcs8(&k)?;
                keys_pem.push_str(&Zeroizing::new(pem::encode("PRIVATE KEY", &p8)));
            }
            pkcs12::Pkcs12Item::Cert(c) => certs.push(c),
        }
    }
    let order: Vec<usize> = if construct_pem_chain && !certs.is_empty() {
        match chain::order(&certs)? {
            chain::Ordered::Chain(idx) => idx,
            chain::Ordered::Incomplete => (0..certs.len()).collect(),
        }
    } else {
        (0..certs.len()).collect()
    };
    let mut out = Zeroizing::new(keys_pem.as_bytes().to_vec());
    for i in order {
        out.extend_from_slice(pem::encode("CERTIFICATE", &certs[i]).as_bytes());
    }
    Ok(out)
}

/// Splits PEM content into (`CERTIFICATE` blocks, all other blocks), re-encoded with headers.
pub fn split_cert_and_key(content: &[u8]) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let mut certs = Zeroizing::new(Vec::new());
    let mut keys = Zeroizing::new(Vec::new());
    for b in pem::decode_all(content) {
        let text = Zeroizing::new(pem::encode_with_headers(&b.label, &b.headers, &b.der));
        if b.label == "CERTIFICATE" {
            certs.extend_from_slice(text.as_bytes());
        } else {
            keys.extend_from_slice(text.as_bytes());
        }
    }
    (certs, keys)
}

/// `objectType: secret`.
pub fn render_secret(
    spec: &ObjectSpec,
    file_name: &str,
    bundle: &SecretBundle,
    opts: RenderOptions,
) -> Result<Rendered, RenderError> {
    let value = bundle
        .value
        .as_ref()
        .ok_or(RenderError::Missing("secret value is nil"))?;
    let id = bundle
        .id
        .as_deref()
        .ok_or(RenderError::Missing("secret id is nil"))?;
    let version = last_segment(id).to_owned();
    let mut files = Vec::new();
    let content: Zeroizing<Vec<u8>> = match bundle.kid.as_deref() {
        None | Some("") => Zeroizing::new(value.expose().to_vec()),
        Some(_) => {
            let ct = bundle.content_type.as_deref().unwrap_or("");
            let content = match ct {
                "application/x-pem-file" => Zeroizing::new(value.expose().to_vec()),
                "application/x-pkcs12" => {
                    if spec.format == ObjectFormat::Pfx {
                        Zeroizing::new(value.expose().to_vec())
                    } else {
                        pfx_to_pem(value.expose(), opts.construct_pem_chain)?
                    }
                }
                other => return Err(RenderError::UnknownContentType(other.to_owned())),
            };
            if opts.write_cert_and_key_in_separate_files {
                let (crt, key) = split_cert_and_key(&content);
                files.push(file(
                    format!("{file_name}.crt"),
                    apply_encoding(spec.encoding, crt)?,
                ));
                files.push(file(
                    format!("{file_name}.key"),
                    apply_encoding(spec.encoding, key)?,
                ));
            }
            content
        }
    };
    files.push(file(
        file_name.to_owned(),
        apply_encoding(spec.encoding, content)?,
    ));
    Ok(Rendered { files, version })
}

/// `objectType: key` → `PUBLIC KEY` PEM.
pub fn render_key(file_name: &str, bundle: &KeyBundle) -> Result<Rendered, RenderError> {
    let jwk = bundle
        .key
        .as_ref()
        .ok_or(RenderError::Missing("key value is nil"))?;
    let kid = jwk
        .kid
        .as_deref()
        .ok_or(RenderError::Missing("key id is nil"))?;
    let spki = keys::jwk_to_spki(jwk)?;
    let pem = pem::encode("PUBLIC KEY", &spki);
    Ok(Rendered {
        files: vec![file(file_name.to_owned(), Zeroizing::new(pem.into_bytes()))],
        version: last_segment(kid).to_owned(),
    })
}

/// `objectType: cert` → leaf `CERTIFICATE` PEM.
pub fn render_cert(file_name: &str, bundle: &CertificateBundle) -> Result<Rendered, RenderError> {
    let cer = bundle
        .cer
        .as_ref()
        .ok_or(RenderError::Missing("certificate value is nil"))?;
    let id = bundle
        .id
        .as_deref()
        .ok_or(RenderError::Missing("certificate id is nil"))?;
    let pem = pem::encode("CERTIFICATE", cer);
    Ok(Rendered {
        files: vec![file(file_name.to_owned(), Zeroizing::new(pem.into_bytes()))],
        version: last_segment(id).to_owned(),
    })
}

#[cfg(test)]
mod tests;
