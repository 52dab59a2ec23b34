//! `keyvault-emulator`: a local Azure Key Vault + Entra ID + IMDS + NMI for demos and tests.

use clap::Parser;
use keyvault_emulator::{CaSource, Emulator, EmulatorConfig, Seed};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A local Azure Key Vault data plane, Entra ID token endpoint, IMDS and aad-pod-identity NMI
/// that the official Azure SDKs accept.
///
/// Vaults are served at https://<vault>.<dns-suffix>:<port>/ (by Host header); plain
/// https://127.0.0.1:<port>/ reaches --default-vault, or the only vault if there is exactly one.
/// Make <vault>.<dns-suffix> resolve to the listen address with a resolve override (curl
/// --resolve, reqwest resolve) or a private /etc/hosts in a mount namespace (unshare -m + bind
/// mount); never edit the machine's /etc/hosts.
///
/// The Key Vault challenge names authority https://<listen-ip>:<port>/<tenant> and resource
/// https://<dns-suffix>:<port> (no port when listening on 443; like https://vault.azure.net). The Python SDK's and Go
/// azcore's challenge-resource check pass on any port. MSAL's instance discovery of an unknown
/// authority calls login.microsoftonline.com: pass disable_instance_discovery=True (Python) /
/// DisableInstanceDiscovery (Go), or listen on 443 of a spare loopback address (e.g.
/// --listen 127.0.0.2:443, root needed) and map login.microsoftonline.com to it in the private
/// hosts file with --tls-name login.microsoftonline.com.
#[derive(Parser, Debug)]
#[command(name = "keyvault-emulator", version, verbatim_doc_comment)]
struct Args {
    /// HTTPS address for Key Vault and Entra ID.
    #[arg(long, default_value = "127.0.0.1:8443", env = "KVEMU_LISTEN")]
    listen: SocketAddr,
    /// Plain-HTTP address of the IMDS endpoint (/metadata/identity/oauth2/token). Point clients at
    /// it with AZURE_POD_IDENTITY_AUTHORITY_HOST=http://<addr>.
    #[arg(long, default_value = "127.0.0.1:8080")]
    imds_listen: SocketAddr,
    /// Plain-HTTP address of the aad-pod-identity NMI endpoint (/host/token/, headers podns/podname).
    #[arg(long, default_value = "127.0.0.1:2579")]
    nmi_listen: SocketAddr,
    /// Plain-HTTP address of the admin API (counters, faults, object changes). Needs the admin
    /// token printed at start as `Authorization: Bearer <token>`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: SocketAddr,
    /// DNS suffix of vault hosts.
    #[arg(long, default_value = "vault.test")]
    dns_suffix: String,
    /// Seed file (YAML): tenants, vaults, secrets, keys, certificates, identities, access. See the
    /// crate README for the format.
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Persist every write to FILE (fsync + atomic rename); on start, FILE's contents win over the seed.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Write the CA bundle (PEM) clients must trust to FILE (e.g. for SSL_CERT_FILE / REQUESTS_CA_BUNDLE).
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,
    /// Use this CA certificate (PEM) instead of generating one; needs --ca-key.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// Private key (PEM) of --ca-cert.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Extra DNS name or IP for the serving certificate (repeatable).
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
    /// Host name the Entra endpoints are published under (discovery documents, the challenge's
    /// authority), e.g. login.microsoftonline.com when clients reach the emulator under that name
    /// through a private hosts file. Added to the serving certificate. Default: the listen address.
    #[arg(long, value_name = "HOST")]
    authority_host: Option<String>,
    /// Vault served on plain 127.0.0.1 / localhost hosts.
    #[arg(long)]
    default_vault: Option<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// Extra token audience the data plane accepts (repeatable), e.g. https://vault.azure.net.
    #[arg(long = "extra-audience", value_name = "URI")]
    extra_audiences: Vec<String>,
    /// Fixed admin token (default: random, printed at start). Also read from KVEMU_ADMIN_TOKEN.
    #[arg(long, env = "KVEMU_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Also act as the AKS token proxy of identity binding on this address (TLS, answering only
    /// clients that send --token-proxy-sni).
    #[arg(long, value_name = "ADDR", requires = "token_proxy_sni")]
    token_proxy_listen: Option<SocketAddr>,
    /// The SNI name the token proxy answers to (the provider's --sni-name).
    #[arg(long, value_name = "NAME", requires = "token_proxy_listen")]
    token_proxy_sni: Option<String>,
    /// The path the token proxy is published under.
    #[arg(long, value_name = "PATH", default_value = "/")]
    token_proxy_path: String,
    /// Offer only http/1.1 in TLS handshakes (a vault behind a gateway without HTTP/2).
    #[arg(long)]
    http1_only: bool,
    /// JSON log lines on stderr (the driver's and the provider's layout).
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    log_format_json: bool,
    /// Log verbosity (klog style): 0-1 info, 2-4 debug, 5+ trace. RUST_LOG overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
}

/// `-v`: 0-1 info, 2-4 debug, 5+ trace (the `-v` help; the provider's thresholds).
const VERBOSITY: daemon::logging::Verbosity = daemon::logging::Verbosity {
    debug_from: 2,
    trace_from: 5,
};

/// How long a stopping emulator waits for the requests in flight (an injected latency can hold
/// one for as long as it says).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::logging::init(args.log_format_json, VERBOSITY, args.verbosity);
    let mut config = EmulatorConfig {
        listen: args.listen,
        imds_listen: args.imds_listen,
        nmi_listen: args.nmi_listen,
        admin_listen: args.admin_listen,
        dns_suffix: args.dns_suffix.trim_matches('.').to_string(),
        extra_tls_names: args.tls_names,
        authority_host: args.authority_host,
        state_file: args.state,
        default_vault: args.default_vault,
        token_lifetime: std::time::Duration::from_secs(args.token_lifetime_secs),
        extra_audiences: args.extra_audiences,
        admin_token: args.admin_token,
        token_proxy: match (args.token_proxy_listen, &args.token_proxy_sni) {
            (Some(listen), Some(sni)) => Some(keyvault_emulator::TokenProxySettings {
                listen,
                sni: sni.clone(),
                path: args.token_proxy_path.clone(),
            }),
            _ => None,
        },
        http1_only: args.http1_only,
        ..EmulatorConfig::default()
    };
    if let Some(path) = &args.seed {
        let text = read(path, "--seed")?;
        config.seed = Some(
            Seed::from_yaml(&text)
                .map_err(|e| anyhow::anyhow!("--seed {}: {e}", path.display()))?,
        );
    }
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        config.ca = CaSource::Pem {
            cert_pem: read(cert, "--ca-cert")?,
            key_pem: read(key, "--ca-key")?,
        };
    }
    let emu = Emulator::start(config).await?;
    if let Some(path) = &args.ca_out {
        std::fs::write(path, emu.ca_pem())
            .map_err(|e| anyhow::anyhow!("--ca-out {}: {e}", path.display()))?;
    }
    // The one place the emulator prints to stdout: what a user needs to connect.
    #[allow(clippy::print_stdout)]
    {
        println!("keyvault-emulator ready");
        println!(
            "  key vault   https://<vault>.{}:{}/",
            emu.dns_suffix(),
            emu.https_addr().port()
        );
        println!("  authority   {}", emu.authority_url());
        println!("  resource    {}", emu.resource());
        println!(
            "  imds        {}   (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
            emu.imds_url()
        );
        println!("  nmi         {}/host/token/", emu.nmi_url());
        println!(
            "  admin       {}   token {}",
            emu.admin_url(),
            emu.admin_token()
        );
        if let Some(path) = &args.ca_out {
            println!("  ca bundle   {}", path.display());
        }
    }
    daemon::signal::shutdown().await;
    if tokio::time::timeout(DRAIN, emu.shutdown()).await.is_err() {
        tracing::warn!(after = ?DRAIN, "requests still in flight; closing their connections");
    }
    Ok(())
}
