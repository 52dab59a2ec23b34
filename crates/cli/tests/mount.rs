//! `secrets-store mount` against keyvault-emulator, through the binary as a user runs it: a
//! service principal from a Secret manifest, a CA bundle and a resolve override. Also the error a
//! user sees for a wrong secret, and that nothing is written then.

use std::process::Command;

use keyvault_emulator::{Emulator, EmulatorConfig};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SP: &str = "11111111-1111-1111-1111-111111111111";

async fn emulator() -> Emulator {
    let seed = format!(
        "tenant: {TENANT}\nvaults:\n  - name: kv1\n    access: [{SP}]\n    secrets:\n      - {{ name: app-password, value: mount-test-value-7f3a }}\n    keys:\n      - {{ name: sign, kty: EC, crv: P-256 }}\nidentities:\n  service_principals:\n    - {{ client_id: {SP}, client_secret: right-secret }}\n"
    );
    Emulator::start(EmulatorConfig::default().seed_yaml(&seed).expect("seed"))
        .await
        .expect("emulator")
}

fn files(
    emu: &Emulator,
    dir: &std::path::Path,
    client_secret: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let env = dir.join("cloud.json");
    std::fs::write(&env, emu.azure_stack_environment().to_string()).expect("env file");
    let class = dir.join("class.yaml");
    std::fs::write(
        &class,
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {{name: app, namespace: team}}\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kv1\n    tenantID: {TENANT}\n    cloudName: AzureStackCloud\n    cloudEnvFileName: {}\n    objects: |\n      array:\n        - |\n          objectName: app-password\n          objectType: secret\n        - |\n          objectName: sign\n          objectType: key\n",
            env.display()
        ),
    )
    .expect("class");
    let secrets = dir.join("secret.yaml");
    std::fs::write(
        &secrets,
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: kv-creds}}\nstringData:\n  clientid: {SP}\n  clientsecret: {client_secret}\n"),
    )
    .expect("secrets");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem()).expect("ca");
    (class, secrets, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_fetches_into_a_directory_without_printing_values() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (class, secrets, ca) = files(&emu, dir.path(), "right-secret");
    let target = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_secrets-store"))
        .arg("mount")
        .arg("--class")
        .arg(&class)
        .arg("--target")
        .arg(&target)
        .arg("--secrets")
        .arg(&secrets)
        .arg("--ca-file")
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("{}={}", emu.vault_host("kv1"), emu.https_addr()))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mounted team/app"), "{stdout}");
    assert!(
        !stdout.contains("mount-test-value-7f3a"),
        "value printed without --show-values: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("app-password")).expect("file"),
        "mount-test-value-7f3a"
    );
    assert!(
        std::fs::read_to_string(target.join("sign"))
            .expect("key file")
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_fails_clearly_and_writes_nothing() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (class, secrets, ca) = files(&emu, dir.path(), "wrong-secret");
    let target = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_secrets-store"))
        .arg("mount")
        .arg("--class")
        .arg(&class)
        .arg("--target")
        .arg(&target)
        .arg("--secrets")
        .arg(&secrets)
        .arg("--ca-file")
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("{}={}", emu.vault_host("kv1"), emu.https_addr()))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("mount of team/app failed"), "{stderr}");
    assert!(
        !stderr.contains("wrong-secret"),
        "the client secret leaked into the error: {stderr}"
    );
    assert!(
        !target.join("app-password").exists(),
        "a file was written on failure"
    );
}

/// `--provider-dir` talks to a provider that is already running (here one started in this test on
/// `<dir>/azure.sock`, trusting the emulator's CA and resolving the vault to it) instead of
/// starting its own; an empty directory is refused with the flag to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_dir_mounts_through_a_running_provider() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (class, secrets, ca) = files(&emu, dir.path(), "right-secret");
    let run = move |providers: &std::path::Path, target: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_secrets-store"))
            .arg("mount")
            .arg("--class")
            .arg(&class)
            .arg("--target")
            .arg(target)
            .arg("--secrets")
            .arg(&secrets)
            .arg("--provider-dir")
            .arg(providers)
            .output()
            .expect("run")
    };

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("dir");
    let out = run(&empty, &dir.path().join("nothing"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no provider socket at") && stderr.contains("--provider-dir"),
        "{stderr}"
    );
    assert!(!dir.path().join("nothing").join("app-password").exists());

    let providers = dir.path().join("providers");
    std::fs::create_dir(&providers).expect("dir");
    let mut config = provider_azure::ProviderConfig::default();
    config.http.ssl_cert_file = Some(ca);
    config.http.resolve = vec![(emu.vault_host("kv1"), emu.https_addr())];
    let server = provider_azure::Server::bind(provider_azure::ServerConfig::new(
        format!("unix://{}", providers.join("azure.sock").display()),
        config,
    ))
    .await
    .expect("provider");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let target = dir.path().join("out");
    let out = tokio::task::spawn_blocking({
        let (providers, target, run) = (providers.clone(), target.clone(), run.clone());
        move || run(&providers, &target)
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("app-password")).expect("file"),
        "mount-test-value-7f3a"
    );
    assert!(target.join("sign").exists());
    let _ = stop.send(());
    let _ = serving.await;
}
