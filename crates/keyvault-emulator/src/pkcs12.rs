//! PKCS#12 (PFX) encoding the way Azure Key Vault produces it, and decoding of imported PFX files.
//!
//! Encoder (what a certificate's backing secret returns for `application/x-pkcs12`):
//! - authSafe = [ data{ pkcs8ShroudedKeyBag }, encryptedData{ certBag… } ]
//! - both encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC, 2000 iterations, 8-byte salt;
//! - MAC HMAC-SHA1, 2000 iterations, 20-byte salt;
//! - the password is the zero-length string *without* the BMP NUL terminator (Key Vault's choice;
//!   Go's x/crypto/pkcs12 retries with that form, OpenSSL tries it first).
//!
//! Decoder (import): DER PFX with plain, 3DES (PBES1) or PBES2 (PBKDF2 + AES-CBC) bags; MAC with
//! SHA-1 or SHA-256; the password in both BMP forms (with and without the NUL).

use crate::asn1::{self, CTX0, CTX0_PRIM, OCTET_STRING, SEQUENCE, SET};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use zeroize::Zeroizing;

const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const OID_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.1";
const OID_SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const OID_CERT_BAG: &str = "1.2.840.113549.1.12.10.1.3";
const OID_X509_CERT: &str = "1.2.840.113549.1.9.22.1";
const OID_PBE_SHA1_3DES: &str = "1.2.840.113549.1.12.1.3";
const OID_PBES2: &str = "1.2.840.113549.1.5.13";
const OID_PBKDF2: &str = "1.2.840.113549.1.5.12";
const OID_HMAC_SHA1: &str = "1.2.840.113549.2.7";
const OID_HMAC_SHA256: &str = "1.2.840.113549.2.9";
const OID_AES128_CBC: &str = "2.16.840.1.101.3.4.1.2";
const OID_AES256_CBC: &str = "2.16.840.1.101.3.4.1.42";
const OID_SHA1: &str = "1.3.14.3.2.26";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_LOCAL_KEY_ID: &str = "1.2.840.113549.1.9.21";
const OID_FRIENDLY_NAME: &str = "1.2.840.113549.1.9.20";
const OID_MS_CSP_NAME: &str = "1.3.6.1.4.1.311.17.1";

/// Iterations Key Vault uses for both the PBE and the MAC.
pub const ITERATIONS: u64 = 2000;
/// Upper bound on iterations accepted on import (a hostile file must not burn CPU forever).
const MAX_IMPORT_ITERATIONS: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("the PFX is not valid DER: {0}")]
    Der(&'static str),
    #[error("the PFX uses an unsupported algorithm ({0})")]
    Unsupported(&'static str),
    #[error("the PFX MAC does not verify with the given password")]
    BadMac,
    #[error("a PFX bag could not be decrypted with the given password")]
    BadPassword,
    #[error("the PFX holds no private key")]
    NoKey,
    #[error("the PFX holds no certificate")]
    NoCertificate,
}

impl From<asn1::DerError> for Pkcs12Error {
    fn from(e: asn1::DerError) -> Self {
        Pkcs12Error::Der(e.0)
    }
}

/// Key and certificates out of an imported PFX, in bag order.
pub struct Decoded {
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub certs: Vec<Vec<u8>>,
}

// === KDF (RFC 7292 appendix B) ===

/// The PKCS#12 key derivation for SHA-1 (u = 20, v = 64) or SHA-256 (u = 32, v = 64).
fn kdf<D: Digest + Default>(
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u64,
    len: usize,
) -> Zeroizing<Vec<u8>> {
    const V: usize = 64;
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let n = V * src.len().div_ceil(V);
        (0..n).map(|i| src[i % src.len()]).collect()
    };
    let mut i_buf = fill(salt);
    i_buf.extend_from_slice(&fill(password));
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    while out.len() < len {
        let mut h = D::default();
        h.update([id; V]);
        h.update(&i_buf);
        let mut a = h.finalize().to_vec();
        for _ in 1..iterations {
            a = D::digest(&a).to_vec();
        }
        let take = a.len().min(len - out.len());
        out.extend_from_slice(&a[..take]);
        if out.len() >= len {
            break;
        }
        let b: Vec<u8> = (0..V).map(|k| a[k % a.len()]).collect();
        for chunk in i_buf.chunks_mut(V) {
            // chunk = (chunk + b + 1) mod 2^(8V)
            let mut carry = 1u16;
            for k in (0..V).rev() {
                let sum = chunk[k] as u16 + b[k] as u16 + carry;
                chunk[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out
}

/// The BMP encoding of a password, with the NUL terminator (the usual form).
fn bmp_password(password: &str) -> Zeroizing<Vec<u8>> {
    let mut out: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    Zeroizing::new(out)
}

// === encoder ===

fn tdes_encrypt(password: &[u8], salt: &[u8], plain: &[u8]) -> Vec<u8> {
    let key = kdf::<Sha1>(password, salt, 1, ITERATIONS, 24);
    let iv = kdf::<Sha1>(password, salt, 2, ITERATIONS, 8);
    // Key and IV lengths are fixed above, so construction cannot fail.
    match cbc::Encryptor::<des::TdesEde3>::new_from_slices(&key, &iv) {
        Ok(enc) => enc.encrypt_padded_vec::<Pkcs7>(plain),
        Err(_) => Vec::new(),
    }
}

fn pbe_alg(salt: &[u8]) -> Vec<u8> {
    asn1::seq(&[
        &asn1::oid(OID_PBE_SHA1_3DES),
        &asn1::seq(&[&asn1::tlv(OCTET_STRING, salt), &asn1::int(ITERATIONS)]),
    ])
}

fn attribute(oid: &str, value: &[u8]) -> Vec<u8> {
    asn1::seq(&[&asn1::oid(oid), &asn1::tlv(SET, value)])
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Encodes a key and its certificate chain (leaf first) as Key Vault does, empty password.
pub fn encode_keyvault_pfx(key_pkcs8: &[u8], certs: &[Vec<u8>], friendly_name: &str) -> Vec<u8> {
    let password: &[u8] = &[]; // zero-length, no BMP NUL: Key Vault's encoding
    let local_key_id = asn1::tlv(OCTET_STRING, &[1, 0, 0, 0]);

    // Key: data{ SafeContents[ shroudedKeyBag ] }
    let key_salt = random_bytes::<8>();
    let enc_key = tdes_encrypt(password, &key_salt, key_pkcs8);
    let epki = asn1::seq(&[&pbe_alg(&key_salt), &asn1::tlv(OCTET_STRING, &enc_key)]);
    let key_attrs = asn1::tlv(
        SET,
        &[
            attribute(OID_LOCAL_KEY_ID, &local_key_id),
            attribute(OID_FRIENDLY_NAME, &asn1::bmp_string(friendly_name)),
            attribute(
                OID_MS_CSP_NAME,
                &asn1::bmp_string("Microsoft Enhanced RSA and AES Cryptographic Provider"),
            ),
        ]
        .concat(),
    );
    let key_bag = asn1::seq(&[
        &asn1::oid(OID_SHROUDED_KEY_BAG),
        &asn1::tlv(CTX0, &epki),
        &key_attrs,
    ]);
    let key_safe = asn1::seq(&[&key_bag]);
    let key_ci = asn1::seq(&[
        &asn1::oid(OID_DATA),
        &asn1::tlv(CTX0, &asn1::tlv(OCTET_STRING, &key_safe)),
    ]);

    // Certificates: encryptedData{ SafeContents[ certBag… ] }
    let cert_bags: Vec<u8> = certs
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let cert_bag = asn1::seq(&[
                &asn1::oid(OID_X509_CERT),
                &asn1::tlv(CTX0, &asn1::tlv(OCTET_STRING, der)),
            ]);
            let attrs = if i == 0 {
                asn1::tlv(SET, &attribute(OID_LOCAL_KEY_ID, &local_key_id))
            } else {
                Vec::new()
            };
            asn1::seq(&[
                &asn1::oid(OID_CERT_BAG),
                &asn1::tlv(CTX0, &cert_bag),
                &attrs,
            ])
        })
        .collect::<Vec<_>>()
        .concat();
    let cert_safe = asn1::seq(&[&cert_bags]);
    let cert_salt = random_bytes::<8>();
    let enc_certs = tdes_encrypt(password, &cert_salt, &cert_safe);
    let eci = asn1::seq(&[
        &asn1::oid(OID_DATA),
        &pbe_alg(&cert_salt),
        &asn1::tlv(CTX0_PRIM, &enc_certs),
    ]);
    let encrypted_data = asn1::seq(&[&asn1::int(0), &eci]);
    let cert_ci = asn1::seq(&[
        &asn1::oid(OID_ENCRYPTED_DATA),
        &asn1::tlv(CTX0, &encrypted_data),
    ]);

    let auth_safe = asn1::seq(&[&key_ci, &cert_ci]);

    // MAC over the authSafe contents.
    let mac_salt = random_bytes::<20>();
    let mac_key = kdf::<Sha1>(password, &mac_salt, 3, ITERATIONS, 20);
    let digest = match <Hmac<Sha1> as KeyInit>::new_from_slice(&mac_key) {
        Ok(mut m) => {
            m.update(&auth_safe);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    let mac_data = asn1::seq(&[
        &asn1::seq(&[
            &asn1::seq(&[&asn1::oid(OID_SHA1), &asn1::tlv(asn1::NULL, &[])]),
            &asn1::tlv(OCTET_STRING, &digest),
        ]),
        &asn1::tlv(OCTET_STRING, &mac_salt),
        &asn1::int(ITERATIONS),
    ]);

    asn1::seq(&[
        &asn1::int(3),
        &asn1::seq(&[
            &asn1::oid(OID_DATA),
            &asn1::tlv(CTX0, &asn1::tlv(OCTET_STRING, &auth_safe)),
        ]),
        &mac_data,
    ])
}

// === decoder ===

fn is_oid(t: &asn1::Tlv<'_>, dotted: &str) -> bool {
    t.tag == asn1::OID && t.content == asn1::oid_content(dotted).as_slice()
}

/// Decodes an imported PFX with `password` (empty string for none).
pub fn decode(pfx: &[u8], password: &str) -> Result<Decoded, Pkcs12Error> {
    let (pfx_content, _) = asn1::expect(pfx, SEQUENCE)?;
    let parts = asn1::children(pfx_content)?;
    let [_version, auth_safe_ci, rest @ ..] = parts.as_slice() else {
        return Err(asn1::DerError("PFX needs version and authSafe").into());
    };
    let ci = asn1::children(auth_safe_ci.content)?;
    let [ct, content, ..] = ci.as_slice() else {
        return Err(asn1::DerError("authSafe ContentInfo").into());
    };
    if !is_oid(ct, OID_DATA) || content.tag != CTX0 {
        return Err(Pkcs12Error::Unsupported(
            "authSafe must be plain data (no public-key integrity)",
        ));
    }
    let (auth_safe, _) = asn1::expect(content.content, OCTET_STRING)?;

    // Candidate password encodings: Key Vault's zero-length form and the NUL-terminated BMP form.
    let bmp = bmp_password(password);
    let candidates: Vec<&[u8]> = if password.is_empty() {
        vec![&[], &bmp[..]]
    } else {
        vec![&bmp[..]]
    };
    if let Some(mac) = rest.first() {
        verify_mac(mac.content, auth_safe, &candidates)?;
    }

    let mut key = None;
    let mut certs = Vec::new();
    for ci in asn1::children(asn1::expect(auth_safe, SEQUENCE)?.0)? {
        let fields = asn1::children(ci.content)?;
        let [ct, content, ..] = fields.as_slice() else {
            return Err(asn1::DerError("ContentInfo").into());
        };
        let safe_contents: Zeroizing<Vec<u8>> = if is_oid(ct, OID_DATA) {
            Zeroizing::new(asn1::expect(content.content, OCTET_STRING)?.0.to_vec())
        } else if is_oid(ct, OID_ENCRYPTED_DATA) {
            let (ed, _) = asn1::expect(content.content, SEQUENCE)?;
            let ed = asn1::children(ed)?;
            let eci = ed.get(1).ok_or(asn1::DerError("EncryptedData"))?;
            let eci = asn1::children(eci.content)?;
            let (Some(alg), Some(data)) = (eci.get(1), eci.get(2)) else {
                return Err(asn1::DerError("EncryptedContentInfo").into());
            };
            decrypt(alg.content, data.content, password, &candidates)?
        } else {
            return Err(Pkcs12Error::Unsupported(
                "enveloped (public-key) PFX content",
            ));
        };
        for bag in asn1::children(asn1::expect(&safe_contents, SEQUENCE)?.0)? {
            let f = asn1::children(bag.content)?;
            let [id, value, ..] = f.as_slice() else {
                return Err(asn1::DerError("SafeBag").into());
            };
            if is_oid(id, OID_KEY_BAG) && key.is_none() {
                key = Some(Zeroizing::new(value.content.to_vec()));
            } else if is_oid(id, OID_SHROUDED_KEY_BAG) && key.is_none() {
                let (epki, _) = asn1::expect(value.content, SEQUENCE)?;
                let epki = asn1::children(epki)?;
                let [alg, data] = epki.as_slice() else {
                    return Err(asn1::DerError("EncryptedPrivateKeyInfo").into());
                };
                key = Some(decrypt(alg.content, data.content, password, &candidates)?);
            } else if is_oid(id, OID_CERT_BAG) {
                let (cb, _) = asn1::expect(value.content, SEQUENCE)?;
                let cb = asn1::children(cb)?;
                let [cert_id, cert_value, ..] = cb.as_slice() else {
                    return Err(asn1::DerError("CertBag").into());
                };
                if is_oid(cert_id, OID_X509_CERT) {
                    let (der, _) = asn1::expect(cert_value.content, OCTET_STRING)?;
                    certs.push(der.to_vec());
                }
            }
        }
    }
    let key_pkcs8 = key.ok_or(Pkcs12Error::NoKey)?;
    if certs.is_empty() {
        return Err(Pkcs12Error::NoCertificate);
    }
    Ok(Decoded { key_pkcs8, certs })
}

fn verify_mac(mac_data: &[u8], auth_safe: &[u8], candidates: &[&[u8]]) -> Result<(), Pkcs12Error> {
    let f = asn1::children(mac_data)?;
    let [digest_info, salt, rest @ ..] = f.as_slice() else {
        return Err(asn1::DerError("MacData").into());
    };
    let iterations = match rest.first() {
        Some(t) => asn1::read_uint(t.content)?,
        None => 1,
    };
    if iterations == 0 || iterations > MAX_IMPORT_ITERATIONS {
        return Err(Pkcs12Error::Unsupported("MAC iteration count out of range"));
    }
    let di = asn1::children(digest_info.content)?;
    let [alg, digest] = di.as_slice() else {
        return Err(asn1::DerError("DigestInfo").into());
    };
    let alg = asn1::children(alg.content)?;
    let alg_oid = alg.first().ok_or(asn1::DerError("MAC algorithm"))?;
    for pw in candidates {
        let ok = if is_oid(alg_oid, OID_SHA1) {
            let key = kdf::<Sha1>(pw, salt.content, 3, iterations, 20);
            <Hmac<Sha1> as KeyInit>::new_from_slice(&key)
                .map(|mut m| {
                    m.update(auth_safe);
                    m.verify_slice(digest.content).is_ok()
                })
                .unwrap_or(false)
        } else if is_oid(alg_oid, OID_SHA256) {
            let key = kdf::<Sha256>(pw, salt.content, 3, iterations, 32);
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .map(|mut m| {
                    m.update(auth_safe);
                    m.verify_slice(digest.content).is_ok()
                })
                .unwrap_or(false)
        } else {
            return Err(Pkcs12Error::Unsupported(
                "MAC digest other than SHA-1/SHA-256",
            ));
        };
        if ok {
            return Ok(());
        }
    }
    Err(Pkcs12Error::BadMac)
}

fn decrypt(
    alg: &[u8],
    data: &[u8],
    password: &str,
    candidates: &[&[u8]],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let f = asn1::children(alg)?;
    let alg_oid = f.first().ok_or(asn1::DerError("AlgorithmIdentifier"))?;
    let params = f.get(1).ok_or(asn1::DerError("algorithm parameters"))?;
    if is_oid(alg_oid, OID_PBE_SHA1_3DES) {
        let p = asn1::children(params.content)?;
        let [salt, iter] = p.as_slice() else {
            return Err(asn1::DerError("PBE parameters").into());
        };
        let iterations = asn1::read_uint(iter.content)?;
        if iterations == 0 || iterations > MAX_IMPORT_ITERATIONS {
            return Err(Pkcs12Error::Unsupported("PBE iteration count out of range"));
        }
        for pw in candidates {
            let key = kdf::<Sha1>(pw, salt.content, 1, iterations, 24);
            let iv = kdf::<Sha1>(pw, salt.content, 2, iterations, 8);
            if let Ok(dec) = cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                && let Ok(plain) = dec.decrypt_padded_vec::<Pkcs7>(data)
            {
                return Ok(Zeroizing::new(plain));
            }
        }
        Err(Pkcs12Error::BadPassword)
    } else if is_oid(alg_oid, OID_PBES2) {
        let p = asn1::children(params.content)?;
        let [kdf_alg, enc_alg] = p.as_slice() else {
            return Err(asn1::DerError("PBES2 parameters").into());
        };
        let kdf_f = asn1::children(kdf_alg.content)?;
        let [kdf_oid, kdf_params] = kdf_f.as_slice() else {
            return Err(asn1::DerError("PBES2 KDF").into());
        };
        if !is_oid(kdf_oid, OID_PBKDF2) {
            return Err(Pkcs12Error::Unsupported(
                "PBES2 with a KDF other than PBKDF2",
            ));
        }
        let kp = asn1::children(kdf_params.content)?;
        let salt = kp.first().ok_or(asn1::DerError("PBKDF2 salt"))?;
        let iterations = asn1::read_uint(
            kp.get(1)
                .ok_or(asn1::DerError("PBKDF2 iterations"))?
                .content,
        )?;
        if iterations == 0 || iterations > MAX_IMPORT_ITERATIONS {
            return Err(Pkcs12Error::Unsupported(
                "PBKDF2 iteration count out of range",
            ));
        }
        let mut prf_sha256 = false;
        for extra in &kp[2..] {
            if extra.tag == SEQUENCE {
                let prf = asn1::children(extra.content)?;
                match prf.first() {
                    Some(o) if is_oid(o, OID_HMAC_SHA256) => prf_sha256 = true,
                    Some(o) if is_oid(o, OID_HMAC_SHA1) => prf_sha256 = false,
                    _ => {
                        return Err(Pkcs12Error::Unsupported(
                            "PBKDF2 PRF other than HMAC-SHA1/SHA-256",
                        ));
                    }
                }
            }
        }
        let ef = asn1::children(enc_alg.content)?;
        let [enc_oid, iv] = ef.as_slice() else {
            return Err(asn1::DerError("PBES2 encryption scheme").into());
        };
        let key_len = if is_oid(enc_oid, OID_AES256_CBC) {
            32
        } else if is_oid(enc_oid, OID_AES128_CBC) {
            16
        } else {
            return Err(Pkcs12Error::Unsupported(
                "PBES2 cipher other than AES-128/256-CBC",
            ));
        };
        let mut key = Zeroizing::new(vec![0u8; key_len]);
        let pw = password.as_bytes();
        let iterations =
            u32::try_from(iterations).map_err(|_| Pkcs12Error::Unsupported("iterations"))?;
        if prf_sha256 {
            pbkdf2::pbkdf2_hmac::<Sha256>(pw, salt.content, iterations, &mut key);
        } else {
            pbkdf2::pbkdf2_hmac::<Sha1>(pw, salt.content, iterations, &mut key);
        }
        let plain = if key_len == 32 {
            cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, iv.content)
                .ok()
                .and_then(|d| d.decrypt_padded_vec::<Pkcs7>(data).ok())
        } else {
            cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, iv.content)
                .ok()
                .and_then(|d| d.decrypt_padded_vec::<Pkcs7>(data).ok())
        };
        plain.map(Zeroizing::new).ok_or(Pkcs12Error::BadPassword)
    } else {
        Err(Pkcs12Error::Unsupported(
            "bag encryption other than 3DES (PBES1) or PBES2/AES",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_pfx_decodes_with_empty_password_only_in_keyvault_form() {
        let key = vec![0x30, 0x03, 0x02, 0x01, 0x00];
        let certs = vec![vec![0x30, 0x00], vec![0x30, 0x01, 0x05]];
        let pfx = encode_keyvault_pfx(&key, &certs, "name");
        let decoded = decode(&pfx, "").expect("decodes");
        assert_eq!(decoded.key_pkcs8.as_slice(), key.as_slice());
        assert_eq!(decoded.certs, certs);
        // The MAC must verify with the zero-length password, not the NUL-terminated one.
        let (content, _) = asn1::expect(&pfx, SEQUENCE).expect("seq");
        let parts = asn1::children(content).expect("parts");
        let ci = asn1::children(parts[1].content).expect("ci");
        let (auth_safe, _) = asn1::expect(ci[1].content, OCTET_STRING).expect("octets");
        verify_mac(parts[2].content, auth_safe, &[&[]]).expect("zero-length password verifies");
        assert!(matches!(
            verify_mac(parts[2].content, auth_safe, &[&[0, 0]]),
            Err(Pkcs12Error::BadMac)
        ));
        assert!(matches!(decode(&pfx, "wrong"), Err(Pkcs12Error::BadMac)));
    }

    #[test]
    fn mutated_pfx_never_panics() {
        let pfx = encode_keyvault_pfx(&[0x30, 0x03, 0x02, 0x01, 0x00], &[vec![0x30, 0x00]], "n");
        let mut rng = rand::rng();
        for _ in 0..300 {
            let mut m = pfx.clone();
            for _ in 0..(1 + rng.next_u32() % 4) {
                let i = (rng.next_u32() as usize) % m.len();
                m[i] = rng.next_u32() as u8;
            }
            if rng.next_u32().is_multiple_of(4) {
                m.truncate((rng.next_u32() as usize) % m.len());
            }
            let _ = decode(&m, "");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x03",
            b"not der at all",
            &[0x30, 0x82, 0xff, 0xff],
        ] {
            assert!(decode(input, "").is_err());
        }
    }
}
