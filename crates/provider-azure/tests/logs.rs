//! A test that captures all log output of a full run (every identity outcome, success and
//! failure) and finds none of the seeded secret values, credentials or tokens. Its own test binary:
//! tracing's callsite cache is process-wide, so a capturing subscriber must not share the process
//! with tests that have none.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::emu::*;
use common::*;

// === logs never carry secrets ===

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_of_a_full_run_carry_no_secret_values() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let env = Env::start(&seed("[]", "none")).await;
    let mut client = connect(&env.sock).await;
    let objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: cert1\nobjectType: secret",
        "objectName: rsa1\nobjectType: key",
        "objectName: missing\nobjectType: secret",
    ]);
    let secrets = sp_secrets(SP, SP_SECRET);
    let _ = client
        .mount(mount_request(
            env.attrs(&[("objects", &objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await;
    let ok_objs = objects(&[
        "objectName: secret1\nobjectType: secret",
        "objectName: cert1\nobjectType: secret",
    ]);
    let resp = client
        .mount(mount_request(
            env.attrs(&[("objects", &ok_objs)]),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .unwrap()
        .into_inner();
    let _ = client
        .mount(mount_request(
            env.attrs(&[("objects", &ok_objs)]),
            Some(&sp_secrets(SP, "wrong-secret-xyz")),
            env.dir.path(),
        ))
        .await;
    let _ = client
        .mount(mount_request(
            env.attrs(&[("useVMManagedIdentity", "true"), ("objects", &ok_objs)]),
            None,
            env.dir.path(),
        ))
        .await;
    drop(_guard);
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("mount succeeded"),
        "logs were captured: {logs}"
    );
    assert!(
        logs.contains("secret1") || logs.contains("kv1"),
        "names are logged"
    );
    let key_pem = String::from_utf8_lossy(&resp.files[1].contents).to_string();
    let key_b64_line = key_pem.lines().nth(1).unwrap().to_owned();
    for needle in [
        SEEDED_SECRET,
        SP_SECRET,
        "wrong-secret-xyz",
        key_b64_line.as_str(),
        "eyJ",
    ] {
        assert!(!logs.contains(needle), "log output contains {needle:?}");
    }
}
