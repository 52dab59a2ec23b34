//! Build information.

/// `VersionResponse.runtime_version` and `--version` (`PROVIDER_VERSION` at build time, else the
/// crate version).
pub const BUILD_VERSION: &str = match option_env!("PROVIDER_VERSION") {
    Some(v) => v,
    None => concat!("v", env!("CARGO_PKG_VERSION")),
};

/// `--version` output, shaped as upstream's (`{"version":…,"buildDate":…}`).
pub fn version_json() -> String {
    serde_json::json!({
        "version": BUILD_VERSION,
        "buildDate": option_env!("PROVIDER_BUILD_DATE").unwrap_or(""),
        "minimumDriverVersion": "v1.0.0",
    })
    .to_string()
}
