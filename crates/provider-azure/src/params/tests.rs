use super::*;

fn attrs(extra: &[(&str, &str)]) -> String {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    m.insert(POD_NAME.into(), "pod1".into());
    m.insert(POD_NAMESPACE.into(), "ns1".into());
    m.insert("keyvaultName".into(), "testkv".into());
    m.insert("tenantId".into(), "tid".into());
    m.insert(
        "objects".into(),
        "array:\n  - |\n    objectName: secret1\n    objectType: secret\n".into(),
    );
    for (k, v) in extra {
        if v.is_empty() && *k != "objects" {
            m.remove(*k);
        } else {
            m.insert((*k).into(), (*v).into());
        }
    }
    serde_json::to_string(&m).unwrap()
}

const SP: &str = r#"{"clientid":"cid","clientsecret":"sekrit"}"#;

fn err(a: &str, s: &str) -> String {
    MountParams::parse(a, s).unwrap_err().to_string()
}

#[test]
fn parses_a_minimal_service_principal_mount() {
    let p = MountParams::parse(&attrs(&[]), SP).unwrap();
    assert_eq!(p.keyvault_name, "testkv");
    assert_eq!(p.tenant_id, "tid");
    assert!(
        matches!(&p.identity, IdentityMode::ServicePrincipal { client_id, .. } if client_id == "cid")
    );
    assert_eq!(p.objects.len(), 1);
    assert_eq!(p.objects[0].uid(), "secret/secret1");
    assert!(
        !format!("{p:?}").contains("sekrit"),
        "Debug must not show the client secret"
    );
}

/// `useAzureTokenProxy: "true"` takes the token for `api://AKSIdentityBinding` (not the
/// workload-identity one next to it) and the `clientID`; secrets are not needed.
#[test]
fn identity_binding_takes_its_own_token() {
    let tokens = r#"{"api://AzureADTokenExchange":{"token":"wi-token"},"api://AKSIdentityBinding":{"token":"ib-token","expirationTimestamp":"2100-01-01T00:00:00Z"}}"#;
    let p = MountParams::parse(
        &attrs(&[
            ("useAzureTokenProxy", "True"),
            ("clientID", " uami-client "),
            (SA_TOKENS_ATTRIBUTE, tokens),
        ]),
        "null",
    )
    .unwrap();
    match &p.identity {
        IdentityMode::IdentityBinding {
            client_id,
            assertion,
        } => {
            assert_eq!(client_id, "uami-client");
            assert_eq!(assertion.expose(), "ib-token");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.identity.upstream_name(), "AzureTokenProxy");
    assert_eq!(p.identity.kind(), "identity_binding");
    assert!(!format!("{p:?}").contains("ib-token"));
}

#[test]
fn upstream_error_strings_in_upstream_order() {
    let cases: Vec<(String, &str, &str)> = vec![
        (attrs(&[(POD_NAME, "")]), SP, "pod name is not provided"),
        (
            attrs(&[(POD_NAMESPACE, "")]),
            SP,
            "pod namespace is not provided",
        ),
        (
            attrs(&[("usePodIdentity", "tru")]),
            SP,
            "failed to parse usePodIdentity flag, error: strconv.ParseBool: parsing \"tru\": invalid syntax",
        ),
        (
            attrs(&[("useVMManagedIdentity", "yes")]),
            SP,
            "failed to parse useVMManagedIdentity flag, error: strconv.ParseBool: parsing \"yes\": invalid syntax",
        ),
        (
            attrs(&[("usePodIdentity", "true"), ("useVMManagedIdentity", "1")]),
            SP,
            "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy",
        ),
        (
            attrs(&[("keyvaultName", "")]),
            SP,
            "keyvaultName is not provided",
        ),
        (attrs(&[("tenantId", "")]), SP, "tenantId is not provided"),
        (
            attrs(&[]),
            "null",
            "failed to build auth config for mode None: failed to get credentials, nodePublishSecretRef secret is not set",
        ),
        (
            attrs(&[]),
            r#"{"clientsecret":"x"}"#,
            "failed to build auth config for mode None: could not find clientid in secrets",
        ),
        (
            attrs(&[]),
            r#"{"ClientID":"x"}"#,
            "failed to build auth config for mode None: could not find clientsecret in secrets",
        ),
        (
            attrs(&[("clientID", "wi")]),
            "null",
            "failed to build auth config for mode None: failed to parse workload identity tokens, error: service account tokens not found",
        ),
        (
            attrs(&[("clientID", "wi"), (SA_TOKENS_ATTRIBUTE, "{")]),
            "null",
            "failed to build auth config for mode None: failed to parse workload identity tokens, error: failed to unmarshal service account tokens, error:",
        ),
        (
            attrs(&[
                ("clientID", "wi"),
                (SA_TOKENS_ATTRIBUTE, r#"{"aud2":{"token":"x"}}"#),
            ]),
            "null",
            "failed to build auth config for mode None: failed to parse workload identity tokens, error: token for audience api://AzureADTokenExchange not found",
        ),
        (
            attrs(&[("useAzureTokenProxy", "maybe")]),
            SP,
            "failed to parse useAzureTokenProxy flag, error: strconv.ParseBool: parsing \"maybe\": invalid syntax",
        ),
        (
            attrs(&[("useAzureTokenProxy", "true"), ("usePodIdentity", "true")]),
            SP,
            "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy",
        ),
        (
            attrs(&[("useAzureTokenProxy", "true"), (SA_TOKENS_ATTRIBUTE, "{}")]),
            SP,
            "failed to build auth config for mode AzureTokenProxy: clientID is required for identity binding",
        ),
        (
            attrs(&[("useAzureTokenProxy", "true"), ("clientID", "uami")]),
            SP,
            "failed to build auth config for mode AzureTokenProxy: service account tokens are required for identity binding",
        ),
        (
            attrs(&[
                ("useAzureTokenProxy", "true"),
                ("clientID", "uami"),
                (SA_TOKENS_ATTRIBUTE, "{"),
            ]),
            SP,
            "failed to build auth config for mode AzureTokenProxy: failed to parse service account token for identity binding, error: failed to unmarshal service account tokens, error:",
        ),
        (
            attrs(&[
                ("useAzureTokenProxy", "true"),
                ("clientID", "uami"),
                (
                    SA_TOKENS_ATTRIBUTE,
                    r#"{"api://AzureADTokenExchange":{"token":"wi-token"}}"#,
                ),
            ]),
            SP,
            "failed to build auth config for mode AzureTokenProxy: failed to parse service account token for identity binding, error: token for audience api://AKSIdentityBinding not found",
        ),
        (attrs(&[("objects", "")]), SP, "objects is not set"),
        (
            attrs(&[("objects", "- |\n  objectName: a\n  objectType: secret\n")]),
            SP,
            "",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectType: secret\n    objectFormat: pkcs\n",
            )]),
            SP,
            "failed to get objectType:secret, objectName:a, objectVersion:: invalid objectFormat: pkcs, should be PEM or PFX",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectType: secret\n    objectEncoding: utf-16\n",
            )]),
            SP,
            "failed to get objectType:secret, objectName:a, objectVersion:: invalid objectEncoding: utf-16, should be hex, base64 or utf-8",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectType: cert\n    objectFormat: pfx\n",
            )]),
            SP,
            "PFX format only supported for objectType: secret",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectType: cert\n    objectEncoding: base64\n",
            )]),
            SP,
            "objectEncoding only supported for objectType: secret",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectAlias: /secret1\n    objectType: secret\n",
            )]),
            SP,
            "file name must be a relative path",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectAlias: secret1/..\n    objectType: secret\n",
            )]),
            SP,
            "file name must not contain '..'",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: ../secret1\n    objectType: secret\n",
            )]),
            SP,
            "file name must not contain '..'",
        ),
        (
            attrs(&[("keyvaultName", "kv")]),
            SP,
            "failed to get vault: Invalid vault name: \"kv\", must be between 3 and 24 chars",
        ),
        (
            attrs(&[("keyvaultName", "longkeyvaultnamewhichisnotvalid")]),
            SP,
            "must be between 3 and 24 chars",
        ),
        (
            attrs(&[("keyvaultName", "kv_test")]),
            SP,
            "failed to get vault: Invalid vault name: \"kv_test\", must match [-a-zA-Z0-9]{3,24}",
        ),
    ];
    for (a, s, want) in cases {
        let got = MountParams::parse(&a, s)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string());
        if want.is_empty() {
            assert_eq!(got, "", "plain list is an accepted extension");
        } else {
            assert!(got.contains(want), "want {want:?}\n got {got:?}");
        }
    }
}

#[test]
fn refusals_beyond_upstream() {
    let obj = |body: &str| attrs(&[("objects", &format!("array:\n  - |\n{body}"))]);
    let cases = [
        (
            obj("    objectName: a\n    objectType: secrets\n"),
            "Invalid vaultObjectTypes. Should be secret, key, or cert",
        ),
        (
            obj("    objectName: a\n    objectType: Secret\n"),
            "Invalid vaultObjectTypes",
        ),
        (
            obj("    objectName: a\n    objectType: secret\n    filePermission: \"0900\"\n"),
            "invalid filePermission: \"0900\"",
        ),
        (
            obj("    objectName: a\n    objectType: secret\n    filePermission: 900\n"),
            "invalid filePermission: \"900\"",
        ),
        (
            obj("    objectName: a\n    objectType: secret\n    filePermission: \"01777\"\n"),
            "invalid filePermission",
        ),
        (
            obj("    objectName: a\n    objectAlias: dir//file\n    objectType: secret\n"),
            "empty or '.' path segment",
        ),
        (
            obj("    objectName: a\n    objectAlias: dir/\n    objectType: secret\n"),
            "empty or '.' path segment",
        ),
        (
            obj("    objectName: a\n    objectAlias: ./file\n    objectType: secret\n"),
            "empty or '.' path segment",
        ),
        (
            obj("    objectName: a..b\n    objectType: secret\n"),
            "must not contain '..'",
        ),
        (
            obj("    objectAlias: x\n    objectType: secret\n"),
            "objectName must not be empty",
        ),
        (
            obj("    objectName: a\n    objectType: secret\n    objectVersionHistory: -1\n"),
            "invalid objectVersionHistory",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectType: secret\n  - |\n    objectName: b\n    objectAlias: a\n    objectType: key\n",
            )]),
            "failed to get objectType:key, objectName:b, objectVersion:: file path \"a\" collides with the path \"a\" of object \"a\"",
        ),
        (
            attrs(&[(
                "objects",
                "array:\n  - |\n    objectName: a\n    objectType: secret\n  - |\n    objectName: b\n    objectAlias: a/b\n    objectType: secret\n",
            )]),
            "collides with the path \"a\"",
        ),
        (
            attrs(&[("objects", "invalid")]),
            "failed to yaml unmarshal objects, error:",
        ),
    ];
    for (a, want) in cases {
        let got = err(&a, SP);
        assert!(got.contains(want), "want {want:?}\n got {got:?}");
    }
}

#[test]
fn request_json_errors() {
    assert!(err("{", SP).starts_with("failed to unmarshal attributes, error:"));
    assert!(err(&attrs(&[]), "[").starts_with("failed to unmarshal secrets, error:"));
    assert!(err(r#"{"a":1}"#, SP).starts_with("failed to unmarshal attributes, error:"));
    assert_eq!(parse_permission("420").unwrap(), 0o644);
    assert!(
        parse_permission("\"420\"")
            .unwrap_err()
            .to_string()
            .starts_with("failed to unmarshal file permission, error:")
    );
    assert!(parse_permission("-1").is_err());
}

#[test]
fn objects_fields_defaults_and_forms() {
    let text = "array:\n  - |\n    objectName: s1\n    objectType: secret\n    objectEncoding: BasE64\n    filePermission: 0600\n    objectVersion: v1\n    unknownKey: x\n  - |\n    objectName: c1\n    objectAlias: dir/c1.pem\n    objectType: cert\n  - |\n    objectName: k1\n    objectType: key\n    objectVersionHistory: 3\n  - |\n    objectName: p1\n    objectType: secret\n    objectFormat: PFX\n";
    let p = MountParams::parse(&attrs(&[("objects", text)]), SP).unwrap();
    let o = &p.objects;
    assert_eq!(o[0].encoding, ObjectEncoding::Base64);
    assert_eq!(o[0].file_permission, Some(0o600));
    assert_eq!(o[0].version, "v1");
    assert_eq!(o[1].file_name(), "dir/c1.pem");
    assert_eq!(o[1].uid(), "cert/c1");
    assert_eq!(o[2].version_history, 3);
    assert_eq!(o[3].format, ObjectFormat::Pfx);
    // empty array → no objects (upstream: successful empty mount)
    let p = MountParams::parse(&attrs(&[("objects", "array:")]), SP).unwrap();
    assert!(p.objects.is_empty());
    // array items as mappings and a plain list of mappings (extensions)
    let p = MountParams::parse(
        &attrs(&[(
            "objects",
            "array:\n  - objectName: a\n    objectType: secret\n",
        )]),
        SP,
    )
    .unwrap();
    assert_eq!(p.objects[0].name, "a");
    let p = MountParams::parse(
        &attrs(&[("objects", "- objectName: a\n  objectType: key\n")]),
        SP,
    )
    .unwrap();
    assert_eq!(p.objects[0].object_type, ObjectType::Key);
}

#[test]
fn identity_modes_and_precedence() {
    let p = MountParams::parse(
        &attrs(&[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", " uami "),
        ]),
        "null",
    )
    .unwrap();
    assert_eq!(
        p.identity,
        IdentityMode::VmManagedIdentity {
            user_assigned_identity_id: Some("uami".into())
        }
    );
    let p = MountParams::parse(&attrs(&[("useVMManagedIdentity", "True")]), "null").unwrap();
    assert_eq!(
        p.identity,
        IdentityMode::VmManagedIdentity {
            user_assigned_identity_id: None
        }
    );
    let p = MountParams::parse(&attrs(&[("usePodIdentity", "1")]), "null").unwrap();
    assert_eq!(p.identity, IdentityMode::PodIdentity);
    let toks = r#"{"api://AzureADTokenExchange":{"token":"jwt-value","expirationTimestamp":"2030-01-01T00:00:00Z"},"aud2":{"token":"x"}}"#;
    let p = MountParams::parse(
        &attrs(&[("clientID", "wi"), (SA_TOKENS_ATTRIBUTE, toks)]),
        "null",
    )
    .unwrap();
    match &p.identity {
        IdentityMode::WorkloadIdentity {
            client_id,
            assertion,
        } => {
            assert_eq!(client_id, "wi");
            assert_eq!(assertion.expose(), "jwt-value");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{p:?}").contains("jwt-value"));
    // tenantID wins over tenantId; values are trimmed
    let p = MountParams::parse(&attrs(&[("tenantID", " new ")]), SP).unwrap();
    assert_eq!(p.tenant_id, "new");
}

/// Found by the `params` fuzz target: serde's type errors quote the value they found, and in the
/// secrets or the tokens that value is the secret.
#[test]
fn fuzz_regression_json_type_errors_do_not_quote_secrets() {
    let e = err(&attrs(&[]), r#""sekrit-client-secret""#);
    assert!(e.starts_with("failed to unmarshal secrets, error:"), "{e}");
    assert!(!e.contains("sekrit-client-secret"), "{e}");
    let e = err(
        &attrs(&[]),
        r#"{"clientid":"c","clientsecret":["sekrit-in-a-list"]}"#,
    );
    assert!(!e.contains("sekrit-in-a-list"), "{e}");
    let toks = r#"{"api://AzureADTokenExchange":"jwt-not-in-an-object"}"#;
    let e = err(
        &attrs(&[("clientID", "wi"), (SA_TOKENS_ATTRIBUTE, toks)]),
        "null",
    );
    assert!(
        e.contains("failed to unmarshal service account tokens"),
        "{e}"
    );
    assert!(!e.contains("jwt-not-in-an-object"), "{e}");
    // Syntax errors keep serde's text (it quotes nothing).
    assert!(err(&attrs(&[]), "{").contains("EOF while parsing"));
}

/// Issue 15: the driver's freshness bound for cached "latest" answers (absent: the whole TTL).
#[test]
fn max_age_attribute() {
    assert_eq!(MountParams::parse(&attrs(&[]), SP).unwrap().max_age, None);
    let p = MountParams::parse(&attrs(&[(MAX_AGE_ATTRIBUTE, "1m30s")]), SP).unwrap();
    assert_eq!(p.max_age, Some(Duration::from_secs(90)));
    let p = MountParams::parse(&attrs(&[(MAX_AGE_ATTRIBUTE, "500ms")]), SP).unwrap();
    assert_eq!(p.max_age, Some(Duration::from_millis(500)));
    let e = err(&attrs(&[(MAX_AGE_ATTRIBUTE, "soon")]), SP);
    assert!(
        e.starts_with("failed to parse secrets-store.csi.k8s.io/maxAge: invalid duration"),
        "{e}"
    );
}

#[test]
fn selections_take_any_scalar_as_tag_value_and_match_case_insensitive_prefixes() {
    let objects = "array:\n  - |\n    objectNamePrefix: App-\n    objectTags: {tier: 1, on: true}\n    objectType: secret\n    optional: true\n";
    let p = MountParams::parse(&attrs(&[("objects", objects)]), SP).unwrap();
    let o = &p.objects[0];
    let sel = o.selector.as_ref().unwrap();
    assert!(o.optional && o.known_paths().is_empty());
    assert_eq!(sel.tags.get("tier").map(String::as_str), Some("1"));
    let tags: BTreeMap<String, String> = [("tier", "1"), ("on", "true"), ("x", "y")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(sel.matches("app-db", &tags));
    assert!(!sel.matches("ap", &tags), "shorter than the prefix");
    assert!(
        !sel.matches("app-db", &BTreeMap::new()),
        "tags must all be present"
    );
    assert_eq!(
        sel.describe(),
        "objectNamePrefix \"App-\" and objectTags {on=true, tier=1}"
    );
    let star =
        "array:\n  - |\n    objectName: \"*\"\n    objectType: cert\n    objectAlias: certs\n";
    let p = MountParams::parse(&attrs(&[("objects", star)]), SP).unwrap();
    assert_eq!(p.objects[0].selector, Some(Selector::default()));
    assert_eq!(p.objects[0].known_paths(), ["certs"]);
    // Without any of this, a class parses exactly as before.
    let plain = MountParams::parse(&attrs(&[]), SP).unwrap();
    assert!(plain.objects[0].selector.is_none() && !plain.objects[0].optional);
    assert!(plain.objects[0].jmes_path.is_empty() && plain.templates.is_empty());
}

#[test]
fn a_selection_folder_may_not_hold_another_objects_file() {
    let objects = "array:\n  - |\n    objectName: \"*\"\n    objectType: secret\n    objectAlias: all\n  - |\n    objectName: s\n    objectAlias: all/s\n    objectType: secret\n";
    let e = err(&attrs(&[("objects", objects)]), SP);
    assert!(e.contains("collides with the path \"all\""), "{e}");
}
