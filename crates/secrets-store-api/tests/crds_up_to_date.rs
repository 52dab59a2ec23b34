//! Fails when the committed `deploy/crds/*.yaml` differ from what the Rust types generate.
//! Fix: `cargo run -p secrets-store-api --bin crdgen` from the workspace root, then commit.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for (name, crd) in secrets_store_api::crds::all()? {
        let want = secrets_store_api::crds::to_yaml(&crd)?;
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with the Rust types in crates/secrets-store-api; regenerate it with \
             `cargo run -p secrets-store-api --bin crdgen` from the workspace root and commit it",
            path.display()
        );
    }
    Ok(())
}
