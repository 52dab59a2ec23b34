//! The HTTP client against a scripted loopback server: challenge, token reuse, retries honouring
//! Retry-After, error classification, paging, timeouts.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use entra_auth::{
    AccessToken, AuthError, BoxFuture, CredentialIdentity, RetryPolicy, SecretString,
    TokenCredential,
};
use keyvault_client::{
    ClientOptions, Connector, HttpConnector, HttpKeyVault, KeyVault, KvError, ObjectKind,
    PacingOptions, RequestObserver,
};

#[derive(Debug, Default)]
struct CountingCredential {
    calls: AtomicUsize,
    scopes: std::sync::Mutex<Vec<String>>,
}

impl TokenCredential for CountingCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.scopes.lock().unwrap().push(scope.to_owned());
            Ok(AccessToken {
                token: SecretString::new("tok-123"),
                expires_on: SystemTime::now() + Duration::from_secs(3600),
            })
        })
    }
    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity {
            kind: "test",
            authority: String::new(),
            tenant: None,
            client_id: None,
            pod: None,
        }
    }
}

#[derive(Default)]
struct Script {
    hits: AtomicUsize,
    throttled: AtomicUsize,
    unauth: AtomicUsize,
    port: AtomicUsize,
}

fn challenge(resource: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", format!("Bearer authorization=\"https://login.test/tid\", resource=\"{resource}\""))],
        r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#,
    )
        .into_response()
}

async fn secret(
    State(s): State<Arc<Script>>,
    Path((name, version)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-123") {
        s.unauth.fetch_add(1, Ordering::SeqCst);
        let res = if name == "evil" {
            "https://vault.other.test"
        } else {
            "http://vault.test"
        };
        return challenge(res);
    }
    match name.as_str() {
        "throttle-five" if s.throttled.fetch_add(1, Ordering::SeqCst) < 5 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after-ms", "50")], "").into_response(),
        "throttle-once" if n < 2 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response(),
        "always-503" => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"code":"ServiceUnavailable","message":"busy"}}"#).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "{}".into_response()
        }
        "denied" => (StatusCode::FORBIDDEN, r#"{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.","innererror":{"code":"AccessDenied"}}}"#).into_response(),
        "present" | "throttle-once" | "throttle-five" => axum::Json(serde_json::json!({
            "value": "v", "id": format!("http://kv1.vault.test/secrets/{name}/{}", if version.is_empty() { "abc" } else { &version }),
            "attributes": {"enabled": true}
        }))
        .into_response(),
        _ => (StatusCode::NOT_FOUND, r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) x was not found in this key vault."}}"#).into_response(),
    }
}

async fn latest(st: State<Arc<Script>>, Path(name): Path<String>, h: HeaderMap) -> Response {
    secret(st, Path((name, String::new())), h).await
}

async fn versions(
    State(s): State<Arc<Script>>,
    Path(name): Path<String>,
    h: HeaderMap,
    q: axum::extract::RawQuery,
) -> Response {
    if h.get("authorization").is_none() {
        return challenge("http://vault.test");
    }
    let port = s.port.load(Ordering::SeqCst);
    let page2 = q.0.unwrap_or_default().contains("page=2");
    let next = match (name.as_str(), page2) {
        ("paged", false) => serde_json::json!(format!(
            "http://kv1.vault.test:{port}/secrets/paged/versions?api-version=7.4&page=2"
        )),
        ("leaky", false) => serde_json::json!("http://attacker.test/collect"),
        _ => serde_json::Value::Null,
    };
    let id = if page2 { "v2" } else { "v1" };
    axum::Json(serde_json::json!({
        "value": [{"id": format!("http://kv1.vault.test/secrets/{name}/{id}"), "attributes": {"enabled": true, "created": 1}}],
        "nextLink": next
    }))
    .into_response()
}

async fn start() -> (Arc<Script>, String, reqwest::Client) {
    let script = Arc::new(Script::default());
    let app = axum::Router::new()
        .route("/secrets/{name}/", get(latest))
        .route("/secrets/{name}/versions", get(versions))
        .route("/secrets/{name}/{version}", get(secret))
        .with_state(script.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    script.port.store(addr.port() as usize, Ordering::SeqCst);
    tokio::spawn(async move { axum::serve(l, app).await });
    let http = entra_auth::build_client(&entra_auth::HttpOptions {
        resolve: vec![("kv1.vault.test".into(), addr)],
        ..Default::default()
    })
    .unwrap();
    (
        script,
        format!("http://kv1.vault.test:{}/", addr.port()),
        http,
    )
}

fn client(http: reqwest::Client, base: &str, cred: Arc<CountingCredential>) -> HttpKeyVault {
    let opts = ClientOptions {
        call_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(20),
            ..Default::default()
        },
        verify_challenge_resource: true,
        ..ClientOptions::default()
    };
    HttpKeyVault::new(http, url::Url::parse(base).unwrap(), cred, opts)
}

#[tokio::test]
async fn challenge_then_token_reused() {
    let (script, base, http) = start().await;
    let cred = Arc::new(CountingCredential::default());
    let kv = client(http, &base, cred.clone());
    let s = kv.get_secret("present", "").await.unwrap();
    assert_eq!(s.value.unwrap().expose(), b"v");
    assert_eq!(
        s.id.as_deref(),
        Some("http://kv1.vault.test/secrets/present/abc")
    );
    kv.get_secret("present", "v7").await.unwrap();
    assert_eq!(
        cred.calls.load(Ordering::SeqCst),
        1,
        "one token for the whole client"
    );
    assert_eq!(cred.scopes.lock().unwrap()[0], "http://vault.test/.default");
    assert_eq!(script.unauth.load(Ordering::SeqCst), 1, "one challenge");
    assert!(!format!("{kv:?}").contains("tok-123"));
}

#[tokio::test]
async fn challenge_for_a_foreign_domain_is_refused_before_any_token() {
    let (_s, base, http) = start().await;
    let cred = Arc::new(CountingCredential::default());
    let err = client(http, &base, cred.clone())
        .get_secret("evil", "")
        .await
        .unwrap_err();
    assert!(matches!(err, KvError::Challenge(_)), "{err}");
    assert_eq!(err.kind(), "auth_failed");
    assert_eq!(cred.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn retries_honour_retry_after_and_give_up_bounded() {
    let (script, base, http) = start().await;
    let kv = client(http, &base, Arc::new(CountingCredential::default()));
    let t = Instant::now();
    kv.get_secret("throttle-once", "").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured ({:?})",
        t.elapsed()
    );
    let before = script.hits.load(Ordering::SeqCst);
    let err = kv.get_secret("always-503", "").await.unwrap_err();
    assert_eq!(
        script.hits.load(Ordering::SeqCst) - before,
        3,
        "1 try + 2 retries"
    );
    assert_eq!(err.kind(), "server_error");
    assert!(
        err.to_string().contains("503 ServiceUnavailable: busy"),
        "{err}"
    );
}

#[tokio::test]
async fn errors_are_classified() {
    let (_s, base, http) = start().await;
    let kv = client(http, &base, Arc::new(CountingCredential::default()));
    let e = kv.get_secret("nope", "").await.unwrap_err();
    assert_eq!(e.kind(), "not_found");
    assert!(
        e.to_string()
            .starts_with("not found (404 SecretNotFound): A secret with"),
        "{e}"
    );
    let e = kv.get_secret("denied", "").await.unwrap_err();
    assert_eq!(e.kind(), "forbidden");
    let t = Instant::now();
    let e = kv.get_secret("slow", "").await.unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "per-call timeout, bounded retries ({:?})",
        t.elapsed()
    );
}

#[tokio::test]
async fn versions_follow_next_link_on_the_vault_only() {
    let (_s, base, http) = start().await;
    let kv = client(http, &base, Arc::new(CountingCredential::default()));
    let v = kv.list_versions(ObjectKind::Secret, "paged").await.unwrap();
    let ids: Vec<&str> = v.iter().map(|i| i.version()).collect();
    assert_eq!(ids, ["v1", "v2"]);
    assert_eq!(v[0].created, Some(1));
    let e = kv
        .list_versions(ObjectKind::Secret, "leaky")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("nextLink points outside the vault"),
        "{e}"
    );
}

#[tokio::test]
async fn concurrent_first_requests_share_one_challenge_and_token() {
    let (script, base, http) = start().await;
    let cred = Arc::new(CountingCredential::default());
    let kv = Arc::new(client(http, &base, cred.clone()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let kv = kv.clone();
        set.spawn(async move { kv.get_secret("present", "").await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
    assert_eq!(script.unauth.load(Ordering::SeqCst), 1);
}

#[derive(Default)]
struct Observed {
    responses: std::sync::Mutex<Vec<(&'static str, &'static str)>>,
    waits: AtomicUsize,
}

impl RequestObserver for Observed {
    fn response(&self, operation: &'static str, status: &'static str) {
        self.responses.lock().unwrap().push((operation, status));
    }
    fn throttle_wait(&self, _waited: Duration) {
        self.waits.fetch_add(1, Ordering::SeqCst);
    }
}

fn connector(
    http: reqwest::Client,
    pacing: PacingOptions,
    observer: Arc<Observed>,
) -> HttpConnector {
    let opts = ClientOptions {
        retry: RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(20),
            ..Default::default()
        },
        pacing,
        throttle_budget: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    HttpConnector::new(http, opts).with_observer(observer)
}

#[tokio::test]
async fn clients_of_one_connector_share_the_challenge_scope() {
    let (script, base, http) = start().await;
    let observed = Arc::new(Observed::default());
    let conn = connector(http, PacingOptions::default(), observed.clone());
    let url = url::Url::parse(&base).unwrap();
    for _ in 0..3 {
        // a new client per mount, as the provider does: only the first probes unauthenticated
        let cred = Arc::new(CountingCredential::default());
        let kv = conn.connect(&url, cred.clone());
        kv.get_secret("present", "").await.unwrap();
        assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cred.scopes.lock().unwrap().as_slice(),
            ["http://vault.test/.default"]
        );
    }
    assert_eq!(script.unauth.load(Ordering::SeqCst), 1, "one probe in all");
    assert_eq!(script.hits.load(Ordering::SeqCst), 4);
    assert_eq!(
        observed.responses.lock().unwrap().as_slice(),
        [
            ("get_secret", "401"),
            ("get_secret", "200"),
            ("get_secret", "200"),
            ("get_secret", "200")
        ]
    );
}

#[tokio::test]
async fn with_pacing_429s_are_waited_out_within_the_budget_not_the_retry_count() {
    // five 429s in a row: more than the two retries allow
    let (script, base, http) = start().await;
    let url = url::Url::parse(&base).unwrap();
    let observed = Arc::new(Observed::default());
    let kv = connector(http.clone(), PacingOptions::off(), observed.clone())
        .connect(&url, Arc::new(CountingCredential::default()));
    let e = kv.get_secret("throttle-five", "").await.unwrap_err();
    assert_eq!(e.kind(), "throttled", "{e}");
    assert_eq!(
        script.throttled.load(Ordering::SeqCst),
        3,
        "1 try + 2 retries"
    );
    assert_eq!(observed.waits.load(Ordering::SeqCst), 0, "no pacer");

    script.throttled.store(0, Ordering::SeqCst);
    let observed = Arc::new(Observed::default());
    let kv = connector(http, PacingOptions::default(), observed.clone())
        .connect(&url, Arc::new(CountingCredential::default()));
    let t = Instant::now();
    let s = kv.get_secret("throttle-five", "").await.unwrap();
    assert_eq!(s.value.unwrap().expose(), b"v");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let statuses: Vec<_> = observed
        .responses
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(statuses, ["401", "429", "429", "429", "429", "429", "200"]);
    assert_eq!(
        observed.waits.load(Ordering::SeqCst),
        5,
        "each retry waited at the gate"
    );
}
