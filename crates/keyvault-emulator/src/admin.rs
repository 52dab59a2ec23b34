//! Request counters, fault injection, and the admin API client.
//!
//! The admin API listens on its own loopback port (plain HTTP) and requires
//! `Authorization: Bearer <admin token>`; the token is random per start and is never a data-plane
//! token, so a workload holding a Key Vault token cannot reach it.

use crate::Error;
use crate::lock;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A fault injected on a route (an operation name such as `GetSecret`, or `*` for all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer the next `count` requests with 429 and `Retry-After: <retry_after>` (seconds).
    Throttle { count: u32, retry_after: u64 },
    /// Answer the next `count` requests with this 5xx status.
    ServerError { count: u32, status: u16 },
    /// Delay every matching request by `ms` milliseconds (until cleared). A struct variant: the
    /// admin API's JSON is internally tagged (`{"kind":"latency","ms":20}`), which a newtype
    /// around a number cannot be. `delay_ms` is accepted as an alias.
    Latency {
        #[serde(alias = "delay_ms")]
        ms: u64,
    },
    /// Close the connection without an answer, `count` times.
    Drop { count: u32 },
    /// A service limit, as Key Vault enforces per vault: at most `limit` matching requests per
    /// fixed window of `window_ms`; the rest get 429 with `Retry-After` = the seconds left in the
    /// window (at least 1). Stays until cleared.
    RateLimit { limit: u32, window_ms: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FaultRule {
    pub(crate) route: String,
    #[serde(default)]
    pub(crate) vault: Option<String>,
    pub(crate) fault: Fault,
    /// Start and count of the current window of a [`Fault::RateLimit`].
    #[serde(skip)]
    pub(crate) window: Option<(std::time::Instant, u32)>,
}

impl FaultRule {
    fn matches(&self, op: &str, vault: &str) -> bool {
        (self.route == "*" || self.route.eq_ignore_ascii_case(op))
            && self
                .vault
                .as_ref()
                .is_none_or(|v| v.eq_ignore_ascii_case(vault))
    }
}

fn latency_of(faults: &[FaultRule], op: &str, vault: &str) -> Duration {
    faults
        .iter()
        .filter(|r| r.matches(op, vault))
        .filter_map(|r| match r.fault {
            Fault::Latency { ms } => Some(Duration::from_millis(ms)),
            _ => None,
        })
        .max()
        .unwrap_or_default()
}

/// What a fault check tells the request handler to do.
pub(crate) enum FaultAction {
    None,
    Respond {
        status: u16,
        retry_after: Option<u64>,
    },
    Drop,
}

/// One counter row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    pub operation: String,
    pub vault: String,
    pub status: u16,
    pub count: u64,
}

/// Selects counter rows; `None` fields match anything.
#[derive(Clone, Debug, Default)]
pub struct CounterFilter {
    pub operation: Option<String>,
    pub vault: Option<String>,
    pub status: Option<u16>,
}

impl CounterFilter {
    pub fn operation(op: &str) -> Self {
        Self {
            operation: Some(op.to_string()),
            ..Self::default()
        }
    }
    pub fn vault(mut self, vault: &str) -> Self {
        self.vault = Some(vault.to_string());
        self
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    fn matches(&self, r: &CounterRow) -> bool {
        self.operation
            .as_ref()
            .is_none_or(|o| o.eq_ignore_ascii_case(&r.operation))
            && self
                .vault
                .as_ref()
                .is_none_or(|v| v.eq_ignore_ascii_case(&r.vault))
            && self.status.is_none_or(|s| s == r.status)
    }
}

#[derive(Default)]
pub(crate) struct Telemetry {
    counters: Mutex<HashMap<(&'static str, String, u16), u64>>,
    faults: Mutex<Vec<FaultRule>>,
}

impl Telemetry {
    pub(crate) fn count(&self, op: &'static str, vault: &str, status: u16) {
        *lock(&self.counters)
            .entry((op, vault.to_ascii_lowercase(), status))
            .or_default() += 1;
    }
    pub(crate) fn rows(&self) -> Vec<CounterRow> {
        let mut rows: Vec<CounterRow> = lock(&self.counters)
            .iter()
            .map(|((op, vault, status), n)| CounterRow {
                operation: op.to_string(),
                vault: vault.clone(),
                status: *status,
                count: *n,
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.operation, &a.vault, a.status).cmp(&(&b.operation, &b.vault, b.status))
        });
        rows
    }
    pub(crate) fn reset_counters(&self) {
        lock(&self.counters).clear();
    }
    pub(crate) fn add_fault(&self, rule: FaultRule) {
        lock(&self.faults).push(rule);
    }
    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }
    /// The latency injected on `op` (the largest matching rule), consuming nothing.
    pub(crate) fn latency(&self, op: &str, vault: &str) -> Duration {
        latency_of(&lock(&self.faults), op, vault)
    }
    /// Consumes a matching counted fault; returns latency to add and the action.
    pub(crate) fn check(&self, op: &str, vault: &str) -> (Duration, FaultAction) {
        let mut faults = lock(&self.faults);
        let matches = |r: &FaultRule| r.matches(op, vault);
        let latency = latency_of(&faults, op, vault);
        let mut action = FaultAction::None;
        let now = std::time::Instant::now();
        for r in faults.iter_mut().filter(|r| matches(r)) {
            match &mut r.fault {
                Fault::RateLimit { limit, window_ms } => {
                    let window = Duration::from_millis((*window_ms).max(1));
                    let (start, n) = match r.window {
                        Some((start, n)) if now.duration_since(start) < window => (start, n + 1),
                        _ => (now, 1),
                    };
                    r.window = Some((start, n));
                    if n > *limit {
                        let left = window.saturating_sub(now.duration_since(start));
                        action = FaultAction::Respond {
                            status: 429,
                            retry_after: Some(left.as_secs_f64().ceil().max(1.0) as u64),
                        };
                        break;
                    }
                }
                Fault::Throttle { count, retry_after } if *count > 0 => {
                    *count -= 1;
                    action = FaultAction::Respond {
                        status: 429,
                        retry_after: Some(*retry_after),
                    };
                    break;
                }
                Fault::ServerError { count, status } if *count > 0 => {
                    *count -= 1;
                    action = FaultAction::Respond {
                        status: *status,
                        retry_after: None,
                    };
                    break;
                }
                Fault::Drop { count } if *count > 0 => {
                    *count -= 1;
                    action = FaultAction::Drop;
                    break;
                }
                _ => {}
            }
        }
        faults.retain(|r| match r.fault {
            Fault::Throttle { count, .. }
            | Fault::ServerError { count, .. }
            | Fault::Drop { count } => count > 0,
            Fault::Latency { .. } | Fault::RateLimit { .. } => true,
        });
        (latency, action)
    }
}

// === client ===

/// A typed client of the admin API.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: Option<reqwest::Client>,
}

/// A reqwest client on the ring provider (the workspace builds reqwest without a default one).
pub(crate) fn plain_http_client() -> Option<reqwest::Client> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .ok()
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct VersionReply {
    version: String,
}

impl AdminClient {
    /// `base` is `http://127.0.0.1:<admin port>`; `token` the admin token printed at start.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: plain_http_client(),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, Error> {
        self.http
            .as_ref()
            .ok_or_else(|| Error::Admin("cannot build an HTTP client".into()))
    }

    /// `method` on the admin API's `path`.
    fn request(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, Error> {
        Ok(self.http()?.request(method, format!("{}{path}", self.base)))
    }

    /// Sends `req` with the admin token; an answer other than 2xx is an error.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Admin(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Admin(format!("HTTP {status}: {body}")));
        }
        Ok(resp)
    }

    /// [`AdminClient::send`], then the JSON answer.
    async fn fetch<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = self.send(req).await?;
        resp.json().await.map_err(|e| Error::Admin(e.to_string()))
    }

    /// All counter rows (operation, vault, status, count).
    pub async fn counters(&self) -> Result<Vec<CounterRow>, Error> {
        self.fetch(self.request(Method::GET, "/admin/counters")?)
            .await
    }

    /// Sum of the counters matching `filter`.
    pub async fn request_count(&self, filter: CounterFilter) -> Result<u64, Error> {
        Ok(self
            .counters()
            .await?
            .iter()
            .filter(|r| filter.matches(r))
            .map(|r| r.count)
            .sum())
    }

    pub async fn reset_counters(&self) -> Result<(), Error> {
        self.send(self.request(Method::POST, "/admin/counters/reset")?)
            .await?;
        Ok(())
    }

    /// Injects `fault` on `route` (operation name like `GetSecret`, or `*`), any vault.
    pub async fn inject_fault(&self, route: &str, fault: Fault) -> Result<(), Error> {
        self.inject_fault_for(route, None, fault).await
    }

    /// Injects `fault` on `route` for one vault only.
    pub async fn inject_fault_for(
        &self,
        route: &str,
        vault: Option<&str>,
        fault: Fault,
    ) -> Result<(), Error> {
        let rule = FaultRule {
            route: route.to_string(),
            vault: vault.map(str::to_string),
            fault,
            window: None,
        };
        self.send(self.request(Method::POST, "/admin/faults")?.json(&rule))
            .await?;
        Ok(())
    }

    pub async fn clear_faults(&self) -> Result<(), Error> {
        self.send(self.request(Method::DELETE, "/admin/faults")?)
            .await?;
        Ok(())
    }

    /// Sets a secret (a new version); returns the version id.
    pub async fn set_secret(&self, vault: &str, name: &str, value: &str) -> Result<String, Error> {
        let req = self.request(
            Method::PUT,
            &format!("/admin/vaults/{vault}/secrets/{name}"),
        )?;
        let reply: VersionReply = self
            .fetch(req.json(&serde_json::json!({ "value": value })))
            .await?;
        Ok(reply.version)
    }

    /// Enables or disables the latest version of a secret.
    pub async fn set_secret_enabled(
        &self,
        vault: &str,
        name: &str,
        enabled: bool,
    ) -> Result<(), Error> {
        let req = self.request(
            Method::PATCH,
            &format!("/admin/vaults/{vault}/secrets/{name}"),
        )?;
        self.send(req.json(&serde_json::json!({ "enabled": enabled })))
            .await?;
        Ok(())
    }

    /// Resets counters and faults.
    pub async fn reset(&self) -> Result<(), Error> {
        self.send(self.request(Method::POST, "/admin/reset")?)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(fault: Fault) -> FaultRule {
        FaultRule {
            route: "*".into(),
            vault: None,
            fault,
            window: None,
        }
    }

    #[test]
    fn every_fault_kind_round_trips_through_the_admin_json() {
        let all = [
            Fault::Throttle {
                count: 2,
                retry_after: 3,
            },
            Fault::ServerError {
                count: 1,
                status: 503,
            },
            Fault::Latency { ms: 250 },
            Fault::Drop { count: 1 },
            Fault::RateLimit {
                limit: 5,
                window_ms: 1000,
            },
        ];
        for fault in all {
            let json = serde_json::to_string(&fault).expect("serializes");
            let back: Fault = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, fault, "{json}");
        }
        // The documented rule (issue 15), and the older field name.
        let documented: FaultRule =
            serde_json::from_str(r#"{"route":"GetSecret","fault":{"kind":"latency","ms":20}}"#)
                .expect("parses");
        assert_eq!(documented.fault, Fault::Latency { ms: 20 });
        assert_eq!(
            serde_json::to_string(&documented.fault).expect("serializes"),
            r#"{"kind":"latency","ms":20}"#
        );
        let parsed: Fault =
            serde_json::from_str(r#"{"kind":"latency","delay_ms":40}"#).expect("parses");
        assert_eq!(parsed, Fault::Latency { ms: 40 });
        let t = Telemetry::default();
        t.add_fault(rule(parsed));
        t.add_fault(documented);
        assert_eq!(t.check("GetSecret", "kv1").0, Duration::from_millis(40));
        assert!(
            serde_json::from_str::<Fault>(r#"{"kind":"latency","ms":{"x":1}}"#).is_err(),
            "a map is still refused"
        );
    }

    #[test]
    fn rate_limit_refuses_past_the_limit_until_the_window_ends() {
        let t = Telemetry::default();
        t.add_fault(rule(Fault::RateLimit {
            limit: 3,
            window_ms: 200,
        }));
        let throttled = |t: &Telemetry| {
            matches!(
                t.check("GetSecret", "kv1").1,
                FaultAction::Respond {
                    status: 429,
                    retry_after: Some(1)
                }
            )
        };
        let first: Vec<bool> = (0..5).map(|_| throttled(&t)).collect();
        assert_eq!(first, [false, false, false, true, true]);
        std::thread::sleep(Duration::from_millis(250));
        assert!(!throttled(&t), "a new window admits requests again");
        t.clear_faults();
        assert!((0..10).all(|_| !throttled(&t)));
    }
}
