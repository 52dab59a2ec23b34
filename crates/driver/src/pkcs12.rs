//! Reading a PKCS#12 (PFX) file for `kubernetes.io/tls` sync, as upstream does when a mounted
//! object is not PEM: password empty, the legacy PBE schemes (pbeWithSHAAnd3-KeyTripleDES-CBC,
//! pbeWithSHAAnd40BitRC2-CBC / 128BitRC2) Key Vault and OpenSSL `-legacy` use, HMAC-SHA1/256 MAC.
//!
//! By hand on the RustCrypto `pkcs12` ASN.1 types because the high-level crates always encode
//! the empty password with a BMP NUL terminator, which fails the MAC of Key Vault's PFX (it uses a
//! zero-length password). Like Go, the terminated form is tried first, then the zero-length one.
//! Sizes, bag counts and KDF iterations are bounded; malformed input is an error, never a panic.

use cbc::cipher::{BlockModeDecrypt, InnerIvInit, KeyIvInit, block_padding::Pkcs7};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{AnyRef, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use hmac::{Hmac, KeyInit, Mac};
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::SafeContents;
use zeroize::Zeroizing;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const PBE_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_RC2_128: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.5");
const PBE_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const X509_CERT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");

const MAX_BYTES: usize = 1 << 20;
const MAX_ITERATIONS: i32 = 1_000_000;
const MAX_BAGS: usize = 256;

/// The empty password as Go tries it: BMP with terminator, then zero-length.
const PASSWORDS: [&[u8]; 2] = [&[0, 0], &[]];

/// Keys and certificates of a PFX, in bag order.
#[derive(Default)]
pub struct Decoded {
    /// PKCS#8 `PrivateKeyInfo` DER.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// X.509 certificate DER.
    pub certs: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("not a PKCS#12 file ({0})")]
    Malformed(&'static str),
    #[error("PKCS#12 MAC does not verify with the empty password")]
    Mac,
    #[error("PKCS#12 uses an unsupported {what} ({oid})")]
    Unsupported { what: &'static str, oid: String },
    #[error("PKCS#12 decryption failed")]
    Decrypt,
}

fn bad(what: &'static str) -> impl FnOnce(der::Error) -> Pkcs12Error {
    move |_| Pkcs12Error::Malformed(what)
}

/// Decode a PFX with the empty password.
pub fn decode(input: &[u8]) -> Result<Decoded, Pkcs12Error> {
    if input.len() > MAX_BYTES {
        return Err(Pkcs12Error::Malformed("larger than 1 MiB"));
    }
    let pfx = Pfx::from_der(input).map_err(bad("PFX structure"))?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(Pkcs12Error::Unsupported {
            what: "authSafe content type",
            oid: pfx.auth_safe.content_type.to_string(),
        });
    }
    let auth_safe = pfx
        .auth_safe
        .content
        .decode_as::<OctetString>()
        .map_err(bad("authSafe"))?;
    let auth_safe = auth_safe.as_bytes();
    let password = match &pfx.mac_data {
        None => PASSWORDS[0],
        Some(mac) => {
            let iterations = mac.iterations;
            check_iterations(iterations)?;
            let salt = mac.mac_salt.as_bytes();
            let want = mac.mac.digest.as_bytes();
            let alg = mac.mac.algorithm.oid;
            *PASSWORDS
                .iter()
                .find(|pw| {
                    if alg == ID_SHA1 {
                        let key =
                            derive_key::<sha1::Sha1>(pw, salt, Pkcs12KeyType::Mac, iterations, 20);
                        Hmac::<sha1::Sha1>::new_from_slice(&key)
                            .map(|m| m.chain_update(auth_safe).verify_slice(want).is_ok())
                            .unwrap_or(false)
                    } else if alg == ID_SHA256 {
                        let key = derive_key::<sha2::Sha256>(
                            pw,
                            salt,
                            Pkcs12KeyType::Mac,
                            iterations,
                            32,
                        );
                        Hmac::<sha2::Sha256>::new_from_slice(&key)
                            .map(|m| m.chain_update(auth_safe).verify_slice(want).is_ok())
                            .unwrap_or(false)
                    } else {
                        false
                    }
                })
                .ok_or(if alg == ID_SHA1 || alg == ID_SHA256 {
                    Pkcs12Error::Mac
                } else {
                    Pkcs12Error::Unsupported {
                        what: "MAC digest",
                        oid: alg.to_string(),
                    }
                })?
        }
    };

    let infos = Vec::<ContentInfo>::from_der(auth_safe).map_err(bad("authenticated safe"))?;
    let mut out = Decoded::default();
    let mut bags = 0usize;
    for info in infos {
        let contents: Zeroizing<Vec<u8>> = if info.content_type == ID_DATA {
            Zeroizing::new(
                info.content
                    .decode_as::<OctetString>()
                    .map_err(bad("data"))?
                    .into_bytes()
                    .into_vec(),
            )
        } else if info.content_type == ID_ENCRYPTED_DATA {
            let enc = info
                .content
                .decode_as::<EncryptedData>()
                .map_err(bad("encrypted data"))?;
            let eci = enc.enc_content_info;
            let params = eci
                .content_enc_alg
                .parameters
                .as_ref()
                .ok_or(Pkcs12Error::Malformed("PBE parameters"))?;
            let ciphertext = eci
                .encrypted_content
                .ok_or(Pkcs12Error::Malformed("encrypted content"))?;
            pbe_decrypt(
                &eci.content_enc_alg.oid,
                &params.to_der().map_err(bad("PBE parameters"))?,
                password,
                ciphertext.as_bytes(),
            )?
        } else {
            continue;
        };
        let safe = SafeContents::from_der(&contents).map_err(bad("safe contents"))?;
        for bag in safe {
            bags += 1;
            if bags > MAX_BAGS {
                return Err(Pkcs12Error::Malformed("too many bags"));
            }
            // bagValue is `[0] EXPLICIT`; its content is the bag's own DER.
            let inner = AnyRef::from_der(&bag.bag_value)
                .map_err(bad("bag value"))?
                .value();
            if bag.bag_id == CERT_BAG {
                let cert = pkcs12::CertBag::from_der(inner).map_err(bad("certificate bag"))?;
                if cert.cert_id == X509_CERT {
                    out.certs.push(cert.cert_value.into_bytes().into_vec());
                }
            } else if bag.bag_id == KEY_BAG {
                out.keys.push(Zeroizing::new(inner.to_vec()));
            } else if bag.bag_id == SHROUDED_KEY_BAG {
                let epki =
                    EncryptedPrivateKeyInfo::from_der(inner).map_err(bad("shrouded key bag"))?;
                let params = epki
                    .encryption_algorithm
                    .parameters
                    .as_ref()
                    .ok_or(Pkcs12Error::Malformed("PBE parameters"))?;
                out.keys.push(pbe_decrypt(
                    &epki.encryption_algorithm.oid,
                    &params.to_der().map_err(bad("PBE parameters"))?,
                    password,
                    epki.encrypted_data.as_bytes(),
                )?);
            }
        }
    }
    Ok(out)
}

fn check_iterations(n: i32) -> Result<(), Pkcs12Error> {
    if (1..=MAX_ITERATIONS).contains(&n) {
        Ok(())
    } else {
        Err(Pkcs12Error::Malformed("iteration count out of range"))
    }
}

fn pbe_decrypt(
    oid: &ObjectIdentifier,
    params: &[u8],
    password: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let (key_len, rc2_bits) = if *oid == PBE_3DES {
        (24, None)
    } else if *oid == PBE_RC2_40 {
        (5, Some(40))
    } else if *oid == PBE_RC2_128 {
        (16, Some(128))
    } else {
        return Err(Pkcs12Error::Unsupported {
            what: "encryption scheme",
            oid: oid.to_string(),
        });
    };
    let p = Pkcs12PbeParams::from_der(params).map_err(bad("PBE parameters"))?;
    check_iterations(p.iterations)?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(8) {
        return Err(Pkcs12Error::Decrypt);
    }
    let salt = p.salt.as_bytes();
    let key = Zeroizing::new(derive_key::<sha1::Sha1>(
        password,
        salt,
        Pkcs12KeyType::EncryptionKey,
        p.iterations,
        key_len,
    ));
    let iv = derive_key::<sha1::Sha1>(password, salt, Pkcs12KeyType::Iv, p.iterations, 8);
    let plain = match rc2_bits {
        None => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| Pkcs12Error::Decrypt)?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
        Some(bits) => {
            let cipher = rc2::Rc2::new_with_eff_key_len(&key, bits);
            let iv = cbc::cipher::Iv::<cbc::Decryptor<rc2::Rc2>>::try_from(iv.as_slice())
                .map_err(|_| Pkcs12Error::Decrypt)?;
            cbc::Decryptor::<rc2::Rc2>::inner_iv_init(cipher, &iv)
                .decrypt_padded_vec::<Pkcs7>(ciphertext)
        }
    };
    plain.map(Zeroizing::new).map_err(|_| Pkcs12Error::Decrypt)
}
