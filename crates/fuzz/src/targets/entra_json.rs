//! entra-auth's decoding of what identity endpoints answer: Entra ID token and IMDS responses,
//! NMI responses, error bodies, the Key Vault `WWW-Authenticate` challenge, and client
//! assertions (JWT header and claims) before any key is fetched.
//!
//! Input: a mode byte, a status byte, then the body (or header text, or JWT):
//! - 0: token / IMDS response; 1: NMI response; 2: an error body with status `400 + byte`;
//! - 3: a challenge header, then (after a NUL) the vault host it is checked against;
//! - 4: a client assertion, verified with no trusted issuer (nothing is fetched).
//!
//! Checks: no panic; a decoded token is non-empty and its `Debug` does not show it; a challenge's
//! scope ends in `/.default` and a verified host is a sub-domain of the resource's host; an
//! assertion is never verified without a trusted issuer.

use std::sync::OnceLock;

use entra_auth::credential::{decode_nmi_response, decode_token_response, entra_reason};
use entra_auth::{AccessToken, AssertionVerifier, Challenge};

use crate::input::split;

const ENDPOINT: &str = "https://login.example/tenant/oauth2/v2.0/token";

pub fn run(data: &[u8]) {
    let [mode, status, body @ ..] = data else {
        return;
    };
    match mode % 5 {
        0 => token(decode_token_response(ENDPOINT, body)),
        1 => token(decode_nmi_response(ENDPOINT, body)),
        2 => {
            let reason = entra_reason(body, 400 + u16::from(*status));
            assert!(!reason.is_empty());
        }
        3 => {
            let (header, host) = split(body, 0);
            let header = String::from_utf8_lossy(header);
            if let Ok(c) = Challenge::parse(&header) {
                assert!(!c.resource.is_empty());
                assert!(c.scope().ends_with("/.default"));
                let host = String::from_utf8_lossy(host);
                if c.verify(&host).is_ok() {
                    assert!(host.contains('.'), "verified host {host:?} for {c:?}");
                }
            }
        }
        _ => {
            let assertion = String::from_utf8_lossy(body);
            let (rt, verifier) = verifier();
            let outcome = rt.block_on(verifier.verify(&assertion));
            assert!(outcome.is_err(), "verified without a trusted issuer");
        }
    }
}

fn token(result: Result<AccessToken, entra_auth::AuthError>) {
    let Ok(t) = result else {
        return;
    };
    let secret = t.token.expose();
    assert!(!secret.is_empty(), "an empty token accepted");
    if secret.len() >= 8 && !secret.bytes().all(|b| b.is_ascii_digit()) {
        let debug = format!("{t:?}");
        assert!(!debug.contains(secret), "Debug shows the token: {debug}");
    }
}

fn verifier() -> &'static (tokio::runtime::Runtime, AssertionVerifier) {
    static V: OnceLock<(tokio::runtime::Runtime, AssertionVerifier)> = OnceLock::new();
    V.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let http =
            entra_auth::build_client(&entra_auth::HttpOptions::default()).expect("HTTP client");
        (rt, AssertionVerifier::new(http, Vec::new()))
    })
}
