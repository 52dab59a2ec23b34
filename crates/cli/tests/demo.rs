//! The README's first command: `secrets-store demo` runs to the end, mounts the four files,
//! masks values by default, shows the rotation, and orders the certificate chain.

use std::process::Command;

use secrets_store_cli::demo::{DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mounts_masks_rotates_and_cleans_up() {
    let mut out = Vec::new();
    run(&DemoOptions::default(), &mut out)
        .await
        .expect("demo runs");
    let text = String::from_utf8(out).expect("utf-8 output");

    for step in 1..=6 {
        assert!(
            text.contains(&format!("[{step}/6]")),
            "step {step} missing:\n{text}"
        );
    }
    for file in [
        "db-password",
        "signing-key.pub.pem",
        "tls/web-tls.crt",
        "tls/web-tls.pem",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(file)),
            "{file} not listed:\n{text}"
        );
    }
    assert!(text.contains("PEM: PUBLIC KEY"), "{text}");
    assert!(
        text.contains("chain web.demo.test → Demo Intermediate CA → Demo Root CA"),
        "{text}"
    );
    assert!(text.contains("(key material masked)"), "{text}");
    // Values are masked: neither password version nor key material appears.
    assert!(
        !text.contains("horse-battery-staple"),
        "a secret value leaked:\n{text}"
    );
    assert!(!text.contains("BEGIN PRIVATE KEY"), "{text}");
    // Rotation: exactly the secret changed.
    assert!(text.contains("changed: db-password"), "{text}");
    assert!(text.contains("1 file(s) changed, 3 unchanged"), "{text}");
    assert!(text.contains("NodeUnpublishVolume"), "{text}");

    // The working folder is gone.
    let folder = text
        .lines()
        .find_map(|l| l.strip_prefix("working folder: "))
        .expect("working folder line");
    assert!(
        !std::path::Path::new(folder).exists(),
        "{folder} left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_values_prints_both_versions() {
    let mut out = Vec::new();
    run(
        &DemoOptions {
            show_values: true,
            keep: false,
        },
        &mut out,
    )
    .await
    .expect("demo runs");
    let text = String::from_utf8(out).expect("utf-8 output");
    assert!(
        text.contains("\"correct-horse-battery-staple\" → \"rotated-horse-battery-staple\""),
        "{text}"
    );
}

#[test]
fn the_binary_runs_the_demo() {
    let out = Command::new(env!("CARGO_BIN_EXE_secrets-store"))
        .arg("demo")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("done in"));
}
