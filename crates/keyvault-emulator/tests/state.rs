//! `--state`: every write survives a restart (fsync + atomic rename), and the seed does not
//! overwrite what the state file holds.

mod common;

use common::{client, seed, token};
use keyvault_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

#[tokio::test]
async fn restart_with_state_file_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let yaml = seed("    secrets: [{ name: seeded, value: original }]");
    let config = || {
        EmulatorConfig::default()
            .seed_yaml(&yaml)
            .expect("seed")
            .state_file(&state)
    };

    let (n, secret_versions, cert_cer) = {
        let emu = Emulator::start(config()).await.expect("start");
        let http = client(&emu, &["wire"]);
        let t = token(&emu, &http).await;
        let base = emu.vault_url("wire");
        for v in ["one", "two"] {
            let r = http
                .put(format!("{base}secrets/written?api-version=7.4"))
                .bearer_auth(&t)
                .json(&json!({ "value": v }))
                .send()
                .await
                .expect("put");
            assert_eq!(r.status().as_u16(), 200);
        }
        emu.admin()
            .set_secret("wire", "seeded", "changed-by-test")
            .await
            .expect("admin set");
        let key: Value = http
            .post(format!("{base}keys/k/create?api-version=7.4"))
            .bearer_auth(&t)
            .json(&json!({ "kty": "EC", "crv": "P-256" }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let cert: Value = http
            .post(format!("{base}certificates/c/create?api-version=7.4"))
            .bearer_auth(&t)
            .json(&json!({ "policy": { "key_props": { "kty": "EC", "crv": "P-256" }, "x509_props": { "subject": "CN=c" } } }))
            .send().await.expect("create cert").json().await.expect("json");
        assert_eq!(cert["status"], "inProgress");
        let cert: Value = http
            .get(format!("{base}certificates/c/?api-version=7.4"))
            .bearer_auth(&t)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let versions: Value = http
            .get(format!("{base}secrets/written/versions?api-version=7.4"))
            .bearer_auth(&t)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        (
            key["key"]["x"].clone(),
            versions["value"].as_array().expect("versions").len(),
            cert["cer"].clone(),
        )
    };
    assert!(state.exists());
    assert!(
        !dir.path().join(".state.json.tmp").exists(),
        "no temp file left behind"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&state)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    let emu = Emulator::start(config()).await.expect("restart");
    let http = client(&emu, &["wire"]);
    let t = token(&emu, &http).await;
    let base = emu.vault_url("wire");
    let get = |path: String| {
        let http = http.clone();
        let t = t.clone();
        async move {
            http.get(path)
                .bearer_auth(t)
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    assert_eq!(
        get(format!("{base}secrets/written/?api-version=7.4")).await["value"],
        "two"
    );
    assert_eq!(
        get(format!("{base}secrets/written/versions?api-version=7.4")).await["value"]
            .as_array()
            .expect("v")
            .len(),
        secret_versions
    );
    assert_eq!(
        get(format!("{base}secrets/seeded/?api-version=7.4")).await["value"],
        "changed-by-test",
        "state wins over seed"
    );
    assert_eq!(
        get(format!("{base}keys/k/?api-version=7.4")).await["key"]["x"],
        n
    );
    assert_eq!(
        get(format!("{base}certificates/c/?api-version=7.4")).await["cer"],
        cert_cer
    );
    let backing = get(format!("{base}secrets/c/?api-version=7.4")).await;
    assert_eq!(backing["contentType"], "application/x-pkcs12");
}

#[tokio::test]
async fn a_corrupt_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{ this is not json").expect("write");
    let err = Emulator::start(EmulatorConfig::default().state_file(&state))
        .await
        .expect_err("corrupt state");
    let msg = err.to_string();
    assert!(
        msg.contains("state.json") && msg.contains("move it away"),
        "{msg}"
    );
}
