//! `kubernetes.io/tls` data as upstream builds it from a mounted PEM bundle:
//! `tls.crt` = every CERTIFICATE block in order; `tls.key` = the last non-certificate block,
//! re-encoded as `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1 with the curve named).

use der::{Decode, Encode};

use crate::secret::SecretBytes;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "object {object:?} holds no PEM CERTIFICATE block (PKCS#12 input is not supported yet; use a PEM object)"
    )]
    NoCertificate { object: String },
    #[error("object {object:?} holds no PEM private key block")]
    NoKey { object: String },
    #[error("object {object:?}: the private key is not RSA or ECDSA ({detail})")]
    UnsupportedKey { object: String, detail: String },
    #[error("object {object:?} is not valid PEM")]
    NotPem { object: String },
}

fn blocks(object: &str, input: &SecretBytes) -> Result<Vec<pem::Pem>, TlsError> {
    pem::parse_many(input.expose()).map_err(|_| TlsError::NotPem {
        object: object.into(),
    })
}

/// Every CERTIFICATE block, PEM-encoded, in input order.
pub fn certificate_chain(object: &str, input: &SecretBytes) -> Result<SecretBytes, TlsError> {
    let certs: Vec<pem::Pem> = blocks(object, input)?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            object: object.into(),
        });
    }
    Ok(SecretBytes::new(pem::encode_many(&certs).into_bytes()))
}

/// The last non-certificate block as PKCS#1 (RSA) or SEC1 (EC) PEM.
pub fn private_key(object: &str, input: &SecretBytes) -> Result<SecretBytes, TlsError> {
    let key = blocks(object, input)?
        .into_iter()
        .rev()
        .find(|b| b.tag() != "CERTIFICATE")
        .ok_or_else(|| TlsError::NoKey {
            object: object.into(),
        })?;
    let unsupported = |detail: String| TlsError::UnsupportedKey {
        object: object.into(),
        detail,
    };
    let out = match key.tag() {
        "RSA PRIVATE KEY" => pem::Pem::new("RSA PRIVATE KEY", key.contents().to_vec()),
        "EC PRIVATE KEY" => pem::Pem::new("EC PRIVATE KEY", key.contents().to_vec()),
        "PRIVATE KEY" => {
            let info = pkcs8::PrivateKeyInfoRef::from_der(key.contents())
                .map_err(|e| unsupported(e.to_string()))?;
            let oid = info.algorithm.oid;
            if oid == pkcs1::ALGORITHM_OID {
                pem::Pem::new("RSA PRIVATE KEY", info.private_key.as_bytes().to_vec())
            } else if oid == sec1::ALGORITHM_OID {
                let curve = info
                    .algorithm
                    .parameters_oid()
                    .map_err(|e| unsupported(format!("EC key without a named curve: {e}")))?;
                let mut ec = sec1::EcPrivateKey::from_der(info.private_key.as_bytes())
                    .map_err(|e| unsupported(e.to_string()))?;
                // Go's MarshalECPrivateKey names the curve; PKCS#8 usually leaves it out.
                ec.parameters = Some(sec1::EcParameters::NamedCurve(curve));
                pem::Pem::new(
                    "EC PRIVATE KEY",
                    ec.to_der().map_err(|e| unsupported(e.to_string()))?,
                )
            } else {
                return Err(unsupported(format!("algorithm {oid}")));
            }
        }
        other => return Err(unsupported(format!("PEM block {other:?}"))),
    };
    Ok(SecretBytes::new(pem::encode(&out).into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway P-256 key and self-signed certificate generated for this test only.
    const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggGZ/+XW3H/1w7nky
IT0Jar4R/aQpNMyehVoAThAt9lahRANCAASyMQqOaIkXwc426E7t0gnY3CQkeJdj
a4TyQMoQaACXwDqJgpCfKeKXRkl3aL5cChJVdEW2vIepaIUFV4XZRczE
-----END PRIVATE KEY-----
";

    #[test]
    fn splits_chain_and_reencodes_ec_pkcs8_as_sec1() -> anyhow::Result<()> {
        let cert_a = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let cert_b = pem::encode(&pem::Pem::new("CERTIFICATE", vec![4, 5, 6]));
        let bundle = SecretBytes::new(format!("{EC_PKCS8}{cert_a}{cert_b}").into_bytes());
        let chain = certificate_chain("cert", &bundle)?;
        let parsed = pem::parse_many(chain.expose())?;
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].contents(), [4, 5, 6]);

        let key = private_key("cert", &bundle)?;
        let parsed = pem::parse(key.expose())?;
        assert_eq!(parsed.tag(), "EC PRIVATE KEY");
        let ec =
            sec1::EcPrivateKey::from_der(parsed.contents()).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(ec.parameters.is_some(), "curve named as Go does");
        Ok(())
    }

    #[test]
    fn missing_parts_are_clear_errors() {
        let only_key = SecretBytes::new(EC_PKCS8.as_bytes().to_vec());
        let e = certificate_chain("k", &only_key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("\"k\"") && e.contains("CERTIFICATE"), "{e}");
        let only_cert =
            SecretBytes::new(pem::encode(&pem::Pem::new("CERTIFICATE", vec![1])).into_bytes());
        assert!(private_key("c", &only_cert).is_err());
    }
}
