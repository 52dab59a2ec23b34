//! The Helm charts: linted, rendered with default and full values, and every rendered object
//! validated by a real kube-apiserver (CRDs applied for real, everything else server-side applied
//! with `dryRun=All` and strict field validation), plus drift checks against `deploy/`.

use std::{path::Path, process::Command};

use e2e::helm;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, ValidationDirective},
    discovery::{ApiCapabilities, ApiResource, Discovery, Scope},
};
use serde_json::Value;
use test_support::{ControlPlane, Peer, project_root, require_peer, versions};

const PROVIDER_CHART: &str = "charts/csi-secrets-store-provider-azure";
const DRIVER_CHART: &str = "charts/secrets-store-csi-driver";

/// `helm dependency build` of the provider chart, once per test process: it replaces the chart's
/// `charts/` folder through a temporary one, and a render running at the same time (tests run in
/// parallel) would see neither.
fn build_dependencies(helm_bin: &Path) {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        helm(helm_bin, &["dependency", "build", PROVIDER_CHART]).unwrap_or_else(|e| panic!("{e}"));
        *built = true;
    }
}

fn render(helm_bin: &Path, chart: &str, extra: &[&str]) -> Vec<Value> {
    build_dependencies(helm_bin);
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
    build_dependencies(&helm_bin);
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
    // Identity binding's audience too, as upstream's chart.
    assert_eq!(
        csidriver["spec"]["tokenRequests"][1]["audience"],
        "api://AKSIdentityBinding"
    );
    // The cluster CA (no token) where identity binding reads it.
    let provider_spec = &find(&defaults, "DaemonSet", "csi-secrets-store-provider-azure")["spec"]["template"]
        ["spec"];
    assert_eq!(provider_spec["automountServiceAccountToken"], false);
    let ca_volume = provider_spec["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "kube-root-ca"))
        .unwrap_or_else(|| panic!("no kube-root-ca volume: {provider_spec}"));
    assert_eq!(
        ca_volume["projected"]["sources"][0]["configMap"]["name"],
        "kube-root-ca.crt"
    );
    assert!(
        provider_spec["containers"][0]["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == "kube-root-ca"
                && m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")),
        "{provider_spec}"
    );
    assert!(
        !defaults
            .iter()
            .any(|o| o["metadata"]["name"] == "secretprovidersyncing-role"),
        "secret sync RBAC must be off by default"
    );
    assert!(
        !defaults.iter().any(|o| o["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("secrets-store-sync-controller"))),
        "the sync controller must be off by default"
    );
    // A rotation interval set on the driver chart alone also bounds the provider's cache, so
    // rotation is not held back by a cached answer; an explicit cacheTTL wins.
    let provider_cache_ttl = |extra: &[&str]| -> Vec<String> {
        let objects = render(&helm_bin, PROVIDER_CHART, extra);
        let ds = find(&objects, "DaemonSet", "csi-secrets-store-provider-azure");
        container_args(ds, "provider-azure-installer")
            .into_iter()
            .filter(|a| a.starts_with("--cache-ttl"))
            .collect()
    };
    // (the provider chart's default rotation period for the driver is 2m, as upstream's)
    assert_eq!(provider_cache_ttl(&[]), ["--cache-ttl=2m"]);
    assert_eq!(
        provider_cache_ttl(&["--set", "secrets-store-csi-driver.rotationPollInterval=30s"]),
        ["--cache-ttl=30s"]
    );
    assert_eq!(
        provider_cache_ttl(&[
            "--set",
            "secrets-store-csi-driver.rotationPollInterval=30s",
            "--set-string",
            "cacheTTL=0"
        ]),
        ["--cache-ttl=0"]
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
    // providersDir set once (in the driver dependency's values): both DaemonSets use it.
    assert!(args.contains(&"--provider-volume=/opt/secrets-store-providers".to_owned()));
    let provider_dir = find(&full, "DaemonSet", "csi-secrets-store-provider-azure")["spec"]
        ["template"]["spec"]["volumes"][0]["hostPath"]["path"]
        .clone();
    assert_eq!(provider_dir, "/opt/secrets-store-providers");
    // Pull secrets, labels, annotations and env reach the objects; the CRD hook its values.
    for ds in [
        "secrets-store-csi-driver",
        "csi-secrets-store-provider-azure",
    ] {
        assert_eq!(
            find(&full, "DaemonSet", ds)["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"],
            "regcred",
            "{ds}"
        );
    }
    assert_eq!(driver["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        driver["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
    let crd_job = find(&full, "Job", "secrets-store-csi-driver-crds");
    assert_eq!(
        crd_job["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/secrets-store-rs/secrets-store-csi-driver:0.1.0-ci"
    );
    assert_eq!(
        crd_job["spec"]["template"]["metadata"]["annotations"]["example.com/hook"],
        "crds"
    );
    // Arc: the proxy reaches the provider through a Secret, its CA as an extra trust root.
    let provider_pod =
        &find(&full, "DaemonSet", "csi-secrets-store-provider-azure")["spec"]["template"];
    assert_eq!(
        provider_pod["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "arc-proxy-config"
    );
    assert_eq!(
        provider_pod["metadata"]["annotations"]["prometheus.io/port"],
        "8899"
    );
    find(&full, "Secret", "arc-proxy-config");
    find(&full, "Secret", "arc-proxy-cert");
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
        "--token-proxy-url=https://kubernetes.default.svc.cluster.local",
        "--sni-name=aeaf29ip1hi5q38ebc3u4daum81u0unk52t5bg50j25234fmuj78g.ests.aks",
        "--healthz-port=8990",
        "--prometheus-port=8899",
        "--custom-user-agent=managedBy:ci",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "missing {expected} in {args:?}"
        );
    }

    // The sync controller (syncController.enabled in full values): a Deployment with the
    // provider as a sidecar on a pod-private socket, the API token in the controller only, the
    // RBAC of deploy/rbac-sync-controller.yaml, and upstream's eight admission policies.
    let deployment = find(&full, "Deployment", "secrets-store-sync-controller");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "secrets-store-sync-controller");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["volumes"][0]["emptyDir"], serde_json::json!({}));
    let mounts = |c: usize| -> Vec<String> {
        pod["containers"][c]["volumeMounts"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(pod["containers"][0]["name"], "manager");
    assert!(
        mounts(0).contains(&"api-token".to_owned()),
        "{:?}",
        mounts(0)
    );
    assert_eq!(pod["containers"][1]["name"], "provider-azure");
    assert!(
        !mounts(1).contains(&"api-token".to_owned()),
        "the provider gets no API token"
    );
    assert_eq!(
        pod["containers"][0]["image"],
        "ghcr.io/secrets-store-rs/secrets-store-sync-controller:0.1.0-ci"
    );
    let args = container_args(deployment, "manager");
    for expected in [
        "--provider-volume=/provider",
        "--token-request-audience=api://AzureADTokenExchange,api://AKSIdentityBinding",
        "--rotation-poll-interval=1h",
        "-v=4",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "missing {expected} in {args:?}"
        );
    }
    assert!(
        container_args(deployment, "provider-azure")
            .contains(&"--endpoint=unix:///provider/azure.sock".to_owned())
    );
    let deployed: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(project_root().join("deploy/rbac-sync-controller.yaml"))
            .expect("deploy/rbac-sync-controller.yaml"),
    )
    .expect("deploy/rbac-sync-controller.yaml is YAML");
    assert_eq!(
        find(&full, "ClusterRole", "secrets-store-sync-controller")["rules"],
        find(&deployed, "ClusterRole", "secrets-store-sync-controller")["rules"],
        "the chart's sync-controller ClusterRole differs from deploy/rbac-sync-controller.yaml"
    );
    let policies: Vec<&str> = full
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(policies.len(), 8, "{policies:?}");
    for policy in &policies {
        let binding = find(
            &full,
            "ValidatingAdmissionPolicyBinding",
            &format!("{policy}-binding"),
        );
        assert_eq!(binding["spec"]["policyName"], *policy);
        assert_eq!(binding["spec"]["validationActions"][0], "Deny");
    }
    let no_policies = render(
        &helm_bin,
        PROVIDER_CHART,
        &[
            "--set",
            "syncController.enabled=true",
            "--set",
            "syncController.validatingAdmissionPolicies.applyPolicies=false",
        ],
    );
    find(&no_policies, "Deployment", "secrets-store-sync-controller");
    assert!(
        !no_policies
            .iter()
            .any(|o| o["kind"] == "ValidatingAdmissionPolicy"),
        "applyPolicies=false renders no policy"
    );

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

    for objects in [&defaults, &full] {
        for (deployment, container, binary) in [
            (
                "secrets-store-sync-controller",
                "manager",
                "secrets-store-sync-controller",
            ),
            (
                "secrets-store-sync-controller",
                "provider-azure",
                "secrets-store-provider-azure",
            ),
        ] {
            if !objects
                .iter()
                .any(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == deployment)
            {
                continue;
            }
            let args = container_args(find(objects, "Deployment", deployment), container);
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

/// `rotation.restartOwners` (not upstream, off by default): the restart RBAC of
/// deploy/rbac-restart.yaml and the driver flags appear only when it is on.
#[test]
fn restart_owners_rbac_only_when_enabled() {
    let helm_bin = require_peer!(Peer::Helm);
    let default = render(&helm_bin, DRIVER_CHART, &[]);
    assert!(
        !default
            .iter()
            .any(|o| o["metadata"]["name"] == "secretproviderrestart-role"),
        "restart RBAC rendered although rotation.restartOwners is off"
    );
    let args = container_args(
        find(&default, "DaemonSet", "secrets-store-csi-driver"),
        "secrets-store",
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--rotation-restart")),
        "{args:?}"
    );

    let on = render(
        &helm_bin,
        DRIVER_CHART,
        &[
            "--set",
            "rotation.restartOwners=true",
            "--set",
            "rotation.minInterval=10m",
        ],
    );
    let deployed: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(project_root().join("deploy/rbac-restart.yaml"))
            .expect("rbac-restart"),
    )
    .expect("deploy/rbac-restart.yaml is YAML");
    assert_eq!(
        find(&on, "ClusterRole", "secretproviderrestart-role")["rules"],
        find(&deployed, "ClusterRole", "secretproviderrestart-role")["rules"],
        "the chart's restart ClusterRole differs from deploy/rbac-restart.yaml"
    );
    let binding = find(
        &on,
        "ClusterRoleBinding",
        "secretproviderrestart-rolebinding",
    );
    assert_eq!(binding["subjects"][0]["name"], "secrets-store-csi-driver");
    let args = container_args(
        find(&on, "DaemonSet", "secrets-store-csi-driver"),
        "secrets-store",
    );
    for expected in [
        "--rotation-restart-owners=true",
        "--rotation-restart-min-interval=10m",
    ] {
        assert!(args.contains(&expected.to_owned()), "{expected}: {args:?}");
    }
}

/// One line of `tests/fixtures/upstream-values.txt`: an upstream leaf value and what to set it to.
struct UpstreamValue {
    chart: &'static str,
    path: String,
    json: String,
}

fn upstream_values() -> Vec<UpstreamValue> {
    let text = std::fs::read_to_string(
        project_root().join("crates/e2e/tests/fixtures/upstream-values.txt"),
    )
    .expect("fixture");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (chart, path, json) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            serde_json::from_str::<Value>(json)
                .unwrap_or_else(|e| panic!("fixture line {l:?}: value is not JSON: {e}"));
            UpstreamValue {
                chart: match chart {
                    "driver" => DRIVER_CHART,
                    "provider" => PROVIDER_CHART,
                    other => panic!("fixture line {l:?}: unknown chart {other}"),
                },
                path: path.to_owned(),
                json: json.to_owned(),
            }
        })
        .collect()
}

/// A value docs/configuration.md lists as having no effect here (`needs: None`), or as taking
/// effect only together with another value (`needs: Some("path=json")`).
struct Documented {
    chart: String,
    value: String,
    needs: Option<String>,
}

/// The rows `| `chart` | `value`, `prefix.*` | … |` of one section of docs/configuration.md; with
/// `with_needs`, the third cell is the value needed, as `` `path=json` ``.
fn documented_rows(doc: &str, heading: &str, with_needs: bool) -> Vec<Documented> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading:?}"));
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let mut out = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let chart = cells[1].trim_matches('`').to_owned();
        let needs = with_needs.then(|| cells[3].trim_matches('`').to_owned());
        for value in cells[2].split(',') {
            out.push(Documented {
                chart: chart.clone(),
                value: value.trim().trim_matches('`').to_owned(),
                needs: needs.clone(),
            });
        }
    }
    out
}

fn documented_values() -> Vec<Documented> {
    let doc = std::fs::read_to_string(project_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let mut out = documented_rows(&doc, "### Upstream values with no effect here", false);
    out.extend(documented_rows(
        &doc,
        "### Upstream values that act together with another",
        true,
    ));
    out
}

fn find_documented<'a>(
    documented: &'a [Documented],
    chart: &str,
    path: &str,
) -> Option<&'a Documented> {
    let chart = chart.rsplit('/').next().unwrap_or(chart);
    documented.iter().find(|d| {
        d.chart == chart
            && (d.value == path
                || d.value
                    .strip_suffix(".*")
                    .is_some_and(|prefix| path.starts_with(&format!("{prefix}."))))
    })
}

/// Every leaf of upstream's values.yaml (both charts), set alone, changes the render, or fails it
/// with a message naming the value, or is listed in docs/configuration.md: as having no effect
/// here (and then really changes nothing), or as acting together with another value (and then
/// changes the render once that value is set).
#[test]
fn every_upstream_value_changes_the_render_or_is_documented() {
    let helm_bin = require_peer!(Peer::Helm);
    build_dependencies(&helm_bin);
    let template = |chart: &str, sets: &[&str]| {
        let mut args = vec![
            "template",
            "sscsi",
            chart,
            "--namespace",
            "kube-system",
            "--kube-version",
            versions::kubernetes(),
        ];
        for set in sets {
            args.extend_from_slice(&["--set-json", set]);
        }
        helm(&helm_bin, &args)
    };
    let documented = documented_values();
    let values = upstream_values();
    // Per value: (render with the needed value only, render with the value too).
    let outcomes: Vec<(&UpstreamValue, Option<&Documented>, Result<bool, String>)> =
        std::thread::scope(|s| {
            let chunks: Vec<&[UpstreamValue]> = values.chunks(values.len().div_ceil(8)).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let template = &template;
                    let documented = &documented;
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|v| {
                                let doc = find_documented(documented, v.chart, &v.path);
                                let needs: Vec<&str> =
                                    doc.and_then(|d| d.needs.as_deref()).into_iter().collect();
                                let set = format!("{}={}", v.path, v.json);
                                let mut with = needs.clone();
                                with.push(&set);
                                let outcome = template(v.chart, &needs)
                                    .and_then(|base| Ok(template(v.chart, &with)? != base));
                                (v, doc, outcome)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("render thread"))
                .collect()
        });
    let mut problems = Vec::new();
    let (mut changed, mut together, mut refused, mut without_effect) = (0, 0, 0, 0);
    for (v, doc, outcome) in &outcomes {
        let what = format!("{} {}={}", v.chart, v.path, v.json);
        match (outcome, doc.map(|d| d.needs.is_some())) {
            (Ok(true), None) => changed += 1,
            (Ok(true), Some(true)) => together += 1,
            (Ok(true), Some(false)) => problems.push(format!(
                "{what}: changes the render but docs/configuration.md lists it as having no effect"
            )),
            (Ok(false), Some(false)) => without_effect += 1,
            (Ok(false), Some(true)) => problems.push(format!(
                "{what}: does not change the render even with {:?}",
                doc.and_then(|d| d.needs.as_deref())
            )),
            (Ok(false), None) => problems.push(format!(
                "{what}: the render does not change and docs/configuration.md does not list it (`Upstream values with no effect here` or `… act together with another`)"
            )),
            (Err(e), _) => {
                let last = v.path.rsplit('.').next().unwrap_or(&v.path);
                // A schema error names the offending key, a `fail` the path within its chart.
                let local = v
                    .path
                    .strip_prefix("secrets-store-csi-driver.")
                    .unwrap_or(&v.path);
                if e.contains(local) || (e.contains("schema") && e.contains(last)) {
                    refused += 1;
                } else {
                    problems.push(format!("{what}: the render fails without naming the value: {e}"));
                }
            }
        }
    }
    eprintln!(
        "{} upstream values: {changed} change the render alone, {together} together with the value they need, {refused} are refused with a message naming them, {without_effect} are documented as having no effect here",
        outcomes.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A misspelt value fails the render with a message naming it, in both charts and through the
/// provider chart's dependency key.
#[test]
fn a_typo_is_refused_naming_the_key() {
    let helm_bin = require_peer!(Peer::Helm);
    build_dependencies(&helm_bin);
    for (chart, set, key) in [
        (DRIVER_CHART, "syncSecrets.enabled=true", "syncSecrets"),
        (DRIVER_CHART, "linux.crds.imge.tag=v1", "imge"),
        (PROVIDER_CHART, "syncSecret.enabled=true", "syncSecret"),
        (
            PROVIDER_CHART,
            "secrets-store-csi-driver.syncSecrets.enabled=true",
            "syncSecrets",
        ),
        (PROVIDER_CHART, "linux.customUserAgnet=x", "customUserAgnet"),
    ] {
        let err = helm(
            &helm_bin,
            &[
                "template",
                "x",
                chart,
                "--kube-version",
                versions::kubernetes(),
                "--set",
                set,
            ],
        )
        .expect_err(&format!("{chart} --set {set} must be refused"));
        assert!(
            err.contains(key) && err.contains("not allowed"),
            "{chart} --set {set}: the error does not name {key}: {err}"
        );
    }
}

fn hook_objects<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| {
            o["kind"] == kind
                && o["metadata"]["annotations"]["helm.sh/hook"]
                    .as_str()
                    .is_some_and(|h| h.contains("pre-install") && h.contains("pre-upgrade"))
        })
        .collect()
}

/// Runs the driver binary with the hook Job's arguments and a kubeconfig, as the Job would.
fn run_crds_apply(job_args: &[String], kubeconfig: &Path) -> Result<String, String> {
    let out = Command::new(e2e::workspace_binary("secrets-store-csi-driver"))
        .args(job_args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .env_remove("KUBECONFIG")
        .output()
        .map_err(|e| format!("cannot run the driver: {e}"))?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(log)
    } else {
        Err(log)
    }
}

/// The chart's CRD hook, run as its Job runs it (the driver image's binary, the Job's arguments,
/// the hook's own ServiceAccount and ClusterRole): it installs the CRDs, upgrades CRDs an older
/// release left behind, may touch no other CRD, and a re-run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_hook_installs_and_upgrades_the_crds_under_its_own_rbac() {
    use k8s_openapi::{
        api::{
            core::v1::ServiceAccount,
            rbac::v1::{ClusterRole, ClusterRoleBinding},
        },
        apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    };
    let helm_bin = require_peer!(Peer::Helm);
    let Some(plane) = ControlPlane::start().await else {
        return;
    };
    let plane = plane.expect("control plane");
    let admin = plane.client();

    // A typo fails `helm install` itself, before anything reaches the cluster.
    let kubeconfig = plane.kubeconfig_path().display().to_string();
    let err = helm(
        &helm_bin,
        &[
            "install",
            "typo",
            DRIVER_CHART,
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            "kube-system",
            "--no-hooks",
            "--set",
            "syncSecrets.enabled=true",
        ],
    )
    .expect_err("helm install with a misspelt value must fail");
    assert!(err.contains("syncSecrets"), "{err}");

    let objects = render(&helm_bin, DRIVER_CHART, &[]);
    let job = *hook_objects(&objects, "Job")
        .first()
        .expect("the CRD hook Job");
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let driver = find(&objects, "DaemonSet", "secrets-store-csi-driver");
    assert_eq!(
        container["image"], driver["spec"]["template"]["spec"]["containers"][0]["image"],
        "the hook runs the driver's own image"
    );
    let job_args: Vec<String> = container["args"]
        .as_array()
        .expect("Job args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    assert!(
        job_args.ends_with(&["crds".into(), "apply".into()]),
        "{job_args:?}"
    );
    let sa_name = pod["serviceAccountName"]
        .as_str()
        .expect("Job service account");

    // The hook's RBAC, applied for real; the binary then runs as that service account.
    let pp = PatchParams::apply("chart-test").force();
    for sa in hook_objects(&objects, "ServiceAccount") {
        let sa: ServiceAccount = serde_json::from_value(sa.clone()).expect("ServiceAccount");
        Api::<ServiceAccount>::namespaced(admin.clone(), "kube-system")
            .patch(
                sa.metadata.name.as_deref().unwrap_or_default(),
                &pp,
                &Patch::Apply(&sa),
            )
            .await
            .expect("hook ServiceAccount");
    }
    let roles = hook_objects(&objects, "ClusterRole");
    assert_eq!(roles.len(), 1, "one ClusterRole for the hook");
    let role: ClusterRole = serde_json::from_value(roles[0].clone()).expect("ClusterRole");
    for rule in role.rules.iter().flatten() {
        assert_eq!(
            rule.api_groups.as_deref(),
            Some(&["apiextensions.k8s.io".to_owned()][..])
        );
        let mut names = rule.resource_names.clone().unwrap_or_default();
        names.sort();
        assert_eq!(
            names,
            [
                "secretproviderclasses.secrets-store.csi.x-k8s.io",
                "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io",
                "secretsyncs.secret-sync.x-k8s.io"
            ],
            "the hook's rules name exactly the three CRDs"
        );
    }
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            role.metadata.name.as_deref().unwrap_or_default(),
            &pp,
            &Patch::Apply(&role),
        )
        .await
        .expect("hook ClusterRole");
    for binding in hook_objects(&objects, "ClusterRoleBinding") {
        let binding: ClusterRoleBinding =
            serde_json::from_value(binding.clone()).expect("ClusterRoleBinding");
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch(
                binding.metadata.name.as_deref().unwrap_or_default(),
                &pp,
                &Patch::Apply(&binding),
            )
            .await
            .expect("hook ClusterRoleBinding");
    }
    let hook_kubeconfig = plane
        .service_account_kubeconfig("kube-system", sa_name)
        .await
        .expect("hook kubeconfig");
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let generated = secrets_store_api::crds::all().expect("generated CRDs");
    let version_names = |crd: &CustomResourceDefinition| -> Vec<String> {
        crd.spec.versions.iter().map(|v| v.name.clone()).collect()
    };
    let has_secret_objects = |crd: &CustomResourceDefinition| {
        crd.spec.versions.iter().any(|v| {
            v.name == "v1"
                && v.schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| s.properties.as_ref())
                    .and_then(|p| p.get("spec"))
                    .and_then(|s| s.properties.as_ref())
                    .is_some_and(|p| p.contains_key("secretObjects"))
        })
    };

    // Install: no CRDs yet.
    run_crds_apply(&job_args, &hook_kubeconfig)
        .unwrap_or_else(|log| panic!("crds apply (install) failed:\n{log}"));
    for (_, want) in &generated {
        let name = want.metadata.name.as_deref().expect("CRD name");
        let got = crds.get(name).await.expect("CRD installed");
        assert_eq!(version_names(&got), version_names(want), "{name}");
    }

    // Upgrade: the CRDs an older release left (Helm creates crds/ with a plain create): one
    // version fewer, a field missing from the schema.
    let (_, spc) = &generated[0];
    let spc_name = spc.metadata.name.clone().expect("CRD name");
    let mut old = crds.get(&spc_name).await.expect("CRD");
    old.metadata.managed_fields = None;
    old.spec.versions.retain(|v| v.name == "v1");
    for v in &mut old.spec.versions {
        if let Some(spec) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
        {
            spec.remove("secretObjects");
        }
    }
    let old = crds
        .replace(
            &spc_name,
            &kube::api::PostParams {
                field_manager: Some("helm".into()),
                ..Default::default()
            },
            &old,
        )
        .await
        .expect("older CRD in place");
    assert_eq!(version_names(&old), ["v1"]);
    assert!(!has_secret_objects(&old));
    run_crds_apply(&job_args, &hook_kubeconfig)
        .unwrap_or_else(|log| panic!("crds apply (upgrade) failed:\n{log}"));
    let upgraded = crds.get(&spc_name).await.expect("CRD");
    assert_eq!(
        version_names(&upgraded),
        version_names(spc),
        "versions after the upgrade"
    );
    assert!(
        has_secret_objects(&upgraded),
        "the schema after the upgrade"
    );
    assert!(upgraded.metadata.generation > old.metadata.generation);

    // A re-run (here with the admin kubeconfig) changes nothing.
    run_crds_apply(&job_args, plane.kubeconfig_path())
        .unwrap_or_else(|log| panic!("crds apply (admin) failed:\n{log}"));
    let again = crds.get(&spc_name).await.expect("CRD");
    assert_eq!(again.metadata.generation, upgraded.metadata.generation);

    // The hook's identity reaches nothing else: not another CRD, not a list of all CRDs.
    let other = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}}}]
        }
    });
    let other: CustomResourceDefinition = serde_json::from_value(other).expect("CRD");
    crds.create(&kube::api::PostParams::default(), &other)
        .await
        .expect("another CRD");
    let hook_client = plane
        .service_account_client("kube-system", sa_name)
        .await
        .expect("hook client");
    let hook_crds: Api<CustomResourceDefinition> = Api::all(hook_client);
    for result in [
        hook_crds.get("widgets.example.com").await.map(|_| ()),
        hook_crds
            .patch("widgets.example.com", &pp, &Patch::Apply(&other))
            .await
            .map(|_| ()),
        hook_crds.list(&Default::default()).await.map(|_| ()),
        hook_crds
            .delete(&spc_name, &Default::default())
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(kube::Error::Api(e)) if e.code == 403 => {}
            other => panic!("the hook's identity must be refused, got {other:?}"),
        }
    }
}
