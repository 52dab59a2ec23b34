//! The driver's [`VolumeContext::parse`] of kubelet's volume context and secrets, the JSON it
//! sends the provider ([`VolumeContext::provider_attributes`], [`provider_secrets`]), and the
//! provider's parse of exactly that JSON.
//!
//! Input: a mode byte; even = raw (`context JSON \0 secrets JSON \0 class parameters JSON`,
//! each a string map), odd = structured (kubelet's keys with plausible or arbitrary values); a
//! mode byte ≥ 0x80 also passes a rotation interval (`maxAge`).
//!
//! Checks: no panic; `parse` succeeds exactly when the class and the pod's name, namespace and
//! uid are present; `Debug` never shows the tokens; the attributes are the class parameters with
//! every context key laid over them, the tokens (from `secrets` first), then `maxAge`; the
//! secrets JSON is `null` or exactly the secrets; then [`super::params::check`] on the pair.

use std::collections::{BTreeMap, HashMap};

use driver::volume_context::{
    self, EPHEMERAL, MAX_AGE, POD_NAME, POD_NAMESPACE, POD_UID, SECRET_PROVIDER_CLASS,
    SERVICE_ACCOUNT_NAME, SERVICE_ACCOUNT_TOKENS, VolumeContext,
};

use crate::input::{Gen, split};
use crate::targets::params::{self, CANARY_CLIENT_SECRET, CANARY_TOKEN};

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The rotation interval the driver passes as `maxAge` (from the mode byte's high bits).
    let max_age = (mode & 0x80 != 0).then(|| std::time::Duration::from_millis(u64::from(mode)));
    let (context, secrets, parameters) = if mode % 2 == 0 {
        let (c, rest) = split(rest, 0);
        let (s, p) = split(rest, 0);
        let map = |b: &[u8]| -> Option<HashMap<String, String>> {
            if b.is_empty() {
                Some(HashMap::new())
            } else {
                serde_json::from_slice(b).ok()
            }
        };
        let (Some(c), Some(s), Some(p)) = (map(c), map(s), map(p)) else {
            return;
        };
        (c, s, p.into_iter().collect())
    } else {
        structured(&mut Gen::new(rest))
    };
    check(&context, &secrets, &parameters, max_age);
}

fn check(
    context: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
    parameters: &BTreeMap<String, String>,
    max_age: Option<std::time::Duration>,
) {
    let valid = context
        .get(SECRET_PROVIDER_CLASS)
        .is_some_and(|c| !c.trim().is_empty())
        && [POD_NAME, POD_NAMESPACE, POD_UID]
            .iter()
            .all(|k| context.get(*k).is_some_and(|v| !v.is_empty()));
    let vc = match VolumeContext::parse(context, secrets) {
        Ok(vc) => vc,
        Err(e) => {
            assert!(!valid, "a valid context refused: {e}");
            let msg = e.to_string();
            assert!(!msg.contains(CANARY_TOKEN) && !msg.contains(CANARY_CLIENT_SECRET));
            return;
        }
    };
    assert!(valid, "an invalid context accepted: {context:?}");
    assert_eq!(vc.pod_name, context[POD_NAME]);
    assert_eq!(vc.pod_namespace, context[POD_NAMESPACE]);
    assert_eq!(vc.pod_uid, context[POD_UID]);
    let token_only_in_tokens = !context.iter().any(|(k, v)| {
        k.contains(CANARY_TOKEN) || (k != SERVICE_ACCOUNT_TOKENS && v.contains(CANARY_TOKEN))
    });
    if token_only_in_tokens {
        let debug = format!("{vc:?}");
        assert!(
            !debug.contains(CANARY_TOKEN),
            "Debug shows the tokens: {debug}"
        );
    }

    // Attributes: parameters, then the context (without the tokens), then the tokens.
    let attrs_json = vc
        .provider_attributes(parameters, max_age)
        .expect("string maps encode");
    let attrs: BTreeMap<String, String> =
        serde_json::from_str(attrs_json.expose()).expect("the attributes are a JSON string map");
    let mut want = parameters.clone();
    for (k, v) in context {
        if k != SERVICE_ACCOUNT_TOKENS {
            want.insert(k.clone(), v.clone());
        }
    }
    let tokens = secrets
        .get(SERVICE_ACCOUNT_TOKENS)
        .or_else(|| context.get(SERVICE_ACCOUNT_TOKENS))
        .filter(|t| !t.is_empty());
    if let Some(t) = tokens {
        want.insert(SERVICE_ACCOUNT_TOKENS.into(), t.clone());
    }
    if let Some(m) = max_age {
        want.insert(MAX_AGE.into(), format!("{}ms", m.as_millis()));
    }
    assert_eq!(attrs, want, "provider attributes");

    let secrets_json = volume_context::provider_secrets(secrets).expect("string maps encode");
    if secrets.is_empty() {
        assert_eq!(secrets_json.expose(), "null");
    } else {
        let back: HashMap<String, String> =
            serde_json::from_str(secrets_json.expose()).expect("the secrets are a JSON string map");
        assert_eq!(&back, secrets, "provider secrets");
    }
    params::check(attrs_json.expose(), secrets_json.expose());
}

fn structured(
    g: &mut Gen<'_>,
) -> (
    HashMap<String, String>,
    HashMap<String, String>,
    BTreeMap<String, String>,
) {
    let tokens = format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{CANARY_TOKEN}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#
    );
    let mut context = HashMap::new();
    let keys: &[(&str, &[&str])] = &[
        (SECRET_PROVIDER_CLASS, &["kv", " ", ""]),
        (POD_NAME, &["web", ""]),
        (POD_NAMESPACE, &["default", ""]),
        (POD_UID, &["1b4e28ba-2fa1-11d2-883f-0016d3cca427", ""]),
        (SERVICE_ACCOUNT_NAME, &["default", ""]),
        (EPHEMERAL, &["true", "TRUE", "false", ""]),
        ("providerName", &["azure"]),
        ("keyvaultName", &["override", "kv1"]),
    ];
    for (k, plausible) in keys {
        if g.chance(7, 8) {
            context.insert((*k).to_owned(), g.text(plausible));
        }
    }
    if g.chance(1, 2) {
        let t = if g.chance(7, 8) {
            tokens.clone()
        } else {
            g.string(32)
        };
        context.insert(SERVICE_ACCOUNT_TOKENS.into(), t);
    }
    for _ in 0..g.below(3) {
        context.insert(g.string(24), g.string(24));
    }
    let mut secrets = HashMap::new();
    if g.chance(1, 2) {
        secrets.insert("clientid".into(), g.text(&["app"]));
        secrets.insert("clientsecret".into(), CANARY_CLIENT_SECRET.into());
    }
    if g.chance(1, 4) {
        let t = if g.bool() { tokens } else { g.string(16) };
        secrets.insert(SERVICE_ACCOUNT_TOKENS.into(), t);
    }
    let mut parameters = BTreeMap::new();
    if g.chance(7, 8) {
        parameters.insert("keyvaultName".into(), g.text(&["kv1", "x"]));
        parameters.insert("tenantId".into(), g.text(&["tid"]));
        parameters.insert("clientID".into(), g.text(&["app", ""]));
        parameters.insert(
            "objects".into(),
            g.text(&["array:\n  - |\n    objectName: foo\n    objectType: secret\n"]),
        );
    }
    for _ in 0..g.below(3) {
        let k = g.text(&[SERVICE_ACCOUNT_TOKENS, POD_NAME, "usePodIdentity"]);
        parameters.insert(k, g.string(24));
    }
    (context, secrets, parameters)
}
