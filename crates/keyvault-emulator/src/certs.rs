//! Certificates: PEM/PFX import, self-signed creation, and the backing secret's content.

use crate::keys::{KeyError, KeyMaterial};
use base64::{Engine, engine::general_purpose::STANDARD};
use der::{Decode, Encode};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

pub const CT_PKCS12: &str = "application/x-pkcs12";
pub const CT_PEM: &str = "application/x-pem-file";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("the certificate content is not a PEM bundle nor a PFX: {0}")]
    Format(String),
    #[error(transparent)]
    Pkcs12(#[from] pfx::Pkcs12Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the certificate content (PEM bundle or PFX) has no private key")]
    NoKey,
    #[error("the certificate content (PEM bundle or PFX) has no certificate")]
    NoCertificate,
    #[error("a certificate is not valid X.509: {0}")]
    X509(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("unsupported content type '{0}'; use application/x-pkcs12 or application/x-pem-file")]
    ContentType(String),
}

/// A key and its certificate chain, leaf first.
pub struct Bundle {
    pub key: KeyMaterial,
    pub chain: Vec<Vec<u8>>,
}

/// Facts read from the leaf certificate.
pub struct LeafInfo {
    pub not_before: i64,
    pub not_after: i64,
    pub subject: String,
    pub x5t: String,
}

/// Parses import input: PEM text, base64 of PEM text, or base64 of a PFX.
pub fn parse_import(value: &str, password: &str) -> Result<Bundle, CertError> {
    let trimmed = value.trim();
    if trimmed.starts_with("-----BEGIN") {
        return parse_pem_bundle(trimmed);
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = Zeroizing::new(
        STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| CertError::Format(e.to_string()))?,
    );
    if raw.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(&raw).map_err(|e| CertError::Format(e.to_string()))?;
        return parse_pem_bundle(text);
    }
    // Any PFX Key Vault takes: RC2-40 (Windows, `openssl pkcs12 -legacy`), 3DES, PBES2/AES.
    let decoded = pfx::decode_split_with_password(&raw, password)?;
    let key_pkcs8 = decoded.keys.first().ok_or(CertError::NoKey)?;
    if decoded.certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = KeyMaterial::from_pkcs8(key_pkcs8)?;
    Ok(order_leaf_first(key, decoded.certs))
}

/// Parses a PEM bundle of one private key and one or more certificates (any order).
pub fn parse_pem_bundle(text: &str) -> Result<Bundle, CertError> {
    let mut key = None;
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or_else(|| CertError::Format("unterminated PEM label".into()))?;
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block
            .find(&end_marker)
            .ok_or_else(|| CertError::Format(format!("missing '{end_marker}'")))?;
        let pem_block = &block[..end + end_marker.len()];
        let (_, der) = der::pem::decode_vec(pem_block.as_bytes())
            .map_err(|e| CertError::Format(e.to_string()))?;
        match label {
            "CERTIFICATE" => certs.push(der),
            l if l.ends_with("PRIVATE KEY") => {
                let der = Zeroizing::new(der);
                if key.is_none() {
                    key = Some(KeyMaterial::from_pem_block(l, &der)?);
                }
            }
            _ => {}
        }
        rest = &block[end + end_marker.len()..];
    }
    let key = key.ok_or(CertError::NoKey)?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(order_leaf_first(key, certs))
}

/// Moves the certificate whose public key matches the private key to the front; the rest keep
/// their order (Key Vault keeps the chain as given).
fn order_leaf_first(key: KeyMaterial, mut certs: Vec<Vec<u8>>) -> Bundle {
    if let Some(spki) = key_spki(&key)
        && let Some(pos) = certs
            .iter()
            .position(|c| cert_spki(c).as_deref() == Some(spki.as_slice()))
        && pos != 0
    {
        let leaf = certs.remove(pos);
        certs.insert(0, leaf);
    }
    Bundle { key, chain: certs }
}

fn key_spki(key: &KeyMaterial) -> Option<Vec<u8>> {
    use rcgen::PublicKeyData;
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(key.pkcs8.as_slice());
    let kp = if key.kty == "RSA" {
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).ok()?
    } else {
        rcgen::KeyPair::try_from(&pkcs8).ok()?
    };
    Some(kp.subject_public_key_info())
}

fn cert_spki(der: &[u8]) -> Option<Vec<u8>> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()
}

pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, CertError> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| CertError::X509(e.to_string()))?;
    let validity = cert.tbs_certificate().validity();
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    Ok(LeafInfo {
        not_before: secs(&validity.not_before),
        not_after: secs(&validity.not_after),
        subject: cert.tbs_certificate().subject().to_string(),
        x5t: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
    })
}

/// Creates a self-signed certificate for a new or given key.
pub fn self_signed(
    key: KeyMaterial,
    subject: &str,
    dns_names: &[String],
    validity_months: u32,
) -> Result<Bundle, CertError> {
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(key.pkcs8.as_slice());
    let kp = if key.kty == "RSA" {
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
    } else {
        rcgen::KeyPair::try_from(&pkcs8)
    }
    .map_err(|e| CertError::Generate(format!("key type not supported for self-signing: {e}")))?;
    let mut params = rcgen::CertificateParams::new(dns_names.to_vec())
        .map_err(|e| CertError::Generate(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    let cn = subject
        .split(',')
        .find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("cn")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| subject.to_string());
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(10);
    params.not_after = now + time::Duration::days(30 * i64::from(validity_months.clamp(1, 1200)));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .self_signed(&kp)
        .map_err(|e| CertError::Generate(e.to_string()))?;
    Ok(Bundle {
        key,
        chain: vec![cert.der().to_vec()],
    })
}

/// The backing secret's value: base64 PFX (Key Vault's legacy encoding) or PEM (key, then chain).
pub fn secret_value(
    bundle: &Bundle,
    content_type: &str,
    friendly_name: &str,
) -> Result<Zeroizing<String>, CertError> {
    match content_type {
        CT_PKCS12 => {
            let pfx = Zeroizing::new(pfx::encode_keyvault(
                &bundle.key.pkcs8,
                &bundle.chain,
                friendly_name,
            )?);
            Ok(Zeroizing::new(STANDARD.encode(pfx.as_slice())))
        }
        CT_PEM => {
            let mut out = Zeroizing::new(
                der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &bundle.key.pkcs8)
                    .map_err(|e| CertError::Format(e.to_string()))?,
            );
            for c in &bundle.chain {
                out.push_str(
                    &der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, c)
                        .map_err(|e| CertError::Format(e.to_string()))?,
                );
            }
            Ok(out)
        }
        other => Err(CertError::ContentType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pem_round_trips_through_import() {
        let key = KeyMaterial::generate_ec("P-256").expect("key");
        let b = self_signed(key, "CN=test", &["a.test".into()], 12).expect("cert");
        let pem = secret_value(&b, CT_PEM, "x").expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = parse_import(&pem, "").expect("import");
        assert_eq!(again.chain, b.chain);
        let pfx = secret_value(&b, CT_PKCS12, "x").expect("pfx");
        let again = parse_import(&pfx, "").expect("import pfx");
        assert_eq!(again.chain, b.chain);
        let info = leaf_info(&b.chain[0]).expect("info");
        assert!(info.not_after > info.not_before);
        assert!(info.subject.contains("test"));
    }

    #[test]
    fn legacy_rc2_40_pfx_imports_with_its_password() {
        // `openssl pkcs12 -export -legacy` (crates/pfx/tests/fixtures/README.md), as Windows writes.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../pfx/tests/fixtures/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).expect("fixture");
        let value = STANDARD.encode(read("rc2-40.pfx"));
        let b = parse_import(&value, "fixture-pw").expect("imports");
        assert_eq!(b.chain, vec![read("cert.der")]);
        assert_eq!(b.key.kty, "EC");
        match parse_import(&value, "not-the-password") {
            Err(e @ CertError::Pkcs12(pfx::Pkcs12Error::BadPassword)) => {
                assert!(e.to_string().contains("wrong password"), "{e}");
            }
            Err(e) => panic!("expected a wrong-password error, got {e}"),
            Ok(_) => panic!("a wrong password imported"),
        }
    }

    #[test]
    fn leaf_is_moved_first() {
        let leaf_key = KeyMaterial::generate_ec("P-256").expect("key");
        let other_key = KeyMaterial::generate_ec("P-256").expect("key");
        let leaf = self_signed(leaf_key.clone(), "CN=leaf", &[], 1).expect("leaf");
        let other = self_signed(other_key, "CN=other", &[], 1).expect("other");
        let b = order_leaf_first(
            leaf_key,
            vec![other.chain[0].clone(), leaf.chain[0].clone()],
        );
        assert_eq!(b.chain[0], leaf.chain[0]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(
            parse_import(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ""
            )
            .is_err()
        );
        assert!(parse_import("!!!", "").is_err());
        assert!(parse_import("", "").is_err());
    }
}
