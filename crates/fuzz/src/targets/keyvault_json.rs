//! Key Vault response bodies as keyvault-client decodes them, and the provider's rendering of
//! what they decode to (provider-azure `render`).
//!
//! Input: a mode byte, a settings byte, then a response body (or, for 5 and 6, raw bytes):
//! - 0: get-secret → `render_secret` (format, encoding, PEM chain and split-files settings);
//! - 1: get-key → `render_key`; 2: get-certificate → `render_cert`;
//! - 3: a versions page (kind from the settings byte); 4: an error body;
//! - 5: PEM text → the PEM block reader, the cert/key split, the private-key re-encoder;
//! - 6: DER certificates (length-prefixed) → the chain orderer.
//!
//! Checks: no panic; rendered files are named after the object (`name`, `name.crt`,
//! `name.key`), the version is the id's last segment; a key renders to a PEM `PUBLIC KEY` whose
//! DER is a SubjectPublicKeyInfo; a certificate renders to the PEM of exactly its `cer`; PEM
//! blocks re-encode and read back to themselves.

use keyvault_client::{ObjectKind, last_segment};
use provider_azure::params::{ObjectEncoding, ObjectFormat, ObjectSpec, ObjectType};
use provider_azure::render::{self, RenderOptions, chain, keys, pem};

const FILE: &str = "obj";

pub fn run(data: &[u8]) {
    let [mode, settings, body @ ..] = data else {
        return;
    };
    match mode % 7 {
        0 => secret(*settings, body),
        1 => key(body),
        2 => certificate(body),
        3 => {
            let kind = [ObjectKind::Secret, ObjectKind::Key, ObjectKind::Certificate]
                [usize::from(*settings) % 3];
            if let Ok((items, next)) = keyvault_client::decode_versions_page(kind, body) {
                for i in &items {
                    let _ = i.version();
                }
                assert!(next.is_none_or(|l| !l.is_empty()));
            }
        }
        4 => {
            let (_code, message) = keyvault_client::decode_error(body);
            assert!(message.chars().count() <= 301, "message not cut");
        }
        5 => pem_text(body),
        _ => certificates(body),
    }
}

fn secret(settings: u8, body: &[u8]) {
    let Ok(bundle) = keyvault_client::decode_secret(body) else {
        return;
    };
    let spec = ObjectSpec {
        name: FILE.into(),
        alias: String::new(),
        object_type: ObjectType::Secret,
        version: String::new(),
        version_history: 0,
        format: if settings & 1 == 0 {
            ObjectFormat::Pem
        } else {
            ObjectFormat::Pfx
        },
        encoding: [
            ObjectEncoding::Utf8,
            ObjectEncoding::Base64,
            ObjectEncoding::Hex,
        ][usize::from(settings >> 1) % 3],
        file_permission: None,
        selector: None,
        optional: false,
        jmes_path: Vec::new(),
    };
    let opts = RenderOptions {
        construct_pem_chain: settings & 8 == 0,
        write_cert_and_key_in_separate_files: settings & 16 != 0,
    };
    if let Ok(r) = render::render_secret(&spec, FILE, &bundle, opts) {
        let id = bundle.id.as_deref().expect("rendered without an id");
        assert_eq!(r.version, last_segment(id));
        let names: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
        assert!(
            names == [FILE] || names == ["obj.crt", "obj.key", FILE],
            "{names:?}"
        );
    }
}

fn key(body: &[u8]) {
    let Ok(bundle) = keyvault_client::decode_key(body) else {
        return;
    };
    if let Ok(r) = render::render_key(FILE, &bundle) {
        let [file] = r.files.as_slice() else {
            panic!("a key renders to one file");
        };
        let blocks = pem::decode_all(&file.contents);
        let [block] = blocks.as_slice() else {
            panic!("a key renders to one PEM block");
        };
        assert_eq!(block.label, "PUBLIC KEY");
        use der::Decode as _;
        spki::SubjectPublicKeyInfoRef::from_der(&block.der)
            .expect("a rendered public key is a SubjectPublicKeyInfo");
    }
}

fn certificate(body: &[u8]) {
    let Ok(bundle) = keyvault_client::decode_certificate(body) else {
        return;
    };
    if let Ok(r) = render::render_cert(FILE, &bundle) {
        let cer = bundle.cer.as_deref().expect("rendered without cer");
        let blocks = pem::decode_all(&r.files[0].contents);
        let [block] = blocks.as_slice() else {
            panic!("a certificate renders to one PEM block");
        };
        assert_eq!(block.label, "CERTIFICATE");
        assert_eq!(block.der, cer, "the certificate PEM is not its cer");
    }
}

fn pem_text(body: &[u8]) {
    let blocks = pem::decode_all(body);
    for b in &blocks {
        let text = pem::encode_with_headers(&b.label, &b.headers, &b.der);
        let again = pem::decode_all(text.as_bytes());
        assert_eq!(again.len(), 1, "one block re-encodes to one: {text:?}");
        assert_eq!(again[0].label, b.label);
        assert_eq!(again[0].der, b.der);
        let _ = keys::to_pkcs8(&b.der);
    }
    let (certs, keys) = render::split_cert_and_key(body);
    let n = pem::decode_all(&certs).len() + pem::decode_all(&keys).len();
    assert_eq!(n, blocks.len(), "the split lost or added blocks");
}

fn certificates(mut body: &[u8]) {
    let mut certs = Vec::new();
    while let [hi, lo, rest @ ..] = body {
        let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
        certs.push(rest[..n].to_vec());
        body = &rest[n..];
    }
    if let Ok(ordered) = chain::order(&certs) {
        let _ = ordered;
    }
}
