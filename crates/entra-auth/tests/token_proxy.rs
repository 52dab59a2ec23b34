//! Identity binding against loopback TLS servers: the SNI name read from an API server
//! certificate, and the token request through a proxy that checks the SNI name, with its CA file
//! re-read when it changes.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entra_auth::token_proxy::sni_for_cluster;
use entra_auth::{
    Cloud, HttpOptions, IdentityBindingCredential, SecretString, TokenCredential, TokenProxy,
    TokenProxyConfig,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER_ID: &str = "696995ccb303450001b31a18";
const SNI: &str = "aeaf29ip1hi5q38ebc3u4daum81u0unk52t5bg50j25234fmuj78g.ests.aks";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn server_config(ca: &Ca, names: &[&str]) -> Arc<rustls::ServerConfig> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    for n in names {
        params
            .subject_alt_names
            .push(SanType::DnsName((*n).try_into().unwrap()));
    }
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &ca.issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    )
}

/// What the proxy saw of one request.
#[derive(Clone, Debug, Default)]
struct Seen {
    sni: Option<String>,
    head: String,
    body: String,
}

/// A TLS server on loopback with a swappable certificate; answers every request with a token
/// and closes the connection (so every request is a new handshake).
struct Proxy {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn proxy(config: Arc<rustls::ServerConfig>) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(Mutex::new(config));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (cfg, log) = (config.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg.lock().unwrap().clone());
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                };
                log.lock().unwrap().push(Seen { sni, head, body });
                let answer =
                    r#"{"token_type":"Bearer","expires_in":3599,"access_token":"at-via-proxy"}"#;
                let r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = tls.write_all(r.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Proxy { addr, config, seen }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The SNI name comes from the `hcp-kubernetes.<id>.svc.cluster.local` name of the API server's
/// certificate, verified with the service-account CA; a certificate without that name says so
/// and names the flag that skips the detection.
#[tokio::test]
async fn the_sni_name_is_computed_from_the_api_server_certificate() {
    let ca = new_ca("cluster CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    write(&ca_file, &ca.pem);
    let hcp = format!("hcp-kubernetes.{CLUSTER_ID}.svc.cluster.local");
    let api = proxy(server_config(
        &ca,
        &["kubernetes.default.svc.cluster.local", &hcp],
    ))
    .await;
    let config = TokenProxyConfig {
        ca_file: Some(ca_file.clone()),
        api_server_addr: Some(api.addr),
        ..TokenProxyConfig::default()
    };
    let p = TokenProxy::new(config.clone(), HttpOptions::default()).unwrap();
    assert_eq!(p.sni_name().await.unwrap(), SNI);
    assert_eq!(sni_for_cluster(CLUSTER_ID), SNI);

    let plain = proxy(server_config(
        &ca,
        &["kubernetes.default.svc.cluster.local"],
    ))
    .await;
    let p = TokenProxy::new(
        TokenProxyConfig {
            api_server_addr: Some(plain.addr),
            ..config.clone()
        },
        HttpOptions::default(),
    )
    .unwrap();
    let e = p.sni_name().await.unwrap_err().to_string();
    assert_eq!(
        e,
        "compute SNI name: extract cluster ID from API server certificate: cluster ID SAN not found in API server certificate (use --sni-name flag to skip automatic SNI detection)"
    );

    // A certificate from another CA is not trusted.
    let other = new_ca("other CA");
    let stranger = proxy(server_config(
        &other,
        &["kubernetes.default.svc.cluster.local", &hcp],
    ))
    .await;
    let p = TokenProxy::new(
        TokenProxyConfig {
            api_server_addr: Some(stranger.addr),
            ..config
        },
        HttpOptions::default(),
    )
    .unwrap();
    let e = p.sni_name().await.unwrap_err().to_string();
    assert!(
        e.contains("TLS connect to API server") && e.contains("certificate"),
        "{e}"
    );
}

/// The token request goes to the proxy with the SNI name, the rewritten path, the Entra
/// authority as Host and the identity-binding token as the client assertion; the CA file is
/// read before every request, and a change takes effect at once.
#[tokio::test]
async fn token_requests_go_through_the_proxy_and_follow_the_ca_file() {
    let ca1 = new_ca("proxy CA 1");
    let ca2 = new_ca("proxy CA 2");
    let server = proxy(server_config(&ca1, &[SNI])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    write(&ca_file, "");
    let p = Arc::new(
        TokenProxy::new(
            TokenProxyConfig {
                url: format!("https://127.0.0.1:{}/proxy", server.addr.port()),
                sni_name: SNI.into(),
                ca_file: Some(ca_file.clone()),
                ..TokenProxyConfig::default()
            },
            HttpOptions {
                system_roots: false,
                ..HttpOptions::default()
            },
        )
        .unwrap(),
    );
    let cloud = Cloud::resolve("AzurePublicCloud", None).unwrap();
    let cred = IdentityBindingCredential::new(
        p.clone(),
        &cloud,
        "tenant-1",
        "client-1",
        SecretString::new("sa-token-for-aks-identity-binding".to_owned()),
    )
    .unwrap()
    .with_retry(entra_auth::RetryPolicy::none());
    let scope = "https://vault.azure.net/.default";
    let get = || async {
        tokio::time::timeout(Duration::from_secs(20), cred.get_token(scope))
            .await
            .unwrap()
    };

    // An empty CA file with nothing known before: an error naming the file.
    let e = get().await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "proxy transport not available: CA file {:?} is empty",
            ca_file
        )
    );

    write(&ca_file, &ca1.pem);
    let t = get().await.unwrap();
    assert_eq!(t.token.expose(), "at-via-proxy");
    let seen = server.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.sni.as_deref(), Some(SNI));
    assert!(
        seen.head
            .starts_with("POST /proxy/tenant-1/oauth2/v2.0/token HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    assert!(
        seen.head
            .to_ascii_lowercase()
            .contains("\r\nhost: login.microsoftonline.com\r\n"),
        "{}",
        seen.head
    );
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(seen.body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "client-1");
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(
        form["client_assertion"],
        "sa-token-for-aks-identity-binding"
    );
    assert_eq!(form["scope"], scope);

    // The proxy rotates to a certificate of CA 2: refused while the file names CA 1 …
    *server.config.lock().unwrap() = server_config(&ca2, &[SNI]);
    let e = get().await.unwrap_err();
    assert!(
        matches!(e, entra_auth::AuthError::Unavailable { .. }),
        "{e}"
    );
    // … accepted as soon as the file holds CA 2, without a restart.
    write(&ca_file, &ca2.pem);
    assert_eq!(get().await.unwrap().token.expose(), "at-via-proxy");
    // An emptied file (a write in progress) keeps the last anchors.
    write(&ca_file, "");
    assert_eq!(get().await.unwrap().token.expose(), "at-via-proxy");
    // A file without a certificate is an error naming it.
    write(&ca_file, "not a certificate");
    let e = get().await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "proxy transport not available: parse CA file {:?}: no valid certificates found",
            ca_file
        )
    );
    // A missing file too.
    std::fs::remove_file(&ca_file).unwrap();
    let e = get().await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "proxy transport not available: read CA file {:?}: ",
            ca_file
        )),
        "{e}"
    );
    let requests = server.seen.lock().unwrap().len();
    assert_eq!(requests, 3, "only the accepted handshakes reach the proxy");
}
