//! The writer: a key and its chain as the PFX Key Vault returns for a certificate's secret.

use crate::pbe;
use crate::{MAX_BAGS, MAX_PFX_BYTES, Pkcs12Error, oid};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::encrypted_data::EncryptedData;
use cms::enveloped_data::EncryptedContentInfo;
use der::asn1::{Any, BmpString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Encode, EncodeValue, Tagged};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::pfx::{Pfx, Version};
use pkcs12::safe_bag::SafeBag;
use pkcs12::{CertBag, DigestInfo, MacData};
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// Key Vault's iteration count, for both PBEs and the MAC.
const ITERATIONS: i32 = 2000;
/// The key bag's Microsoft CSP name attribute, as Key Vault writes it.
const CSP_NAME: &str = "Microsoft Enhanced RSA and AES Cryptographic Provider";
/// The key's and the leaf certificate's `localKeyId`.
const LOCAL_KEY_ID: [u8; 4] = [1, 0, 0, 0];

/// Encodes a key (PKCS#8 DER) and its certificate chain (DER, leaf first) as Key Vault does for
/// a certificate's backing secret (`application/x-pkcs12`).
///
/// - authSafe = [ data{ pkcs8ShroudedKeyBag }, encryptedData{ certBag, … } ];
/// - the key bag has the attributes localKeyId 01000000, friendlyName `friendly_name` and the
///   Microsoft CSP name; the leaf's bag has the same localKeyId;
/// - both are encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC, 2000 iterations, 8-byte random salt;
/// - the MAC is HMAC-SHA1, 2000 iterations, 20-byte random salt;
/// - the password is the zero-length one, *without* the BMP NUL terminator (so `openssl pkcs12
///   -passin pass:` and Go read it, and .NET and Key Vault itself).
///
/// Errors when the result would be larger than the reader accepts (1 MiB, 256 bags) or when
/// `friendly_name` has characters outside the BMP.
pub fn encode_keyvault(
    key_pkcs8: &[u8],
    certs: &[Vec<u8>],
    friendly_name: &str,
) -> Result<Vec<u8>, Pkcs12Error> {
    if certs.len() >= MAX_BAGS {
        return Err(Pkcs12Error::TooLarge("more than 256 bags"));
    }
    let password: &[u8] = &[];

    // data{ SafeContents[ pkcs8ShroudedKeyBag ] }
    let key_salt: [u8; 8] = rand::random();
    let epki = EncryptedPrivateKeyInfo {
        encryption_algorithm: pbe_3des(&key_salt)?,
        encrypted_data: octets(
            pbe::pkcs12_3des_encrypt(password, &key_salt, ITERATIONS, key_pkcs8)?,
            "encrypted key",
        )?,
    };
    let key_attributes = SetOfVec::try_from(vec![
        local_key_id()?,
        attribute(oid::FRIENDLY_NAME, &bmp(friendly_name, "friendly name")?)?,
        attribute(oid::MS_CSP_NAME, &bmp(CSP_NAME, "CSP name")?)?,
    ])
    .map_err(encoding("key bag attributes"))?;
    let key_bag = SafeBag {
        bag_id: oid::SHROUDED_KEY_BAG,
        bag_value: epki.to_der().map_err(encoding("shrouded key bag"))?,
        bag_attributes: Some(key_attributes),
    };
    let key_safe = vec![key_bag].to_der().map_err(encoding("key safe"))?;
    let key_info = ContentInfo {
        content_type: oid::DATA,
        content: any(&octets(key_safe, "key safe")?, "key safe")?,
    };

    // encryptedData{ SafeContents[ certBag… ] }, the leaf first and linked to the key.
    let mut cert_bags = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        let bag = CertBag {
            cert_id: oid::X509_CERT,
            cert_value: octets(der.clone(), "certificate")?,
        };
        cert_bags.push(SafeBag {
            bag_id: oid::CERT_BAG,
            bag_value: bag.to_der().map_err(encoding("certificate bag"))?,
            bag_attributes: if i == 0 {
                Some(SetOfVec::try_from(vec![local_key_id()?]).map_err(encoding("attributes"))?)
            } else {
                None
            },
        });
    }
    let cert_safe = cert_bags.to_der().map_err(encoding("certificate safe"))?;
    let cert_salt: [u8; 8] = rand::random();
    let encrypted = EncryptedData {
        version: CmsVersion::V0,
        enc_content_info: EncryptedContentInfo {
            content_type: oid::DATA,
            content_enc_alg: pbe_3des(&cert_salt)?,
            encrypted_content: Some(octets(
                pbe::pkcs12_3des_encrypt(password, &cert_salt, ITERATIONS, &cert_safe)?,
                "encrypted certificates",
            )?),
        },
        unprotected_attrs: None,
    };
    let cert_info = ContentInfo {
        content_type: oid::ENCRYPTED_DATA,
        content: any(&encrypted, "encrypted data")?,
    };

    let auth_safe = vec![key_info, cert_info]
        .to_der()
        .map_err(encoding("authenticated safe"))?;
    let mac_salt: [u8; 20] = rand::random();
    let mac = pbe::mac_sha1(password, &mac_salt, ITERATIONS, &auth_safe)?;
    let pfx = Pfx {
        version: Version::V3,
        auth_safe: ContentInfo {
            content_type: oid::DATA,
            content: any(
                &octets(auth_safe, "authenticated safe")?,
                "authenticated safe",
            )?,
        },
        mac_data: Some(MacData {
            mac: DigestInfo {
                // Key Vault writes the SHA-1 identifier without NULL parameters.
                algorithm: AlgorithmIdentifierOwned {
                    oid: oid::SHA1,
                    parameters: None,
                },
                digest: octets(mac, "MAC")?,
            },
            mac_salt: octets(mac_salt.to_vec(), "MAC salt")?,
            iterations: ITERATIONS,
        }),
    }
    .to_der()
    .map_err(encoding("PFX"))?;
    if pfx.len() > MAX_PFX_BYTES {
        return Err(Pkcs12Error::TooLarge("PFX larger than 1 MiB"));
    }
    Ok(pfx)
}

fn encoding(what: &'static str) -> impl Fn(der::Error) -> Pkcs12Error {
    move |e| Pkcs12Error::Encode {
        what,
        reason: e.to_string(),
    }
}

fn octets(bytes: Vec<u8>, what: &'static str) -> Result<OctetString, Pkcs12Error> {
    OctetString::new(bytes).map_err(encoding(what))
}

fn any<T: Tagged + EncodeValue>(value: &T, what: &'static str) -> Result<Any, Pkcs12Error> {
    Any::encode_from(value).map_err(encoding(what))
}

fn bmp(text: &str, what: &'static str) -> Result<BmpString, Pkcs12Error> {
    BmpString::from_utf8(text).map_err(encoding(what))
}

fn pbe_3des(salt: &[u8]) -> Result<AlgorithmIdentifierOwned, Pkcs12Error> {
    let params = Pkcs12PbeParams {
        salt: octets(salt.to_vec(), "PBE salt")?,
        iterations: ITERATIONS,
    };
    Ok(AlgorithmIdentifierOwned {
        oid: oid::PBE_SHA1_3DES,
        parameters: Some(any(&params, "PBE parameters")?),
    })
}

fn attribute<T: Tagged + EncodeValue>(
    oid: ObjectIdentifier,
    value: &T,
) -> Result<Attribute, Pkcs12Error> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![any(value, "attribute value")?])
            .map_err(encoding("attribute"))?,
    })
}

fn local_key_id() -> Result<Attribute, Pkcs12Error> {
    attribute(
        oid::LOCAL_KEY_ID,
        &octets(LOCAL_KEY_ID.to_vec(), "localKeyId")?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbe::MacDigest;
    use der::Decode;

    const KEY: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00];

    fn certs() -> Vec<Vec<u8>> {
        vec![vec![0x30, 0x00], vec![0x30, 0x01, 0x05]]
    }

    #[test]
    fn round_trips_through_the_reader() {
        let pfx = encode_keyvault(KEY, &certs(), "name").expect("encodes");
        let decoded = crate::decode_split(&pfx).expect("decodes");
        assert_eq!(decoded.keys.len(), 1);
        assert_eq!(decoded.keys[0].as_slice(), KEY);
        assert_eq!(decoded.certs, certs());
        // Any other password is refused by the MAC.
        assert_eq!(
            crate::decode_with_password(&pfx, "x").map(|_| ()),
            Err(Pkcs12Error::BadPassword)
        );
    }

    #[test]
    fn the_mac_is_keyed_by_the_zero_length_password_not_the_terminated_one() {
        let der = encode_keyvault(KEY, &certs(), "name").expect("encodes");
        let pfx = Pfx::from_der(&der).expect("PFX");
        let data = pfx
            .auth_safe
            .content
            .decode_as::<OctetString>()
            .expect("data");
        let mac = pfx.mac_data.expect("MAC");
        assert_eq!(mac.iterations, 2000);
        assert_eq!(mac.mac_salt.as_bytes().len(), 20);
        assert_eq!(mac.mac.algorithm.oid, oid::SHA1);
        let verifies = |pw: &[u8]| {
            pbe::mac_matches(
                MacDigest::Sha1,
                pw,
                mac.mac_salt.as_bytes(),
                mac.iterations,
                data.as_bytes(),
                mac.mac.digest.as_bytes(),
            )
        };
        assert!(verifies(&[]));
        assert!(!verifies(&[0, 0]));
    }

    #[test]
    fn key_bag_carries_key_vaults_attributes_in_its_order() {
        let der = encode_keyvault(KEY, &certs(), "f39ca534-1ab9-49b8-bb76-3fa019c12166")
            .expect("encodes");
        let pfx = Pfx::from_der(&der).expect("PFX");
        let data = pfx
            .auth_safe
            .content
            .decode_as::<OctetString>()
            .expect("data");
        let infos: Vec<ContentInfo> = Vec::from_der(data.as_bytes()).expect("infos");
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].content_type, oid::DATA);
        assert_eq!(infos[1].content_type, oid::ENCRYPTED_DATA);
        let safe = infos[0]
            .content
            .decode_as::<OctetString>()
            .expect("key safe");
        let bags: Vec<SafeBag> = Vec::from_der(safe.as_bytes()).expect("bags");
        assert_eq!(bags.len(), 1);
        assert_eq!(bags[0].bag_id, oid::SHROUDED_KEY_BAG);
        let attrs: Vec<ObjectIdentifier> = bags[0]
            .bag_attributes
            .as_ref()
            .expect("attributes")
            .iter()
            .map(|a| a.oid)
            .collect();
        assert_eq!(
            attrs,
            [oid::LOCAL_KEY_ID, oid::FRIENDLY_NAME, oid::MS_CSP_NAME]
        );
    }

    #[test]
    fn salts_are_fresh_per_call() {
        let a = encode_keyvault(KEY, &certs(), "n").expect("encodes");
        let b = encode_keyvault(KEY, &certs(), "n").expect("encodes");
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }

    #[test]
    fn names_outside_the_bmp_and_too_many_bags_are_errors() {
        assert!(matches!(
            encode_keyvault(KEY, &certs(), "🔑"),
            Err(Pkcs12Error::Encode { .. })
        ));
        let many = vec![vec![0x30, 0x00]; 256];
        assert_eq!(
            encode_keyvault(KEY, &many, "n"),
            Err(Pkcs12Error::TooLarge("more than 256 bags"))
        );
    }
}
