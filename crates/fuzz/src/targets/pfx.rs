//! The PKCS#12 reader ([`pfx::decode`], [`pfx::decode_with_password`]) and the provider's PFX →
//! PEM rendering.
//!
//! Input: a mode byte, then
//! - 0: a PFX, read with the empty password;
//! - 1: a password length byte, the password, a PFX;
//! - 2: an authenticated safe (the DER inside the PFX), wrapped in a PFX whose MAC verifies with
//!   the zero-length password, so mutations reach the bags, the PBE parameters and decryption;
//! - 3: a PFX, through the provider's `pfx_to_pem` (base64 as Key Vault stores it).
//!
//! Checks: no panic; a success is re-encoded in Key Vault's form and reads back to the same
//! items; errors never contain the password.

use base64::Engine as _;
use cms::content_info::ContentInfo;
use der::Encode as _;
use der::asn1::{Any, ObjectIdentifier, OctetString};
use hmac::{Hmac, KeyInit, Mac};
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::{DigestInfo, MacData};
use sha1::Sha1;
use x509_cert::spki::AlgorithmIdentifierOwned;

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => read(rest, ""),
        1 => {
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let n = usize::from(n).min(rest.len());
            let password = String::from_utf8_lossy(&rest[..n]);
            read(&rest[n..], &password);
        }
        2 => {
            if let Some(pfx) = with_valid_mac(rest) {
                read(&pfx, "");
            }
        }
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
            let _ = provider_azure::render::pfx_to_pem(b64.as_bytes(), rest.len() % 2 == 0);
        }
    }
}

fn read(pfx_der: &[u8], password: &str) {
    match pfx::decode_with_password(pfx_der, password) {
        Err(e) => {
            if password.len() >= 6 {
                assert!(
                    !e.to_string().contains(password),
                    "the error shows the password: {e}"
                );
            }
        }
        Ok(items) => round_trip(&items),
    }
}

/// Key Vault's export of what was read reads back to the same key and certificates.
fn round_trip(items: &[pfx::Pkcs12Item]) {
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    for item in items {
        match item {
            pfx::Pkcs12Item::Key(k) => keys.push(k.to_vec()),
            pfx::Pkcs12Item::Cert(c) => certs.push(c.clone()),
        }
    }
    let Some(key) = keys.first() else {
        return;
    };
    let Ok(encoded) = pfx::encode_keyvault(key, &certs, "fuzz") else {
        return;
    };
    let back = pfx::decode(&encoded).expect("Key Vault's form of a PFX we read reads back");
    let mut back_keys = Vec::new();
    let mut back_certs = Vec::new();
    for item in back {
        match item {
            pfx::Pkcs12Item::Key(k) => back_keys.push(k.to_vec()),
            pfx::Pkcs12Item::Cert(c) => back_certs.push(c),
        }
    }
    assert_eq!(back_keys, vec![key.clone()], "the key changed");
    assert_eq!(back_certs, certs, "the certificates changed");
}

/// A PFX around `auth_safe` with an HMAC-SHA1 MAC (1 iteration) under the zero-length password.
pub fn with_valid_mac(auth_safe: &[u8]) -> Option<Vec<u8>> {
    let salt = [7u8; 20];
    let key = derive_key::<Sha1>(&[], &salt, Pkcs12KeyType::Mac, 1, 20);
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(auth_safe);
    let digest = mac.finalize().into_bytes().to_vec();
    pkcs12::pfx::Pfx {
        version: pkcs12::pfx::Version::V3,
        auth_safe: ContentInfo {
            content_type: DATA,
            content: Any::encode_from(&OctetString::new(auth_safe).ok()?).ok()?,
        },
        mac_data: Some(MacData {
            mac: DigestInfo {
                algorithm: AlgorithmIdentifierOwned {
                    oid: SHA1,
                    parameters: None,
                },
                digest: OctetString::new(digest).ok()?,
            },
            mac_salt: OctetString::new(&salt[..]).ok()?,
            iterations: 1,
        }),
    }
    .to_der()
    .ok()
}

/// The authenticated safe of a PFX (for seeds of mode 2).
pub fn auth_safe_of(pfx_der: &[u8]) -> Option<Vec<u8>> {
    use der::Decode as _;
    let pfx = pkcs12::pfx::Pfx::from_der(pfx_der).ok()?;
    let data = pfx.auth_safe.content.decode_as::<OctetString>().ok()?;
    Some(data.as_bytes().to_vec())
}
