//! `secrets-store-provider-azure`: parse flags, start, serve until SIGTERM/SIGINT, drain.

use clap::Parser;
use provider_azure::config::{Args, normalize_args};
use provider_azure::{Server, logging, version};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match Args::try_parse_from(normalize_args(std::env::args())) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if args.version {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", version::version_json());
        }
        return std::process::ExitCode::SUCCESS;
    }
    logging::init(args.log_format_json, args.verbosity);
    tracing::info!(
        version = version::BUILD_VERSION,
        "Starting Azure Key Vault Provider"
    );
    if args.enable_pprof || !args.token_proxy_url.is_empty() || !args.sni_name.is_empty() {
        tracing::warn!(
            "--enable-pprof, --token-proxy-url and --sni-name are accepted for compatibility and ignored"
        );
    }
    let run = async {
        let config = args.server_config()?;
        let server = Server::bind(config).await?;
        server.serve(shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    };
    match run.await {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "provider failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
