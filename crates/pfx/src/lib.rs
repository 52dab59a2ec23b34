//! A PKCS#12 (PFX) reader for what Key Vault returns for certificate-backed secrets, shared by the
//! Azure provider (PFX → PEM) and the driver (`kubernetes.io/tls` sync from a PFX object).
//!
//! Why by hand: Key Vault's PFX uses pbeWithSHA1And3-KeyTripleDES-CBC (older ones RC2-40 for the
//! certificate bag), a SHA-1 MAC and the *zero-length* password without the BMP NUL terminator.
//! The high-level crates always append the terminator and fail the MAC (p12-keystore, p12), so
//! this module uses the RustCrypto `pkcs12` ASN.1 types and KDF and does the small rest itself:
//! MAC check (SHA-1, or SHA-256 as OpenSSL 3 writes; zero-length password first, then the terminated empty password, as Go does), PBE
//! decryption (3DES, RC2-40, RC2-128), bag walking. Every length, count and iteration number is
//! bounded; malformed input yields an error, never a panic.

use cbc::cipher::{BlockModeDecrypt, InnerIvInit, KeyIvInit, block_padding::Pkcs7};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use hmac::{Hmac, KeyInit, Mac};
use pkcs12::CertBag;
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::{SafeBag, SafeContents};
use sha1::Sha1;
use zeroize::Zeroizing;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_128: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.5");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const X509_CERT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");

/// Input larger than this is refused (Key Vault PFX are a few KiB).
const MAX_PFX_BYTES: usize = 1 << 20;
/// KDF iteration cap (Key Vault uses 2000; OpenSSL 2048): bounds CPU on hostile input.
const MAX_ITERATIONS: i32 = 600_000;
/// Bag count cap.
const MAX_BAGS: usize = 256;

/// Keys and certificates of a PFX, each list in bag order.
#[derive(Default)]
pub struct Decoded {
    /// PKCS#8 `PrivateKeyInfo` DER, as stored.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// X.509 certificate DER.
    pub certs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Decoded {{ keys: <{} redacted>, certs: {} }}",
            self.keys.len(),
            self.certs.len()
        )
    }
}

/// Decodes a PFX with the empty password into its keys and its certificates.
pub fn decode_split(pfx_der: &[u8]) -> Result<Decoded, Pkcs12Error> {
    let mut out = Decoded::default();
    for item in decode(pfx_der)? {
        match item {
            Pkcs12Item::Key(k) => out.keys.push(k),
            Pkcs12Item::Cert(c) => out.certs.push(c),
        }
    }
    Ok(out)
}

/// One item of the PFX, in bag order.
pub enum Pkcs12Item {
    /// A PKCS#8 `PrivateKeyInfo` DER (as stored, attributes included).
    Key(Zeroizing<Vec<u8>>),
    /// An X.509 certificate DER.
    Cert(Vec<u8>),
}

impl std::fmt::Debug for Pkcs12Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(k) => write!(f, "Key(<{} bytes redacted>)", k.len()),
            Self::Cert(c) => write!(f, "Cert({} bytes)", c.len()),
        }
    }
}

/// Why a PFX could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Pkcs12Error {
    /// Not DER of a PFX (or of one of its parts).
    #[error("pkcs12: malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The MAC did not verify with the empty password.
    #[error("pkcs12: decryption password incorrect (only the empty password is supported)")]
    BadPassword,
    /// An algorithm this reader does not implement.
    #[error("pkcs12: unsupported {what} algorithm {oid}")]
    Unsupported {
        /// MAC / encryption.
        what: &'static str,
        /// The OID.
        oid: String,
    },
    /// A limit was exceeded.
    #[error("pkcs12: {0}")]
    TooLarge(&'static str),
    /// Decryption produced bad padding.
    #[error("pkcs12: decryption failed (bad padding)")]
    Decrypt,
}

fn malformed(what: &'static str) -> impl Fn(der::Error) -> Pkcs12Error {
    move |e| Pkcs12Error::Malformed {
        what,
        reason: e.to_string(),
    }
}

/// Decodes a PFX with the empty password into its keys and certificates, in bag order.
pub fn decode(pfx_der: &[u8]) -> Result<Vec<Pkcs12Item>, Pkcs12Error> {
    if pfx_der.len() > MAX_PFX_BYTES {
        return Err(Pkcs12Error::TooLarge("PFX larger than 1 MiB"));
    }
    let pfx = Pfx::from_der(pfx_der).map_err(malformed("PFX"))?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(Pkcs12Error::Unsupported {
            what: "authenticated safe (public-key integrity)",
            oid: pfx.auth_safe.content_type.to_string(),
        });
    }
    let auth_safe_bytes = pfx
        .auth_safe
        .content
        .decode_as::<OctetString>()
        .map_err(malformed("authenticated safe"))?;
    let data = auth_safe_bytes.as_bytes();
    let mac = pfx.mac_data.as_ref().ok_or(Pkcs12Error::Malformed {
        what: "PFX",
        reason: "no MAC".into(),
    })?;
    let alg = mac.mac.algorithm.oid;
    if alg != ID_SHA1 && alg != ID_SHA256 {
        return Err(Pkcs12Error::Unsupported {
            what: "MAC",
            oid: alg.to_string(),
        });
    }
    check_iterations(mac.iterations)?;
    // Zero-length password first (what Key Vault and Java use), then the BMP-terminated empty
    // password (what OpenSSL/Go write for "").
    let candidates: [&[u8]; 2] = [&[], &[0, 0]];
    let salt = mac.mac_salt.as_bytes();
    let want = mac.mac.digest.as_bytes();
    let password = candidates
        .into_iter()
        .find(|pw| {
            if alg == ID_SHA1 {
                let key = derive_key::<Sha1>(pw, salt, Pkcs12KeyType::Mac, mac.iterations, 20);
                <Hmac<Sha1> as KeyInit>::new_from_slice(&key)
                    .is_ok_and(|h| h.chain_update(data).verify_slice(want).is_ok())
            } else {
                let key =
                    derive_key::<sha2::Sha256>(pw, salt, Pkcs12KeyType::Mac, mac.iterations, 32);
                <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key)
                    .is_ok_and(|h| h.chain_update(data).verify_slice(want).is_ok())
            }
        })
        .ok_or(Pkcs12Error::BadPassword)?;

    let infos: Vec<ContentInfo> = Vec::from_der(data).map_err(malformed("authenticated safe"))?;
    let mut items = Vec::new();
    let mut bags_seen = 0usize;
    for info in infos {
        let contents: Zeroizing<Vec<u8>> = if info.content_type == ID_DATA {
            let o = info
                .content
                .decode_as::<OctetString>()
                .map_err(malformed("data content"))?;
            Zeroizing::new(o.as_bytes().to_vec())
        } else if info.content_type == ID_ENCRYPTED_DATA {
            let ed = info
                .content
                .decode_as::<EncryptedData>()
                .map_err(malformed("encrypted data"))?;
            let eci = ed.enc_content_info;
            let ct = eci.encrypted_content.ok_or(Pkcs12Error::Malformed {
                what: "encrypted data",
                reason: "no encrypted content".into(),
            })?;
            let params = eci
                .content_enc_alg
                .parameters
                .as_ref()
                .ok_or(Pkcs12Error::Malformed {
                    what: "encryption parameters",
                    reason: "missing".into(),
                })?
                .to_der()
                .map_err(malformed("encryption parameters"))?;
            pbe_decrypt(&eci.content_enc_alg.oid, &params, password, ct.as_bytes())?
        } else {
            // enveloped data etc.: not produced by Key Vault
            return Err(Pkcs12Error::Unsupported {
                what: "safe contents",
                oid: info.content_type.to_string(),
            });
        };
        let bags: SafeContents = Vec::from_der(&contents).map_err(malformed("safe contents"))?;
        for bag in bags {
            bags_seen += 1;
            if bags_seen > MAX_BAGS {
                return Err(Pkcs12Error::TooLarge("more than 256 bags"));
            }
            if let Some(item) = read_bag(&bag, password)? {
                items.push(item);
            }
        }
    }
    Ok(items)
}

fn check_iterations(n: i32) -> Result<(), Pkcs12Error> {
    if n < 1 {
        return Err(Pkcs12Error::Malformed {
            what: "iteration count",
            reason: format!("{n}"),
        });
    }
    if n > MAX_ITERATIONS {
        return Err(Pkcs12Error::TooLarge("iteration count above 600000"));
    }
    Ok(())
}

/// The bag value without its `[0] EXPLICIT` wrapper.
fn bag_inner(bag: &SafeBag) -> Result<Vec<u8>, Pkcs12Error> {
    let any = der::Any::from_der(&bag.bag_value).map_err(malformed("safe bag"))?;
    // `any` is the [0] context-specific wrapper; its value is the inner TLV.
    Ok(any.value().to_vec())
}

fn read_bag(bag: &SafeBag, password: &[u8]) -> Result<Option<Pkcs12Item>, Pkcs12Error> {
    if bag.bag_id == CERT_BAG {
        let cb = CertBag::from_der(&bag_inner(bag)?).map_err(malformed("certificate bag"))?;
        if cb.cert_id != X509_CERT {
            return Ok(None);
        }
        Ok(Some(Pkcs12Item::Cert(cb.cert_value.as_bytes().to_vec())))
    } else if bag.bag_id == SHROUDED_KEY_BAG {
        let inner = bag_inner(bag)?;
        let epki =
            EncryptedPrivateKeyInfo::from_der(&inner).map_err(malformed("shrouded key bag"))?;
        let params = epki
            .encryption_algorithm
            .parameters
            .as_ref()
            .ok_or(Pkcs12Error::Malformed {
                what: "key encryption parameters",
                reason: "missing".into(),
            })?
            .to_der()
            .map_err(malformed("key encryption parameters"))?;
        let key = pbe_decrypt(
            &epki.encryption_algorithm.oid,
            &params,
            password,
            epki.encrypted_data.as_bytes(),
        )?;
        Ok(Some(Pkcs12Item::Key(key)))
    } else if bag.bag_id == KEY_BAG {
        Ok(Some(Pkcs12Item::Key(Zeroizing::new(bag_inner(bag)?))))
    } else {
        // CRL, secret and nested bags are not used by Key Vault: skipped.
        Ok(None)
    }
}

fn pbe_decrypt(
    oid: &ObjectIdentifier,
    params_der: &[u8],
    password: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    if *oid == PBES2 {
        return Err(Pkcs12Error::Unsupported {
            what: "encryption (PBES2/AES; Key Vault PFX use 3DES)",
            oid: oid.to_string(),
        });
    }
    let (key_len, eff_bits) = if *oid == PBE_SHA1_3DES {
        (24, 0)
    } else if *oid == PBE_SHA1_RC2_40 {
        (5, 40)
    } else if *oid == PBE_SHA1_RC2_128 {
        (16, 128)
    } else {
        return Err(Pkcs12Error::Unsupported {
            what: "encryption",
            oid: oid.to_string(),
        });
    };
    let p = Pkcs12PbeParams::from_der(params_der).map_err(malformed("PBE parameters"))?;
    check_iterations(p.iterations)?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(8) {
        return Err(Pkcs12Error::Decrypt);
    }
    let salt = p.salt.as_bytes();
    let key = Zeroizing::new(derive_key::<Sha1>(
        password,
        salt,
        Pkcs12KeyType::EncryptionKey,
        p.iterations,
        key_len,
    ));
    let iv = derive_key::<Sha1>(password, salt, Pkcs12KeyType::Iv, p.iterations, 8);
    let out = if eff_bits == 0 {
        cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| Pkcs12Error::Decrypt)?
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
    } else {
        let cipher = rc2::Rc2::new_with_eff_key_len(&key, eff_bits);
        let iv_arr = cbc::cipher::Iv::<cbc::Decryptor<rc2::Rc2>>::try_from(iv.as_slice())
            .map_err(|_| Pkcs12Error::Decrypt)?;
        cbc::Decryptor::<rc2::Rc2>::inner_iv_init(cipher, &iv_arr)
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
    };
    out.map(Zeroizing::new).map_err(|_| Pkcs12Error::Decrypt)
}
