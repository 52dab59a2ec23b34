//! Key material: generation (RSA 2048/3072/4096, EC P-256/P-384/P-521), PKCS#8 storage, JWK import
//! and the public JWK Key Vault returns.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64URL};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported key size {0}; Key Vault accepts 2048, 3072 or 4096")]
    RsaSize(u32),
    #[error("unsupported curve '{0}'; use P-256, P-384 or P-521")]
    Curve(String),
    #[error("unsupported key type '{0}'; use RSA or EC")]
    Kty(String),
    #[error("the private key is not valid: {0}")]
    Invalid(String),
    #[error("the JWK is missing field '{0}'")]
    MissingField(&'static str),
}

/// A private key held by the emulator (PKCS#8 DER) plus its type facts.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// "RSA" or "EC".
    pub kty: String,
    /// Curve for EC keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Key size in bits (RSA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// PKCS#8 DER, base64 in the state file.
    #[serde(with = "b64_zeroizing")]
    pub pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field("key_size", &self.key_size)
            .field("pkcs8", &"<redacted>")
            .finish()
    }
}

mod b64_zeroizing {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(
        v: &Zeroizing<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v.as_slice()))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        STANDARD
            .decode(s.as_bytes())
            .map(Zeroizing::new)
            .map_err(serde::de::Error::custom)
    }
}

// === generation ===

impl KeyMaterial {
    pub fn generate_rsa(bits: u32) -> Result<Self, KeyError> {
        use rsa::pkcs8::EncodePrivateKey;
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(KeyError::RsaSize(bits));
        }
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits as usize)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Self {
            kty: "RSA".into(),
            crv: None,
            key_size: Some(bits),
            pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
        })
    }

    pub fn generate_ec(crv: &str) -> Result<Self, KeyError> {
        use p256::elliptic_curve::Generate;
        use pkcs8::EncodePrivateKey;
        let der = match crv {
            "P-256" => p256::SecretKey::generate().to_pkcs8_der(),
            "P-384" => p384::SecretKey::generate().to_pkcs8_der(),
            "P-521" => p521::SecretKey::generate().to_pkcs8_der(),
            other => return Err(KeyError::Curve(other.to_string())),
        }
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Self {
            kty: "EC".into(),
            crv: Some(crv.to_string()),
            key_size: None,
            pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
        })
    }

    /// Generates from a Key Vault `kty` ("RSA", "RSA-HSM", "EC", "EC-HSM") and size / curve.
    pub fn generate(kty: &str, key_size: Option<u32>, crv: Option<&str>) -> Result<Self, KeyError> {
        match kty {
            "RSA" | "RSA-HSM" => Self::generate_rsa(key_size.unwrap_or(2048)),
            "EC" | "EC-HSM" => Self::generate_ec(crv.unwrap_or("P-256")),
            other => Err(KeyError::Kty(other.to_string())),
        }
    }

    /// Accepts a PKCS#8 DER private key of a supported type.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        use pkcs8::DecodePrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        use rsa::traits::PublicKeyParts;
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            let bits = (k.n().bits()) as u32;
            return Ok(Self {
                kty: "RSA".into(),
                crv: None,
                key_size: Some(bits),
                pkcs8: Zeroizing::new(der.to_vec()),
            });
        }
        let crv = if p256::SecretKey::from_pkcs8_der(der).is_ok() {
            "P-256"
        } else if p384::SecretKey::from_pkcs8_der(der).is_ok() {
            "P-384"
        } else if p521::SecretKey::from_pkcs8_der(der).is_ok() {
            "P-521"
        } else {
            return Err(KeyError::Invalid(
                "not an RSA or P-256/P-384/P-521 PKCS#8 private key".into(),
            ));
        };
        Ok(Self {
            kty: "EC".into(),
            crv: Some(crv.into()),
            key_size: None,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// Accepts a PEM private key: PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`.
    pub fn from_pem_block(label: &str, der: &[u8]) -> Result<Self, KeyError> {
        use pkcs8::EncodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey as _;
        match label {
            "PRIVATE KEY" => Self::from_pkcs8(der),
            "RSA PRIVATE KEY" => {
                let k = rsa::RsaPrivateKey::from_pkcs1_der(der)
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                let p8 = k
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                Self::from_pkcs8(p8.as_bytes())
            }
            "EC PRIVATE KEY" => {
                let p8 = if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                    k.to_pkcs8_der()
                } else if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                    k.to_pkcs8_der()
                } else if let Ok(k) = p521::SecretKey::from_sec1_der(der) {
                    k.to_pkcs8_der()
                } else {
                    return Err(KeyError::Invalid(
                        "EC PRIVATE KEY on an unsupported curve".into(),
                    ));
                }
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
                Self::from_pkcs8(p8.as_bytes())
            }
            other => Err(KeyError::Invalid(format!("unexpected PEM block '{other}'"))),
        }
    }

    /// Imports a private JWK (`kty` RSA with n,e,d,p,q or EC with crv,x,y,d).
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        let field = |name: &'static str| -> Result<Vec<u8>, KeyError> {
            let s = jwk
                .get(name)
                .and_then(|v| v.as_str())
                .ok_or(KeyError::MissingField(name))?;
            decode_b64url(s)
                .map_err(|_| KeyError::Invalid(format!("field '{name}' is not base64url")))
        };
        let kty = jwk
            .get("kty")
            .and_then(|v| v.as_str())
            .ok_or(KeyError::MissingField("kty"))?;
        match kty {
            "RSA" | "RSA-HSM" => {
                use rsa::BigUint;
                use rsa::pkcs8::EncodePrivateKey;
                let n = BigUint::from_bytes_be(&field("n")?);
                let e = BigUint::from_bytes_be(&field("e")?);
                let d = BigUint::from_bytes_be(&field("d")?);
                let p = BigUint::from_bytes_be(&field("p")?);
                let q = BigUint::from_bytes_be(&field("q")?);
                let k = rsa::RsaPrivateKey::from_components(n, e, d, vec![p, q])
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                k.validate().map_err(|e| KeyError::Invalid(e.to_string()))?;
                let der = k
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                Self::from_pkcs8(der.as_bytes())
            }
            "EC" | "EC-HSM" => {
                use pkcs8::EncodePrivateKey;
                let crv = jwk
                    .get("crv")
                    .and_then(|v| v.as_str())
                    .ok_or(KeyError::MissingField("crv"))?;
                let d = Zeroizing::new(field("d")?);
                let der = match crv {
                    "P-256" => p256::SecretKey::from_slice(&d)
                        .map_err(|e| KeyError::Invalid(e.to_string()))?
                        .to_pkcs8_der(),
                    "P-384" => p384::SecretKey::from_slice(&d)
                        .map_err(|e| KeyError::Invalid(e.to_string()))?
                        .to_pkcs8_der(),
                    "P-521" => p521::SecretKey::from_slice(&d)
                        .map_err(|e| KeyError::Invalid(e.to_string()))?
                        .to_pkcs8_der(),
                    other => return Err(KeyError::Curve(other.to_string())),
                }
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
                let km = Self::from_pkcs8(der.as_bytes())?;
                // The given public point must match the private scalar.
                let public = km.public_jwk_fields()?;
                if let (Some(x), Some(y)) = (
                    jwk.get("x").and_then(|v| v.as_str()),
                    jwk.get("y").and_then(|v| v.as_str()),
                ) && (public.get("x").and_then(|v| v.as_str()) != Some(x)
                    || public.get("y").and_then(|v| v.as_str()) != Some(y))
                {
                    return Err(KeyError::Invalid("x/y do not match d".into()));
                }
                Ok(km)
            }
            other => Err(KeyError::Kty(other.to_string())),
        }
    }

    /// The public JWK members (without kid/key_ops): RSA `n`,`e`; EC `crv`,`x`,`y`.
    pub fn public_jwk_fields(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, KeyError> {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        m.insert("kty".into(), Value::String(self.kty.clone()));
        if self.kty == "RSA" {
            use rsa::pkcs8::DecodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let k = rsa::RsaPrivateKey::from_pkcs8_der(&self.pkcs8)
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            m.insert(
                "n".into(),
                Value::String(B64URL.encode(k.n().to_bytes_be())),
            );
            m.insert(
                "e".into(),
                Value::String(B64URL.encode(k.e().to_bytes_be())),
            );
            return Ok(m);
        }
        let point = self.ec_point()?;
        // Uncompressed SEC1 point: 0x04 || X || Y, coordinates fixed-size.
        let coord = (point.len() - 1) / 2;
        m.insert(
            "crv".into(),
            Value::String(self.crv.clone().unwrap_or_default()),
        );
        m.insert(
            "x".into(),
            Value::String(B64URL.encode(&point[1..1 + coord])),
        );
        m.insert(
            "y".into(),
            Value::String(B64URL.encode(&point[1 + coord..])),
        );
        Ok(m)
    }

    fn ec_point(&self) -> Result<Vec<u8>, KeyError> {
        use pkcs8::DecodePrivateKey;
        let err = |e: pkcs8::Error| KeyError::Invalid(e.to_string());
        Ok(match self.crv.as_deref() {
            Some("P-256") => p256::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(err)?
                .public_key()
                .to_sec1_bytes()
                .to_vec(),
            Some("P-384") => p384::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(err)?
                .public_key()
                .to_sec1_bytes()
                .to_vec(),
            Some("P-521") => p521::SecretKey::from_pkcs8_der(&self.pkcs8)
                .map_err(err)?
                .public_key()
                .to_sec1_bytes()
                .to_vec(),
            other => return Err(KeyError::Curve(other.unwrap_or("").to_string())),
        })
    }

    /// Key operations Key Vault lists for a key of this type by default.
    pub fn default_key_ops(&self) -> Vec<String> {
        let ops: &[&str] = if self.kty == "RSA" {
            &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ]
        } else {
            &["sign", "verify"]
        };
        ops.iter().map(|s| s.to_string()).collect()
    }
}

pub(crate) fn decode_b64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // Accept padded and unpadded base64url (clients differ).
    B64URL.decode(s.trim_end_matches('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_jwk_coordinates_are_fixed_size() {
        for (crv, len) in [("P-256", 32), ("P-384", 48), ("P-521", 66)] {
            let k = KeyMaterial::generate_ec(crv).expect("generate");
            let jwk = k.public_jwk_fields().expect("jwk");
            let x = decode_b64url(jwk["x"].as_str().expect("x")).expect("b64");
            let y = decode_b64url(jwk["y"].as_str().expect("y")).expect("b64");
            assert_eq!((x.len(), y.len()), (len, len), "{crv}");
            assert!(!jwk["x"].as_str().expect("x").contains('='));
            let again = KeyMaterial::from_pkcs8(&k.pkcs8).expect("reparse");
            assert_eq!(again.crv.as_deref(), Some(crv));
        }
    }

    #[test]
    fn rsa_jwk_has_aqab_exponent_and_full_modulus() {
        let k = KeyMaterial::generate_rsa(2048).expect("generate");
        let jwk = k.public_jwk_fields().expect("jwk");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(
            decode_b64url(jwk["n"].as_str().expect("n"))
                .expect("b64")
                .len(),
            256
        );
        assert_eq!(
            KeyMaterial::from_pkcs8(&k.pkcs8).expect("reparse").key_size,
            Some(2048)
        );
        assert!(matches!(
            KeyMaterial::generate_rsa(1024),
            Err(KeyError::RsaSize(1024))
        ));
        assert!(matches!(
            KeyMaterial::generate_ec("P-256K"),
            Err(KeyError::Curve(_))
        ));
    }

    #[test]
    fn debug_redacts_private_key() {
        let k = KeyMaterial::generate_ec("P-256").expect("generate");
        let s = format!("{k:?}");
        assert!(s.contains("<redacted>"));
    }
}
