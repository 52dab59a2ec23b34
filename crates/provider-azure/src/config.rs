//! Command-line flags, as upstream's (`cmd/main.go`): same names, defaults and Go-style syntax
//! (`--flag=value`, bare booleans, `-v=N`, single-dash long flags).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::{ArgAction, Parser};
use entra_auth::{HttpOptions, NodeEndpoints};

use crate::provider::ProviderConfig;
use crate::render::RenderOptions;
use crate::server::ServerConfig;

/// Azure Key Vault provider for the Secrets Store CSI Driver.
#[derive(Debug, Parser)]
#[command(name = "secrets-store-provider-azure", disable_version_flag = true)]
pub struct Args {
    /// Print version information as JSON and exit.
    #[arg(long, action = ArgAction::SetTrue)]
    pub version: bool,
    /// gRPC endpoint: unix:///path or tcp://host:port.
    #[arg(long, default_value = "unix:///tmp/azure.sock")]
    pub endpoint: String,
    /// Log as JSON.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true, action = ArgAction::Set)]
    pub log_format_json: bool,
    /// Accepted for compatibility; pprof does not exist here.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true, action = ArgAction::Set)]
    pub enable_pprof: bool,
    /// Accepted for compatibility.
    #[arg(long, default_value_t = 6060)]
    pub pprof_port: u16,
    /// Port of the HTTP health endpoint (all interfaces); 0 = off.
    #[arg(long, default_value_t = 8989)]
    pub healthz_port: u16,
    /// Path of the HTTP health endpoint.
    #[arg(long, default_value = "/healthz")]
    pub healthz_path: String,
    /// Timeout of the health endpoint's internal gRPC check (Go duration, e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_go_duration)]
    pub healthz_timeout: Duration,
    /// Metrics backend; only Prometheus.
    #[arg(long, default_value = "Prometheus")]
    pub metrics_backend: String,
    /// Port of the Prometheus /metrics endpoint (all interfaces); 0 = off.
    #[arg(long, default_value_t = 8898)]
    pub prometheus_port: u16,
    /// Order certificates of PFX-backed secrets leaf → intermediates → root.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", require_equals = true, action = ArgAction::Set)]
    pub construct_pem_chain: bool,
    /// Also write `<file>.crt` and `<file>.key` for certificate-backed secrets.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true, action = ArgAction::Set)]
    pub write_cert_and_key_in_separate_files: bool,
    /// Default cloud when the SecretProviderClass sets no cloudName.
    #[arg(long, default_value = "AzurePublicCloud")]
    pub cloud_name: String,
    /// Identity binding (`useAzureTokenProxy`): URL of the AKS token proxy; empty:
    /// https://kubernetes.default.svc.cluster.local.
    #[arg(long, default_value = "")]
    pub token_proxy_url: String,
    /// Identity binding: TLS server name of the token proxy; empty: computed from the API
    /// server's certificate.
    #[arg(long, default_value = "")]
    pub sni_name: String,
    /// Appended to the User-Agent of every request to Entra ID and Key Vault (e.g. `managedBy:aks`).
    #[arg(long, default_value = "")]
    pub custom_user_agent: String,
    /// Log verbosity (klog style): 0-1 info, 2-4 debug, 5+ trace.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Objects fetched concurrently per mount (default 8: one round trip for a mount's objects
    /// over the vault's HTTP/2 connection; 1 = upstream's one at a time; see the crate docs'
    /// first-mount benchmark).
    #[arg(long, default_value_t = 8)]
    pub fetch_concurrency: usize,
    /// Most objects one selection (`objectName: "*"`, `objectNamePrefix`, `objectTags`) may
    /// match; a mount selecting more fails with an error saying so.
    #[arg(long, default_value_t = 100)]
    pub max_selected_objects: usize,
    /// Timeout of one Key Vault HTTP attempt (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub keyvault_timeout: Duration,
    /// Reuse tokens and Key Vault answers across mounts of the same identity for this long (Go
    /// duration; default 2m, the driver's rotation poll interval); 0 fetches everything on every
    /// mount, as upstream.
    #[arg(long, default_value = "2m", value_parser = parse_go_duration)]
    pub cache_ttl: Duration,
    /// Requests per second this process sends to one vault. Key Vault's documented limit is
    /// 4,000 per 10 s per vault, for all callers together. After a 429 every mount waits out its
    /// Retry-After together and the rate halves, then climbs back. 0 = no pacing: each request
    /// retries on its own, as upstream.
    #[arg(long, default_value = "400", value_parser = parse_rate)]
    pub keyvault_rate_limit: f64,
    /// Requests to one vault that may go at once after a quiet period.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub keyvault_burst: u32,
    /// How long one Key Vault request keeps waiting out 429s before its mount fails (Go
    /// duration); keep it below the driver's mount timeout.
    #[arg(long, default_value = "60s", value_parser = parse_go_duration)]
    pub keyvault_throttle_budget: Duration,
    /// Service-account token issuers (comma-separated URLs, e.g. the cluster's OIDC issuer) whose
    /// tokens are verified locally against the issuer's published keys, so that with the cache on
    /// all pods of one service account share one Entra token. Empty: one token per pod token.
    #[arg(long, value_delimiter = ',', value_parser = parse_issuer)]
    pub workload_identity_issuers: Vec<String>,
    /// Async worker threads (0: 2, whatever the core count; the work is mostly waiting on Key
    /// Vault).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
}

/// An issuer URL: https, no query or fragment.
fn parse_issuer(s: &str) -> Result<String, String> {
    let s = s.trim();
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.query().is_none() && u.fragment().is_none() => {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "invalid issuer {s:?}: give the https URL the cluster puts in its service-account tokens' iss claim"
        )),
    }
}

/// A request rate: a finite number ≥ 0.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "invalid rate {s:?}: give requests per second as a number ≥ 0 (0 turns pacing off)"
        )),
    }
}

pub use daemon::{normalize_args, parse_go_duration};

/// Flag validation problems.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--metrics-backend`.
    #[error("unsupported metrics backend {0}")]
    MetricsBackend(String),
    /// IMDS / NMI override URLs.
    #[error("invalid AZURE_POD_IDENTITY_AUTHORITY_HOST or AZURE_NMI_ENDPOINT: {0}")]
    NodeEndpoints(url::ParseError),
}

impl Args {
    /// The server configuration these flags (and the process environment: `SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, `AZURE_POD_IDENTITY_AUTHORITY_HOST`, `AZURE_NMI_ENDPOINT`) describe.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        if !self.metrics_backend.eq_ignore_ascii_case("prometheus") {
            return Err(ConfigError::MetricsBackend(self.metrics_backend.clone()));
        }
        let node = NodeEndpoints::from_env().map_err(ConfigError::NodeEndpoints)?;
        let provider = ProviderConfig {
            default_cloud: self.cloud_name.clone(),
            render: RenderOptions {
                construct_pem_chain: self.construct_pem_chain,
                write_cert_and_key_in_separate_files: self.write_cert_and_key_in_separate_files,
            },
            node,
            http: HttpOptions {
                user_agent_suffix: Some(self.custom_user_agent.clone())
                    .filter(|s| !s.trim().is_empty()),
                ..HttpOptions::from_env()
            },
            keyvault: keyvault_client::ClientOptions {
                call_timeout: self.keyvault_timeout,
                pacing: keyvault_client::PacingOptions {
                    rate: self.keyvault_rate_limit,
                    burst: self.keyvault_burst,
                    ..Default::default()
                },
                throttle_budget: self.keyvault_throttle_budget,
                ..Default::default()
            },
            fetch_concurrency: self.fetch_concurrency.max(1),
            max_selected_objects: self.max_selected_objects,
            cache_ttl: self.cache_ttl,
            workload_identity_issuers: self.workload_identity_issuers.clone(),
            token_proxy: entra_auth::TokenProxyConfig::from_flags(
                &self.token_proxy_url,
                &self.sni_name,
            ),
        };
        let any = |port: u16| {
            (port != 0).then_some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        };
        Ok(ServerConfig {
            endpoint: self.endpoint.clone(),
            provider,
            healthz_addr: any(self.healthz_port),
            healthz_path: self.healthz_path.clone(),
            healthz_timeout: self.healthz_timeout,
            metrics_addr: any(self.prometheus_port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let v = normalize_args(
            std::iter::once("p".to_owned()).chain(args.iter().map(|s| (*s).to_owned())),
        );
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn custom_user_agent_reaches_the_http_client() {
        let http = |args: &[&str]| parse(args).server_config().unwrap().provider.http;
        assert_eq!(http(&[]).user_agent_suffix, None);
        assert_eq!(
            http(&["--custom-user-agent=managedBy:aks"]).user_agent_suffix,
            Some("managedBy:aks".to_owned())
        );
        assert_eq!(
            entra_auth::http::user_agent(Some("managedBy:aks")),
            concat!(
                "secrets-store-provider-azure-rs/",
                env!("CARGO_PKG_VERSION"),
                " managedBy:aks"
            )
        );
    }

    #[test]
    fn defaults_as_upstream() {
        let a = parse(&[]);
        assert_eq!(a.endpoint, "unix:///tmp/azure.sock");
        assert!(a.construct_pem_chain);
        assert!(!a.write_cert_and_key_in_separate_files);
        assert_eq!(
            (a.healthz_port, a.healthz_path.as_str(), a.prometheus_port),
            (8989, "/healthz", 8898)
        );
        assert_eq!(a.healthz_timeout, Duration::from_secs(5));
        assert_eq!(a.cloud_name, "AzurePublicCloud");
        assert_eq!(a.cache_ttl, Duration::from_secs(120));
        assert_eq!(
            a.server_config().unwrap().provider.cache_ttl,
            Duration::from_secs(120)
        );
        assert_eq!(parse(&["--cache-ttl=0"]).cache_ttl, Duration::ZERO);
        assert_eq!(
            parse(&["-cache-ttl=30s"]).cache_ttl,
            Duration::from_secs(30)
        );
        let kv = a.server_config().unwrap().provider.keyvault;
        assert_eq!((kv.pacing.rate, kv.pacing.burst), (400.0, 4000));
        assert_eq!(kv.throttle_budget, Duration::from_secs(60));
    }

    #[test]
    fn keyvault_pacing_flags() {
        let kv = parse(&[
            "--keyvault-rate-limit=25.5",
            "--keyvault-burst=10",
            "--keyvault-throttle-budget=90s",
        ])
        .server_config()
        .unwrap()
        .provider
        .keyvault;
        assert_eq!((kv.pacing.rate, kv.pacing.burst), (25.5, 10));
        assert_eq!(kv.throttle_budget, Duration::from_secs(90));
        assert!(kv.pacing.enabled());
        let off = parse(&["--keyvault-rate-limit=0"])
            .server_config()
            .unwrap()
            .provider
            .keyvault;
        assert!(!off.pacing.enabled());
        let p = parse(&[
            "--workload-identity-issuers=https://eastus.oic.prod-aks.azure.com/t/c/,https://k8s.example",
        ])
        .server_config()
        .unwrap()
        .provider;
        assert_eq!(
            p.workload_identity_issuers,
            [
                "https://eastus.oic.prod-aks.azure.com/t/c/",
                "https://k8s.example"
            ]
        );
        assert!(parse(&[]).workload_identity_issuers.is_empty());
        for bad in [
            "http://k8s.example",
            "k8s.example",
            "https://k8s.example/?x=1",
        ] {
            let v = normalize_args(["p".to_owned(), format!("--workload-identity-issuers={bad}")]);
            let e = Args::try_parse_from(v).unwrap_err().to_string();
            assert!(e.contains("invalid issuer"), "{bad}: {e}");
        }
        for bad in [
            "--keyvault-rate-limit=-1",
            "--keyvault-rate-limit=fast",
            "--keyvault-burst=0",
        ] {
            let v = normalize_args(["p".to_owned(), bad.to_owned()]);
            let e = Args::try_parse_from(v).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn go_style_flags_as_the_chart_passes_them() {
        let a = parse(&[
            "--endpoint=unix:///provider/azure.sock",
            "--construct-pem-chain=false",
            "--write-cert-and-key-in-separate-files=true",
            "--healthz-timeout=1m30s",
            "--log-format-json",
            "-v=5",
            "-cloud-name=AzureChinaCloud",
        ]);
        assert_eq!(a.endpoint, "unix:///provider/azure.sock");
        assert!(
            !a.construct_pem_chain && a.write_cert_and_key_in_separate_files && a.log_format_json
        );
        assert_eq!(a.healthz_timeout, Duration::from_secs(90));
        assert_eq!(a.verbosity, 5);
        assert_eq!(a.cloud_name, "AzureChinaCloud");
        assert!(
            parse(&["--metrics-backend=statsd"])
                .server_config()
                .unwrap_err()
                .to_string()
                .contains("unsupported metrics backend statsd")
        );
    }

    /// Every duration flag goes through the checked parser: a value too large for a duration is a
    /// flag error (the copy this crate had before panicked here), and the chart's forms parse.
    #[test]
    fn duration_flags_are_checked() {
        for flag in [
            "--healthz-timeout",
            "--keyvault-timeout",
            "--cache-ttl",
            "--keyvault-throttle-budget",
        ] {
            // The example (16 digits of hours: past u64::MAX seconds) and a longer one.
            for value in ["9999999999999999h", "99999999999999999999h"] {
                let v = normalize_args(["p".to_owned(), format!("{flag}={value}")]);
                let e = Args::try_parse_from(v).unwrap_err().to_string();
                assert!(
                    e.contains(&format!("invalid value '{value}' for '{flag} "))
                        && e.contains("too large")
                        && e.contains("examples: 30s, 2m"),
                    "{flag}={value}: {e}"
                );
            }
        }
        // The largest value that fits parses (the Key Vault cache then caps its expiry).
        assert_eq!(
            parse(&["--cache-ttl=5124095576030431h"]).cache_ttl,
            Duration::from_secs(5_124_095_576_030_431 * 3600)
        );
        let a = parse(&["--cache-ttl=1m30s", "-keyvault-timeout=250ms"]);
        assert_eq!(a.cache_ttl, Duration::from_secs(90));
        assert_eq!(a.keyvault_timeout, Duration::from_millis(250));
    }
}
