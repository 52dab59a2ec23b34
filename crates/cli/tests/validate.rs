//! `secrets-store validate`: the error table, exit codes, JSON output, and the shipped examples.

use std::process::Command;

use secrets_store_cli::validate::validate_text;

fn class(parameters: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: c\n  namespace: ns\n\
         spec:\n  provider: azure\n  parameters:\n{parameters}{extra_spec}"
    )
}

const GOOD_PARAMS: &str = "    keyvaultName: kv1\n    tenantID: tenant\n    objects: |\n      array:\n        - |\n          objectName: s1\n          objectType: secret\n";

/// The issue-16 forms are accepted, and a secretObjects entry may name a jmesPath file, a
/// template, or (with a selection, whose names are known only at mount time) any file.
#[test]
fn selection_optional_jmes_path_and_templates_are_accepted() {
    let params = "    keyvaultName: kv1\n    tenantID: tenant\n    objects: |\n      array:\n        - |\n          objectName: db\n          objectType: secret\n          optional: \"true\"\n          jmesPath:\n            - path: username\n              objectAlias: db-user\n        - |\n          objectNamePrefix: app-\n          objectTags: {team: web}\n          objectType: secret\n          objectAlias: app\n        - |\n          objectName: \"*\"\n          objectType: cert\n          objectAlias: certs\n    templates: |\n      - path: app.env\n        template: |\n          USER={{ files[\"db-user\"] }}\n";
    let sync = "  secretObjects:\n    - secretName: s\n      type: Opaque\n      data: [{objectName: db-user, key: u}, {objectName: app.env, key: e}, {objectName: app/app-one, key: a}]\n";
    let report = validate_text("good.yaml", &class(params, sync));
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // Without a selection, jmesPath files and templates count as mounted files, others do not.
    let no_selection = params
        .replace(
            "objectNamePrefix: app-\n          objectTags: {team: web}",
            "objectName: one",
        )
        .replace(
            "objectName: \"*\"\n          objectType: cert",
            "objectName: c\n          objectType: cert",
        );
    let sync = "  secretObjects:\n    - secretName: s\n      type: Opaque\n      data: [{objectName: db-user, key: u}, {objectName: app.env, key: e}, {objectName: nope, key: k}]\n";
    let report = validate_text("good.yaml", &class(&no_selection, sync));
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    assert_eq!(
        report.findings[0].field,
        "spec.secretObjects[0].data[2].objectName"
    );
}

/// The driver's `secrets-store.csi.k8s.io/on-change` annotation: known values pass, another is a
/// finding naming the annotation and the values it takes.
#[test]
fn the_on_change_annotation_is_checked() {
    let with = |v: &str| {
        class(GOOD_PARAMS, "").replace(
            "  namespace: ns\n",
            &format!(
                "  namespace: ns\n  annotations:\n    secrets-store.csi.k8s.io/on-change: {v}\n"
            ),
        )
    };
    for ok in ["file", "rollout-restart", "none"] {
        let report = validate_text("c.yaml", &with(ok));
        assert!(report.findings.is_empty(), "{ok}: {:#?}", report.findings);
    }
    let report = validate_text("c.yaml", &with("restart"));
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    assert_eq!(
        report.findings[0].field,
        "metadata.annotations[secrets-store.csi.k8s.io/on-change]"
    );
    assert!(report.findings[0].message.contains("\"rollout-restart\""));
}

#[test]
fn a_good_class_has_no_findings() {
    let report = validate_text("good.yaml", &class(GOOD_PARAMS, ""));
    assert_eq!(report.classes, 1);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

/// (what is wrong, the YAML, the field the finding must name, a fragment of the message)
#[test]
fn error_table() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("no name", "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nspec: {provider: azure}\n".into(), "metadata.name", "needs a name"),
        ("no provider", class(GOOD_PARAMS, "").replace("  provider: azure\n", ""), "spec.provider", "missing"),
        ("bad provider name", class(GOOD_PARAMS, "").replace("provider: azure", "provider: \"az/ure\""), "spec.provider", "not a valid provider name"),
        ("boolean parameter", class(&format!("{GOOD_PARAMS}    useVMManagedIdentity: true\n"), ""), "spec.parameters.useVMManagedIdentity", "quote it"),
        ("no keyvaultName", class(&GOOD_PARAMS.replace("    keyvaultName: kv1\n", ""), ""), "spec.parameters.keyvaultName", "keyvaultName is not provided"),
        ("no tenant", class(&GOOD_PARAMS.replace("    tenantID: tenant\n", ""), ""), "spec.parameters.tenantId", "tenantId is not provided"),
        ("no objects", class(&GOOD_PARAMS[..GOOD_PARAMS.find("    objects").unwrap()], ""), "spec.parameters.objects", "objects is not set"),
        ("two identity modes", class(&format!("{GOOD_PARAMS}    usePodIdentity: \"true\"\n    useVMManagedIdentity: \"true\"\n"), ""), "spec.parameters", "only one identity mode"),
        ("bad bool", class(&format!("{GOOD_PARAMS}    usePodIdentity: \"tru\"\n"), ""), "spec.parameters.usePodIdentity", "failed to parse usePodIdentity"),
        ("path traversal", class(&GOOD_PARAMS.replace("objectName: s1", "objectName: s1\n          objectAlias: ../x"), ""), "spec.parameters.objects", "'..'"),
        ("absolute alias", class(&GOOD_PARAMS.replace("objectName: s1", "objectName: s1\n          objectAlias: /etc/x"), ""), "spec.parameters.objects", "relative"),
        ("bad format", class(&GOOD_PARAMS.replace("objectType: secret", "objectType: secret\n          objectFormat: der"), ""), "spec.parameters.objects", "invalid objectFormat"),
        ("bad encoding", class(&GOOD_PARAMS.replace("objectType: secret", "objectType: secret\n          objectEncoding: rot13"), ""), "spec.parameters.objects", "invalid objectEncoding"),
        ("secret type missing", class(GOOD_PARAMS, "  secretObjects:\n    - secretName: s\n      data: [{objectName: s1, key: k}]\n"), "spec.secretObjects[0].type", "missing"),
        ("unknown secret type", class(GOOD_PARAMS, "  secretObjects:\n    - secretName: s\n      type: Fancy\n      data: [{objectName: s1, key: k}]\n"), "spec.secretObjects[0].type", "unsupported Secret type"),
        ("tls key name", class(GOOD_PARAMS, "  secretObjects:\n    - secretName: s\n      type: kubernetes.io/tls\n      data: [{objectName: s1, key: cert}]\n"), "spec.secretObjects[0].data[0].key", "tls.crt or tls.key"),
        ("unknown object", class(GOOD_PARAMS, "  secretObjects:\n    - secretName: s\n      type: Opaque\n      data: [{objectName: s2, key: k}]\n"), "spec.secretObjects[0].data[0].objectName", "\"s1\""),
        ("no data", class(GOOD_PARAMS, "  secretObjects:\n    - secretName: s\n      type: Opaque\n"), "spec.secretObjects[0].data", "missing"),
        ("synced twice", class(GOOD_PARAMS, "  secretObjects:\n    - secretName: s\n      type: Opaque\n      data: [{objectName: s1, key: k}]\n    - secretName: s\n      type: Opaque\n      data: [{objectName: s1, key: j}]\n"), "spec.secretObjects[1].secretName", "synced twice"),
        ("unknown version", class(GOOD_PARAMS, "").replace("csi.x-k8s.io/v1", "csi.x-k8s.io/v2"), "apiVersion", "unknown apiVersion"),
        ("not yaml", "a: [unclosed".into(), "(yaml)", "not valid YAML"),
        // issue 16: selection, optional objects, jmesPath, templates
        ("name and prefix", class(&GOOD_PARAMS.replace("objectName: s1", "objectName: s1\n          objectNamePrefix: app-"), ""), "spec.parameters.objects", "names one object"),
        ("selection with version", class(&GOOD_PARAMS.replace("objectName: s1", "objectName: \"*\"\n          objectVersion: abc"), ""), "spec.parameters.objects", "objectVersion cannot be used here"),
        ("selection with history", class(&GOOD_PARAMS.replace("objectName: s1", "objectNamePrefix: a\n          objectVersionHistory: 2"), ""), "spec.parameters.objects", "objectVersionHistory cannot be used here"),
        ("prefix never matches", class(&GOOD_PARAMS.replace("objectName: s1", "objectNamePrefix: a.b"), ""), "spec.parameters.objects", "can never match"),
        ("empty tag name", class(&GOOD_PARAMS.replace("objectName: s1", "objectTags: {\"\": x}"), ""), "spec.parameters.objects", "empty tag name"),
        ("bad optional", class(&GOOD_PARAMS.replace("objectType: secret", "objectType: secret\n          optional: perhaps"), ""), "spec.parameters.objects", "invalid optional"),
        ("jmesPath on a key", class(&GOOD_PARAMS.replace("objectType: secret", "objectType: key\n          jmesPath:\n            - {path: a, objectAlias: b}"), ""), "spec.parameters.objects", "only supported for objectType: secret"),
        ("jmesPath bad expression", class(&GOOD_PARAMS.replace("objectType: secret", "objectType: secret\n          jmesPath:\n            - {path: 'a.[', objectAlias: b}"), ""), "spec.parameters.objects", "not a valid JMESPath expression"),
        ("jmesPath no alias", class(&GOOD_PARAMS.replace("objectType: secret", "objectType: secret\n          jmesPath:\n            - {path: a}"), ""), "spec.parameters.objects", "objectAlias is empty"),
        ("jmesPath with selection", class(&GOOD_PARAMS.replace("objectName: s1\n          objectType: secret", "objectNamePrefix: s\n          objectType: secret\n          jmesPath:\n            - {path: a, objectAlias: b}"), ""), "spec.parameters.objects", "cannot be used with a selection"),
        ("template syntax", class(&format!("{GOOD_PARAMS}    templates: |\n      - path: app.env\n        template: 'X={{{{ files.s1 '\n"), ""), "spec.parameters.templates", "syntax error"),
        ("template path", class(&format!("{GOOD_PARAMS}    templates: |\n      - path: /etc/app.env\n        template: x\n"), ""), "spec.parameters.templates", "relative"),
        ("template over object", class(&format!("{GOOD_PARAMS}    templates: |\n      - path: s1\n        template: x\n"), ""), "spec.parameters.templates", "collides with a file of object"),
        ("template not a list", class(&format!("{GOOD_PARAMS}    templates: 'path: a'\n"), ""), "spec.parameters.templates", "YAML list of {path, template}"),
    ];
    for (what, yaml, field, fragment) in cases {
        let report = validate_text("case.yaml", &yaml);
        let finding = report
            .findings
            .iter()
            .find(|f| f.field == field)
            .unwrap_or_else(|| panic!("{what}: no finding for {field} in {:#?}", report.findings));
        assert!(
            finding.message.contains(fragment),
            "{what}: {:?} lacks {fragment:?}",
            finding.message
        );
        assert_eq!(finding.file, "case.yaml", "{what}");
        let shown = finding.to_string();
        assert!(
            shown.starts_with("case.yaml: document 1"),
            "{what}: {shown}"
        );
    }
}

#[test]
fn other_kinds_are_skipped_and_documents_are_numbered() {
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n---\n{}",
        class(&GOOD_PARAMS.replace("    tenantID: tenant\n", ""), "")
    );
    let report = validate_text("multi.yaml", &text);
    assert_eq!((report.classes, report.skipped), (1, 1));
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].document, 2);
    assert_eq!(report.findings[0].class.as_deref(), Some("ns/c"));
}

#[test]
fn every_shipped_example_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let report = validate_text(
                &path.display().to_string(),
                &std::fs::read_to_string(&path).expect("read"),
            );
            assert!(report.findings.is_empty(), "{:#?}", report.findings);
            checked += report.classes;
        }
    }
    assert!(
        checked >= 6,
        "expected the identity-mode examples, checked {checked}"
    );
}

#[test]
fn binary_exit_codes_and_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&good, class(GOOD_PARAMS, "")).expect("write");
    std::fs::write(
        &bad,
        class(&GOOD_PARAMS.replace("    keyvaultName: kv1\n", ""), ""),
    )
    .expect("write");
    let bin = env!("CARGO_BIN_EXE_secrets-store");

    let ok = Command::new(bin)
        .arg("validate")
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let failed = Command::new(bin)
        .args(["validate", "--output", "json"])
        .arg(&good)
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(failed.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("JSON output");
    assert_eq!(json["classes"], 2);
    assert_eq!(json["findings"][0]["field"], "spec.parameters.keyvaultName");
    assert_eq!(json["findings"][0]["file"], bad.display().to_string());

    let missing = Command::new(bin)
        .arg("validate")
        .arg(dir.path().join("nope.yaml"))
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn help_documents_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_secrets-store"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("validate"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_secrets-store"))
        .args(["validate", "--help"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--output"));
}
