//! keyvault-emulator's request handling, over its real listeners: the Key Vault data plane
//! (route matching from method and path, api-version, bearer authentication, the JSON bodies of
//! set/update/import/create/recover), the Entra ID endpoints (token form, discovery), IMDS, NMI
//! and the admin API.
//!
//! Input (structured): one to three requests, each an endpoint, a method, path segments from
//! plausible and arbitrary parts, a query, headers (a valid bearer token most of the time), and a
//! body (JSON in the shape of the operation, or arbitrary bytes).
//!
//! Checks: no panic on any thread (the handlers run on the emulator's tasks); every request gets
//! an answer within 10 s and none is a 500; a JSON answer parses; a data-plane error has Key
//! Vault's `error.code` and `error.message`; no answer contains the service principal's client
//! secret or the admin token.
//!
//! Left out on purpose: RSA key and certificate *generation* (seconds of CPU per request; EC is
//! in) and adding admin faults (they would change what later inputs see). The emulator is
//! restarted every [`RESTART_EVERY`] inputs so its store stays small.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use keyvault_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

use crate::input::Gen;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "11111111-1111-1111-1111-111111111111";
/// The service principal's secret: never in any answer.
const APP_SECRET: &str = "cAnArY-emulator-app-secret-41d9";
const MI: &str = "22222222-2222-2222-2222-222222222222";
const VAULT: &str = "fuzzkv";
/// Inputs between emulator restarts.
pub const RESTART_EVERY: usize = 2000;

struct Running {
    emulator: Emulator,
    http: reqwest::Client,
    token: String,
}

struct Env {
    rt: tokio::runtime::Runtime,
    running: Mutex<Option<Arc<Running>>>,
    inputs: AtomicUsize,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fuzz-emulator")
            .enable_all()
            .build()
            .expect("runtime"),
        running: Mutex::new(None),
        inputs: AtomicUsize::new(0),
    })
}

fn seed_yaml() -> String {
    let pfx = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pfx/tests/fixtures/3des.pfx"
    ))
    .expect("pfx fixture");
    let pfx = base64::engine::general_purpose::STANDARD.encode(pfx);
    format!(
        "tenant: {TENANT}
vaults:
  - name: {VAULT}
    access: [{APP}, {MI}]
    secrets:
      - {{ name: s1, value: v1, content_type: text/plain, tags: {{ env: dev }} }}
    keys:
      - {{ name: ec, kty: EC, crv: P-256 }}
    certificates:
      - {{ name: pfx, pfx_base64: \"{pfx}\", password: fixture-pw }}
identities:
  service_principals:
    - {{ client_id: {APP}, client_secret: {APP_SECRET} }}
  managed_identities:
    - {{ client_id: {MI}, default: true }}
  pod_identities:
    - {{ namespace: default, pod: nginx, client_id: {MI} }}
"
    )
}

async fn start() -> Running {
    let config = EmulatorConfig::default()
        .seed_yaml(&seed_yaml())
        .expect("seed")
        .default_vault(VAULT);
    let emulator = Emulator::start(config).await.expect("emulator starts");
    let mut roots = rustls::RootCertStore::empty();
    let (_, der) = der::pem::decode_vec(emulator.ca_pem().as_bytes()).expect("CA PEM");
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    for v in [VAULT, "other"] {
        b = b.resolve(&emulator.vault_host(v), emulator.https_addr());
    }
    let http = b.build().expect("client");
    let scope = format!("{}/.default", emulator.resource());
    let resp: Value = http
        .post(format!(
            "{}{TENANT}/oauth2/v2.0/token",
            emulator.authority_url()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", APP_SECRET),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    let token = resp["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    Running {
        emulator,
        http,
        token,
    }
}

fn running(env: &Env) -> Arc<Running> {
    let n = env.inputs.fetch_add(1, Ordering::SeqCst);
    let mut slot = env.running.lock().unwrap_or_else(|e| e.into_inner());
    if n.is_multiple_of(RESTART_EVERY)
        && let Some(old) = slot.take()
        && let Ok(old) = Arc::try_unwrap(old)
    {
        env.rt.block_on(old.emulator.shutdown());
    }
    if slot.is_none() {
        *slot = Some(Arc::new(env.rt.block_on(start())));
    }
    slot.clone().expect("running")
}

pub fn run(data: &[u8]) {
    let env = env();
    let r = running(env);
    let mut g = Gen::new(data);
    let n = 1 + g.below(3);
    let requests: Vec<Req> = (0..n).map(|_| request(&mut g, &r)).collect();
    crate::no_panic_on("fuzz-emulator", || {
        for req in requests {
            env.rt.block_on(send(&r, req));
        }
    });
}

// === requests ===

#[derive(Debug)]
struct Req {
    endpoint: Endpoint,
    method: reqwest::Method,
    host: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Vault,
    Entra,
    Imds,
    Nmi,
    Admin,
}

/// Percent-encodes what a URL path segment cannot hold as is.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn string_value(g: &mut Gen<'_>) -> Value {
    match g.byte() % 8 {
        7 => Value::Null,
        6 => json!(g.i64()),
        5 => json!(g.bool()),
        4 => json!([g.string(8)]),
        3 => json!({ "a": g.string(8) }),
        _ => json!(g.text(&["v", "", "text/plain", "application/x-pem-file"])),
    }
}

fn number_value(g: &mut Gen<'_>) -> Value {
    match g.byte() % 8 {
        7 => json!(u64::MAX),
        6 => json!(-1),
        5 => json!(1e300),
        4 => json!(i64::MIN),
        3 => json!(g.string(8)),
        _ => json!(g.i64()),
    }
}

fn attributes(g: &mut Gen<'_>) -> Value {
    let mut a = serde_json::Map::new();
    if g.bool() {
        a.insert("enabled".into(), json!(g.bool()));
    }
    for k in ["exp", "nbf", "created", "updated", "recoverableDays"] {
        if g.chance(1, 3) {
            a.insert(k.into(), number_value(g));
        }
    }
    if g.chance(1, 8) {
        a.insert(g.string(8), string_value(g));
    }
    Value::Object(a)
}

fn tags(g: &mut Gen<'_>) -> Value {
    match g.byte() % 4 {
        0 => Value::Null,
        1 => string_value(g),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..g.below(3) {
                m.insert(g.string(8), string_value(g));
            }
            Value::Object(m)
        }
    }
}

fn b64url(g: &mut Gen<'_>) -> Value {
    let bytes = g.bytes(80);
    json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn jwk(g: &mut Gen<'_>) -> Value {
    let mut k = serde_json::Map::new();
    k.insert(
        "kty".into(),
        json!(g.text(&["EC", "EC-HSM", "RSA", "RSA-HSM", "oct", ""])),
    );
    k.insert(
        "crv".into(),
        json!(g.text(&["P-256", "P-384", "P-521", "P-256K", "X"])),
    );
    for f in ["x", "y", "d", "n", "e", "p", "q", "dp", "dq", "qi", "k"] {
        if g.chance(1, 2) {
            k.insert(f.into(), b64url(g));
        }
    }
    if g.chance(1, 3) {
        k.insert("key_ops".into(), json!([g.text(&["sign", "verify", "x"])]));
    }
    Value::Object(k)
}

fn body(g: &mut Gen<'_>) -> Option<Vec<u8>> {
    let v = match g.byte() % 10 {
        9 => return None,
        1 => return Some(g.bytes(512)),
        0 | 2 => {
            json!({ "value": string_value(g), "contentType": string_value(g), "tags": tags(g), "attributes": attributes(g) })
        }
        3 => {
            json!({ "kty": g.text(&["EC", "EC-HSM", "oct", "RSA"]), "crv": g.text(&["P-256", "P-384", "P-521", "X"]), "key_size": number_value(g), "key_ops": [g.string(8)], "attributes": attributes(g) })
        }
        4 => {
            json!({ "key": jwk(g), "tags": tags(g), "attributes": attributes(g), "Hsm": g.bool() })
        }
        5 => {
            let pfx = std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../pfx/tests/fixtures/rc2-40.pfx"
            ))
            .unwrap_or_default();
            let mut bytes = pfx;
            if g.chance(1, 2) && !bytes.is_empty() {
                let i = g.below(bytes.len());
                bytes[i] ^= g.byte();
            }
            let value = match g.byte() % 4 {
                3 => json!(g.string(64)),
                2 => json!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
                _ => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            };
            json!({ "value": value, "pwd": g.text(&["fixture-pw", ""]), "policy": { "secret_props": { "contentType": g.text(&["application/x-pkcs12", "application/x-pem-file", "x"]) } }, "tags": tags(g) })
        }
        6 => {
            json!({ "policy": { "key_props": { "kty": g.text(&["EC", "EC-HSM", "RSA"]), "crv": g.text(&["P-256", "P-384", "x"]), "key_size": number_value(g), "exportable": g.bool() }, "x509_props": { "subject": g.text(&["CN=x", "", "CN="]), "validity_months": number_value(g), "sans": { "dns_names": [g.string(16)] } }, "issuer": { "name": g.text(&["Self", "Unknown"]) }, "secret_props": { "contentType": g.text(&["application/x-pkcs12", "application/x-pem-file"]) } } })
        }
        7 => {
            json!({ "attributes": attributes(g), "tags": tags(g), "contentType": string_value(g), "key_ops": [g.string(8)] })
        }
        _ => json!({ "value": g.string(32), "content_type": string_value(g) }),
    };
    Some(v.to_string().into_bytes())
}

fn request(g: &mut Gen<'_>, r: &Running) -> Req {
    let endpoint = match g.byte() % 16 {
        0..=9 => Endpoint::Vault,
        10 | 11 => Endpoint::Entra,
        12 => Endpoint::Imds,
        13 => Endpoint::Nmi,
        _ => Endpoint::Admin,
    };
    let method = [
        reqwest::Method::GET,
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::POST,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
        reqwest::Method::HEAD,
        reqwest::Method::OPTIONS,
    ][g.below(8)]
    .clone();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut host = String::new();
    let path = match endpoint {
        Endpoint::Vault => {
            host = g
                .pick(&[VAULT, VAULT, VAULT, "127.0.0.1", "other"])
                .to_owned();
            let mut segs = vec![g.text(&[
                "secrets",
                "keys",
                "certificates",
                "deletedsecrets",
                "deletedkeys",
                "deletedcertificates",
            ])];
            let n = g.below(4);
            for i in 0..n {
                segs.push(if i == 0 {
                    g.text(&["s1", "ec", "pfx", "new-1", "bad_name", "", "a-b"])
                } else {
                    g.text(&[
                        "",
                        "versions",
                        "create",
                        "import",
                        "recover",
                        "pending",
                        "policy",
                        "0123456789abcdef0123456789abcdef",
                    ])
                });
            }
            if g.chance(15, 16) {
                query.push((
                    "api-version".into(),
                    g.text(&["7.4", "7.0", "7.6", "2025-07-01", "2026-04-01", "7.9", ""]),
                ));
            }
            if g.chance(1, 8) {
                query.push(("maxresults".into(), g.text(&["1", "25", "0", "-1", "x"])));
            }
            match g.byte() % 8 {
                7 => {}
                6 => headers.push(("authorization".into(), g.text(&["Bearer x.y.z", "Basic a"]))),
                _ => headers.push(("authorization".into(), format!("Bearer {}", r.token))),
            }
            format!(
                "/{}",
                segs.iter().map(|s| seg(s)).collect::<Vec<_>>().join("/")
            )
        }
        Endpoint::Entra => {
            let tenant = g.text(&[TENANT, "common", "organizations", "other"]);
            g.text(&[
                &format!("/{}/oauth2/v2.0/token", seg(&tenant)),
                &format!("/{}/v2.0/.well-known/openid-configuration", seg(&tenant)),
                &format!("/{}/discovery/v2.0/keys", seg(&tenant)),
                "/common/discovery/instance",
                "/",
            ])
        }
        Endpoint::Imds => {
            for (k, vals) in [
                ("api-version", &["2018-02-01", "x"][..]),
                (
                    "resource",
                    &["https://vault.azure.net", "https://vault.test", ""][..],
                ),
                ("client_id", &[MI, APP, "x"][..]),
                ("mi_res_id", &["x"][..]),
            ] {
                if g.chance(2, 3) {
                    query.push((k.into(), g.text(vals)));
                }
            }
            if g.chance(7, 8) {
                headers.push(("metadata".into(), g.text(&["true", "True", "false"])));
            }
            g.text(&[
                "/metadata/identity/oauth2/token",
                "/metadata/identity/oauth2/token/",
                "/",
            ])
        }
        Endpoint::Nmi => {
            if g.chance(7, 8) {
                query.push(("resource".into(), g.text(&["https://vault.azure.net", ""])));
            }
            if g.chance(7, 8) {
                headers.push(("podns".into(), g.text(&["default", "other"])));
                headers.push(("podname".into(), g.text(&["nginx", "other"])));
            }
            g.text(&["/host/token/", "/host/token", "/"])
        }
        Endpoint::Admin => {
            if g.chance(7, 8) {
                headers.push((
                    "authorization".into(),
                    format!("Bearer {}", r.emulator.admin_token()),
                ));
            }
            let name = seg(&g.text(&["s1", "new-1", "bad_name"]));
            let vault = seg(&g.text(&[VAULT, "nope"]));
            g.text(&[
                "/admin/health",
                "/admin/counters",
                "/admin/counters/reset",
                "/admin/reset",
                &format!("/admin/vaults/{vault}/secrets/{name}"),
            ])
        }
    };
    if g.chance(1, 4) {
        headers.push(("x-ms-client-request-id".into(), g.string(40)));
    }
    if g.chance(1, 8) {
        query.push((g.string(8), g.string(8)));
    }
    let body = if endpoint == Endpoint::Entra && g.chance(3, 4) {
        let scope = format!("{}/.default", r.emulator.resource());
        let mut form = Vec::new();
        for (k, vals) in [
            ("grant_type", &["client_credentials", "password", ""][..]),
            ("client_id", &[APP, MI, "x"][..]),
            ("client_secret", &[APP_SECRET, "wrong"][..]),
            ("scope", &[scope.as_str(), "https://other/.default", ""][..]),
            (
                "client_assertion_type",
                &[
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "x",
                ][..],
            ),
            (
                "client_assertion",
                &["eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln", "x"][..],
            ),
        ] {
            if g.chance(2, 3) {
                form.push((k.to_owned(), g.text(vals)));
            }
        }
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        Some(
            serde_urlencoded::to_string(&form)
                .unwrap_or_default()
                .into_bytes(),
        )
    } else {
        let b = body(g);
        if b.is_some() && g.chance(7, 8) {
            headers.push(("content-type".into(), "application/json".into()));
        }
        b
    };
    Req {
        endpoint,
        method,
        host,
        path,
        query,
        headers,
        body,
    }
}

/// Generation of RSA material: seconds of CPU, not what this target is for.
fn generates_rsa(method: &reqwest::Method, path: &str, body: Option<&[u8]>) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if *method != reqwest::Method::POST {
        return false;
    }
    let body: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    match segs.as_slice() {
        ["keys", _, "create"] => body
            .get("kty")
            .and_then(Value::as_str)
            .is_some_and(|k| k.starts_with("RSA")),
        ["certificates", _, "create"] => body
            .pointer("/policy/key_props/kty")
            .and_then(Value::as_str)
            .is_none_or(|k| k.starts_with("RSA")),
        _ => false,
    }
}

async fn send(r: &Running, req: Req) {
    let emu = &r.emulator;
    let base = match req.endpoint {
        Endpoint::Vault => match req.host.as_str() {
            VAULT | "other" => format!("https://{}", emu.vault_host(&req.host)),
            _ => format!("https://{}:{}", req.host, emu.https_addr().port()),
        },
        Endpoint::Entra => emu.authority_url().trim_end_matches('/').to_owned(),
        Endpoint::Imds => emu.imds_url().trim_end_matches('/').to_owned(),
        Endpoint::Nmi => emu.nmi_url().trim_end_matches('/').to_owned(),
        Endpoint::Admin => emu.admin_url().trim_end_matches('/').to_owned(),
    };
    let path: String = format!("/{}", req.path.trim_start_matches('/'))
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '?' | '#' | '%') {
                c.to_string()
            } else {
                seg(&c.to_string())
            }
        })
        .collect();
    let Ok(mut url) = reqwest::Url::parse(&format!("{base}{path}")) else {
        return;
    };
    // Only the emulator's own listeners (an arbitrary path must not turn into a host).
    let Ok(expected) = reqwest::Url::parse(&base) else {
        return;
    };
    if url.host_str() != expected.host_str() || url.port() != expected.port() {
        return;
    }
    if !req.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&req.query);
    }
    if req.endpoint == Endpoint::Vault
        && generates_rsa(&req.method, url.path(), req.body.as_deref())
    {
        return;
    }
    let segs: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
    if req.endpoint == Endpoint::Admin && segs == ["admin", "faults"] {
        return;
    }
    let mut builder = r.http.request(req.method.clone(), url.clone());
    for (k, v) in &req.headers {
        let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) else {
            continue;
        };
        builder = builder.header(k, v);
    }
    if let Some(b) = req.body.clone() {
        builder = builder.body(b);
    }
    let resp = match builder.send().await {
        Ok(resp) => resp,
        Err(e) if e.is_builder() => return,
        Err(e) => panic!("{} {url}: no answer ({e:?}); request {req:?}", req.method),
    };
    let status = resp.status().as_u16();
    let json_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => panic!("{} {url}: body not read ({e}); request {req:?}", req.method),
    };
    let text = String::from_utf8_lossy(&bytes);
    assert_ne!(
        status, 500,
        "{} {url}: 500 {text}; request {req:?}",
        req.method
    );
    assert!(
        !text.contains(APP_SECRET) && !text.contains(emu.admin_token()),
        "{} {url}: the answer shows a secret: {text}",
        req.method
    );
    if json_type && req.method != reqwest::Method::HEAD {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{} {url}: JSON answer does not parse ({e}): {text}",
                req.method
            )
        });
        if req.endpoint == Endpoint::Vault && (400..500).contains(&status) {
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{} {url}: {status} not in Key Vault's error shape: {text}",
                req.method
            );
        }
    }
}
