//! The writer's output as the `openssl` CLI reads it: Key Vault's algorithms, attributes and
//! zero-length password (`-passin pass:` tries that form first).

use std::io::Write;
use std::process::{Command, Stdio};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

/// `openssl pkcs12 -info` of `pfx` with the empty password, or `None` outside CI without openssl.
fn openssl_info(pfx: &[u8]) -> Option<String> {
    let child = Command::new("openssl")
        .args(["pkcs12", "-info", "-nodes", "-passin", "pass:"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let message =
                format!("openssl is not installed ({e}); install it (apt-get install openssl)");
            assert!(!test_support::in_ci(), "{message}");
            eprintln!("SKIPPING TEST (not in CI): {message}");
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pfx)
        .expect("write PFX");
    let out = child.wait_with_output().expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl pkcs12 -info failed:\n{text}");
    Some(text)
}

#[test]
fn openssl_reads_the_key_vault_form() {
    let (_, key) = der::pem::decode_vec(&fixture("key.pem")).expect("key PEM");
    let cert = fixture("cert.der");
    let friendly = "f39ca534-1ab9-49b8-bb76-3fa019c12166";
    let pfx = pfx::encode_keyvault(&key, std::slice::from_ref(&cert), friendly).expect("encodes");
    let Some(info) = openssl_info(&pfx) else {
        return;
    };
    for line in [
        "MAC: sha1, Iteration 2000",
        "MAC length: 20, salt length: 20",
        "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2000",
        "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2000",
        "localKeyID: 01 00 00 00",
        &format!("friendlyName: {friendly}"),
        "Microsoft CSP Name: Microsoft Enhanced RSA and AES Cryptographic Provider",
    ] {
        assert!(info.contains(line), "missing {line:?} in:\n{info}");
    }
    // The certificate and the key come back as they went in.
    let cert_pem = String::from_utf8(fixture("cert.pem")).expect("utf-8");
    assert!(info.contains(cert_pem.trim()), "certificate:\n{info}");
    let key_pem =
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &key).expect("key PEM");
    assert!(info.contains(key_pem.trim()), "key differs");
}
