use super::*;
use crate::params::{ObjectSpec, ObjectType};
use keyvault_client::{Jwk, SecretBytes};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/{name}")).unwrap()
}

fn spec(t: ObjectType) -> ObjectSpec {
    ObjectSpec {
        name: "obj".into(),
        alias: String::new(),
        object_type: t,
        version: String::new(),
        version_history: 0,
        format: ObjectFormat::Pem,
        encoding: ObjectEncoding::Utf8,
        file_permission: None,
        selector: None,
        optional: false,
        jmes_path: Vec::new(),
    }
}

#[test]
fn pfx_vectors_match_what_upstream_go_produces() {
    for name in [
        "kv-recorded",
        "chain3-rsa",
        "chain3-ec",
        "incomplete",
        "rc2",
    ] {
        let got = pfx_to_pem(&fixture(&format!("{name}.pfx.b64")), true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = fixture(&format!("{name}.expected.pem"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{name}: output differs from the Go oracle"
        );
    }
}

#[test]
fn real_key_vault_pfx_uses_the_zero_length_password() {
    use base64::Engine as _;
    let b64: Vec<u8> = fixture("kv-recorded.pfx.b64")
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let items = pkcs12::decode(&der).unwrap();
    assert_eq!(
        items
            .iter()
            .filter(|i| matches!(i, pkcs12::Pkcs12Item::Key(_)))
            .count(),
        1
    );
    assert_eq!(
        items
            .iter()
            .filter(|i| matches!(i, pkcs12::Pkcs12Item::Cert(_)))
            .count(),
        1
    );
}

fn certs_of(pem_file: &str) -> Vec<Vec<u8>> {
    pem::decode_all(&fixture(pem_file))
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der.clone())
        .collect()
}

#[test]
fn chain_order_for_every_permutation() {
    for f in ["chain3-rsa.expected.pem", "chain3-ec.expected.pem"] {
        let ordered = certs_of(f); // leaf, intermediate, root
        assert_eq!(ordered.len(), 3);
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for p in perms {
            let input: Vec<Vec<u8>> = p.iter().map(|i| ordered[*i].clone()).collect();
            let chain::Ordered::Chain(idx) = chain::order(&input).unwrap() else {
                panic!("{f} {p:?}: complete chain reported incomplete")
            };
            let got: Vec<&Vec<u8>> = idx.iter().map(|i| &input[*i]).collect();
            assert_eq!(got, ordered.iter().collect::<Vec<_>>(), "{f} {p:?}");
        }
    }
}

#[test]
fn incomplete_chain_is_passed_through_in_input_order() {
    let certs = certs_of("incomplete.expected.pem");
    assert_eq!(chain::order(&certs).unwrap(), chain::Ordered::Incomplete);
    let rev: Vec<Vec<u8>> = certs.iter().rev().cloned().collect();
    assert_eq!(chain::order(&rev).unwrap(), chain::Ordered::Incomplete);
    assert!(matches!(
        chain::order(&[b"junk".to_vec()]),
        Err(chain::ChainError::Parse(_))
    ));
}

#[test]
fn without_construct_pem_chain_bag_order_is_kept() {
    let got = pfx_to_pem(&fixture("chain3-rsa.pfx.b64"), false).unwrap();
    let blocks = pem::decode_all(&got);
    let ordered = certs_of("chain3-rsa.expected.pem");
    let certs: Vec<&Vec<u8>> = blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| &b.der)
        .collect();
    // stored order: leaf, root, intermediate
    assert_eq!(certs, vec![&ordered[0], &ordered[2], &ordered[1]]);
    assert_eq!(blocks[0].label, "PRIVATE KEY");
}

#[test]
fn jwks_match_go_marshal_pkix_public_key() {
    let jwks: Vec<Jwk> = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let mut all = String::new();
    for j in &jwks {
        let r = render_key(
            "k",
            &KeyBundle {
                key: Some(j.clone()),
            },
        )
        .unwrap();
        all.push_str(std::str::from_utf8(&r.files[0].contents).unwrap());
        assert_eq!(r.version, last_segment(j.kid.as_deref().unwrap()));
    }
    assert_eq!(
        all,
        String::from_utf8(fixture("jwks.expected.pem")).unwrap()
    );
}

#[test]
fn jwk_errors() {
    let mut j = Jwk {
        kid: Some("https://v/keys/k/1".into()),
        kty: "EC".into(),
        crv: Some("P-256K".into()),
        ..Jwk::default()
    };
    assert_eq!(
        keys::jwk_to_spki(&j).unwrap_err().to_string(),
        "curve P-256K is not supported"
    );
    j.kty = "oct-HSM".into();
    assert_eq!(
        keys::jwk_to_spki(&j).unwrap_err().to_string(),
        "failed to get key. key type 'oct-HSM' currently not supported"
    );
    let jwks: Vec<Jwk> = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let mut bad = jwks[0].clone();
    bad.y = bad.x.clone(); // not on the curve
    assert!(
        keys::jwk_to_spki(&bad)
            .unwrap_err()
            .to_string()
            .contains("not on the curve")
    );
    let mut bad = jwks[3].clone();
    bad.n = Some("!!!".into());
    assert!(keys::jwk_to_spki(&bad).is_err());
    bad.n = None;
    assert!(
        keys::jwk_to_spki(&bad)
            .unwrap_err()
            .to_string()
            .contains("missing n")
    );
    assert_eq!(
        render_key("k", &KeyBundle { key: None })
            .unwrap_err()
            .to_string(),
        "key value is nil"
    );
}

#[test]
fn encodings() {
    let z = |s: &str| Zeroizing::new(s.as_bytes().to_vec());
    assert_eq!(
        &apply_encoding(ObjectEncoding::Utf8, z("abcdefg")).unwrap()[..],
        b"abcdefg"
    );
    assert_eq!(
        &apply_encoding(ObjectEncoding::Base64, z("QmFzZTY0RW5jb2RlZFN0cmluZw==")).unwrap()[..],
        b"Base64EncodedString"
    );
    assert_eq!(
        &apply_encoding(ObjectEncoding::Hex, z("486578456E636F646564537472696E67")).unwrap()[..],
        b"HexEncodedString"
    );
    assert!(
        apply_encoding(ObjectEncoding::Base64, z("not base64!"))
            .unwrap_err()
            .to_string()
            .starts_with("objectEncoding base64:")
    );
    assert!(apply_encoding(ObjectEncoding::Hex, z("abc")).is_err());
}

fn secret(value: &str, kid: Option<&str>, ct: Option<&str>) -> SecretBundle {
    SecretBundle {
        id: Some("https://test.vault.azure.net/secrets/secret1/v1".into()),
        value: Some(SecretBytes::new(value.as_bytes().to_vec())),
        content_type: ct.map(str::to_owned),
        kid: kid.map(str::to_owned),
    }
}

#[test]
fn secret_rendering_variants() {
    let opts = RenderOptions::default();
    let s = spec(ObjectType::Secret);
    let r = render_secret(&s, "secret1", &secret("plain", None, None), opts).unwrap();
    assert_eq!(r.version, "v1");
    assert_eq!(
        (r.files.len(), &r.files[0].contents[..]),
        (1, &b"plain"[..])
    );

    let kid = Some("https://test.vault.azure.net/keys/secret1/v1");
    let pem_value = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let r = render_secret(
        &s,
        "c",
        &secret(pem_value, kid, Some("application/x-pem-file")),
        opts,
    )
    .unwrap();
    assert_eq!(&r.files[0].contents[..], pem_value.as_bytes());

    let pfx = String::from_utf8(fixture("kv-recorded.pfx.b64")).unwrap();
    let mut pfx_spec = spec(ObjectType::Secret);
    pfx_spec.format = ObjectFormat::Pfx;
    let r = render_secret(
        &pfx_spec,
        "c",
        &secret(&pfx, kid, Some("application/x-pkcs12")),
        opts,
    )
    .unwrap();
    assert_eq!(
        &r.files[0].contents[..],
        pfx.as_bytes(),
        "objectFormat pfx: value as stored"
    );
    pfx_spec.encoding = ObjectEncoding::Base64;
    let r = render_secret(
        &pfx_spec,
        "c",
        &secret(&pfx, kid, Some("application/x-pkcs12")),
        opts,
    )
    .unwrap();
    assert_eq!(r.files[0].contents[0], 0x30, "pfx + base64 = binary PFX");

    let r = render_secret(
        &s,
        "c",
        &secret(&pfx, kid, Some("application/x-pkcs12")),
        opts,
    )
    .unwrap();
    assert_eq!(
        &r.files[0].contents[..],
        &fixture("kv-recorded.expected.pem")[..]
    );

    let sep = RenderOptions {
        write_cert_and_key_in_separate_files: true,
        ..opts
    };
    let r = render_secret(
        &s,
        "c",
        &secret(&pfx, kid, Some("application/x-pkcs12")),
        sep,
    )
    .unwrap();
    let paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["c.crt", "c.key", "c"]);
    assert!(
        std::str::from_utf8(&r.files[0].contents)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(
        std::str::from_utf8(&r.files[1].contents)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert_eq!(
        [&r.files[0].contents[..], &r.files[1].contents[..]]
            .concat()
            .len(),
        r.files[2].contents.len()
    );

    let e = render_secret(&s, "c", &secret("x", kid, Some("text/plain")), opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to get certificate. unknown content type 'text/plain'"
    );
    let e = render_secret(&s, "c", &secret("x", kid, None), opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to get certificate. unknown content type ''"
    );
    let e = render_secret(
        &s,
        "c",
        &secret("invalid", kid, Some("application/x-pkcs12")),
        opts,
    )
    .unwrap_err();
    assert!(
        matches!(e, RenderError::Pkcs12(_) | RenderError::PfxBase64(_)),
        "{e}"
    );
    let mut nil = secret("x", None, None);
    nil.value = None;
    assert_eq!(
        render_secret(&s, "c", &nil, opts).unwrap_err().to_string(),
        "secret value is nil"
    );
    let mut nil = secret("x", None, None);
    nil.id = None;
    assert_eq!(
        render_secret(&s, "c", &nil, opts).unwrap_err().to_string(),
        "secret id is nil"
    );
}

#[test]
fn cert_rendering() {
    let r = render_cert(
        "c",
        &CertificateBundle {
            id: Some("https://v/certificates/c/v1".into()),
            cer: Some(b"test".to_vec()),
        },
    )
    .unwrap();
    assert_eq!(
        &r.files[0].contents[..],
        b"-----BEGIN CERTIFICATE-----\ndGVzdA==\n-----END CERTIFICATE-----\n"
    );
    assert_eq!(r.version, "v1");
    assert_eq!(
        render_cert(
            "c",
            &CertificateBundle {
                id: None,
                cer: Some(vec![])
            }
        )
        .unwrap_err()
        .to_string(),
        "certificate id is nil"
    );
    assert_eq!(
        render_cert(
            "c",
            &CertificateBundle {
                id: Some("x".into()),
                cer: None
            }
        )
        .unwrap_err()
        .to_string(),
        "certificate value is nil"
    );
}

#[test]
fn private_key_reencoding_matches_go_for_pkcs1_and_sec1_inputs() {
    // The Go oracle's PKCS#8 output for the chain3-rsa key; feed the same key as PKCS#1 / PKCS#8
    // with and without attributes and expect identical bytes.
    let blocks = pem::decode_all(&fixture("chain3-rsa.expected.pem"));
    let p8 = blocks[0].der.clone();
    assert_eq!(&keys::to_pkcs8(&p8).unwrap()[..], &p8[..]);
    let info = pkcs8::PrivateKeyInfoRef::try_from(p8.as_slice()).unwrap();
    let pkcs1_der = info.private_key.as_bytes().to_vec();
    assert_eq!(&keys::to_pkcs8(&pkcs1_der).unwrap()[..], &p8[..]);
    let blocks = pem::decode_all(&fixture("chain3-ec.expected.pem"));
    let ec8 = blocks[0].der.clone();
    assert_eq!(&keys::to_pkcs8(&ec8).unwrap()[..], &ec8[..]);
    let info = pkcs8::PrivateKeyInfoRef::try_from(ec8.as_slice()).unwrap();
    // bare SEC1 without curve parameters cannot be placed on a curve
    assert!(keys::to_pkcs8(info.private_key.as_bytes()).is_err());
    assert_eq!(
        keys::to_pkcs8(b"garbage").unwrap_err().to_string(),
        "failed to parse key for type pkcs1, pkcs8 or ec"
    );
}

#[test]
fn malformed_pkcs12_never_panics() {
    use base64::Engine as _;
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x30],
        vec![0x30, 0x80],
        vec![0xff; 64],
        b"invalid".to_vec(),
    ];
    for name in ["kv-recorded", "rc2", "chain3-ec"] {
        let b64: Vec<u8> = fixture(&format!("{name}.pfx.b64"))
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        // truncations
        for cut in (0..der.len()).step_by(97) {
            inputs.push(der[..cut].to_vec());
        }
        // single-byte corruptions across the whole structure
        for pos in (0..der.len()).step_by(53) {
            let mut d = der.clone();
            d[pos] ^= 0x5a;
            inputs.push(d);
        }
        // length bytes inflated
        let mut d = der.clone();
        if d.len() > 3 {
            d[2] = 0xff;
        }
        inputs.push(d);
    }
    let mut errors = 0;
    for (i, input) in inputs.iter().enumerate() {
        match std::panic::catch_unwind(|| pkcs12::decode(input)) {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("input {i} panicked"),
        }
    }
    assert!(
        errors > inputs.len() / 2,
        "most corrupted inputs must be rejected ({errors}/{})",
        inputs.len()
    );
    assert_eq!(
        pkcs12::decode(&vec![0u8; 2 << 20]).unwrap_err(),
        pkcs12::Pkcs12Error::TooLarge("PFX larger than 1 MiB")
    );
}
