//! Reading PFX files the `openssl` CLI wrote (see fixtures/README.md for the commands): legacy
//! RC2-40, 3DES, PBES2 with AES, each MAC digest, passwords empty, ASCII and non-ASCII.

use pfx::Pkcs12Error;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
const PASSWORD: &str = "fixture-pw";
const UTF8_PASSWORD: &str = "pässwörd-✓";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

/// The PKCS#8 DER of key.pem, what every fixture holds.
fn key_der() -> Vec<u8> {
    let pem = String::from_utf8(fixture("key.pem")).expect("utf-8");
    let (label, der) = der::pem::decode_vec(pem.as_bytes()).expect("PEM");
    assert_eq!(label, "PRIVATE KEY");
    der
}

/// Decodes `name` with `password` and checks it holds key.pem and cert.der.
fn assert_reads(name: &str, password: &str) {
    let decoded = pfx::decode_split_with_password(&fixture(name), password)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(decoded.keys.len(), 1, "{name}");
    assert_eq!(decoded.keys[0].as_slice(), key_der().as_slice(), "{name}");
    assert_eq!(decoded.certs, vec![fixture("cert.der")], "{name}");
}

fn assert_wrong_password(name: &str, password: &str) {
    let err = pfx::decode_with_password(&fixture(name), password).expect_err(name);
    assert_eq!(err, Pkcs12Error::BadPassword, "{name} with {password:?}");
    let text = err.to_string();
    assert!(text.contains("wrong password"), "{text}");
    assert!(!text.contains("only the empty password"), "{text}");
}

/// Fixtures with [`PASSWORD`]: file, what it exercises.
const WITH_PASSWORD: &[(&str, &str)] = &[
    (
        "rc2-40.pfx",
        "-legacy: RC2-40 certificates, 3DES key, SHA-1 MAC",
    ),
    ("3des.pfx", "3DES both, SHA-1 MAC"),
    (
        "pbes2-aes256.pfx",
        "OpenSSL 3 default: PBES2 AES-256, SHA-256 MAC",
    ),
    ("pbes2-aes128-sha512-mac.pfx", "PBES2 AES-128, SHA-512 MAC"),
    ("pbes2-aes192-sha384-mac.pfx", "PBES2 AES-192, SHA-384 MAC"),
];

#[test]
fn password_protected_files_read_with_their_password_only() {
    for (name, _) in WITH_PASSWORD {
        assert_reads(name, PASSWORD);
        assert_wrong_password(name, "not-the-password");
        assert_wrong_password(name, "");
        // The empty-password forms of the API are the same as passing "".
        assert_eq!(
            pfx::decode_split(&fixture(name)).map(|_| ()),
            Err(Pkcs12Error::BadPassword)
        );
    }
}

#[test]
fn non_ascii_passwords_are_bmp_for_pkcs12_pbes_and_utf8_for_pbkdf2() {
    // As OpenSSL: UTF-16BE for the MAC and the RC2/3DES PBEs, the UTF-8 bytes for PBES2.
    for name in ["rc2-40-utf8-password.pfx", "pbes2-utf8-password.pfx"] {
        assert_reads(name, UTF8_PASSWORD);
        assert_wrong_password(name, "passwörd");
        assert_wrong_password(name, "");
    }
}

#[test]
fn empty_password_files_read_through_every_empty_password_form() {
    // OpenSSL writes "" as the terminated empty BMP string; PBES2 then gets zero bytes.
    for name in ["pbes2-empty-password.pfx", "sha256-mac.pfx"] {
        assert_reads(name, "");
        let items = pfx::decode(&fixture(name)).expect(name);
        assert_eq!(items.len(), 2, "{name}: {items:?}");
        let split = pfx::decode_split(&fixture(name)).expect(name);
        assert_eq!(split.certs, vec![fixture("cert.der")]);
        assert_wrong_password(name, PASSWORD);
    }
}

#[test]
fn debug_output_never_shows_key_bytes() {
    let decoded = pfx::decode_split_with_password(&fixture("3des.pfx"), PASSWORD).expect("reads");
    assert!(format!("{decoded:?}").contains("redacted"));
    let items = pfx::decode_with_password(&fixture("3des.pfx"), PASSWORD).expect("reads");
    assert!(format!("{items:?}").contains("redacted"));
}

#[test]
fn a_flipped_mac_byte_is_a_password_error_not_a_panic() {
    let mut bytes = fixture("sha256-mac.pfx");
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    assert!(pfx::decode_split(&bytes).is_err());
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    assert_eq!(
        pfx::decode_with_password(&vec![0u8; (1 << 20) + 1], PASSWORD).map(|_| ()),
        Err(Pkcs12Error::TooLarge("PFX larger than 1 MiB"))
    );
}

/// A small xorshift generator: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_files_are_errors_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut names: Vec<&str> = WITH_PASSWORD.iter().map(|(n, _)| *n).collect();
    names.extend(["rc2-40-utf8-password.pfx", "pbes2-empty-password.pfx"]);
    for name in names {
        let original = fixture(name);
        for _ in 0..40 {
            let mut m = original.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                m.truncate(rng.below(m.len()));
            }
            // Errors or (a mutation in an unused byte) success; a panic fails the test.
            let _ = pfx::decode_with_password(&m, PASSWORD);
            let _ = pfx::decode(&m);
        }
    }
    for garbage in [
        &b""[..],
        b"\x30",
        b"\x30\x03\x02\x01\x03",
        b"not der at all",
        &[0x30, 0x82, 0xff, 0xff],
        &[0x30, 0x80, 0x00, 0x00],
    ] {
        assert!(pfx::decode(garbage).is_err());
    }
}
