//! The request shapes each credential puts on the wire, checked against a loopback recorder, and
//! how error answers are reported (without secrets).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use entra_auth::{
    ClientAssertionCredential, ClientSecretCredential, Cloud, ManagedIdentityCredential,
    NodeEndpoints, PodIdentityCredential, SecretString, TokenCredential,
};

#[derive(Default)]
struct Seen {
    forms: Vec<HashMap<String, String>>,
    queries: Vec<HashMap<String, String>>,
    headers: Vec<HashMap<String, String>>,
}

type S = Arc<Mutex<Seen>>;

fn hdrs(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

async fn token(State(s): State<S>, body: String) -> impl IntoResponse {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let bad = form.get("client_secret").map(String::as_str) == Some("wrong");
    s.lock().unwrap().forms.push(form);
    if bad {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}"#,
        )
            .into_response();
    }
    axum::Json(
        serde_json::json!({"token_type":"Bearer","expires_in":3599,"access_token":"at-entra"}),
    )
    .into_response()
}

async fn imds(
    State(s): State<S>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> impl IntoResponse {
    let unknown = q.get("client_id").map(String::as_str) == Some("unknown");
    s.lock().unwrap().queries.push(q);
    s.lock().unwrap().headers.push(hdrs(&h));
    if unknown {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
        )
            .into_response();
    }
    // real IMDS sends numbers as strings
    axum::Json(serde_json::json!({"access_token":"at-imds","expires_in":"86399","expires_on":"4102444800","resource":"x","token_type":"Bearer"})).into_response()
}

async fn nmi(
    State(s): State<S>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> impl IntoResponse {
    let pod = h
        .get("podname")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    s.lock().unwrap().queries.push(q);
    s.lock().unwrap().headers.push(hdrs(&h));
    if pod == "nobody" {
        return (
            StatusCode::NOT_FOUND,
            "no AzureIdentity found for pod:default/nobody",
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"token":{"access_token":"at-nmi","expires_on":4102444800u64},"clientid":"c"})).into_response()
}

async fn start() -> (S, String) {
    let s: S = Arc::default();
    let app = axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/host/token/", get(nmi))
        .with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (s, base)
}

fn cloud(base: &str) -> Cloud {
    Cloud {
        name: "AzureStackCloud".into(),
        active_directory_endpoint: format!("{base}/"),
        key_vault_endpoint: "https://vault.test/".into(),
        key_vault_dns_suffix: "vault.test".into(),
    }
}

#[tokio::test]
async fn service_principal_and_workload_identity_forms() {
    let (seen, base) = start().await;
    let http = entra_auth::build_client(&Default::default()).unwrap();
    let c = ClientSecretCredential::new(
        http.clone(),
        &cloud(&base),
        "tid",
        "cid",
        SecretString::new("csecret"),
    )
    .unwrap();
    let t = c.get_token("https://vault.test/.default").await.unwrap();
    assert_eq!(t.token.expose(), "at-entra");
    let wi = ClientAssertionCredential::new(
        http.clone(),
        &cloud(&base),
        "tid",
        "wid",
        SecretString::new("sa.jwt.token"),
    )
    .unwrap();
    wi.get_token("https://vault.test/.default").await.unwrap();
    {
        let s = seen.lock().unwrap();
        let f = &s.forms[0];
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(
            (f["client_id"].as_str(), f["client_secret"].as_str()),
            ("cid", "csecret")
        );
        assert_eq!(f["scope"], "https://vault.test/.default");
        let f = &s.forms[1];
        assert_eq!(
            f["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert_eq!(
            (f["client_id"].as_str(), f["client_assertion"].as_str()),
            ("wid", "sa.jwt.token")
        );
        assert!(!f.contains_key("client_secret"));
    }
    let bad = ClientSecretCredential::new(
        http,
        &cloud(&base),
        "tid",
        "cid",
        SecretString::new("wrong"),
    )
    .unwrap();
    let e = bad
        .get_token("https://vault.test/.default")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "auth_failed");
    let msg = e.to_string();
    assert!(
        msg.contains("invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{msg}"
    );
    assert!(!msg.contains("wrong") && !msg.contains("Trace ID"), "{msg}");
    assert!(!format!("{bad:?}").contains("wrong"));
}

#[tokio::test]
async fn imds_and_nmi_requests() {
    let (seen, base) = start().await;
    let http = entra_auth::build_client(&Default::default()).unwrap();
    let node = NodeEndpoints {
        imds: url::Url::parse(&base).unwrap(),
        nmi: url::Url::parse(&base).unwrap(),
    };
    let sys = ManagedIdentityCredential::new(http.clone(), &node, None);
    let t = sys.get_token("https://vault.test/.default").await.unwrap();
    assert_eq!(t.token.expose(), "at-imds");
    assert_eq!(
        t.expires_on,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(4102444800)
    );
    let ua = ManagedIdentityCredential::new(http.clone(), &node, Some("uami"));
    ua.get_token("https://vault.test/.default").await.unwrap();
    let e = ManagedIdentityCredential::new(http.clone(), &node, Some("unknown"))
        .get_token("https://vault.test/.default")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the requested identity isn't assigned to this resource (client_id unknown)"
    );
    let pod =
        PodIdentityCredential::new(http.clone(), &node, &cloud(&base), "default", "app").unwrap();
    assert_eq!(
        pod.get_token("ignored").await.unwrap().token.expose(),
        "at-nmi"
    );
    let e = PodIdentityCredential::new(http.clone(), &node, &cloud(&base), "default", "nobody")
        .unwrap()
        .get_token("ignored")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "nmi response failed with status code: 404, response body: no AzureIdentity found for pod:default/nobody"
    );
    assert!(PodIdentityCredential::new(http, &node, &cloud(&base), "", "x").is_err());
    let s = seen.lock().unwrap();
    assert_eq!(s.queries[0]["api-version"], "2018-02-01");
    assert_eq!(
        s.queries[0]["resource"], "https://vault.test",
        "scope without /.default"
    );
    assert!(!s.queries[0].contains_key("client_id"));
    assert_eq!(s.headers[0]["metadata"], "true");
    assert_eq!(s.queries[1]["client_id"], "uami");
    assert_eq!(
        s.queries[3]["resource"], "https://vault.test",
        "NMI gets the cloud's Key Vault resource"
    );
    assert_eq!(
        (
            s.headers[3]["podns"].as_str(),
            s.headers[3]["podname"].as_str()
        ),
        ("default", "app")
    );
}
