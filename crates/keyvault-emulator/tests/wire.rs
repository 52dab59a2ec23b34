//! Wire shapes: the emulator's JSON has the fields and types recorded from real Key Vault
//! (tests/fixtures), the 401 challenge has Key Vault's form, and the IMDS / NMI answers have
//! their real shapes. Also how it stops: dropped, at once; shut down, after the requests in flight.

mod common;

use common::{APP, TENANT, client, seed, shape_mismatches, token};
use keyvault_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

fn assert_shape(fixture_name: &str, value: &Value) {
    let m = shape_mismatches(&fixture(fixture_name), value, "$");
    assert!(m.is_empty(), "{fixture_name}: {m:#?}\nvalue: {value:#}");
}

const OBJECTS: &str = r#"    secrets:
      - { name: plain, value: hello, content_type: text/plain }
    keys:
      - { name: rsa, kty: RSA, key_size: 2048 }
      - { name: ec, kty: EC, crv: P-384 }
    certificates:
      - { name: pfx, generate: { subject: CN=pfx, kty: EC, crv: P-256 } }
      - { name: pem, content_type: application/x-pem-file, generate: { subject: CN=pem, kty: RSA, key_size: 2048 } }"#;

async fn get(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = http
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn responses_match_recorded_key_vault_shapes() {
    let emu = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&seed(OBJECTS))
            .expect("seed"),
    )
    .await
    .expect("start");
    let http = client(&emu, &["wire"]);
    let t = token(&emu, &http).await;
    let base = emu.vault_url("wire");

    let (s, _, b) = get(&http, &format!("{base}secrets/plain/?api-version=7.4"), &t).await;
    assert_eq!(s, 200, "{b}");
    assert_shape("secret_bundle.json", &b);

    let (s, _, b) = get(&http, &format!("{base}secrets/pfx/?api-version=7.4"), &t).await;
    assert_eq!(s, 200, "{b}");
    assert_shape("certificate_secret_pkcs12.json", &b);
    assert_eq!(b["contentType"], "application/x-pkcs12");

    let (s, _, b) = get(&http, &format!("{base}secrets/pem/?api-version=7.4"), &t).await;
    assert_eq!(s, 200, "{b}");
    assert_shape("certificate_secret_pem.json", &b);
    assert!(
        b["value"]
            .as_str()
            .expect("value")
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );

    for cert in ["pfx", "pem"] {
        let (s, _, b) = get(
            &http,
            &format!("{base}certificates/{cert}/?api-version=7.4"),
            &t,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_shape("certificate_bundle.json", &b);
        // id, kid and sid share the version, as Key Vault links them.
        let version = b["id"]
            .as_str()
            .expect("id")
            .rsplit('/')
            .next()
            .expect("version")
            .to_string();
        assert!(
            b["kid"]
                .as_str()
                .expect("kid")
                .ends_with(&format!("/keys/{cert}/{version}"))
        );
        assert!(
            b["sid"]
                .as_str()
                .expect("sid")
                .ends_with(&format!("/secrets/{cert}/{version}"))
        );
    }

    let (s, _, b) = get(&http, &format!("{base}keys/rsa/?api-version=7.4"), &t).await;
    assert_eq!(s, 200, "{b}");
    assert_shape("key_bundle_rsa.json", &b);
    assert_eq!(b["key"]["e"], "AQAB");
    let (s, _, b) = get(&http, &format!("{base}keys/ec/?api-version=7.4"), &t).await;
    assert_eq!(s, 200, "{b}");
    assert_shape("key_bundle_ec.json", &b);
    assert_eq!(b["key"]["crv"], "P-384");

    // List pages: value[] + nextLink.
    let (s, _, b) = get(
        &http,
        &format!("{base}secrets?api-version=7.4&maxresults=1"),
        &t,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["value"].as_array().expect("value").len(), 1);
    let next = b["nextLink"]
        .as_str()
        .expect("nextLink with more secrets than maxresults");
    let (s, _, b2) = get(&http, next, &t).await;
    assert_eq!(s, 200, "{b2}");
    assert_ne!(b["value"][0]["id"], b2["value"][0]["id"]);

    // Disabled secret: 403 Forbidden / SecretDisabled, as recorded.
    emu.admin()
        .set_secret_enabled("wire", "plain", false)
        .await
        .expect("disable");
    let (s, h, b) = get(&http, &format!("{base}secrets/plain/?api-version=7.4"), &t).await;
    assert_eq!(s, 403);
    assert_shape("error_disabled_secret.json", &b);
    assert_eq!(b["error"]["code"], "Forbidden");
    assert_eq!(b["error"]["innererror"]["code"], "SecretDisabled");
    assert!(h.contains_key("x-ms-request-id"));
}

#[tokio::test]
async fn unauthenticated_request_gets_the_key_vault_challenge() {
    let emu = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&seed(""))
            .expect("seed"),
    )
    .await
    .expect("start");
    let http = client(&emu, &["wire"]);
    let r = http
        .get(format!(
            "{}secrets/x/?api-version=7.4",
            emu.vault_url("wire")
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"{}{TENANT}\", resource=\"https://vault.test:{}\"",
            emu.authority_url(),
            emu.https_addr().port()
        )
    );
    let body: Value = r.json().await.expect("json");
    assert_shape("error_unauthorized.json", &body);
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("AKV10000")
    );
}

/// An IMDS token request (`Metadata: true`) at `url`, its JSON answer.
async fn imds(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn imds_and_nmi_answer_in_their_real_shapes_and_tokens_work() {
    let yaml = format!(
        "tenant: {TENANT}\nvaults:\n  - name: wire\n    access: [{APP}]\n    secrets: [{{ name: s, value: v }}]\nidentities:\n  managed_identities:\n    - {{ client_id: {APP} }}\n  pod_identities:\n    - {{ namespace: default, pod: nginx, client_id: {APP} }}\n"
    );
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&yaml).expect("seed"))
        .await
        .expect("start");
    let http = client(&emu, &["wire"]);
    let resource = emu.resource().to_string();

    // IMDS requires Metadata: true.
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}",
        emu.imds_url()
    );
    let r = http.get(&url).send().await.expect("imds");
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"], "invalid_request");
    let b = imds(&http, &url).await;
    for f in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(b[f].is_string(), "IMDS field {f} is a string: {b}");
    }
    let imds_token = b["access_token"].as_str().expect("token").to_string();
    let r = http
        .get(format!(
            "{url}&client_id=99999999-9999-9999-9999-999999999999"
        ))
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds");
    assert_eq!(r.status().as_u16(), 400, "unknown client_id");

    // NMI: /host/token/ with podns/podname headers.
    let nmi = format!("{}/host/token/?resource={resource}", emu.nmi_url());
    let b: Value = http
        .get(&nmi)
        .header("podns", "default")
        .header("podname", "nginx")
        .send()
        .await
        .expect("nmi")
        .json()
        .await
        .expect("json");
    assert_eq!(b["clientid"], APP);
    let nmi_token = b["token"]["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(b["token"]["expires_on"].is_string());
    // Like Azure's managed identity endpoint, the same identity and resource get the cached
    // token back while it has most of its lifetime left (NMI goes through the same cache).
    assert_eq!(
        nmi_token, imds_token,
        "a managed identity's token is cached per resource"
    );
    let r = http
        .get(&nmi)
        .header("podns", "default")
        .header("podname", "other")
        .send()
        .await
        .expect("nmi");
    assert_eq!(r.status().as_u16(), 403);

    for t in [imds_token, nmi_token] {
        let (s, _, b) = get(
            &http,
            &format!("{}secrets/s/?api-version=7.4", emu.vault_url("wire")),
            &t,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["value"], "v");
    }
}

#[tokio::test]
async fn a_managed_identity_token_near_expiry_is_never_handed_out_again() {
    let yaml = format!(
        "tenant: {TENANT}\nidentities:\n  managed_identities:\n    - {{ client_id: {APP} }}\n"
    );
    // A lifetime under IMDS's 5-minute refresh window: every request gets a new token.
    let emu = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&yaml)
            .expect("seed")
            .token_lifetime(std::time::Duration::from_secs(240)),
    )
    .await
    .expect("start");
    let http = client(&emu, &[]);
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
        emu.imds_url(),
        emu.resource()
    );
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let b = imds(&http, &url).await;
        assert_eq!(b["expires_in"], "240", "{b}");
        tokens.push(b["access_token"].as_str().expect("token").to_string());
    }
    assert_ne!(
        tokens[0], tokens[1],
        "a token with < 5 minutes left is not reused"
    );
}

#[tokio::test]
async fn a_given_ca_is_used_and_dropping_the_emulator_closes_its_listeners() {
    // A CA made elsewhere (kept across restarts by users so clients keep trusting it).
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).expect("ca");
    let config = EmulatorConfig::default()
        .seed_yaml(&seed("    secrets: [{ name: s, value: v }]"))
        .expect("seed")
        .ca(keyvault_emulator::CaSource::Pem {
            cert_pem: ca.pem(),
            key_pem: key.serialize_pem(),
        });
    let emu = Emulator::start(config).await.expect("start");
    assert_eq!(emu.ca_pem(), ca.pem());
    let http = client(&emu, &["wire"]);
    let t = token(&emu, &http).await;
    let (s, _, _) = get(
        &http,
        &format!("{}secrets/s/?api-version=7.4", emu.vault_url("wire")),
        &t,
    )
    .await;
    assert_eq!(s, 200, "served with a certificate from the given CA");

    let addrs = [
        emu.https_addr(),
        emu.imds_url()
            .trim_start_matches("http://")
            .parse()
            .expect("imds addr"),
    ];
    drop(emu);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for a in addrs {
        assert!(
            tokio::net::TcpStream::connect(a).await.is_err(),
            "{a} still accepts after drop"
        );
    }
}

#[tokio::test]
async fn shutdown_answers_the_requests_in_flight_then_closes_the_listeners() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emu = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&seed(""))
            .expect("seed"),
    )
    .await
    .expect("start");
    let https = emu.https_addr();
    let admin: std::net::SocketAddr = emu
        .admin_url()
        .trim_start_matches("http://")
        .parse()
        .expect("admin addr");
    // A request in flight: its head sent, its body not yet complete.
    let body = br#"{"value":"written while stopping"}"#;
    let mut conn = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let head = format!(
        "PUT /admin/vaults/wire/secrets/late HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        emu.admin_token(),
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&body[..5]).await.expect("half the body");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let shutdown = tokio::spawn(emu.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the request");
    assert!(
        tokio::net::TcpStream::connect(https).await.is_err(),
        "{https} still accepts while draining"
    );
    conn.write_all(&body[5..])
        .await
        .expect("the rest of the body");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"version\""), "{reply}");
    tokio::time::timeout(std::time::Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown returns once the connection is closed")
        .expect("shutdown task");
}
