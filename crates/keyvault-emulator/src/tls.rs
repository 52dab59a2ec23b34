//! The emulator's CA and serving certificate.

use crate::Error;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::sync::Arc;

/// A CA plus a server certificate signed by it.
pub(crate) struct ServerTls {
    pub(crate) ca_pem: String,
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// The CA, to sign more serving certificates (the token proxy's).
    issuer: Issuer<'static, KeyPair>,
}

/// Where the CA comes from.
#[derive(Clone, Debug, Default)]
pub enum CaSource {
    /// A fresh CA each start (default).
    #[default]
    Generate,
    /// A CA certificate and its private key in PEM (kept across restarts so clients keep trusting it).
    Pem { cert_pem: String, key_pem: String },
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

pub(crate) fn build(
    ca: &CaSource,
    dns_suffix: &str,
    extra_names: &[String],
    http1_only: bool,
) -> Result<ServerTls, Error> {
    let (ca_pem, issuer) = match ca {
        CaSource::Generate => {
            let key = KeyPair::generate().map_err(tls_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "keyvault-emulator local CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).map_err(tls_err)?;
            (cert.pem(), Issuer::new(params, key))
        }
        CaSource::Pem { cert_pem, key_pem } => {
            let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Tls(format!("CA key: {e}")))?;
            let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
                .map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
            (cert_pem.clone(), issuer)
        }
    };

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        dns_suffix.to_string(),
        format!("*.{dns_suffix}"),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    for n in &names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e| Error::Tls(format!("name '{n}': {e}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V6(
            std::net::Ipv6Addr::LOCALHOST,
        )));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("*.{dns_suffix}"));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_key = KeyPair::generate().map_err(tls_err)?;
    let leaf = params.signed_by(&leaf_key, &issuer).map_err(tls_err)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![leaf.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(ServerTls {
        ca_pem,
        config: Arc::new(config),
        issuer,
    })
}

/// Answers a TLS client hello with the certificate only when it names `expected` (SNI): like the
/// AKS token proxy, which is reached by that name alone, a handshake without it or with another
/// name fails.
#[derive(Debug)]
struct OnlyForSni {
    expected: String,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for OnlyForSni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name()?;
        name.eq_ignore_ascii_case(&self.expected)
            .then(|| self.key.clone())
    }
}

impl ServerTls {
    /// The token proxy's TLS: a certificate for `sni` alone, signed by the same CA, served only
    /// to clients that send `sni`.
    pub(crate) fn token_proxy(&self, sni: &str) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params.subject_alt_names.push(SanType::DnsName(
            sni.to_string()
                .try_into()
                .map_err(|e| Error::Tls(format!("token proxy SNI name '{sni}': {e}")))?,
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, sni);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_key = KeyPair::generate().map_err(tls_err)?;
        let leaf = params.signed_by(&leaf_key, &self.issuer).map_err(tls_err)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(tls_err)?;
        let certified = rustls::sign::CertifiedKey::new(vec![leaf.der().clone()], signing);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OnlyForSni {
                expected: sni.to_string(),
                key: Arc::new(certified),
            }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
