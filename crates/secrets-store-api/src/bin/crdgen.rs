//! Writes the project's CRD YAML files, generated from the Rust types.

use std::path::PathBuf;

use clap::Parser;

/// Write the SecretProviderClass and SecretProviderClassPodStatus CRDs (generated from the Rust
/// types) as YAML into a folder. CI checks that deploy/crds matches this output.
#[derive(Parser)]
#[command(name = "crdgen", version)]
struct Args {
    /// Folder to write the CRD files into (created when missing).
    #[arg(default_value = "deploy/crds")]
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let dir = Args::parse().dir;
    std::fs::create_dir_all(&dir)?;
    for (name, crd) in secrets_store_api::crds::all()? {
        let path = dir.join(name);
        std::fs::write(&path, secrets_store_api::crds::to_yaml(&crd)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
