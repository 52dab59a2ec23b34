//! Key material re-encoding, byte-compatible with Go's crypto/x509:
//! - private keys from a PFX or PEM → PKCS#8 as `x509.MarshalPKCS8PrivateKey` writes it (RSA:
//!   normalised PKCS#1 inside, NULL parameters, no attributes; EC: SEC1 without parameters, with
//!   the public key recomputed from the scalar, scalar padded to the order size);
//! - Key Vault JWKs → SubjectPublicKeyInfo as `x509.MarshalPKIXPublicKey` writes it.

use base64::Engine as _;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode};
use keyvault_client::Jwk;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Key conversion errors (texts as upstream where upstream has one).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not PKCS#1, PKCS#8 or SEC1.
    #[error("failed to parse key for type pkcs1, pkcs8 or ec")]
    Unparsable,
    /// JWK type not supported.
    #[error("failed to get key. key type '{0}' currently not supported")]
    UnsupportedKty(String),
    /// JWK curve not supported.
    #[error("curve {0} is not supported")]
    UnsupportedCurve(String),
    /// JWK fields missing or not base64url, or the point is not on the curve.
    #[error("invalid {kty} key: {reason}")]
    InvalidJwk {
        /// kty
        kty: String,
        /// what is wrong
        reason: String,
    },
}

#[derive(Clone, Copy)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            o if o == P256 => Some(Self::P256),
            o if o == P384 => Some(Self::P384),
            o if o == P521 => Some(Self::P521),
            _ => None,
        }
    }
    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::P256 => P256,
            Self::P384 => P384,
            Self::P521 => P521,
        }
    }
    fn scalar_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
    /// Uncompressed public point for a private scalar.
    fn public_from_scalar(self, d: &[u8]) -> Option<Vec<u8>> {
        use p256::elliptic_curve::sec1::ToSec1Point;
        match self {
            Self::P256 => p256::SecretKey::from_slice(d)
                .ok()
                .map(|k| k.public_key().to_sec1_point(false).as_bytes().to_vec()),
            Self::P384 => p384::SecretKey::from_slice(d)
                .ok()
                .map(|k| k.public_key().to_sec1_point(false).as_bytes().to_vec()),
            Self::P521 => p521::SecretKey::from_slice(d)
                .ok()
                .map(|k| k.public_key().to_sec1_point(false).as_bytes().to_vec()),
        }
    }
    fn valid_point(self, point: &[u8]) -> bool {
        match self {
            Self::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
            Self::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
            Self::P521 => p521::PublicKey::from_sec1_bytes(point).is_ok(),
        }
    }
}

fn pkcs8(
    alg: AlgorithmIdentifierRef<'_>,
    private_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let pk = OctetStringRef::new(private_key).map_err(|_| KeyError::Unparsable)?;
    let info = pkcs8::PrivateKeyInfoRef::new(alg, pk);
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Unparsable)
}

fn rsa_pkcs8(pkcs1_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(pkcs1_der).map_err(|_| KeyError::Unparsable)?;
    let normalised = Zeroizing::new(key.to_der().map_err(|_| KeyError::Unparsable)?);
    pkcs8(
        AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        &normalised,
    )
}

fn ec_pkcs8(sec1_der: &[u8], outer_curve: Option<Curve>) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let ec = sec1::EcPrivateKey::from_der(sec1_der).map_err(|_| KeyError::Unparsable)?;
    let inner_curve = ec
        .parameters
        .as_ref()
        .and_then(|p| p.named_curve())
        .and_then(|o| Curve::from_oid(&o));
    let curve = outer_curve.or(inner_curve).ok_or(KeyError::Unparsable)?;
    let n = curve.scalar_len();
    let d = ec.private_key;
    let d = if d.len() > n {
        // leading zero bytes beyond the order size are tolerated (Go uses big.Int)
        let (pad, rest) = d.split_at(d.len() - n);
        if pad.iter().any(|b| *b != 0) {
            return Err(KeyError::Unparsable);
        }
        rest
    } else {
        d
    };
    let mut padded = Zeroizing::new(vec![0u8; n]);
    padded[n - d.len()..].copy_from_slice(d);
    let public = curve
        .public_from_scalar(&padded)
        .ok_or(KeyError::Unparsable)?;
    let inner = sec1::EcPrivateKey {
        private_key: &padded,
        parameters: None,
        public_key: Some(&public),
    };
    let inner_der = Zeroizing::new(inner.to_der().map_err(|_| KeyError::Unparsable)?);
    let oid = curve.oid();
    let param = AnyRef::from(&oid);
    pkcs8(
        AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(param),
        },
        &inner_der,
    )
}

/// Re-encodes a private key (PKCS#1, PKCS#8 or SEC1 DER) as Go's `MarshalPKCS8PrivateKey`.
pub fn to_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if pkcs1::RsaPrivateKeyRef::from_der(der).is_ok() {
        return rsa_pkcs8(der);
    }
    if let Ok(info) = pkcs8::PrivateKeyInfoRef::from_der(der) {
        let alg = info.algorithm;
        let inner = info.private_key.as_bytes();
        if alg.oid == RSA_ENCRYPTION {
            return rsa_pkcs8(inner);
        }
        if alg.oid == EC_PUBLIC_KEY {
            let curve = alg
                .parameters
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .map(|o| Curve::from_oid(&o).ok_or(KeyError::Unparsable))
                .transpose()?;
            return ec_pkcs8(inner, curve);
        }
        if alg.oid == ED25519 {
            return pkcs8(
                AlgorithmIdentifierRef {
                    oid: ED25519,
                    parameters: None,
                },
                inner,
            );
        }
        return Err(KeyError::Unparsable);
    }
    ec_pkcs8(der, None)
}

fn b64url(kty: &str, field: &str, v: Option<&String>) -> Result<Vec<u8>, KeyError> {
    let v = v
        .filter(|s| !s.is_empty())
        .ok_or_else(|| KeyError::InvalidJwk {
            kty: kty.to_owned(),
            reason: format!("missing {field}"),
        })?;
    let trimmed = v.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|e| KeyError::InvalidJwk {
            kty: kty.to_owned(),
            reason: format!("{field}: {e}"),
        })
}

/// The SubjectPublicKeyInfo DER of a Key Vault JWK (RSA, RSA-HSM, EC, EC-HSM on P-256/384/521).
pub fn jwk_to_spki(jwk: &Jwk) -> Result<Vec<u8>, KeyError> {
    let kty = jwk.kty.as_str();
    match kty {
        "RSA" | "RSA-HSM" => {
            let n = b64url(kty, "n", jwk.n.as_ref())?;
            let e = b64url(kty, "e", jwk.e.as_ref())?;
            let bad = |r: &str| KeyError::InvalidJwk {
                kty: kty.to_owned(),
                reason: r.to_owned(),
            };
            let key = pkcs1::RsaPublicKeyRef {
                modulus: der::asn1::UintRef::new(&n).map_err(|_| bad("n"))?,
                public_exponent: der::asn1::UintRef::new(&e).map_err(|_| bad("e"))?,
            };
            let pkcs1_der = key.to_der().map_err(|_| bad("encoding"))?;
            spki_der(RSA_ENCRYPTION, Some(AnyRef::NULL), &pkcs1_der, kty)
        }
        "EC" | "EC-HSM" => {
            let crv = jwk.crv.clone().unwrap_or_default();
            let curve = match crv.as_str() {
                "P-256" => Curve::P256,
                "P-384" => Curve::P384,
                "P-521" => Curve::P521,
                _ => return Err(KeyError::UnsupportedCurve(crv)),
            };
            let x = b64url(kty, "x", jwk.x.as_ref())?;
            let y = b64url(kty, "y", jwk.y.as_ref())?;
            let n = curve.scalar_len();
            let strip = |v: &[u8]| -> Option<Vec<u8>> {
                let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
                let v = &v[first..];
                (v.len() <= n).then(|| {
                    let mut p = vec![0u8; n];
                    p[n - v.len()..].copy_from_slice(v);
                    p
                })
            };
            let (Some(x), Some(y)) = (strip(&x), strip(&y)) else {
                return Err(KeyError::InvalidJwk {
                    kty: kty.to_owned(),
                    reason: "coordinate too long".into(),
                });
            };
            let mut point = Vec::with_capacity(1 + 2 * n);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if !curve.valid_point(&point) {
                return Err(KeyError::InvalidJwk {
                    kty: kty.to_owned(),
                    reason: "point is not on the curve".into(),
                });
            }
            let oid = curve.oid();
            spki_der(EC_PUBLIC_KEY, Some(AnyRef::from(&oid)), &point, kty)
        }
        other => Err(KeyError::UnsupportedKty(other.to_owned())),
    }
}

fn spki_der(
    oid: ObjectIdentifier,
    parameters: Option<AnyRef<'_>>,
    key: &[u8],
    kty: &str,
) -> Result<Vec<u8>, KeyError> {
    let bad = |e: der::Error| KeyError::InvalidJwk {
        kty: kty.to_owned(),
        reason: e.to_string(),
    };
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef { oid, parameters },
        subject_public_key: BitStringRef::from_bytes(key).map_err(bad)?,
    };
    spki.to_der().map_err(bad)
}
