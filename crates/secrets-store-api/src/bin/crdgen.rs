//! Writes the project's CRD YAML files: `crdgen [<dir>]` (default `deploy/crds`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("deploy/crds"), PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    for (name, crd) in secrets_store_api::crds::all()? {
        let path = dir.join(name);
        std::fs::write(&path, secrets_store_api::crds::to_yaml(&crd)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
