//! Bad input gets Key Vault-style errors (never a panic, never a hang): malformed JSON, bad names,
//! oversized bodies, unknown routes and api-versions, bad tokens; the admin API refuses
//! data-plane tokens.

mod common;

use common::{client, seed, token};
use keyvault_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn assert_kv_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn bad_requests_are_answered_in_key_vault_shape() {
    let emu = Emulator::start(
        EmulatorConfig::default()
            .seed_yaml(&seed("    secrets: [{ name: s, value: v }]"))
            .expect("seed"),
    )
    .await
    .expect("start");
    let http = client(&emu, &["wire", "nosuchvault"]);
    let t = token(&emu, &http).await;
    let base = emu.vault_url("wire");
    let put = |path: &str| http.put(format!("{base}{path}")).bearer_auth(&t);

    let (s, b) = send(
        put("secrets/x?api-version=7.4")
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) =
        send(put("secrets/x?api-version=7.4").json(&serde_json::json!({ "value": 5 }))).await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) =
        send(put("secrets/bad_name?api-version=7.4").json(&serde_json::json!({ "value": "v" })))
            .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    assert!(
        b["error"]["message"]
            .as_str()
            .expect("message")
            .contains("bad_name")
    );
    let long = "a".repeat(128);
    let (s, b) = send(
        put(&format!("secrets/{long}?api-version=7.4")).json(&serde_json::json!({ "value": "v" })),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let ok_long = "a".repeat(127);
    let (s, b) = send(
        put(&format!("secrets/{ok_long}?api-version=7.4"))
            .json(&serde_json::json!({ "value": "v" })),
    )
    .await;
    assert_eq!(s, 200, "127 characters is a valid name: {b}");
    let huge = "x".repeat(2 << 20);
    let (s, b) = send(
        put("secrets/big?api-version=7.4")
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) = send(
        put("secrets/big?api-version=7.4")
            .json(&serde_json::json!({ "value": "x".repeat(30 * 1024) })),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");

    let (s, b) = send(
        http.get(format!("{base}secrets/s/?api-version=1999-01-01"))
            .bearer_auth(&t),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    assert!(
        b["error"]["message"]
            .as_str()
            .expect("message")
            .contains("1999-01-01")
    );
    let (s, b) = send(http.get(format!("{base}secrets/s/")).bearer_auth(&t)).await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) = send(
        http.get(format!("{base}secrets/a/b/c?api-version=7.4"))
            .bearer_auth(&t),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) = send(
        http.get(format!("{base}secrets/missing/?api-version=7.4"))
            .bearer_auth(&t),
    )
    .await;
    assert_kv_error(s, &b, 404, "SecretNotFound");
    let (s, b) = send(
        http.get(format!("{base}keys/missing/?api-version=7.4"))
            .bearer_auth(&t),
    )
    .await;
    assert_kv_error(s, &b, 404, "KeyNotFound");
    let (s, b) = send(
        http.get(format!("{base}certificates/missing/?api-version=7.4"))
            .bearer_auth(&t),
    )
    .await;
    assert_kv_error(s, &b, 404, "CertificateNotFound");
    let (s, b) = send(
        http.post(format!("{base}keys/k/create?api-version=7.4"))
            .bearer_auth(&t)
            .json(&serde_json::json!({ "kty": "RSA", "key_size": 1024 })),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) = send(
        http.post(format!("{base}certificates/c/import?api-version=7.4"))
            .bearer_auth(&t)
            .json(&serde_json::json!({ "value": "bm90IGEgY2VydA==" })),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");
    let (s, b) = send(
        http.put(format!("{base}keys/k?api-version=7.4"))
            .bearer_auth(&t)
            .json(&serde_json::json!({ "key": { "kty": "RSA", "n": "AQAB" } })),
    )
    .await;
    assert_kv_error(s, &b, 400, "BadParameter");

    // Tokens: garbage, and a token for another resource.
    let (s, b) = send(
        http.get(format!("{base}secrets/s/?api-version=7.4"))
            .bearer_auth("not.a.jwt"),
    )
    .await;
    assert_kv_error(s, &b, 401, "Unauthorized");
    let other: Value = http
        .post(format!(
            "{}{}/oauth2/v2.0/token",
            emu.authority_url(),
            common::TENANT
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", common::APP),
            ("client_secret", common::APP_SECRET),
            ("scope", "https://storage.example/.default"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let (s, b) = send(
        http.get(format!("{base}secrets/s/?api-version=7.4"))
            .bearer_auth(other["access_token"].as_str().expect("token")),
    )
    .await;
    assert_kv_error(s, &b, 401, "Unauthorized");

    // Unknown vault host.
    let (s, b) = send(
        http.get(format!(
            "{}secrets/s/?api-version=7.4",
            emu.vault_url("nosuchvault")
        ))
        .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 404, "{b}");

    // Entra errors are Entra-shaped.
    let (s, b) = send(
        http.post(format!(
            "{}{}/oauth2/v2.0/token",
            emu.authority_url(),
            common::TENANT
        ))
        .form(&[("grant_type", "password")]),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"], "unsupported_grant_type");
    assert!(b["error_codes"].is_array());
    let (s, b) = send(
        http.post(format!(
            "{}not-a-tenant/oauth2/v2.0/token",
            emu.authority_url()
        ))
        .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error_description"]
            .as_str()
            .expect("description")
            .starts_with("AADSTS90002")
    );

    // The admin API refuses data-plane tokens and anonymous calls.
    emu.admin()
        .counters()
        .await
        .expect("the admin client (with the admin token) works");
    let admin_url = format!("{}/admin/counters", emu.admin_url());
    let (s, _) = send(http.get(&admin_url).bearer_auth(&t)).await;
    assert_eq!(s, 401);
    let (s, _) = send(http.get(&admin_url)).await;
    assert_eq!(s, 401);

    // Still serving after all of that.
    let (s, b) = send(
        http.get(format!("{base}secrets/s/?api-version=7.4"))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn expired_tokens_are_refused_even_after_a_successful_use() {
    let config = EmulatorConfig::default()
        .seed_yaml(&seed("    secrets: [{ name: s, value: v }]"))
        .expect("seed")
        .token_lifetime(std::time::Duration::from_secs(1));
    let emu = Emulator::start(config).await.expect("start");
    let http = client(&emu, &["wire"]);
    let t = token(&emu, &http).await;
    let url = format!("{}secrets/s/?api-version=7.4", emu.vault_url("wire"));
    let (s, b) = send(http.get(&url).bearer_auth(&t)).await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, b) = send(http.get(&url).bearer_auth(&t)).await;
    assert_kv_error(s, &b, 401, "Unauthorized");
    assert!(
        b["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expired"),
        "{b}"
    );
}
