//! Differential test: the upstream Go provider (test peer) and ours answer the same `MountRequest`
//! against the same emulator; files, modes and object versions must be identical byte for byte.
//! Both reach the emulator the same way (AzureStackCloud env file, `SSL_CERT_FILE`, a private
//! /etc/hosts for the vault host). The identity is pod identity: upstream's NMI address is fixed
//! (`localhost:2579`), so the emulator's NMI listens there. (VM managed identity cannot be used:
//! the upstream build ignores `AZURE_POD_IDENTITY_AUTHORITY_HOST` and would call
//! 169.254.169.254.)

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::emu::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_files_as_the_upstream_go_provider() {
    let upstream = test_support::require_peer!(test_support::Peer::UpstreamAzureProvider);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let pfx = |n: &str| {
        std::fs::read_to_string(fixtures.join(n))
            .unwrap()
            .trim()
            .to_owned()
    };
    let seed_yaml = seed("[]", "none").replacen(
        "    certificates:\n",
        &format!(
            "    certificates:\n      - {{ name: kvrec, pfx_base64: \"{}\" }}\n      - {{ name: chain, pfx_base64: \"{}\" }}\n",
            pfx("kv-recorded.pfx.b64"),
            pfx("chain3-ec.pfx.b64")
        ),
        1,
    );
    assert!(
        std::net::TcpListener::bind("127.0.0.1:2579").is_ok(),
        "port 2579 (upstream's fixed NMI port) is busy; this test needs it"
    );
    let env = Env::start_full(
        &seed_yaml,
        |c| keyvault_emulator::EmulatorConfig {
            nmi_listen: "127.0.0.1:2579".parse().unwrap(),
            ..c
        },
        |_| {},
    )
    .await;
    let sock = env.dir.path().join("upstream.sock");
    let mut cmd = Command::new(&upstream);
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg(format!("--healthz-port={}", test_support::free_port()))
        .arg(format!("--prometheus-port={}", test_support::free_port()))
        .env("SSL_CERT_FILE", &env.ca_file)
        // belt and braces: never let it reach for the real IMDS address
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", env.emu.imds_url());
    let hosts = test_support::HostsOverride::new(&[(
        &env.emu.vault_host("kv1"),
        "127.0.0.1".parse::<IpAddr>().unwrap(),
    )])
    .unwrap();
    let log = env.dir.path().join("upstream.log");
    let mut child = hosts
        .wrap(&cmd)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "upstream provider did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: secret1\nobjectAlias: secret1-hex-free\nobjectType: secret\nfilePermission: \"0600\"",
        "objectName: rsa1\nobjectType: key",
        "objectName: ec1\nobjectType: key",
        "objectName: cert1\nobjectType: cert",
        "objectName: cert1\nobjectAlias: cert1-secret\nobjectType: secret",
        "objectName: cert-pem\nobjectType: secret",
        "objectName: kvrec\nobjectType: secret",
        "objectName: chain\nobjectType: secret",
        "objectName: chain\nobjectAlias: chain.pfx\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64",
    ]);
    let attrs = env.attrs(&[("usePodIdentity", "true"), ("objects", &objs)]);
    let theirs = connect(&sock)
        .await
        .mount(mount_request(attrs.clone(), None, env.dir.path()))
        .await;
    let ours = connect(&env.sock)
        .await
        .mount(mount_request(attrs, None, env.dir.path()))
        .await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let theirs = theirs
        .unwrap_or_else(|e| {
            panic!(
                "upstream: {e:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .into_inner();
    let ours = ours.unwrap().into_inner();
    assert_eq!(theirs.files.len(), ours.files.len());
    for (t, o) in theirs.files.iter().zip(&ours.files) {
        assert_eq!(t.path, o.path);
        assert_eq!(t.mode, o.mode, "{}", t.path);
        assert_eq!(
            String::from_utf8_lossy(&t.contents),
            String::from_utf8_lossy(&o.contents),
            "{}",
            t.path
        );
    }
    let ids = |r: &provider_proto::v1alpha1::MountResponse| {
        r.object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&theirs), ids(&ours));
}
