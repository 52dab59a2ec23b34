//! `secrets-store-csi-driver`: the CSI node plugin binary (flags as upstream).

use std::sync::Arc;

use clap::Parser;
use driver::config::{Command, CrdsCommand, DriverArgs};
use driver::metrics::Metrics;
use driver::{
    ClassSource, DirMounter, FileClassSource, GrpcProviderClient, KubeClassSource, KubeSinks,
    Mounter, NodeService, TmpfsMounter,
};

/// `-v`: 0-3 info, 4-5 debug, 6+ trace (the `-v` help).
const VERBOSITY: daemon::logging::Verbosity = daemon::logging::Verbosity {
    debug_from: 4,
    trace_from: 6,
};

fn main() -> anyhow::Result<()> {
    let args = DriverArgs::parse_from(daemon::normalize_args(std::env::args()));
    daemon::runtime::build(args.worker_threads)?.block_on(run(args))
}

async fn run(args: DriverArgs) -> anyhow::Result<()> {
    if args.version {
        let v = serde_json::json!({ "BuildVersion": driver::VERSION, "GitCommit": option_env!("GIT_COMMIT").unwrap_or(""), "BuildDate": option_env!("BUILD_DATE").unwrap_or("") });
        #[allow(clippy::print_stdout)]
        {
            println!("{v}");
        }
        return Ok(());
    }
    daemon::logging::init(args.log_format_json, VERBOSITY, args.verbosity);
    if let Some(command) = &args.command {
        return run_command(command, &args).await;
    }
    let config = args.config()?;
    let endpoint = args.endpoint()?;
    let registration = args.registration()?;
    let health_addr = args.health_addr()?;
    if args.enable_pprof {
        tracing::warn!("--enable-pprof has no effect in this driver");
    }

    let provider = Arc::new(GrpcProviderClient::new(
        config.provider_dirs.clone(),
        config.max_recv_msg_size,
    ));
    let mounter: Arc<dyn Mounter> = if args.no_tmpfs {
        Arc::new(DirMounter::default())
    } else {
        Arc::new(TmpfsMounter)
    };
    let (classes, kube): (Arc<dyn ClassSource>, Option<KubeSinks>) = match &args.class_file {
        Some(path) => {
            tracing::info!(file = %path.display(), "reading SecretProviderClasses from a file; pod status, Secret sync and Events are off");
            (Arc::new(FileClassSource::new(path)), None)
        }
        None => {
            let client = kube_client(args.kubeconfig.as_deref()).await?;
            (
                Arc::new(KubeClassSource::new(client.clone())),
                Some(KubeSinks::new(client, &config.node_id)),
            )
        }
    };
    // One stop signal for every server: the CSI server, the HTTP servers and registration all
    // drain on it, and main waits for each before exiting.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let metrics_addr = args.metrics_addr()?;
    let mut side_servers = Vec::new();
    let m = metrics.clone();
    side_servers.push(tokio::spawn({
        let stopped = stopped();
        async move {
            if let Err(e) = driver::metrics::serve(m, metrics_addr, stopped).await {
                tracing::error!(addr = %metrics_addr, error = %e, "metrics server failed");
            }
        }
    }));
    if let Some(addr) = health_addr {
        let endpoint = endpoint.clone();
        let stopped = stopped();
        side_servers.push(tokio::spawn(async move {
            if let Err(e) = driver::health::serve(addr, endpoint, stopped).await {
                tracing::error!(%addr, error = %e, "liveness endpoint failed");
            }
        }));
    }
    if args.provider_health_check {
        let p = provider.clone();
        let every = args.provider_health_check_interval;
        let stopped = stopped();
        side_servers.push(tokio::spawn(async move {
            // A sleep per round rather than `tokio::time::interval`, which panics on a zero
            // period and, for a period past the clock's range, when computing the next tick
            // (`config()` refuses zero; `sleep` treats a huge period as "never").
            tokio::pin!(stopped);
            loop {
                drop(p.health_check().await);
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
        }));
    }
    side_servers.push(tokio::spawn({
        let stopped = stopped();
        async move {
            tokio::select! {
                () = stopped => {}
                () = daemon::runtime::release_free_memory_every(daemon::runtime::RELEASE_FREE_MEMORY_EVERY) => {}
            }
        }
    }));
    tracing::info!(node = %config.node_id, driver = %config.driver_name, rotation = ?config.rotation, version = driver::VERSION, "starting");
    let events = kube.as_ref().map(|k| k.events.clone());
    let service = NodeService::new(config, classes, mounter, provider, kube, metrics);
    let mut csi = tokio::spawn({
        let endpoint = endpoint.clone();
        let stopped = stopped.clone();
        async move { driver::server::serve(service, &endpoint, stopped()).await }
    });
    // Registration starts once the CSI socket listens, so kubelet's first NodeGetInfo after
    // registering finds it; it stops with the CSI server, so kubelet deregisters the driver.
    let registration = registration.map(|(dir, info)| {
        let stopped = stopped.clone();
        let local = match &endpoint {
            driver::config::Endpoint::Unix(path) => Some(path.clone()),
            driver::config::Endpoint::Tcp(_) => None,
        };
        tokio::spawn(async move {
            if let Some(path) = local {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                while !tokio::fs::try_exists(&path).await.unwrap_or(false)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            if let Err(e) = driver::registration::serve(info, &dir, stopped()).await {
                tracing::error!(error = %e, "kubelet plugin registration failed");
            }
        })
    });
    let result = tokio::select! {
        r = &mut csi => r,
        () = daemon::signal::shutdown() => {
            let _ = stop_tx.send(true);
            csi.await
        }
    }
    .map_err(|e| anyhow::anyhow!("CSI server task: {e}"))?;
    // The CSI server stopped (signal, or it failed): stop the rest too.
    let _ = stop_tx.send(true);
    if let Some(task) = registration {
        let _ = task.await;
    }
    for task in side_servers {
        let _ = task.await;
    }
    // Events still queued (an API server that was unreachable a moment ago) get a few seconds.
    if let Some(events) = events
        && tokio::time::timeout(std::time::Duration::from_secs(5), events.flush())
            .await
            .is_err()
    {
        tracing::warn!("Events still queued at exit were dropped");
    }
    result
}

async fn run_command(command: &Command, args: &DriverArgs) -> anyhow::Result<()> {
    match command {
        Command::Crds(CrdsCommand::Apply { timeout }) => {
            let client = kube_client(args.kubeconfig.as_deref()).await?;
            let applied = driver::crds::apply(&client, *timeout).await?;
            tracing::info!(crds = applied.len(), "CRDs applied and served");
        }
        Command::Crds(CrdsCommand::Print) => {
            let mut out = String::new();
            for (_, crd) in secrets_store_api::crds::all()? {
                out.push_str(&secrets_store_api::crds::to_yaml(&crd)?);
            }
            #[allow(clippy::print_stdout)]
            {
                print!("{out}");
            }
        }
    }
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig={}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no API server configuration ({e}); pass --kubeconfig, run in a pod, or use --class-file for a cluster-less run")
        })?,
    };
    Ok(kube::Client::try_from(config)?)
}
