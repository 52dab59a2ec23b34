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
enum Command {
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files, output } => validate(&files, output),
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
