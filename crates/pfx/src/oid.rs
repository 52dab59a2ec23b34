//! The object identifiers a PFX names its structures and algorithms by.

use der::asn1::ObjectIdentifier as Oid;

// PKCS#7 / CMS content types (RFC 5652).
pub(crate) const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ENCRYPTED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.6");

// Digests (MAC).
pub(crate) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

// PKCS#12 password-based encryption (RFC 7292 appendix C).
pub(crate) const PBE_SHA1_3DES: Oid = pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC;
pub(crate) const PBE_SHA1_RC2_128: Oid = pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC;
pub(crate) const PBE_SHA1_RC2_40: Oid = pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC;

// PBES2 (RFC 8018).
pub(crate) const PBES2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.13");
pub(crate) const PBKDF2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.12");
pub(crate) const HMAC_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.2.7");
pub(crate) const HMAC_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.2.9");
pub(crate) const HMAC_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.2.10");
pub(crate) const HMAC_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.2.11");
pub(crate) const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");

// Bags (RFC 7292 section 4.2).
pub(crate) const KEY_BAG: Oid = pkcs12::PKCS_12_KEY_BAG_OID;
pub(crate) const SHROUDED_KEY_BAG: Oid = pkcs12::PKCS_12_PKCS8_KEY_BAG_OID;
pub(crate) const CERT_BAG: Oid = pkcs12::PKCS_12_CERT_BAG_OID;
pub(crate) const X509_CERT: Oid = pkcs12::PKCS_12_X509_CERT_OID;

// Bag attributes.
pub(crate) const FRIENDLY_NAME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.20");
pub(crate) const LOCAL_KEY_ID: Oid = Oid::new_unwrap("1.2.840.113549.1.9.21");
/// Microsoft's key-provider (CSP) name attribute, as Windows and Key Vault write it.
pub(crate) const MS_CSP_NAME: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.17.1");
