//! `secrets-store`: the project's command line. Thin: parsing and exit codes only.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Secrets Store CSI Driver + Azure Key Vault provider, in Rust: tools for trying, checking and
/// debugging SecretProviderClasses without a cluster.
#[derive(Parser)]
#[command(name = "secrets-store", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Run the whole system on this machine: keyvault-emulator, the Azure provider and the driver,
    /// then mount, rotate and unmount a volume the way kubelet does. No cluster, no Azure account.
    ///
    /// As root the volume is a tmpfs mount; as a normal user a plain directory. Secret values are
    /// masked unless --show-values is given.
    Demo {
        /// Print secret values and key material instead of masking them.
        #[arg(long)]
        show_values: bool,
        /// Keep the working folder (sockets, CA, mounted files) after the demo.
        #[arg(long)]
        keep: bool,
    },
    /// Fetch a SecretProviderClass's objects once into a directory, against a real or emulated
    /// vault, through the same provider and driver code a node runs. For debugging access before
    /// deploying.
    ///
    /// The identity is the class's: a service principal from --secrets, workload identity from
    /// --token-file, managed identity through IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST overrides
    /// its address). Values are not printed unless --show-values is given.
    Mount {
        /// SecretProviderClass YAML file.
        #[arg(long)]
        class: std::path::PathBuf,
        /// The class to use when the file holds several.
        #[arg(long)]
        name: Option<String>,
        /// Directory to write the files into (created when missing).
        #[arg(long)]
        target: std::path::PathBuf,
        /// YAML/JSON map (or Secret manifest) standing in for the volume's nodePublishSecretRef,
        /// e.g. {clientid: ..., clientsecret: ...}.
        #[arg(long)]
        secrets: Option<std::path::PathBuf>,
        /// Service-account token for api://AzureADTokenExchange (workload identity).
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
        /// Pod name to present to the provider.
        #[arg(long, default_value = "secrets-store-mount")]
        pod: String,
        /// Pod namespace (default: the class's namespace).
        #[arg(long)]
        namespace: Option<String>,
        /// The pod's service account.
        #[arg(long, default_value = "default")]
        service_account: String,
        /// CA bundle (PEM) for the vault and Entra ID, used instead of SSL_CERT_FILE.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// HOST=IP:PORT address override, repeatable (vaults without DNS, e.g. emulators).
        #[arg(long, value_parser = secrets_store_cli::mount::parse_resolve)]
        resolve: Vec<(String, std::net::SocketAddr)>,
        /// Print secret values instead of sizes.
        #[arg(long)]
        show_values: bool,
        /// Talk to the Azure provider already serving DIR/azure.sock (a node's
        /// /var/run/secrets-store-csi-providers, or a build under test) instead of running one
        /// in this process; --ca-file and --resolve do not reach it (it has its own settings).
        #[arg(long, value_name = "DIR")]
        provider_dir: Option<std::path::PathBuf>,
    },
    /// Lint SecretProviderClass YAML files offline, with the parser the Azure provider uses.
    ///
    /// Every finding names the file, the document, the class, the field and the fix. Documents
    /// of other kinds are skipped. Exits 1 when any finding is reported, 2 when a file cannot be
    /// read.
    Validate {
        /// YAML files (multi-document files are fine).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show what the driver recorded about a pod's secrets-store volumes: per volume the class,
    /// the objects at their versions, when they last changed and when the next refresh is due;
    /// the driver's last refresh error and its Events on the pod. Reads the API server
    /// (--kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster); never reads a secret value.
    Status {
        /// The pod's name.
        pod: String,
        /// The pod's namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The driver's rotation interval (Go duration), when its DaemonSet cannot be read.
        #[arg(long, value_parser = daemon::parse_go_duration)]
        rotation_poll_interval: Option<std::time::Duration>,
        /// Kubeconfig file.
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { show_values, keep } => {
            demo(secrets_store_cli::demo::DemoOptions { show_values, keep })
        }
        Command::Validate { files, output } => validate(&files, output),
        Command::Status {
            pod,
            namespace,
            rotation_poll_interval,
            kubeconfig,
            output,
        } => {
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            runtime.block_on(status(
                &pod,
                &namespace,
                rotation_poll_interval,
                kubeconfig,
                output,
            ))
        }
        Command::Mount {
            class,
            name,
            target,
            secrets,
            token_file,
            pod,
            namespace,
            service_account,
            ca_file,
            resolve,
            show_values,
            provider_dir,
        } => {
            let options = secrets_store_cli::mount::MountOptions {
                class,
                name,
                target,
                secrets_file: secrets,
                token_file,
                pod,
                namespace,
                service_account,
                ca_file,
                resolve,
                show_values,
                provider_dir,
            };
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            match runtime.block_on(secrets_store_cli::mount::run(
                &options,
                &mut std::io::stdout(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            None
        }
    }
}

fn demo(options: secrets_store_cli::demo::DemoOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(secrets_store_cli::demo::run(&options, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)] // this command's output is its product
fn validate(files: &[std::path::PathBuf], output: Output) -> ExitCode {
    let mut findings = Vec::new();
    let (mut classes, mut skipped) = (0, 0);
    for path in files {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                return ExitCode::from(2);
            }
        };
        let report = secrets_store_cli::validate::validate_text(&shown, &text);
        classes += report.classes;
        skipped += report.skipped;
        findings.extend(report.findings);
    }
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "classes": classes,
                "skipped": skipped,
                "findings": findings,
            });
            println!("{doc:#}");
        }
        Output::Text => {
            for f in &findings {
                println!("{f}");
            }
            println!(
                "{classes} SecretProviderClass document(s) checked, {skipped} other document(s) skipped, {} problem(s)",
                findings.len()
            );
        }
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[allow(clippy::print_stdout)] // this command's output is its product
async fn status(
    pod: &str,
    namespace: &str,
    rotation: Option<std::time::Duration>,
    kubeconfig: Option<std::path::PathBuf>,
    output: Output,
) -> ExitCode {
    let client = match kube_client(kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach the API server: {e}");
            return ExitCode::from(2);
        }
    };
    match secrets_store_cli::status::collect(&client, namespace, pod, rotation).await {
        Ok(report) => {
            match output {
                Output::Text => print!("{}", report.render_text()),
                Output::Json => match serde_json::to_string_pretty(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", daemon::error::render(&e));
            ExitCode::FAILURE
        }
    }
}

async fn kube_client(kubeconfig: Option<std::path::PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
