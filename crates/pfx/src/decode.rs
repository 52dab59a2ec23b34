//! The reader: PFX → keys and certificates, after the MAC has verified with the password.

use crate::pbe::{self, MacDigest, Password};
use crate::{Decoded, MAX_BAGS, MAX_PFX_BYTES, Pkcs12Error, Pkcs12Item, malformed, oid};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::Decode;
use der::asn1::OctetString;
use pkcs12::CertBag;
use pkcs12::pbe_params::EncryptedPrivateKeyInfo;
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::{SafeBag, SafeContents};
use zeroize::Zeroizing;

/// Decodes a PFX with the empty password into its keys and certificates, in bag order.
///
/// The empty password is tried as zero-length (Key Vault's form) and then as the terminated empty
/// BMP string (OpenSSL's and Go's).
pub fn decode(pfx_der: &[u8]) -> Result<Vec<Pkcs12Item>, Pkcs12Error> {
    decode_with_password(pfx_der, "")
}

/// Decodes a PFX with the empty password into its keys and its certificates.
pub fn decode_split(pfx_der: &[u8]) -> Result<Decoded, Pkcs12Error> {
    decode_split_with_password(pfx_der, "")
}

/// Decodes a PFX with `password` into its keys and its certificates.
pub fn decode_split_with_password(pfx_der: &[u8], password: &str) -> Result<Decoded, Pkcs12Error> {
    let mut out = Decoded::default();
    for item in decode_with_password(pfx_der, password)? {
        match item {
            Pkcs12Item::Key(k) => out.keys.push(k),
            Pkcs12Item::Cert(c) => out.certs.push(c),
        }
    }
    Ok(out)
}

/// Decodes a PFX with `password` into its keys and certificates, in bag order.
///
/// `""` means the empty password in either of its encodings (see [`decode`]). Any other password
/// is UTF-16BE with a NUL terminator for the MAC and the PKCS#12 PBEs, and its UTF-8 bytes for
/// PBES2, as RFC 7292 / RFC 8018 say and OpenSSL does.
pub fn decode_with_password(
    pfx_der: &[u8],
    password: &str,
) -> Result<Vec<Pkcs12Item>, Pkcs12Error> {
    if pfx_der.len() > MAX_PFX_BYTES {
        return Err(Pkcs12Error::TooLarge("PFX larger than 1 MiB"));
    }
    let pfx = Pfx::from_der(pfx_der).map_err(malformed("PFX"))?;
    if pfx.auth_safe.content_type != oid::DATA {
        return Err(Pkcs12Error::Unsupported {
            what: "authenticated safe",
            oid: pfx.auth_safe.content_type.to_string(),
            supported: "password integrity (data); public-key integrity (signedData) is not read",
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
        reason: "it has no MAC; only PFX with a password integrity MAC are read".into(),
    })?;
    let digest = MacDigest::from_oid(&mac.mac.algorithm.oid)?;
    pbe::check_iterations(mac.iterations.into())?;
    let forms = pbe::kdf_forms(password);
    let bmp = forms
        .iter()
        .find(|pw| {
            pbe::mac_matches(
                digest,
                pw,
                mac.mac_salt.as_bytes(),
                mac.iterations,
                data,
                mac.mac.digest.as_bytes(),
            )
        })
        .ok_or(Pkcs12Error::BadPassword)?;
    let password = Password {
        bmp,
        utf8: password.as_bytes(),
    };

    let infos: Vec<ContentInfo> = Vec::from_der(data).map_err(malformed("authenticated safe"))?;
    let mut items = Vec::new();
    let mut bags_seen = 0usize;
    for info in infos {
        let contents: Zeroizing<Vec<u8>> = if info.content_type == oid::DATA {
            let o = info
                .content
                .decode_as::<OctetString>()
                .map_err(malformed("data content"))?;
            Zeroizing::new(o.as_bytes().to_vec())
        } else if info.content_type == oid::ENCRYPTED_DATA {
            let ed = info
                .content
                .decode_as::<EncryptedData>()
                .map_err(malformed("encrypted data"))?;
            let eci = ed.enc_content_info;
            let ct = eci.encrypted_content.ok_or(Pkcs12Error::Malformed {
                what: "encrypted data",
                reason: "no encrypted content".into(),
            })?;
            pbe::decrypt(&eci.content_enc_alg, &password, ct.as_bytes())?
        } else {
            return Err(Pkcs12Error::Unsupported {
                what: "safe contents",
                oid: info.content_type.to_string(),
                supported: "data and encryptedData (password privacy); envelopedData is not read",
            });
        };
        let bags: SafeContents = Vec::from_der(&contents).map_err(malformed("safe contents"))?;
        for bag in bags {
            bags_seen += 1;
            if bags_seen > MAX_BAGS {
                return Err(Pkcs12Error::TooLarge("more than 256 bags"));
            }
            if let Some(item) = read_bag(&bag, &password)? {
                items.push(item);
            }
        }
    }
    Ok(items)
}

/// The bag value without its `[0] EXPLICIT` wrapper.
///
/// `pkcs12` 0.2.0-pre.0 decodes `bag_value` *with* the wrapper but encodes it by adding one, so
/// the reader unwraps here and the writer hands it the bare value.
fn bag_inner(bag: &SafeBag) -> Result<Vec<u8>, Pkcs12Error> {
    let any = der::Any::from_der(&bag.bag_value).map_err(malformed("safe bag"))?;
    Ok(any.value().to_vec())
}

fn read_bag(bag: &SafeBag, password: &Password<'_>) -> Result<Option<Pkcs12Item>, Pkcs12Error> {
    match bag.bag_id {
        oid::CERT_BAG => {
            let cb = CertBag::from_der(&bag_inner(bag)?).map_err(malformed("certificate bag"))?;
            if cb.cert_id != oid::X509_CERT {
                return Ok(None);
            }
            Ok(Some(Pkcs12Item::Cert(cb.cert_value.as_bytes().to_vec())))
        }
        oid::SHROUDED_KEY_BAG => {
            let inner = bag_inner(bag)?;
            let epki =
                EncryptedPrivateKeyInfo::from_der(&inner).map_err(malformed("shrouded key bag"))?;
            let key = pbe::decrypt(
                &epki.encryption_algorithm,
                password,
                epki.encrypted_data.as_bytes(),
            )?;
            Ok(Some(Pkcs12Item::Key(key)))
        }
        oid::KEY_BAG => Ok(Some(Pkcs12Item::Key(Zeroizing::new(bag_inner(bag)?)))),
        // CRL, secret and nested bags carry nothing a key/certificate consumer needs.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;
    use der::asn1::Any;
    use pkcs12::{DigestInfo, MacData};
    use x509_cert::spki::AlgorithmIdentifierOwned;

    /// A PFX around `auth_safe` whose MAC verifies with the zero-length password.
    fn with_valid_mac(auth_safe: &[u8]) -> Vec<u8> {
        let salt = [7u8; 20];
        let mac = pbe::mac_sha1(&[], &salt, 1, auth_safe).expect("MAC");
        Pfx {
            version: pkcs12::pfx::Version::V3,
            auth_safe: ContentInfo {
                content_type: oid::DATA,
                content: Any::encode_from(&OctetString::new(auth_safe).expect("octets"))
                    .expect("any"),
            },
            mac_data: Some(MacData {
                mac: DigestInfo {
                    algorithm: AlgorithmIdentifierOwned {
                        oid: oid::SHA1,
                        parameters: None,
                    },
                    digest: OctetString::new(mac).expect("digest"),
                },
                mac_salt: OctetString::new(&salt[..]).expect("salt"),
                iterations: 1,
            }),
        }
        .to_der()
        .expect("PFX")
    }

    fn auth_safe_of(pfx_der: &[u8]) -> Vec<u8> {
        let pfx = Pfx::from_der(pfx_der).expect("PFX");
        let data = pfx.auth_safe.content.decode_as::<OctetString>();
        data.expect("data").as_bytes().to_vec()
    }

    /// Random mutations mostly die at the MAC; these get past it, into the bag structures, the
    /// PBE parameters (3DES and PBES2) and the decryption.
    #[test]
    fn mutations_behind_a_valid_mac_are_errors_never_panics() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let cert = std::fs::read(format!("{fixtures}cert.der")).expect("cert");
        let key_vault =
            crate::encode_keyvault(&[0x30, 0x03, 0x02, 0x01, 0x00], &[cert], "n").expect("encodes");
        let pbes2 = std::fs::read(format!("{fixtures}pbes2-empty-password.pfx")).expect("pbes2");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        for original in [auth_safe_of(&key_vault), auth_safe_of(&pbes2)] {
            // Unmutated, both read (PBES2 with the empty password gets zero bytes either way).
            assert!(decode(&with_valid_mac(&original)).is_ok());
            for _ in 0..150 {
                let mut m = original.clone();
                for _ in 0..=next() % 3 {
                    let i = next() % m.len();
                    m[i] = next() as u8;
                }
                let _ = decode(&with_valid_mac(&m));
            }
        }
    }
}
