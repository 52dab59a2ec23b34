//! The vault's own HTTP/2 connection against keyvault-emulator (real TLS, real HTTP/2): shared by
//! consecutive requests, closed after its idle time and opened again, replaced when the vault
//! drops it (the request is retried on a new connection).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use entra_auth::{HttpOptions, ManagedIdentityCredential, NodeEndpoints, RetryPolicy};
use keyvault_client::{ClientOptions, Connector, DirectOptions, HttpConnector, KeyVault};
use keyvault_emulator::{CounterFilter, Emulator, EmulatorConfig, Fault};

const MI: &str = "11111111-1111-4111-8111-111111111111";

struct Setup {
    emu: Emulator,
    kv: Arc<dyn KeyVault>,
    _dir: tempfile::TempDir,
}

/// A client of vault `kv1` over its own connection (closed after `idle`), as a managed identity.
async fn setup(idle: Duration) -> Setup {
    let seed = format!(
        "vaults:\n  - name: kv1\n    access: [{MI}]\n    secrets:\n      - {{ name: s1, value: v1 }}\nidentities:\n  managed_identities:\n    - {{ client_id: {MI}, default: true }}\n"
    );
    let emu = Emulator::start(EmulatorConfig::default().seed_yaml(&seed).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).unwrap();
    let http_opts = HttpOptions {
        ssl_cert_file: Some(ca),
        resolve: vec![(emu.vault_host("kv1"), emu.https_addr())],
        ..HttpOptions::default()
    };
    let (http, tls) = entra_auth::build_client_and_tls(&http_opts).unwrap();
    let direct = DirectOptions::new(tls, &http_opts).map(|d| d.with_idle(idle));
    assert!(direct.is_some(), "no proxy in the test's environment");
    let options = ClientOptions {
        retry: RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let connector = HttpConnector::new(http.clone(), options).with_direct(direct);
    let vault = url::Url::parse(&emu.vault_url("kv1")).unwrap();
    connector.configure_resource(&vault, emu.resource());
    let node = NodeEndpoints {
        imds: url::Url::parse(&emu.imds_url()).unwrap(),
        nmi: url::Url::parse(&emu.nmi_url()).unwrap(),
    };
    let credential = Arc::new(ManagedIdentityCredential::new(http, &node, None));
    let kv = connector.connect(&vault, credential);
    emu.admin().reset_counters().await.unwrap();
    Setup { emu, kv, _dir: dir }
}

async fn connects(emu: &Emulator) -> u64 {
    emu.admin()
        .request_count(CounterFilter::operation("TlsHandshake"))
        .await
        .unwrap()
}

async fn get(s: &Setup) {
    let secret = s.kv.get_secret("s1", "").await.unwrap();
    assert_eq!(secret.value.unwrap().expose(), b"v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_requests_share_the_connection_until_it_is_idle() {
    let s = setup(Duration::from_millis(300)).await;
    for _ in 0..3 {
        get(&s).await;
    }
    assert_eq!(
        connects(&s.emu).await,
        1,
        "one connection for three requests"
    );
    // Past the idle time (and the timer's check a third of it later) the connection is closed;
    // the next request opens another.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    get(&s).await;
    assert_eq!(
        connects(&s.emu).await,
        2,
        "a new connection after the idle time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_vault_drops_is_replaced_and_the_request_retried() {
    let s = setup(Duration::from_secs(90)).await;
    get(&s).await;
    s.emu
        .admin()
        .inject_fault("GetSecret", Fault::Drop { count: 1 })
        .await
        .unwrap();
    get(&s).await;
    assert_eq!(
        connects(&s.emu).await,
        2,
        "the dropped connection was replaced once"
    );
    let dropped = s
        .emu
        .admin()
        .request_count(CounterFilter::operation("GetSecret").status(0))
        .await
        .unwrap();
    assert_eq!(dropped, 1);
}
