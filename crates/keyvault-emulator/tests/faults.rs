//! Every route goes through the same fault check (issue 15, goal 6): on the wire, over loopback,
//! each fault kind injected through the admin API's JSON as documented
//! (`{"route":"GetSecret","fault":{"kind":"latency","ms":20}}`) delays, throttles, fails or drops
//! the data plane (`GetSecret`), the Entra token endpoint (`Token`) and discovery documents,
//! IMDS (`Imds`) and NMI (`Nmi`), and is counted under the route's name.

mod common;

use common::{APP, APP_SECRET, TENANT, client, token};
use keyvault_emulator::{CounterFilter, Emulator, EmulatorConfig};
use std::time::{Duration, Instant};

const MI: &str = "22222222-2222-2222-2222-222222222222";

async fn emulator() -> Emulator {
    let seed = format!(
        "tenant: {TENANT}\nvaults:\n  - name: wire\n    access: [{APP}]\n    secrets: [{{ name: s, value: v }}]\nidentities:\n  service_principals:\n    - {{ client_id: {APP}, client_secret: {APP_SECRET} }}\n  managed_identities:\n    - {{ client_id: {MI}, default: true }}\n  pod_identities:\n    - {{ namespace: ns, pod: web, client_id: {MI} }}\n"
    );
    Emulator::start(EmulatorConfig::default().seed_yaml(&seed).expect("seed"))
        .await
        .expect("start")
}

/// Posts a fault rule as raw JSON, as a user of the admin API would.
async fn inject(emu: &Emulator, rule: &str) {
    let resp = client(emu, &[])
        .post(format!("{}/admin/faults", emu.admin_url()))
        .bearer_auth(emu.admin_token())
        .header("content-type", "application/json")
        .body(rule.to_string())
        .send()
        .await
        .expect("admin request");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "the admin API refused {rule}: {body}");
}

/// One well-formed call of a route; its status and `Retry-After`, or `None` when the connection
/// was dropped.
async fn call(req: reqwest::RequestBuilder) -> Option<(u16, Option<String>)> {
    let resp = req.send().await.ok()?;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    resp.bytes().await.ok()?;
    Some((status, retry_after))
}

/// Injects every fault kind on `route` and checks the answers and counters of `make()` calls.
async fn every_fault_applies(
    emu: &Emulator,
    route: &str,
    make: impl Fn() -> reqwest::RequestBuilder,
) {
    let admin = emu.admin();
    admin.reset().await.expect("reset");
    assert_eq!(
        call(make()).await,
        Some((200, None)),
        "{route}: a clean call"
    );

    // Latency, with the documented field name and with the older one.
    for field in ["ms", "delay_ms"] {
        inject(
            emu,
            &format!(r#"{{"route":"{route}","fault":{{"kind":"latency","{field}":300}}}}"#),
        )
        .await;
        let start = Instant::now();
        assert_eq!(
            call(make()).await,
            Some((200, None)),
            "{route}: delayed call"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "{route}: latency ({field}) not applied: {took:?}"
        );
        admin.clear_faults().await.expect("clear");
    }

    inject(
        emu,
        &format!(
            r#"{{"route":"{route}","fault":{{"kind":"throttle","count":1,"retry_after":2}}}}"#
        ),
    )
    .await;
    assert_eq!(
        call(make()).await,
        Some((429, Some("2".into()))),
        "{route}: throttled"
    );
    assert_eq!(
        call(make()).await,
        Some((200, None)),
        "{route}: after the throttle"
    );

    inject(
        emu,
        &format!(
            r#"{{"route":"{route}","fault":{{"kind":"server_error","count":1,"status":503}}}}"#
        ),
    )
    .await;
    assert_eq!(
        call(make()).await,
        Some((503, None)),
        "{route}: server error"
    );

    inject(
        emu,
        &format!(r#"{{"route":"{route}","fault":{{"kind":"drop","count":1}}}}"#),
    )
    .await;
    assert_eq!(call(make()).await, None, "{route}: dropped");
    assert_eq!(
        call(make()).await,
        Some((200, None)),
        "{route}: after the drop"
    );

    inject(
        emu,
        &format!(
            r#"{{"route":"{route}","fault":{{"kind":"rate_limit","limit":1,"window_ms":60000}}}}"#
        ),
    )
    .await;
    assert_eq!(
        call(make()).await,
        Some((200, None)),
        "{route}: within the limit"
    );
    assert!(
        matches!(call(make()).await, Some((429, Some(_)))),
        "{route}: over the limit"
    );
    admin.clear_faults().await.expect("clear");

    let count = |status: u16| {
        let admin = admin.clone();
        let route = route.to_string();
        async move {
            admin
                .request_count(CounterFilter::operation(&route).status(status))
                .await
                .expect("counters")
        }
    };
    assert_eq!(count(200).await, 6, "{route}: answered calls");
    assert_eq!(count(429).await, 2, "{route}: throttled calls");
    assert_eq!(count(503).await, 1, "{route}: failed calls");
    assert_eq!(count(0).await, 1, "{route}: dropped calls");
}

#[tokio::test]
async fn data_plane_get_secret_takes_every_fault() {
    let emu = emulator().await;
    let http = client(&emu, &["wire"]);
    let t = token(&emu, &http).await;
    let url = format!("{}secrets/s?api-version=7.4", emu.vault_url("wire"));
    every_fault_applies(&emu, "GetSecret", || http.get(&url).bearer_auth(&t)).await;
}

#[tokio::test]
async fn entra_token_endpoint_takes_every_fault() {
    let emu = emulator().await;
    let http = client(&emu, &[]);
    let url = format!("{}{TENANT}/oauth2/v2.0/token", emu.authority_url());
    let scope = format!("{}/.default", emu.resource());
    every_fault_applies(&emu, "Token", || {
        http.post(&url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", APP_SECRET),
            ("scope", scope.as_str()),
        ])
    })
    .await;
}

#[tokio::test]
async fn entra_discovery_documents_take_every_fault() {
    let emu = emulator().await;
    let http = client(&emu, &[]);
    let a = emu.authority_url();
    let instance = format!(
        "{a}common/discovery/instance?api-version=1.1&authorization_endpoint={a}{TENANT}/oauth2/v2.0/authorize"
    );
    every_fault_applies(&emu, "InstanceDiscovery", || http.get(&instance)).await;
    let openid = format!("{a}{TENANT}/v2.0/.well-known/openid-configuration");
    every_fault_applies(&emu, "OpenIdConfiguration", || http.get(&openid)).await;
    let jwks = format!("{a}{TENANT}/discovery/v2.0/keys");
    every_fault_applies(&emu, "Jwks", || http.get(&jwks)).await;
}

#[tokio::test]
async fn imds_takes_every_fault_but_not_on_a_probe() {
    let emu = emulator().await;
    let http = client(&emu, &[]);
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
        emu.imds_url(),
        emu.resource()
    );
    every_fault_applies(&emu, "Imds", || http.get(&url).header("Metadata", "true")).await;

    // A probe without the Metadata header is refused as before, and consumes no counted fault.
    inject(
        &emu,
        r#"{"route":"Imds","fault":{"kind":"throttle","count":1,"retry_after":1}}"#,
    )
    .await;
    assert_eq!(call(http.get(&url)).await, Some((400, None)));
    assert_eq!(
        call(http.get(&url).header("Metadata", "true")).await,
        Some((429, Some("1".into())))
    );
}

#[tokio::test]
async fn nmi_takes_every_fault() {
    let emu = emulator().await;
    let http = client(&emu, &[]);
    let url = format!("{}/host/token/?resource={}", emu.nmi_url(), emu.resource());
    every_fault_applies(&emu, "Nmi", || {
        http.get(&url)
            .header("podns", "ns")
            .header("podname", "web")
    })
    .await;
}

#[tokio::test]
async fn a_wildcard_latency_delays_every_route_and_a_named_one_only_its_own() {
    let emu = emulator().await;
    let http = client(&emu, &["wire"]);
    let t = token(&emu, &http).await;
    let get = format!("{}secrets/s?api-version=7.4", emu.vault_url("wire"));
    let imds = format!(
        "{}/metadata/identity/oauth2/token?resource={}",
        emu.imds_url(),
        emu.resource()
    );
    let nmi = format!("{}/host/token/?resource={}", emu.nmi_url(), emu.resource());
    let timed = |req: reqwest::RequestBuilder| async move {
        let start = Instant::now();
        assert_eq!(call(req).await.map(|c| c.0), Some(200));
        start.elapsed()
    };
    let delay = Duration::from_millis(250);

    inject(
        &emu,
        r#"{"route":"GetSecret","fault":{"kind":"latency","ms":250}}"#,
    )
    .await;
    assert!(timed(http.get(&get).bearer_auth(&t)).await >= delay);
    // the unauthenticated challenge probe is a round trip too
    let start = Instant::now();
    assert_eq!(call(http.get(&get)).await.map(|c| c.0), Some(401));
    assert!(start.elapsed() >= delay, "the probe is delayed");
    assert!(timed(http.get(&imds).header("Metadata", "true")).await < delay);
    emu.admin().clear_faults().await.expect("clear");

    inject(&emu, r#"{"route":"*","fault":{"kind":"latency","ms":250}}"#).await;
    assert!(timed(http.get(&get).bearer_auth(&t)).await >= delay);
    assert!(timed(http.get(&imds).header("Metadata", "true")).await >= delay);
    assert!(
        timed(
            http.get(&nmi)
                .header("podns", "ns")
                .header("podname", "web")
        )
        .await
            >= delay
    );
    let start = Instant::now();
    token(&emu, &http).await;
    assert!(
        start.elapsed() >= delay,
        "the token endpoint is delayed too"
    );
}

/// Connections are round trips too: each TCP connection (`Connect`, `ImdsConnect`,
/// `NmiConnect`) and TLS handshake (`TlsHandshake`) is counted, and a latency on its name (or
/// `*`) delays the first request of a new connection only.
#[tokio::test]
async fn connections_are_counted_and_delayed_once() {
    let emu = emulator().await;
    let admin = emu.admin();
    let http = client(&emu, &[]);
    let imds = format!(
        "{}/metadata/identity/oauth2/token?resource={}",
        emu.imds_url(),
        emu.resource()
    );
    let jwks = format!("{}{TENANT}/discovery/v2.0/keys", emu.authority_url());
    let count = |op: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .request_count(CounterFilter::operation(op))
                .await
                .expect("counters")
        }
    };
    inject(
        &emu,
        r#"{"route":"Connect","fault":{"kind":"latency","ms":200}}"#,
    )
    .await;
    inject(
        &emu,
        r#"{"route":"TlsHandshake","fault":{"kind":"latency","ms":200}}"#,
    )
    .await;
    inject(
        &emu,
        r#"{"route":"ImdsConnect","fault":{"kind":"latency","ms":200}}"#,
    )
    .await;
    let timed = |req: reqwest::RequestBuilder| async move {
        let start = Instant::now();
        assert_eq!(call(req).await.map(|c| c.0), Some(200));
        start.elapsed()
    };
    let first = timed(http.get(&jwks)).await;
    assert!(first >= Duration::from_millis(400), "TCP + TLS: {first:?}");
    let again = timed(http.get(&jwks)).await;
    assert!(
        again < Duration::from_millis(200),
        "same connection: {again:?}"
    );
    let first = timed(http.get(&imds).header("Metadata", "true")).await;
    assert!(first >= Duration::from_millis(200), "TCP: {first:?}");
    assert_eq!(count("Connect").await, 1);
    assert_eq!(count("TlsHandshake").await, 1);
    assert_eq!(count("ImdsConnect").await, 1);
    assert_eq!(count("NmiConnect").await, 0);
    assert_eq!(count("Jwks").await, 2);
}
