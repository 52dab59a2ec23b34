//! Every binary the project ships documents itself (`--help`) and reports its version.

use e2e::workspace_binary;

const BINARIES: &[&str] = &[
    "secrets-store-csi-driver",
    "secrets-store-provider-azure",
    "secrets-store-sync-controller",
    "keyvault-emulator",
    "secrets-store",
    "crdgen",
];

#[test]
fn every_binary_prints_help_and_exits_zero() {
    for name in BINARIES {
        let out = std::process::Command::new(workspace_binary(name))
            .arg("--help")
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} --help failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("Usage:"),
            "{name} --help has no usage line:\n{text}"
        );
        assert!(
            text.lines().count() > 3,
            "{name} --help says too little:\n{text}"
        );
    }
}

#[test]
fn the_daemons_print_their_version_as_upstream_does() {
    // The driver and the provider print JSON like their upstream counterparts (tools parse it).
    for (name, field) in [
        ("secrets-store-csi-driver", "BuildVersion"),
        ("secrets-store-provider-azure", "version"),
        ("secrets-store-sync-controller", "BuildVersion"),
    ] {
        let out = std::process::Command::new(workspace_binary(name))
            .arg("--version")
            .output()
            .expect("run");
        assert!(out.status.success(), "{name} --version failed");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{name} --version is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert!(
            json[field]
                .as_str()
                .is_some_and(|v| v.contains(env!("CARGO_PKG_VERSION"))),
            "{name}: {json}"
        );
    }
    for name in ["keyvault-emulator", "secrets-store"] {
        let out = std::process::Command::new(workspace_binary(name))
            .arg("--version")
            .output()
            .expect("run");
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{name}"
        );
    }
}
