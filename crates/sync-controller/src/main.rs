//! `secrets-store-sync-controller`: the SecretSync controller. Flags follow upstream's
//! (kubernetes-sigs/secrets-store-sync-controller) so its Deployment args carry over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use sync_controller::{Config, Context};

const VERBOSITY: daemon::logging::Verbosity = daemon::logging::Verbosity {
    debug_from: 4,
    trace_from: 10,
};

#[derive(Parser, Debug)]
#[command(name = "secrets-store-sync-controller", disable_version_flag = true)]
struct Args {
    /// Folder holding the providers' unix sockets (`<provider>.sock`).
    #[arg(long, default_value = "/provider")]
    provider_volume: PathBuf,
    /// Audiences of the service-account tokens passed to the provider, comma separated.
    #[arg(long, default_value = "")]
    token_request_audience: String,
    /// Re-sync period for rotation (Go duration); 0s turns it off.
    #[arg(long, default_value = "12h")]
    rotation_poll_interval: String,
    /// Largest provider response accepted, bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_call_recv_msg_size: usize,
    /// Address of /healthz and /readyz (host:port or :port; empty: off).
    #[arg(long, default_value = ":8081")]
    health_probe_bind_address: String,
    /// Address of the Prometheus /metrics endpoint (host:port or :port; empty: off).
    #[arg(long, default_value = ":8085")]
    metrics_bind_address: String,
    /// Accepted for upstream compatibility; run one replica (no leader election).
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    leader_elect: bool,
    /// Accepted for upstream compatibility.
    #[arg(long, default_value = "")]
    leader_election_namespace: String,
    /// Log verbosity (klog style): 4 and up debug, 10 and up trace.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    /// Print the version as JSON (upstream's BuildVersion/GitCommit/BuildDate) and exit.
    #[arg(long)]
    version: bool,
    /// JSON log lines.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    log_format_json: bool,
}

fn listen_addr(flag: &str, a: &str) -> anyhow::Result<SocketAddr> {
    let full = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_owned()
    };
    full.parse()
        .map_err(|e| anyhow::anyhow!("{flag}={a}: {e} (expected host:port or :port)"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(daemon::normalize_args(std::env::args()));
    daemon::runtime::build(2)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.version {
        let v = serde_json::json!({
            "BuildVersion": env!("CARGO_PKG_VERSION"),
            "GitCommit": option_env!("GIT_COMMIT").unwrap_or(""),
            "BuildDate": option_env!("BUILD_DATE").unwrap_or(""),
        });
        #[allow(clippy::print_stdout)]
        {
            println!("{v}");
        }
        return Ok(());
    }
    daemon::logging::init(args.log_format_json, VERBOSITY, args.verbosity);
    let rotation = daemon::parse_go_duration(&args.rotation_poll_interval)
        .map_err(|e| anyhow::anyhow!("--rotation-poll-interval: {e}"))?;
    let config = Config {
        provider_dirs: vec![args.provider_volume.clone()],
        audiences: args
            .token_request_audience
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        rotation_interval: (!rotation.is_zero()).then_some(rotation),
        max_recv_msg_size: args.max_call_recv_msg_size,
        pod_name: std::env::var("SYNC_CONTROLLER_POD_NAME").unwrap_or_default(),
        pod_uid: std::env::var("SYNC_CONTROLLER_POD_UID").unwrap_or_default(),
        ..Config::default()
    };
    if args.leader_elect {
        tracing::info!(
            "--leader-elect: this controller runs as a single replica and does not elect a leader"
        );
    }
    let client = kube::Client::try_default().await?;
    let provider = Arc::new(driver::GrpcProviderClient::new(
        config.provider_dirs.clone(),
        config.max_recv_msg_size,
    ));
    tracing::info!(
        provider_volume = %args.provider_volume.display(),
        audiences = config.audiences.len(),
        rotation = ?config.rotation_interval,
        "starting secrets-store-sync-controller"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !args.health_probe_bind_address.is_empty() {
        let addr = listen_addr(
            "--health-probe-bind-address",
            &args.health_probe_bind_address,
        )?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ok" }));
        let mut rx = stop_rx.clone();
        tokio::spawn(daemon::http::serve(
            "health",
            listener,
            router,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
    }
    let ctx = Arc::new(Context::new(client, provider, config));
    if !args.metrics_bind_address.is_empty() {
        let addr = listen_addr("--metrics-bind-address", &args.metrics_bind_address)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let for_metrics = ctx.clone();
        let router = daemon::http::metrics_router(move || for_metrics.metrics().encode());
        let mut rx = stop_rx.clone();
        tokio::spawn(daemon::http::serve(
            "metrics",
            listener,
            router,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
    }
    let mut rx = stop_rx.clone();
    let controller = tokio::spawn(sync_controller::run(ctx, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    daemon::signal::shutdown().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = controller.await;
    Ok(())
}
