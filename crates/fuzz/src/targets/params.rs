//! provider-azure's [`MountParams::parse`]: the attributes JSON (every SecretProviderClass
//! parameter and the driver's keys), the `objects` YAML inside it, and the secrets JSON.
//!
//! Input: a mode byte; even = raw (`attributes \0 secrets`), odd = structured (every parameter
//! from plausible or arbitrary values, `objects` in each of its accepted forms).
//!
//! Checks: no panic; an error is non-empty and never contains the client secret or the
//! workload-identity token; a success holds only safe relative file names, modes ≤ 0777,
//! history ≤ 1000, no two objects on one path, a valid vault name, a `Debug` without secrets;
//! and its objects written back in the canonical `array:` form parse to the same objects.

use std::collections::BTreeMap;

use provider_azure::params::{
    IDENTITY_BINDING_AUDIENCE, IdentityMode, MountParams, ObjectEncoding, ObjectFormat, ObjectSpec,
    ObjectType, SA_TOKENS_ATTRIBUTE, WORKLOAD_IDENTITY_AUDIENCE,
};

use crate::input::{Gen, split, yaml_quote};

/// The client secret of structured inputs (a secret: never in an error or `Debug`).
pub const CANARY_CLIENT_SECRET: &str = "cAnArY-clientsecret-5e7d1";
/// The workload-identity token of structured inputs.
pub const CANARY_TOKEN: &str = "cAnArY-satoken-9b3c2";

const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let (a, s) = split(rest, 0);
        let attrs = String::from_utf8_lossy(a);
        let secrets = if s.is_empty() {
            "null".into()
        } else {
            String::from_utf8_lossy(s)
        };
        check(&attrs, &secrets);
    } else {
        let (attrs, secrets) = structured(&mut Gen::new(rest));
        check(&attrs, &secrets);
    }
}

/// Parses and checks everything the module doc says; shared with the volume-context target.
pub fn check(attrs_json: &str, secrets_json: &str) {
    let result = MountParams::parse(attrs_json, secrets_json);
    let attrs: Option<BTreeMap<String, String>> = serde_json::from_str(attrs_json).ok();
    let secret_values = secrets_in(attrs.as_ref(), attrs_json, secrets_json);
    match result {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "empty error for {attrs_json:?}");
            for s in &secret_values {
                assert!(
                    !msg.contains(s.as_str()),
                    "the error shows a secret value {s:?}: {msg}"
                );
            }
        }
        Ok(p) => {
            let debug = format!("{p:?}");
            for s in &secret_values {
                assert!(!debug.contains(s.as_str()), "Debug shows {s:?}: {debug}");
            }
            check_ok(&p);
            if let Some(attrs) = attrs {
                round_trip(&p, attrs, secrets_json);
            }
        }
    }
}

/// The canaries that are secret in this input: present only where a secret goes (the fuzzer
/// copies them elsewhere too, e.g. into a client id, where showing them is right).
fn secrets_in(
    attrs: Option<&BTreeMap<String, String>>,
    attrs_json: &str,
    secrets_json: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let secrets: Option<BTreeMap<String, String>> = serde_json::from_str(secrets_json).ok();
    let client_secret_only = secrets.as_ref().is_none_or(|m| {
        !m.iter().any(|(k, v)| {
            k.contains(CANARY_CLIENT_SECRET)
                || (!k.eq_ignore_ascii_case("clientsecret") && v.contains(CANARY_CLIENT_SECRET))
        })
    });
    if !attrs_json.contains(CANARY_CLIENT_SECRET) && client_secret_only {
        out.push(CANARY_CLIENT_SECRET.to_owned());
    }
    if let Some(attrs) = attrs {
        let elsewhere = secrets_json.contains(CANARY_TOKEN)
            || attrs.iter().any(|(k, v)| {
                k.contains(CANARY_TOKEN) || (k != SA_TOKENS_ATTRIBUTE && v.contains(CANARY_TOKEN))
            });
        if !elsewhere {
            out.push(CANARY_TOKEN.to_owned());
        }
    }
    out
}

fn check_ok(p: &MountParams) {
    assert!(!p.pod_name.is_empty() && !p.pod_namespace.is_empty());
    assert!(!p.tenant_id.is_empty());
    let n = p.keyvault_name.chars().count();
    assert!(
        (3..=24).contains(&n)
            && p.keyvault_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "accepted vault name {:?}",
        p.keyvault_name
    );
    for o in &p.objects {
        assert!(
            !o.name.is_empty() || o.selector.is_some(),
            "empty objectName accepted"
        );
        for f in o.known_paths() {
            assert!(
                !f.is_empty()
                    && !f.starts_with('/')
                    && !f.starts_with('\\')
                    && !f.contains("..")
                    && !f.contains('\0')
                    && f.split('/').all(|seg| !seg.is_empty() && seg != "."),
                "unsafe file name accepted: {f:?}"
            );
        }
        if o.selector.is_some() {
            assert!(
                o.version.is_empty() && o.version_history <= 1 && o.jmes_path.is_empty(),
                "a selection with a version, history or jmesPath accepted: {o:?}"
            );
        }
        assert!(o.version_history <= 1000, "{o:?}");
        assert!(o.file_permission.is_none_or(|m| m <= 0o777), "{o:?}");
        assert!(
            o.format == ObjectFormat::Pem || o.object_type == ObjectType::Secret,
            "PFX for a non-secret: {o:?}"
        );
        assert!(
            o.encoding == ObjectEncoding::Utf8 || o.object_type == ObjectType::Secret,
            "objectEncoding for a non-secret: {o:?}"
        );
    }
    let paths: Vec<&str> = p
        .objects
        .iter()
        .flat_map(|o| o.known_paths())
        .chain(p.templates.iter().map(|t| t.path.as_str()))
        .collect();
    for (i, fa) in paths.iter().enumerate() {
        for fb in &paths[..i] {
            let nested = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
            assert!(
                fa != fb && !nested(fa, fb) && !nested(fb, fa),
                "two files on one path accepted: {fa:?} and {fb:?}"
            );
        }
    }
    match &p.identity {
        IdentityMode::ServicePrincipal {
            client_id,
            client_secret,
        } => assert!(!client_id.is_empty() && !client_secret.expose().is_empty()),
        IdentityMode::WorkloadIdentity {
            client_id,
            assertion,
        }
        | IdentityMode::IdentityBinding {
            client_id,
            assertion,
        } => assert!(!client_id.is_empty() && !assertion.expose().is_empty()),
        IdentityMode::VmManagedIdentity { .. } | IdentityMode::PodIdentity => {}
    }
}

/// The objects written in the canonical form, as a user would write them.
pub fn render_objects(specs: &[ObjectSpec]) -> String {
    let mut out = String::from("array:\n");
    for s in specs {
        let mut item = String::new();
        if !s.name.is_empty() {
            item += &format!("objectName: {}\n", yaml_quote(&s.name));
        }
        item += &format!("objectType: {}\n", s.object_type.as_str());
        if let Some(sel) = &s.selector {
            if !sel.prefix.is_empty() {
                item += &format!("objectNamePrefix: {}\n", yaml_quote(&sel.prefix));
            }
            if !sel.tags.is_empty() {
                item += "objectTags:\n";
                for (k, v) in &sel.tags {
                    item += &format!("  {}: {}\n", yaml_quote(k), yaml_quote(v));
                }
            }
        }
        if s.optional {
            item += "optional: \"true\"\n";
        }
        if !s.jmes_path.is_empty() {
            item += "jmesPath:\n";
            for j in &s.jmes_path {
                item += &format!(
                    "  - path: {}\n    objectAlias: {}\n",
                    yaml_quote(&j.path),
                    yaml_quote(&j.alias)
                );
            }
        }
        if !s.alias.is_empty() {
            item += &format!("objectAlias: {}\n", yaml_quote(&s.alias));
        }
        if !s.version.is_empty() {
            item += &format!("objectVersion: {}\n", yaml_quote(&s.version));
        }
        if s.version_history != 0 {
            item += &format!("objectVersionHistory: {}\n", s.version_history);
        }
        if s.format == ObjectFormat::Pfx {
            item += "objectFormat: pfx\n";
        }
        match s.encoding {
            ObjectEncoding::Utf8 => {}
            ObjectEncoding::Base64 => item += "objectEncoding: base64\n",
            ObjectEncoding::Hex => item += "objectEncoding: hex\n",
        }
        if let Some(m) = s.file_permission {
            item += &format!("filePermission: \"0{m:o}\"\n");
        }
        out += "  - |\n";
        for line in item.lines() {
            out += "    ";
            out += line;
            out += "\n";
        }
    }
    out
}

fn round_trip(p: &MountParams, mut attrs: BTreeMap<String, String>, secrets_json: &str) {
    let text = render_objects(&p.objects);
    attrs.insert("objects".into(), text.clone());
    let json = serde_json::to_string(&attrs).expect("a map of strings encodes");
    match MountParams::parse(&json, secrets_json) {
        Ok(again) => {
            assert_eq!(
                again.objects, p.objects,
                "objects changed on the way back through {text:?}"
            );
            assert_eq!(again.identity, p.identity);
            assert_eq!(again.keyvault_name, p.keyvault_name);
        }
        Err(e) => panic!("the canonical form of accepted objects is refused: {e}\n{text}"),
    }
}

// === structured inputs ===

/// Attributes and secrets JSON from plausible and arbitrary parameter values.
pub fn structured(g: &mut Gen<'_>) -> (String, String) {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    let bools = &[
        "", "true", "false", "TRUE", "1", "0", "t", "F", "yes", " true ",
    ];
    let params: &[(&str, &[&str])] = &[
        (POD_NAME, &["web", "pod-1", " ", ""]),
        (POD_NAMESPACE, &["default", "kube-system", ""]),
        ("usePodIdentity", bools),
        ("useVMManagedIdentity", bools),
        ("useAzureTokenProxy", &["", "false", "true"]),
        (
            "keyvaultName",
            &[
                "kv1",
                "my-vault-01",
                "ab",
                "abcdefghijklmnopqrstuvwxy",
                "kv_1",
                "kv.1",
                "ünï",
            ],
        ),
        (
            "tenantID",
            &["72f988bf-86f1-41af-91ab-2d7cd011db47", "", "tid"],
        ),
        ("tenantId", &["tid", ""]),
        (
            "cloudName",
            &["", "AzurePublicCloud", "AzureStackCloud", "azurechinacloud"],
        ),
        ("cloudEnvFileName", &["", "/etc/kubernetes/cloud.json"]),
        (
            "userAssignedIdentityID",
            &["", "00000000-0000-0000-0000-000000000001"],
        ),
        ("clientID", &["", "11111111-1111-1111-1111-111111111111"]),
        ("secretProviderClass", &["kv", ""]),
        ("csi.storage.k8s.io/secretProviderClass", &["kv"]),
        (
            "templates",
            &[
                "- path: app.env\n  template: 'U={{ files.foo }}'\n",
                "- path: foo\n  template: x\n",
                "- path: a\n  template: '{{ unclosed'\n",
                "- path: ../a\n  template: x\n",
                "path: a",
                "",
            ],
        ),
    ];
    for (k, plausible) in params {
        let likely = matches!(
            *k,
            POD_NAME | POD_NAMESPACE | "keyvaultName" | "tenantID" | "clientID"
        );
        if g.chance(if likely { 7 } else { 1 }, 8) {
            attrs.insert((*k).to_owned(), g.text(plausible));
        }
    }
    if g.chance(3, 4) {
        attrs.insert(SA_TOKENS_ATTRIBUTE.into(), tokens_json(g));
    }
    if g.chance(15, 16) {
        attrs.insert("objects".into(), objects_text(g));
    }
    for _ in 0..g.below(3) {
        attrs.insert(g.string(24), g.string(32));
    }
    let attrs_json = serde_json::to_string(&attrs).expect("a map of strings encodes");
    (attrs_json, secrets_json(g))
}

fn tokens_json(g: &mut Gen<'_>) -> String {
    let aud = g.pick(&[WORKLOAD_IDENTITY_AUDIENCE, IDENTITY_BINDING_AUDIENCE]);
    match g.byte() % 8 {
        7 => format!(r#"{{"{aud}":{{"token":""}}}}"#),
        1 => format!(r#"{{"other":{{"token":"{CANARY_TOKEN}"}}}}"#),
        2 => format!(r#"{{"{aud}":"{CANARY_TOKEN}"}}"#),
        3 => format!(r#"{{"{aud}":{{"token":["{CANARY_TOKEN}"]}}}}"#),
        4 => g.string(64),
        5 => format!(r#"{{"{aud}":{{"token":"{CANARY_TOKEN}"}},"{aud}":{{"token":5}}}}"#),
        _ => format!(
            r#"{{"{aud}":{{"token":"{CANARY_TOKEN}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#
        ),
    }
}

fn secrets_json(g: &mut Gen<'_>) -> String {
    match g.byte() % 8 {
        7 => "null".into(),
        1 => g.string(64),
        2 => format!(r#""{CANARY_CLIENT_SECRET}""#),
        3 => format!(r#"{{"clientid":"id","clientsecret":5,"x":"{CANARY_CLIENT_SECRET}"}}"#),
        _ => {
            let mut m = BTreeMap::new();
            if g.chance(7, 8) {
                let k = g.pick(&["clientid", "ClientID", "CLIENTID", "client_id"]);
                m.insert(k.to_owned(), g.text(&["app", " ", ""]));
            }
            if g.chance(7, 8) {
                let k = g.pick(&["clientsecret", "ClientSecret", "clientSecret"]);
                let v = if g.chance(7, 8) {
                    CANARY_CLIENT_SECRET.to_owned()
                } else {
                    format!(" {CANARY_CLIENT_SECRET}\n")
                };
                m.insert(k.to_owned(), v);
            }
            serde_json::to_string(&m).expect("a map of strings encodes")
        }
    }
}

/// One YAML scalar, written one of several ways.
fn scalar(g: &mut Gen<'_>, plausible: &[&str]) -> String {
    let v = g.text(plausible);
    match g.byte() % 6 {
        0 => yaml_quote(&v),
        1 => format!("'{}'", v.replace('\'', "''")),
        _ => v,
    }
}

fn object_fields(g: &mut Gen<'_>) -> Vec<(String, String)> {
    let fields: &[(&str, &[&str])] = &[
        (
            "objectName",
            &[
                "foo", "secret1", "dir/file", "../x", "/abs", "a//b", ".", "a/./b", "x\\y", "foo",
                "*",
            ],
        ),
        ("objectNamePrefix", &["app-", "A", "a_b", ""]),
        (
            "objectTags",
            &["{env: prod}", "{a: 1, b: true}", "{}", "{'': x}", "[a]"],
        ),
        ("optional", &["true", "false", "maybe", "1", ""]),
        (
            "jmesPath",
            &[
                "[{path: a, objectAlias: b}]",
                "[{path: 'a.[', objectAlias: b}]",
                "[{path: a}]",
                "[{path: a, objectAlias: foo}]",
                "[{path: '((((((((((((((((((a))))))))))))))))))', objectAlias: c}]",
                "x",
            ],
        ),
        ("objectAlias", &["", "alias", "foo", "dir/file", "foo/bar"]),
        ("objectType", &["secret", "key", "cert", "Secret", ""]),
        ("objectVersion", &["", "abc123", "latest"]),
        (
            "objectVersionHistory",
            &[
                "0",
                "1",
                "5",
                "-1",
                "1001",
                "x",
                "1e3",
                "99999999999999999999",
            ],
        ),
        ("objectFormat", &["", "pem", "PFX", "der"]),
        (
            "objectEncoding",
            &["", "utf-8", "base64", "hex", "HEX", "bin"],
        ),
        (
            "filePermission",
            &["0644", "0o600", "777", "0999", "-1", "420", "0x1ff", ""],
        ),
    ];
    let mut out = Vec::new();
    for (k, plausible) in fields {
        let likely = matches!(*k, "objectName" | "objectType");
        if g.chance(if likely { 15 } else { 2 }, 16) {
            out.push(((*k).to_owned(), scalar(g, plausible)));
        }
    }
    if g.chance(1, 16) {
        out.push((g.string(16), g.string(16)));
    }
    out
}

fn objects_text(g: &mut Gen<'_>) -> String {
    let n = g.below(5);
    let items: Vec<Vec<(String, String)>> = (0..n).map(|_| object_fields(g)).collect();
    let mapping = |fields: &[(String, String)], indent: &str| {
        fields
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let lead = if i == 0 { "" } else { indent };
                format!("{lead}{k}: {v}\n")
            })
            .collect::<String>()
    };
    match g.byte() % 8 {
        // Upstream's form: `array:` of `- |` blocks.
        0..=3 => {
            let mut out = String::from("array:\n");
            for it in &items {
                out += "  - |\n";
                for (k, v) in it {
                    out += &format!("    {k}: {v}\n");
                }
            }
            out
        }
        // `array:` of mappings.
        4 => {
            let mut out = String::from("array:\n");
            for it in &items {
                out += &format!("  - {}", mapping(it, "    "));
            }
            out
        }
        // A plain list of mappings.
        5 => items
            .iter()
            .map(|it| format!("- {}", mapping(it, "  ")))
            .collect(),
        // JSON, `array` of strings.
        6 => {
            let strings: Vec<String> = items.iter().map(|it| mapping(it, "")).collect();
            serde_json::json!({ "array": strings }).to_string()
        }
        _ => g.string(256),
    }
}
