//! Decoding vectors the provider's and the driver's tests do not cover: the SHA-256 MAC.

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

#[test]
fn sha256_mac_with_the_terminated_empty_password() {
    let decoded = pfx::decode_split(&fixture("sha256-mac.pfx")).expect("decodes");
    assert_eq!(decoded.keys.len(), 1);
    assert_eq!(decoded.certs, vec![fixture("cert.der")]);
    // The Debug form never shows key bytes.
    assert!(format!("{decoded:?}").contains("redacted"));
}

#[test]
fn a_flipped_mac_byte_is_a_password_error_not_a_panic() {
    let mut bytes = fixture("sha256-mac.pfx");
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    assert!(pfx::decode_split(&bytes).is_err());
}
