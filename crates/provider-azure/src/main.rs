//! `secrets-store-provider-azure`: parse flags, start, serve until SIGTERM/SIGINT, drain.

use clap::Parser;
use provider_azure::config::{Args, normalize_args};
use provider_azure::{Server, version};

/// `-v`: 0-1 info, 2-4 debug, 5+ trace (the `-v` help).
const VERBOSITY: daemon::logging::Verbosity = daemon::logging::Verbosity {
    debug_from: 2,
    trace_from: 5,
};

fn main() -> std::process::ExitCode {
    let args = match Args::try_parse_from(normalize_args(std::env::args())) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match daemon::runtime::build(args.worker_threads) {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("cannot start the async runtime: {e}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::process::ExitCode {
    if args.version {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", version::version_json());
        }
        return std::process::ExitCode::SUCCESS;
    }
    daemon::logging::init(args.log_format_json, VERBOSITY, args.verbosity);
    tracing::info!(
        version = version::BUILD_VERSION,
        "Starting Azure Key Vault Provider"
    );
    if args.enable_pprof {
        tracing::warn!("--enable-pprof is accepted for compatibility and ignored");
    }
    let run = async {
        let config = args.server_config()?;
        let server = Server::bind(config).await?;
        let release = tokio::spawn(daemon::runtime::release_free_memory_every(
            daemon::runtime::RELEASE_FREE_MEMORY_EVERY,
        ));
        let served = server.serve(daemon::signal::shutdown()).await;
        release.abort();
        served?;
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
