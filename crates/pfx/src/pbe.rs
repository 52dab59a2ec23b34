//! The cryptography of a PFX: the password's two encodings, the integrity MAC, and the bag
//! ciphers (PKCS#12 PBEs with 3DES / RC2, and PBES2 = PBKDF2 + a CBC cipher).

use crate::{MAX_ITERATIONS, Pkcs12Error, malformed, oid};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyIvInit};
use der::Sequence;
use der::asn1::{Any, ObjectIdentifier, OctetString};
use hmac::digest::block_api::BlockSizeUser;
use hmac::digest::{FixedOutputReset, OutputSizeUser};
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::{Pbes2Params, Pkcs12PbeParams};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

/// The encodings of the empty password the PKCS#12 KDF is tried with, in order: zero-length
/// (Key Vault, Windows and Java write this) and the terminated empty BMP string (OpenSSL and Go).
const EMPTY_PASSWORD_FORMS: [&[u8]; 2] = [&[], &[0, 0]];

/// What the algorithms of one PFX take as password, settled once the MAC has verified.
pub(crate) struct Password<'a> {
    /// For the PKCS#12 KDF (the MAC and the PKCS#12 PBEs): UTF-16BE with a NUL terminator, or
    /// whichever form of the empty password the MAC verified with.
    pub(crate) bmp: &'a [u8],
    /// For PBKDF2 (PBES2): the password's UTF-8 bytes, no terminator (RFC 8018; OpenSSL passes
    /// the same bytes).
    pub(crate) utf8: &'a [u8],
}

/// The PKCS#12 KDF forms to try `password` in: both empty forms for "", else its BMP encoding.
pub(crate) fn kdf_forms(password: &str) -> Vec<Zeroizing<Vec<u8>>> {
    if password.is_empty() {
        return EMPTY_PASSWORD_FORMS
            .iter()
            .map(|f| Zeroizing::new(f.to_vec()))
            .collect();
    }
    let mut bmp: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    bmp.extend_from_slice(&[0, 0]);
    vec![Zeroizing::new(bmp)]
}

pub(crate) fn check_iterations(n: i64) -> Result<(), Pkcs12Error> {
    if n < 1 {
        return Err(Pkcs12Error::Malformed {
            what: "iteration count",
            reason: format!("{n} (must be at least 1)"),
        });
    }
    if n > i64::from(MAX_ITERATIONS) {
        return Err(Pkcs12Error::TooLarge("iteration count above 600000"));
    }
    Ok(())
}

// === MAC (RFC 7292 section 5 and appendix B) ===

/// The digest of a PFX's HMAC; the MAC key comes from the PKCS#12 KDF with the same digest.
#[derive(Clone, Copy)]
pub(crate) enum MacDigest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl MacDigest {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Result<Self, Pkcs12Error> {
        Ok(match *oid {
            oid::SHA1 => Self::Sha1,
            oid::SHA256 => Self::Sha256,
            oid::SHA384 => Self::Sha384,
            oid::SHA512 => Self::Sha512,
            other => {
                return Err(Pkcs12Error::Unsupported {
                    what: "MAC",
                    oid: other.to_string(),
                    supported: "HMAC with SHA-1, SHA-256, SHA-384 or SHA-512",
                });
            }
        })
    }
}

/// Whether the MAC over `data` is `want` for the KDF password form `password` (compared in
/// constant time).
pub(crate) fn mac_matches(
    digest: MacDigest,
    password: &[u8],
    salt: &[u8],
    iterations: i32,
    data: &[u8],
    want: &[u8],
) -> bool {
    fn check<D: MacHash>(pw: &[u8], salt: &[u8], n: i32, data: &[u8], want: &[u8]) -> bool {
        keyed_hmac::<D>(pw, salt, n, data).is_some_and(|m| m.verify_slice(want).is_ok())
    }
    match digest {
        MacDigest::Sha1 => check::<Sha1>(password, salt, iterations, data, want),
        MacDigest::Sha256 => check::<Sha256>(password, salt, iterations, data, want),
        MacDigest::Sha384 => check::<Sha384>(password, salt, iterations, data, want),
        MacDigest::Sha512 => check::<Sha512>(password, salt, iterations, data, want),
    }
}

/// The HMAC-SHA1 of `data` keyed by the PKCS#12 KDF (what Key Vault's PFX carry).
pub(crate) fn mac_sha1(
    password: &[u8],
    salt: &[u8],
    iterations: i32,
    data: &[u8],
) -> Result<Vec<u8>, Pkcs12Error> {
    let mac = keyed_hmac::<Sha1>(password, salt, iterations, data).ok_or(Pkcs12Error::Encode {
        what: "MAC",
        reason: "HMAC key setup failed".into(),
    })?;
    Ok(mac.finalize().into_bytes().to_vec())
}

/// A digest the PKCS#12 KDF and HMAC both take.
trait MacHash: EagerHash + FixedOutputReset + BlockSizeUser {}
impl<D: EagerHash + FixedOutputReset + BlockSizeUser> MacHash for D {}

/// The HMAC of `data`, keyed by the PKCS#12 KDF (ID 3, key as long as the digest's output).
fn keyed_hmac<D: MacHash>(
    password: &[u8],
    salt: &[u8],
    iterations: i32,
    data: &[u8],
) -> Option<Hmac<D>> {
    let len = <D as OutputSizeUser>::output_size();
    let key = Zeroizing::new(derive_key::<D>(
        password,
        salt,
        Pkcs12KeyType::Mac,
        iterations,
        len,
    ));
    let mac = <Hmac<D> as KeyInit>::new_from_slice(&key).ok()?;
    Some(mac.chain_update(data))
}

// === bag decryption ===

/// Decrypts one encrypted bag or safe with the algorithm `alg` names.
pub(crate) fn decrypt(
    alg: &AlgorithmIdentifierOwned,
    password: &Password<'_>,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let params = alg.parameters.as_ref().ok_or(Pkcs12Error::Malformed {
        what: "encryption parameters",
        reason: "missing".into(),
    })?;
    let cipher = match alg.oid {
        oid::PBE_SHA1_3DES => Pkcs12Cipher::TripleDes,
        oid::PBE_SHA1_RC2_40 => Pkcs12Cipher::Rc2 {
            key_len: 5,
            bits: 40,
        },
        oid::PBE_SHA1_RC2_128 => Pkcs12Cipher::Rc2 {
            key_len: 16,
            bits: 128,
        },
        oid::PBES2 => return pbes2_decrypt(params, password.utf8, ciphertext),
        other => {
            return Err(Pkcs12Error::Unsupported {
                what: "encryption",
                oid: other.to_string(),
                supported: "pbeWithSHAAnd3-KeyTripleDES-CBC, pbeWithSHAAnd40BitRC2-CBC, \
                            pbeWithSHAAnd128BitRC2-CBC, PBES2 (PBKDF2 with AES-CBC or 3DES-CBC)",
            });
        }
    };
    let p = params
        .decode_as::<Pkcs12PbeParams>()
        .map_err(malformed("PBE parameters"))?;
    check_iterations(p.iterations.into())?;
    pkcs12_pbe_decrypt(
        cipher,
        password.bmp,
        p.salt.as_bytes(),
        p.iterations,
        ciphertext,
    )
}

#[derive(Clone, Copy)]
enum Pkcs12Cipher {
    TripleDes,
    Rc2 { key_len: usize, bits: usize },
}

fn pkcs12_key_iv(
    password: &[u8],
    salt: &[u8],
    iterations: i32,
    key_len: usize,
) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let derive =
        |kind, len| Zeroizing::new(derive_key::<Sha1>(password, salt, kind, iterations, len));
    (
        derive(Pkcs12KeyType::EncryptionKey, key_len),
        derive(Pkcs12KeyType::Iv, 8),
    )
}

fn pkcs12_pbe_decrypt(
    cipher: Pkcs12Cipher,
    password: &[u8],
    salt: &[u8],
    iterations: i32,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    // 3DES and RC2 have 8-byte blocks.
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(8) {
        return Err(Pkcs12Error::Decrypt);
    }
    let out = match cipher {
        Pkcs12Cipher::TripleDes => {
            let (key, iv) = pkcs12_key_iv(password, salt, iterations, 24);
            cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                .map_err(|_| Pkcs12Error::Decrypt)?
                .decrypt_padded_vec::<Pkcs7>(ciphertext)
        }
        Pkcs12Cipher::Rc2 { key_len, bits } => {
            let (key, iv) = pkcs12_key_iv(password, salt, iterations, key_len);
            let rc2 = rc2::Rc2::new_with_eff_key_len(&key, bits);
            let iv = cbc::cipher::Iv::<cbc::Decryptor<rc2::Rc2>>::try_from(iv.as_slice())
                .map_err(|_| Pkcs12Error::Decrypt)?;
            cbc::Decryptor::<rc2::Rc2>::inner_iv_init(rc2, &iv)
                .decrypt_padded_vec::<Pkcs7>(ciphertext)
        }
    };
    out.map(Zeroizing::new).map_err(|_| Pkcs12Error::Decrypt)
}

/// `PBKDF2-params` (RFC 8018 appendix A.2). The PRF is `DEFAULT hmacWithSHA1`, so DER leaves it
/// out for SHA-1; `pkcs12::pbe_params::Pbkdf2Params` (0.2.0-pre.0) requires it and would refuse
/// such files, hence this copy with the PRF optional.
#[derive(Sequence)]
struct Pbkdf2Params {
    salt: OctetString,
    iteration_count: u32,
    key_length: Option<u16>,
    prf: Option<AlgorithmIdentifierOwned>,
}

#[derive(Clone, Copy)]
enum Prf {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Clone, Copy)]
enum CbcCipher {
    Aes128,
    Aes192,
    Aes256,
    TripleDes,
}

impl CbcCipher {
    fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes192 | Self::TripleDes => 24,
            Self::Aes256 => 32,
        }
    }
    fn block_len(self) -> usize {
        match self {
            Self::TripleDes => 8,
            _ => 16,
        }
    }
}

fn pbes2_decrypt(
    params: &Any,
    password: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let p = params
        .decode_as::<Pbes2Params>()
        .map_err(malformed("PBES2 parameters"))?;
    if p.kdf.oid != oid::PBKDF2 {
        return Err(Pkcs12Error::Unsupported {
            what: "PBES2 key derivation",
            oid: p.kdf.oid.to_string(),
            supported: "PBKDF2",
        });
    }
    let kdf = p
        .kdf
        .parameters
        .as_ref()
        .ok_or(Pkcs12Error::Malformed {
            what: "PBKDF2 parameters",
            reason: "missing".into(),
        })?
        .decode_as::<Pbkdf2Params>()
        .map_err(malformed("PBKDF2 parameters"))?;
    check_iterations(kdf.iteration_count.into())?;
    let prf = match kdf.prf.as_ref().map(|a| a.oid) {
        None | Some(oid::HMAC_SHA1) => Prf::Sha1,
        Some(oid::HMAC_SHA256) => Prf::Sha256,
        Some(oid::HMAC_SHA384) => Prf::Sha384,
        Some(oid::HMAC_SHA512) => Prf::Sha512,
        Some(other) => {
            return Err(Pkcs12Error::Unsupported {
                what: "PBKDF2 PRF",
                oid: other.to_string(),
                supported: "hmacWithSHA1, hmacWithSHA256, hmacWithSHA384, hmacWithSHA512",
            });
        }
    };
    let cipher = match p.encryption.oid {
        oid::AES128_CBC => CbcCipher::Aes128,
        oid::AES192_CBC => CbcCipher::Aes192,
        oid::AES256_CBC => CbcCipher::Aes256,
        oid::DES_EDE3_CBC => CbcCipher::TripleDes,
        other => {
            return Err(Pkcs12Error::Unsupported {
                what: "PBES2 encryption",
                oid: other.to_string(),
                supported: "AES-128-CBC, AES-192-CBC, AES-256-CBC, DES-EDE3-CBC",
            });
        }
    };
    if let Some(n) = kdf.key_length
        && usize::from(n) != cipher.key_len()
    {
        return Err(Pkcs12Error::Malformed {
            what: "PBKDF2 parameters",
            reason: format!("key length {n} does not fit the cipher"),
        });
    }
    let iv = p
        .encryption
        .parameters
        .as_ref()
        .ok_or(Pkcs12Error::Malformed {
            what: "PBES2 encryption parameters",
            reason: "no IV".into(),
        })?
        .decode_as::<OctetString>()
        .map_err(malformed("PBES2 encryption parameters"))?;
    let iv = iv.as_bytes();
    if iv.len() != cipher.block_len() {
        return Err(Pkcs12Error::Malformed {
            what: "PBES2 encryption parameters",
            reason: format!("IV of {} bytes", iv.len()),
        });
    }
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(cipher.block_len()) {
        return Err(Pkcs12Error::Decrypt);
    }

    let mut key = Zeroizing::new(vec![0u8; cipher.key_len()]);
    let salt = kdf.salt.as_bytes();
    let rounds = kdf.iteration_count;
    match prf {
        Prf::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, rounds, &mut key),
        Prf::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, rounds, &mut key),
        Prf::Sha384 => pbkdf2::pbkdf2_hmac::<Sha384>(password, salt, rounds, &mut key),
        Prf::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, rounds, &mut key),
    }
    fn cbc_decrypt<C>(key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>>
    where
        cbc::Decryptor<C>: KeyIvInit + BlockModeDecrypt,
        C: cbc::cipher::BlockCipherDecrypt,
    {
        cbc::Decryptor::<C>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
            .ok()
    }
    let plain = match cipher {
        CbcCipher::Aes128 => cbc_decrypt::<aes::Aes128>(&key, iv, ciphertext),
        CbcCipher::Aes192 => cbc_decrypt::<aes::Aes192>(&key, iv, ciphertext),
        CbcCipher::Aes256 => cbc_decrypt::<aes::Aes256>(&key, iv, ciphertext),
        CbcCipher::TripleDes => cbc_decrypt::<des::TdesEde3>(&key, iv, ciphertext),
    };
    plain.map(Zeroizing::new).ok_or(Pkcs12Error::Decrypt)
}

// === encryption (the writer's one algorithm) ===

/// pbeWithSHAAnd3-KeyTripleDES-CBC encryption, as Key Vault encrypts both of its safes.
pub(crate) fn pkcs12_3des_encrypt(
    password: &[u8],
    salt: &[u8],
    iterations: i32,
    plain: &[u8],
) -> Result<Vec<u8>, Pkcs12Error> {
    let (key, iv) = pkcs12_key_iv(password, salt, iterations, 24);
    let enc = cbc::Encryptor::<des::TdesEde3>::new_from_slices(&key, &iv).map_err(|_| {
        Pkcs12Error::Encode {
            what: "3DES encryption",
            reason: "key setup failed".into(),
        }
    })?;
    Ok(enc.encrypt_padded_vec::<Pkcs7>(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pbes2_params(prf: Option<ObjectIdentifier>, enc: ObjectIdentifier, iv: &[u8]) -> Any {
        let kdf = Pbkdf2Params {
            salt: OctetString::new(&b"saltsalt"[..]).expect("salt"),
            iteration_count: 1000,
            key_length: None,
            prf: prf.map(|oid| AlgorithmIdentifierOwned {
                oid,
                parameters: Some(Any::null()),
            }),
        };
        let params = Pbes2Params {
            kdf: AlgorithmIdentifierOwned {
                oid: oid::PBKDF2,
                parameters: Some(Any::encode_from(&kdf).expect("kdf")),
            },
            encryption: AlgorithmIdentifierOwned {
                oid: enc,
                parameters: Some(Any::encode_from(&OctetString::new(iv).expect("iv")).expect("iv")),
            },
        };
        Any::encode_from(&params).expect("params")
    }

    /// OpenSSL's `pkcs12 -export` always names the PRF; .NET and `openssl pkcs8 -v2prf
    /// hmacWithSHA1` leave the SHA-1 default out. Both parse, and give the same key.
    #[test]
    fn pbes2_prf_defaults_to_hmac_sha1() {
        let iv = [7u8; 16];
        let mut key = [0u8; 16];
        pbkdf2::pbkdf2_hmac::<Sha1>(b"pw", b"saltsalt", 1000, &mut key);
        let ct = cbc::Encryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .expect("key")
            .encrypt_padded_vec::<Pkcs7>(b"plain text");
        for prf in [None, Some(oid::HMAC_SHA1)] {
            let params = pbes2_params(prf, oid::AES128_CBC, &iv);
            let plain = pbes2_decrypt(&params, b"pw", &ct).expect("decrypts");
            assert_eq!(plain.as_slice(), b"plain text");
        }
        // Why the local PBKDF2-params: the pre-release crate's type cannot read the default.
        let no_prf = pbes2_params(None, oid::AES128_CBC, &iv).decode_as::<Pbes2Params>();
        let kdf = no_prf
            .expect("PBES2 params")
            .kdf
            .parameters
            .expect("PBKDF2 params");
        assert!(kdf.decode_as::<pkcs12::pbe_params::Pbkdf2Params>().is_err());
        let params = pbes2_params(Some(oid::HMAC_SHA256), oid::AES128_CBC, &iv);
        assert_eq!(
            pbes2_decrypt(&params, b"pw", &ct).map(|_| ()),
            Err(Pkcs12Error::Decrypt)
        );
    }

    #[test]
    fn pbes2_checks_the_iv_and_the_cipher() {
        let params = pbes2_params(None, oid::AES256_CBC, &[0u8; 8]);
        assert!(matches!(
            pbes2_decrypt(&params, b"pw", &[0u8; 16]),
            Err(Pkcs12Error::Malformed { .. })
        ));
        let params = pbes2_params(None, oid::SHA1, &[0u8; 16]);
        assert!(matches!(
            pbes2_decrypt(&params, b"pw", &[0u8; 16]),
            Err(Pkcs12Error::Unsupported { .. })
        ));
    }

    #[test]
    fn non_empty_passwords_are_bmp_with_a_terminator() {
        let forms = kdf_forms("aé");
        assert_eq!(forms.len(), 1);
        assert_eq!(forms[0].as_slice(), &[0, b'a', 0, 0xe9, 0, 0]);
        let empty = kdf_forms("");
        assert_eq!(empty.len(), 2);
        assert!(empty[0].is_empty());
        assert_eq!(empty[1].as_slice(), &[0, 0]);
    }
}
