//! `kubernetes.io/tls` data as upstream builds it from a mounted PEM bundle:
//! `tls.crt` = every CERTIFICATE block in order; `tls.key` = the last non-certificate block,
//! re-encoded as `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1 with the curve named).
//! Content without PEM blocks is read as PKCS#12 with the empty password (as upstream).

use der::{Decode, Encode};

use sensitive::SecretBytes;

/// Go's `encoding/pem` layout: 64-column lines, LF (the pem crate defaults to CRLF).
const GO_PEM: pem::EncodeConfig = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "object {object:?} holds no certificate (no PEM CERTIFICATE block; as PKCS#12: {pkcs12})"
    )]
    NoCertificate { object: String, pkcs12: String },
    #[error("object {object:?} holds no private key (no PEM key block; as PKCS#12: {pkcs12})")]
    NoKey { object: String, pkcs12: String },
    #[error("object {object:?}: the private key is not RSA or ECDSA ({detail})")]
    UnsupportedKey { object: String, detail: String },
}

/// The PEM blocks of the input, or (no PEM at all) the PKCS#12 content as PEM blocks; with a
/// note on the PKCS#12 attempt for error messages.
fn blocks_or_pkcs12(input: &SecretBytes) -> (Vec<pem::Pem>, String) {
    let pem_blocks = pem::parse_many(input.expose()).unwrap_or_default();
    if !pem_blocks.is_empty() {
        return (pem_blocks, "not tried, the object is PEM".into());
    }
    match pfx::decode_split(input.expose()) {
        Ok(d) => {
            let mut out: Vec<pem::Pem> = d
                .keys
                .iter()
                .map(|k| pem::Pem::new("PRIVATE KEY", k.to_vec()))
                .collect();
            out.extend(d.certs.into_iter().map(|c| pem::Pem::new("CERTIFICATE", c)));
            (out, "no such item in it".into())
        }
        Err(e) => (Vec::new(), e.to_string()),
    }
}

/// Every CERTIFICATE block, PEM-encoded, in input order.
pub fn certificate_chain(object: &str, input: &SecretBytes) -> Result<SecretBytes, TlsError> {
    let (all, pkcs12) = blocks_or_pkcs12(input);
    let certs: Vec<pem::Pem> = all
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            object: object.into(),
            pkcs12,
        });
    }
    Ok(SecretBytes::new(
        pem::encode_many_config(&certs, GO_PEM).into_bytes(),
    ))
}

/// The last non-certificate block as PKCS#1 (RSA) or SEC1 (EC) PEM.
pub fn private_key(object: &str, input: &SecretBytes) -> Result<SecretBytes, TlsError> {
    let (all, pkcs12) = blocks_or_pkcs12(input);
    let key = all
        .into_iter()
        .rev()
        .find(|b| b.tag() != "CERTIFICATE")
        .ok_or_else(|| TlsError::NoKey {
            object: object.into(),
            pkcs12,
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
    Ok(SecretBytes::new(
        pem::encode_config(&out, GO_PEM).into_bytes(),
    ))
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

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

    fn fixture(name: &str) -> anyhow::Result<SecretBytes> {
        Ok(SecretBytes::new(std::fs::read(format!(
            "{FIXTURES}{name}"
        ))?))
    }

    #[test]
    fn legacy_openssl_pkcs12_gives_the_pem_upstream_gives() -> anyhow::Result<()> {
        let pfx = fixture("ec-legacy.pfx")?;
        let crt = certificate_chain("cert", &pfx)?;
        assert_eq!(crt.expose(), fixture("eccert.pem")?.expose());
        let key = private_key("cert", &pfx)?;
        assert_eq!(
            key.expose(),
            fixture("eckey-sec1.pem")?.expose(),
            "SEC1 exactly as `openssl ec` writes it"
        );
        // The PEM path gives the same key.
        let pem_key = private_key("k", &fixture("eckey-pkcs8.pem")?)?;
        assert_eq!(pem_key.expose(), key.expose());
        Ok(())
    }

    #[test]
    fn key_vault_style_pkcs12_with_zero_length_password() -> anyhow::Result<()> {
        let key_pem = pem::parse(fixture("eckey-pkcs8.pem")?.expose())?;
        let cert_pem = pem::parse(fixture("eccert.pem")?.expose())?;
        let pfx = pfx::encode_keyvault(key_pem.contents(), &[cert_pem.contents().to_vec()], "tls")?;
        let pfx = SecretBytes::new(pfx);
        assert_eq!(
            certificate_chain("c", &pfx)?.expose(),
            fixture("eccert.pem")?.expose()
        );
        assert_eq!(
            private_key("c", &pfx)?.expose(),
            fixture("eckey-sec1.pem")?.expose()
        );
        Ok(())
    }

    #[test]
    fn aes_pkcs12_reads_and_garbage_is_a_clear_error() -> anyhow::Result<()> {
        // OpenSSL 3's default PBES2/AES-256 (upstream's Go reader refuses it; the pfx crate reads it).
        let pfx = fixture("ec-aes.pfx")?;
        assert_eq!(
            certificate_chain("modern", &pfx)?.expose(),
            fixture("eccert.pem")?.expose()
        );
        assert_eq!(
            private_key("modern", &pfx)?.expose(),
            fixture("eckey-sec1.pem")?.expose()
        );
        let e = private_key("junk", &SecretBytes::new(b"not a cert".to_vec()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("\"junk\"") && e.contains("PKCS#12"), "{e}");
        Ok(())
    }
}
