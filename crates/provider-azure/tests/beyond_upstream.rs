//! Issue 16 against keyvault-emulator through the provider's gRPC socket: selection by prefix,
//! tags or "*" (listing with the pod's identity, paged, disabled/expired skipped, certificate
//! backed secrets, cap, 403, caching), optional objects, `jmesPath` files and `templates`. Every
//! bad input fails the whole mount (no files) with an error naming the object and the fix.

#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;

use common::emu::*;
use common::*;
use keyvault_emulator::CounterFilter;
use provider_proto::ABSENT_OBJECT_VERSION;
use provider_proto::v1alpha1::MountResponse;

/// The standard seed plus objects for selection, optional objects and JSON.
fn seed16() -> String {
    let mut extra = String::new();
    // 30 `app-NN` secrets: more than one page (Key Vault answers 25 at most).
    for i in 0..30 {
        writeln!(
            extra,
            "      - {{ name: app-{i:02}, value: value-{i:02}, tags: {{ team: {} }} }}",
            if i % 2 == 0 { "even" } else { "odd" }
        )
        .unwrap();
    }
    extra.push_str(
        r#"      - { name: app-off, value: x, enabled: false }
      - { name: app-old, value: x, exp: 1000000000 }
      - { name: app-later, value: x, nbf: 4000000000 }
      - { name: gone, value: x, enabled: false }
      - { name: db, value: '{"username":"app","password":"pw-123","port":5432,"hosts":["a","b"]}' }
      - { name: not-json, value: 'plain text' }
      - { name: env-prod, value: p, tags: { env: prod, app: web } }
      - { name: env-dev, value: d, tags: { env: dev, app: web } }
"#,
    );
    let base = seed("[]", "none");
    let at = base.find("    keys:").unwrap();
    let mut s = base.clone();
    s.insert_str(at, &extra);
    s.replace(
        "        generate: { subject: CN=cert1.test, kty: EC, crv: P-256 }\n",
        "        tags: { tier: web }\n        generate: { subject: CN=cert1.test, kty: EC, crv: P-256 }\n",
    )
    // READER may get secrets but not list them (an access policy with Get only).
    .replacen(
        "    access: [",
        &format!("    permissions: {{ {READER}: [\"secrets get\"] }}\n    access: [{READER}, "),
        1,
    )
    .replacen(
        "  service_principals:\n",
        &format!("  service_principals:\n    - {{ client_id: {READER}, client_secret: {READER_SECRET} }}\n"),
        1,
    )
}

const READER: &str = "66666666-6666-6666-6666-666666666666";
const READER_SECRET: &str = "reader-client-secret-0003";

async fn mount(
    env: &Env,
    params: &[(&str, &str)],
    who: (&str, &str),
) -> Result<MountResponse, tonic::Status> {
    let mut client = connect(&env.sock).await;
    let secrets = sp_secrets(who.0, who.1);
    client
        .mount(mount_request(
            env.attrs(params),
            Some(&secrets),
            env.dir.path(),
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn paths(resp: &MountResponse) -> Vec<&str> {
    resp.files.iter().map(|f| f.path.as_str()).collect()
}

fn text<'a>(resp: &'a MountResponse, path: &str) -> &'a str {
    let f = resp
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no file {path} in {:?}", paths(resp)));
    std::str::from_utf8(&f.contents).unwrap()
}

async fn count(env: &Env, op: &str) -> u64 {
    env.emu
        .admin()
        .request_count(CounterFilter::operation(op).status(200))
        .await
        .unwrap()
}

/// The mount fails (so the driver writes nothing) with a message containing every fragment.
fn refused(r: Result<MountResponse, tonic::Status>, fragments: &[&str]) -> tonic::Status {
    let status = match r {
        Ok(resp) => panic!("mounted {:?}", paths(&resp)),
        Err(s) => s,
    };
    for f in fragments {
        assert!(
            status.message().contains(f),
            "{f:?} not in: {}",
            status.message()
        );
    }
    assert!(
        !status.message().contains("pw-123") && !status.message().contains("value-0"),
        "a value leaked: {}",
        status.message()
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_by_prefix_tags_and_star() {
    let env = Env::start(&seed16()).await;
    let objs = objects(&[
        "objectNamePrefix: app-\nobjectType: secret",
        "objectTags: {env: prod}\nobjectType: secret\nobjectAlias: by-tag",
        "objectName: \"*\"\nobjectType: cert\nobjectAlias: certs",
        "objectNamePrefix: cert\nobjectType: key\nobjectAlias: keys",
    ]);
    let resp = mount(&env, &[("objects", &objs)], (SP, SP_SECRET))
        .await
        .unwrap();
    let p = paths(&resp);
    // 30 enabled, valid app-NN, in name order; app-off (disabled), app-old (expired), app-later
    // (not yet valid) skipped.
    let app: Vec<&str> = p
        .iter()
        .copied()
        .filter(|x| x.starts_with("app-"))
        .collect();
    assert_eq!(app.len(), 30, "{p:?}");
    assert_eq!(app[0], "app-00");
    assert_eq!(text(&resp, "app-17"), "value-17");
    assert!(!p.contains(&"app-off") && !p.contains(&"app-old") && !p.contains(&"app-later"));
    assert_eq!(text(&resp, "by-tag/env-prod"), "p");
    assert!(!p.contains(&"by-tag/env-dev"));
    assert!(text(&resp, "certs/cert1").starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(text(&resp, "certs/cert-pem").starts_with("-----BEGIN CERTIFICATE-----"));
    // Keys of certificates are listed as managed keys and rendered as public keys.
    assert!(text(&resp, "keys/cert1").starts_with("-----BEGIN PUBLIC KEY-----"));
    let ids: Vec<&str> = resp.object_version.iter().map(|o| o.id.as_str()).collect();
    assert!(
        ids.contains(&"secret/app-05")
            && ids.contains(&"cert/cert1")
            && ids.contains(&"secret/env-prod")
    );
    assert!(resp.object_version.iter().all(|o| o.version.len() == 32));
    // The selection of secrets was listed with maxresults=25: 2 pages for the first item, 2 for
    // the second (a listing per item; the cache is off here).
    assert_eq!(count(&env, "ListSecrets").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_certificate_backed_secrets_are_key_and_chain_as_upstream() {
    let env = Env::start(&seed16()).await;
    let objs = objects(&["objectNamePrefix: cert\nobjectType: secret\nobjectAlias: tls"]);
    let resp = mount(&env, &[("objects", &objs)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(paths(&resp), ["tls/cert-pem", "tls/cert1"]);
    let full = text(&resp, "tls/cert1");
    assert!(
        full.starts_with("-----BEGIN PRIVATE KEY-----\n")
            && full.contains("-----BEGIN CERTIFICATE-----"),
        "{full}"
    );
    // Same bytes as naming the object.
    let named = objects(&["objectName: cert1\nobjectType: secret"]);
    let one = mount(&env, &[("objects", &named)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(one.files[0].contents, resp.files[1].contents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_cached_and_coalesced_like_single_objects() {
    let env = Env::start_with(&seed16(), |c| {
        c.cache_ttl = std::time::Duration::from_secs(60)
    })
    .await;
    let objs = objects(&["objectNamePrefix: env-\nobjectType: secret"]);
    let params = [("objects", objs.as_str())];
    let a = mount(&env, &params, (SP, SP_SECRET));
    let b = mount(&env, &params, (SP, SP_SECRET));
    let (a, b) = tokio::join!(a, b);
    assert_eq!(paths(&a.unwrap()), ["env-dev", "env-prod"]);
    assert_eq!(paths(&b.unwrap()), ["env-dev", "env-prod"]);
    let again = mount(&env, &[("objects", &objs)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(paths(&again), ["env-dev", "env-prod"]);
    assert_eq!(
        count(&env, "ListSecrets").await,
        2,
        "one listing (2 pages) for three mounts"
    );
    assert_eq!(
        count(&env, "GetSecret").await,
        2,
        "one GET per selected object"
    );
    // Another identity is not served what SP listed.
    let e = mount(&env, &[("objects", &objs)], (OUTSIDER, OUTSIDER_SECRET)).await;
    refused(e, &["list"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_refusals_name_the_class_the_permission_and_the_fix() {
    let env = Env::start_with(&seed16(), |c| c.max_selected_objects = 5).await;
    let star = objects(&["objectName: \"*\"\nobjectType: secret"]);
    // The identity may get secrets but not list them: the class and the permission are named.
    let named = objects(&["objectName: secret1\nobjectType: secret"]);
    assert_eq!(
        paths(
            &mount(&env, &[("objects", &named)], (READER, READER_SECRET))
                .await
                .unwrap()
        ),
        ["secret1"]
    );
    let s = refused(
        mount(&env, &[("objects", &star)], (READER, READER_SECRET)).await,
        &[
            "listing secrets of vault kv1 was refused",
            "SecretProviderClass default/azure-spc",
            "\"list\" permission on secrets",
            "does not have secrets list permission",
        ],
    );
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    // An identity without any access.
    let s = refused(
        mount(&env, &[("objects", &star)], (OUTSIDER, OUTSIDER_SECRET)).await,
        &[
            "objectName:*",
            "listing secrets of vault kv1 was refused",
            "SecretProviderClass default/azure-spc",
            "\"list\" permission on secrets",
        ],
    );
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    // Past the cap.
    let s = refused(
        mount(&env, &[("objects", &star)], (SP, SP_SECRET)).await,
        &[
            "objectName \"*\" selects",
            "more than this provider allows (5, flag --max-selected-objects)",
            "narrow the selection",
        ],
    );
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    // Nothing matches.
    let none = objects(&["objectTags: {env: staging}\nobjectType: secret"]);
    let s = refused(
        mount(&env, &[("objects", &none)], (SP, SP_SECRET)).await,
        &[
            "objectTags {env=staging} matches no enabled, unexpired secrets in vault kv1",
            "optional: \"true\"",
        ],
    );
    assert_eq!(s.code(), tonic::Code::NotFound);
    // ... unless optional: then nothing is written for it, and the driver is told.
    let opt = objects(&[
        "objectTags: {env: staging}\nobjectType: secret\noptional: \"true\"",
        "objectName: secret1\nobjectType: secret",
    ]);
    let resp = mount(&env, &[("objects", &opt)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(paths(&resp), ["secret1"]);
    assert_eq!(resp.object_version[0].version, ABSENT_OBJECT_VERSION);
    // Bad forms are refused before any call.
    for (item, fragments) in [
        (
            "objectName: db\nobjectNamePrefix: d\nobjectType: secret",
            &["names one object", "remove objectName"][..],
        ),
        (
            "objectNamePrefix: app-\nobjectVersion: abc\nobjectType: secret",
            &["objectVersion cannot be used here", "remove objectVersion"],
        ),
        (
            "objectNamePrefix: app-\nobjectVersionHistory: 3\nobjectType: secret",
            &["objectVersionHistory cannot be used here"],
        ),
        (
            "objectNamePrefix: app_\nobjectType: secret",
            &["can never match", "letters, digits and '-'"],
        ),
        (
            "objectNamePrefix: app-\nobjectType: secrets",
            &["Invalid vaultObjectTypes"],
        ),
        (
            "objectName: \"*\"\nobjectType: secret\nobjectAlias: ../up",
            &["'..'"],
        ),
    ] {
        let o = objects(&[item]);
        let s = refused(
            mount(&env, &[("objects", &o)], (SP, SP_SECRET)).await,
            fragments,
        );
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{item}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_objects_are_left_out_until_they_exist() {
    let env = Env::start(&seed16()).await;
    let objs = objects(&[
        "objectName: later\nobjectType: secret\noptional: \"true\"",
        "objectName: gone\nobjectType: secret\noptional: true",
        "objectName: secret1\nobjectType: secret",
    ]);
    let resp = mount(&env, &[("objects", &objs)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(
        paths(&resp),
        ["secret1"],
        "missing (404) and disabled optional objects have no file"
    );
    let versions: Vec<(&str, &str)> = resp
        .object_version
        .iter()
        .map(|o| (o.id.as_str(), o.version.as_str()))
        .collect();
    assert_eq!(
        versions[..2],
        [
            ("secret/later", ABSENT_OBJECT_VERSION),
            ("secret/gone", ABSENT_OBJECT_VERSION)
        ]
    );
    // It appears: the next mount (the driver's rotation) writes it.
    env.emu
        .admin()
        .set_secret("kv1", "later", "now-here")
        .await
        .unwrap();
    env.emu
        .admin()
        .set_secret_enabled("kv1", "gone", true)
        .await
        .unwrap();
    let resp = mount(&env, &[("objects", &objs)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(paths(&resp), ["later", "gone", "secret1"]);
    assert_eq!(text(&resp, "later"), "now-here");
    // Not optional: the same absence fails the mount, as upstream.
    let strict = objects(&["objectName: nothing-here\nobjectType: secret"]);
    refused(
        mount(&env, &[("objects", &strict)], (SP, SP_SECRET)).await,
        &["objectName:nothing-here", "404"],
    );
    // A refused identity is not "absent": optional does not hide a 403.
    refused(
        mount(&env, &[("objects", &objs)], (OUTSIDER, OUTSIDER_SECRET)).await,
        &["403"],
    );
    let bad = objects(&["objectName: x\nobjectType: secret\noptional: maybe"]);
    refused(
        mount(&env, &[("objects", &bad)], (SP, SP_SECRET)).await,
        &["invalid optional: \"maybe\"", "\"true\" or \"false\""],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jmes_path_writes_one_file_per_expression() {
    let env = Env::start(&seed16()).await;
    let objs = objects(&[
        "objectName: db\nobjectType: secret\njmesPath:\n  - path: username\n    objectAlias: db-user\n  - path: password\n    objectAlias: creds/db-pass\n  - path: port\n    objectAlias: db-port\n  - path: hosts\n    objectAlias: db-hosts",
    ]);
    let resp = mount(&env, &[("objects", &objs)], (SP, SP_SECRET))
        .await
        .unwrap();
    assert_eq!(
        paths(&resp),
        ["db", "db-user", "creds/db-pass", "db-port", "db-hosts"]
    );
    assert_eq!(text(&resp, "db-user"), "app");
    assert_eq!(text(&resp, "creds/db-pass"), "pw-123");
    assert_eq!(text(&resp, "db-port"), "5432");
    assert_eq!(text(&resp, "db-hosts"), r#"["a","b"]"#);
    assert!(resp.object_version.iter().all(|o| o.id == "secret/db"));

    for (item, fragments) in [
        (
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: Password\n    objectAlias: p",
            &[
                "objectName:db",
                "jmesPath path \"Password\" matches nothing",
                "case-sensitive",
            ][..],
        ),
        (
            "objectName: not-json\nobjectType: secret\njmesPath:\n  - path: a\n    objectAlias: p",
            &["objectName:not-json", "needs the secret's value to be JSON"],
        ),
        (
            "objectName: cert1\nobjectType: secret\njmesPath:\n  - path: a\n    objectAlias: p",
            &["backs a certificate"],
        ),
        (
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: 'a.['\n    objectAlias: p",
            &["jmesPath[0].path \"a.[\" is not a valid JMESPath expression"],
        ),
        (
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: a",
            &["jmesPath[0].objectAlias is empty"],
        ),
        (
            "objectName: db\nobjectType: key\njmesPath:\n  - path: a\n    objectAlias: p",
            &["only supported for objectType: secret"],
        ),
        (
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: a\n    objectAlias: db",
            &["collides"],
        ),
        (
            "objectName: db\nobjectType: secret\njmesPath:\n  - path: a\n    objectAlias: /etc/x",
            &["relative path"],
        ),
    ] {
        let o = objects(&[item]);
        refused(
            mount(&env, &[("objects", &o)], (SP, SP_SECRET)).await,
            fragments,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_files_from_the_mounted_ones() {
    let env = Env::start(&seed16()).await;
    let objs = objects(&[
        "objectName: db\nobjectType: secret\njmesPath:\n  - path: username\n    objectAlias: db-user\n  - path: password\n    objectAlias: db-pass",
        "objectTags: {app: web}\nobjectType: secret\nobjectAlias: web",
        "objectName: maybe\nobjectType: secret\noptional: \"true\"",
    ]);
    let templates = r#"
- path: app.env
  template: |
    DB_USER={{ files["db-user"] }}
    DB_PASSWORD={{ files["db-pass"] }}
    {% for p, v in files|items %}{% if p is startingwith("web/") %}{{ p[4:]|upper|replace("-", "_") }}={{ v }}
    {% endif %}{% endfor %}{% if files.maybe is defined %}MAYBE={{ files.maybe }}{% endif %}
- path: config/app.json
  template: '{"user": {{ files["db-user"] | tojson }}, "password": {{ files["db-pass"] | tojson }}}'
"#;
    let resp = mount(
        &env,
        &[("objects", &objs), ("templates", templates)],
        (SP, SP_SECRET),
    )
    .await
    .unwrap();
    assert_eq!(
        text(&resp, "app.env"),
        "DB_USER=app\nDB_PASSWORD=pw-123\nENV_DEV=d\nENV_PROD=p\n\n",
        "the optional file is absent: its line is empty"
    );
    assert_eq!(
        text(&resp, "config/app.json"),
        r#"{"user": "app", "password": "pw-123"}"#
    );
    assert_eq!(
        resp.files
            .iter()
            .find(|f| f.path == "app.env")
            .map(|f| f.mode),
        Some(0o644)
    );

    for (tpl, fragments) in [
        (
            "- path: a.env\n  template: 'X={{ files.nope }}'",
            &["template \"a.env\"", "undefined value", "line 1", "db-user"][..],
        ),
        (
            "- path: a.env\n  template: 'X={{ files.nope '",
            &["invalid templates", "\"a.env\"", "syntax error"],
        ),
        (
            "- path: ../a.env\n  template: x",
            &["invalid templates", "'..'"],
        ),
        (
            "- path: db\n  template: x",
            &["collides with a file of object \"db\""],
        ),
        (
            "- path: a\n  template: x\n- path: a\n  template: y",
            &["collides with the template \"a\""],
        ),
        (
            "- path: a\n  template: \"{% include 'x' %}\"",
            &["unknown statement include"],
        ),
        (
            "path: a",
            &["invalid templates", "YAML list of {path, template}"],
        ),
        (
            "- path: a\n  template: x\n  mode: 1",
            &["invalid templates"],
        ),
    ] {
        let s = refused(
            mount(
                &env,
                &[("objects", &objs), ("templates", tpl)],
                (SP, SP_SECRET),
            )
            .await,
            fragments,
        );
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{tpl}");
    }
}
