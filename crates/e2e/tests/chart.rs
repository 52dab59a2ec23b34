//! The Helm charts: linted, rendered with default and full values, and every rendered object
//! validated by a real kube-apiserver (CRDs applied for real, everything else server-side applied
//! with `dryRun=All` and strict field validation), plus drift checks against `deploy/`.

use std::{path::Path, process::Command};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, ValidationDirective},
    discovery::{ApiCapabilities, ApiResource, Discovery, Scope},
};
use serde_json::Value;
use test_support::{ControlPlane, Peer, project_root, require_peer, versions};

const PROVIDER_CHART: &str = "charts/csi-secrets-store-provider-azure";
const DRIVER_CHART: &str = "charts/secrets-store-csi-driver";

fn helm(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(args)
        .current_dir(project_root())
        // Keep helm's caches and config out of the user's home.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("sscsi-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("sscsi-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("sscsi-helm-data"),
        )
        .output()
        .map_err(|e| format!("cannot run helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn render(helm_bin: &Path, chart: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "sscsi",
        chart,
        "--namespace",
        "kube-system",
        "--include-crds",
        "--kube-version",
        versions::kubernetes(),
    ];
    args.extend_from_slice(extra);
    let text = helm(helm_bin, &args).unwrap_or_else(|e| panic!("{e}"));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("rendered chart is not YAML: {e}\n{text}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

fn container_args(ds: &Value, container: &str) -> Vec<String> {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .and_then(|c| c["args"].as_array())
        .unwrap_or_else(|| panic!("no container {container} with args"))
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// Applies CRDs for real, then validates every other object with a server-side dry run.
async fn validate_against_apiserver(client: &Client, objects: &[Value]) {
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = objects
        .iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    let pp = PatchParams::apply("chart-test").force();
    let crd_api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(&()),
    );
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().expect("CRD name");
        crd_api
            .patch(name, &pp, &Patch::Apply(crd))
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
    }
    // Give the new CRDs a moment to be served before discovery.
    for name in crds.iter().filter_map(|c| c["metadata"]["name"].as_str()) {
        let api: Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = Api::all(client.clone());
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            kube::runtime::wait::await_condition(
                api,
                name,
                kube::runtime::wait::conditions::is_crd_established(),
            ),
        )
        .await
        .expect("CRD established in time")
        .expect("CRD watch");
    }
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    let dry = PatchParams {
        dry_run: true,
        force: true,
        field_manager: Some("chart-test".into()),
        field_validation: Some(ValidationDirective::Strict),
    };
    for obj in rest {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion");
        let kind = obj["kind"].as_str().expect("kind");
        let name = obj["metadata"]["name"].as_str().expect("name");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (ar, caps): (ApiResource, ApiCapabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{api_version} {kind} is not served"));
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("kube-system");
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(name, &dry, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("the apiserver rejects {kind} {name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_render_and_the_apiserver_accepts_every_object() {
    let helm_bin = require_peer!(Peer::Helm);
    let Some(plane) = ControlPlane::start().await else {
        return;
    };
    let plane = plane.expect("control plane");

    helm(&helm_bin, &["lint", DRIVER_CHART]).unwrap_or_else(|e| panic!("{e}"));
    helm(&helm_bin, &["dependency", "build", PROVIDER_CHART]).unwrap_or_else(|e| panic!("{e}"));
    helm(&helm_bin, &["lint", PROVIDER_CHART]).unwrap_or_else(|e| panic!("{e}"));

    // Default values: the provider chart with the driver as its dependency.
    let defaults = render(&helm_bin, PROVIDER_CHART, &[]);
    validate_against_apiserver(&plane.client(), &defaults).await;
    let csidriver = find(&defaults, "CSIDriver", "secrets-store.csi.k8s.io");
    assert_eq!(csidriver["spec"]["requiresRepublish"], false);
    assert_eq!(csidriver["spec"]["podInfoOnMount"], true);
    assert_eq!(
        csidriver["spec"]["tokenRequests"][0]["audience"],
        "api://AzureADTokenExchange"
    );
    assert!(
        !defaults
            .iter()
            .any(|o| o["metadata"]["name"] == "secretprovidersyncing-role"),
        "secret sync RBAC must be off by default"
    );
    // The driver registers itself with kubelet and serves its own liveness endpoint: no sidecars.
    let driver = find(&defaults, "DaemonSet", "secrets-store-csi-driver");
    let containers: Vec<&str> = driver["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(containers, ["secrets-store"], "default containers");
    let args = container_args(driver, "secrets-store");
    for expected in [
        "--plugin-registration-dir=/registration",
        "--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
        "--health-addr=:9808",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "missing {expected} in {args:?}"
        );
    }
    let provider = find(&defaults, "DaemonSet", "csi-secrets-store-provider-azure");
    let args = container_args(provider, "provider-azure-installer");
    assert!(
        args.contains(&"--endpoint=unix:///provider/azure.sock".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--construct-pem-chain=true".to_owned()),
        "{args:?}"
    );

    // Full values: every common setting reaches the right flag or object.
    let full = render(
        &helm_bin,
        PROVIDER_CHART,
        &["-f", "charts/ci/full-values.yaml"],
    );
    validate_against_apiserver(&plane.client(), &full).await;
    let csidriver = find(&full, "CSIDriver", "secrets-store.csi.k8s.io");
    assert_eq!(csidriver["spec"]["requiresRepublish"], true);
    assert_eq!(
        csidriver["spec"]["tokenRequests"][1]["audience"],
        "api://AKSIdentityBinding"
    );
    find(&full, "ClusterRole", "secretprovidersyncing-role");
    let driver = find(&full, "DaemonSet", "secrets-store-csi-driver");
    let args = container_args(driver, "secrets-store");
    for expected in [
        "--enable-secret-rotation=true",
        "--rotation-poll-interval=90s",
        "--provider-health-check=true",
        "--max-call-recv-msg-size=8388608",
        "--metrics-addr=:8096",
        "--additional-provider-volume-paths=/etc/kubernetes/secrets-store-csi-providers,/opt/providers",
        "--log-format-json=true",
        "-v=4",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "missing {expected} in {args:?}"
        );
    }
    // With the sidecars enabled, the driver leaves registration and liveness to them.
    for builtin in [
        "--plugin-registration-dir",
        "--kubelet-registration-path",
        "--health-addr",
    ] {
        assert!(
            !args.iter().any(|a| a.starts_with(builtin)),
            "{builtin} passed although the sidecars run: {args:?}"
        );
    }
    container_args(driver, "liveness-probe");
    let registrar = container_args(driver, "node-driver-registrar");
    assert!(registrar.iter().any(|a| a
        == "--kubelet-registration-path=/var/snap/microk8s/common/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"));
    let provider = find(&full, "DaemonSet", "csi-secrets-store-provider-azure");
    let args = container_args(provider, "provider-azure-installer");
    for expected in [
        "--construct-pem-chain=false",
        "--write-cert-and-key-in-separate-files=true",
        "--cloud-name=AzureStackCloud",
        "--cache-ttl=90s",
        "--keyvault-rate-limit=50",
        "--keyvault-burst=200",
        "--keyvault-throttle-budget=45s",
        "--workload-identity-issuers=https://eastus.oic.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/11111111-1111-1111-1111-111111111111/",
        "--healthz-port=8990",
        "--prometheus-port=8899",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "missing {expected} in {args:?}"
        );
    }

    // Every flag the chart passes parses in our binaries (kubelet's $(VAR) expansion applied).
    for (ds, container, binary) in [
        (
            "secrets-store-csi-driver",
            "secrets-store",
            "secrets-store-csi-driver",
        ),
        (
            "csi-secrets-store-provider-azure",
            "provider-azure-installer",
            "secrets-store-provider-azure",
        ),
    ] {
        for objects in [&defaults, &full] {
            let args: Vec<String> = container_args(find(objects, "DaemonSet", ds), container)
                .into_iter()
                .map(|a| {
                    a.replace("$(CSI_ENDPOINT)", "unix:///csi/csi.sock")
                        .replace("$(KUBE_NODE_NAME)", "node-1")
                })
                .collect();
            let out = Command::new(e2e::workspace_binary(binary))
                .args(&args)
                .arg("--version")
                .output()
                .expect("run the binary");
            assert!(
                out.status.success(),
                "{binary} refuses the chart's flags {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // The driver chart also installs on its own.
    let driver_only = render(&helm_bin, DRIVER_CHART, &[]);
    validate_against_apiserver(&plane.client(), &driver_only).await;
}

#[test]
fn windows_is_refused_with_an_explanation() {
    let helm_bin = require_peer!(Peer::Helm);
    let err = helm(
        &helm_bin,
        &[
            "template",
            "x",
            DRIVER_CHART,
            "--kube-version",
            versions::kubernetes(),
            "--set",
            "windows.enabled=true",
        ],
    )
    .expect_err("windows.enabled=true must fail the render");
    assert!(err.contains("windows.enabled"), "{err}");
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn chart_crds_and_rbac_match_the_static_manifests() {
    let root = project_root();
    for entry in std::fs::read_dir(root.join("deploy/crds")).expect("deploy/crds") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name");
        let chart_copy = root.join(DRIVER_CHART).join("crds").join(name);
        assert_eq!(
            std::fs::read_to_string(&path).expect("deploy CRD"),
            std::fs::read_to_string(&chart_copy).unwrap_or_default(),
            "{} differs from {}: copy deploy/crds/* into {DRIVER_CHART}/crds/",
            chart_copy.display(),
            path.display()
        );
    }
    let rules = |objects: &[Value], name: &str| find(objects, "ClusterRole", name)["rules"].clone();
    let deployed: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(root.join("deploy/rbac.yaml")).expect("rbac"),
    )
    .expect("deploy/rbac.yaml is YAML");
    let template = std::fs::read_to_string(root.join(DRIVER_CHART).join("templates/role.yaml"))
        .expect("role template");
    // The template's rules block is plain YAML between `rules:` and the first `---`.
    let rules_yaml = template
        .split("rules:\n")
        .nth(1)
        .and_then(|s| s.split("---").next())
        .expect("rules in the role template");
    let chart_rules: Value = serde_saphyr::from_str(rules_yaml).expect("rules YAML");
    assert_eq!(
        chart_rules,
        rules(&deployed, "secretproviderclasses-role"),
        "the chart's driver ClusterRole differs from deploy/rbac.yaml"
    );
}
