//! The node's configuration files (containerd's TOML, kubelet's KubeletConfiguration) and the
//! post-mortem log copy.

use std::{collections::BTreeMap, path::Path, time::Duration};

use crate::versions;

/// containerd's config: private root, state and sockets under `d`, CRI with the local sandbox
/// image, `restrict_oom_score_adj` (runc cannot lower it on these VMs), CNI from Debian.
pub(super) fn containerd_config(d: &Path) -> String {
    let p = |s: &str| d.join(s).display().to_string();
    let pause = versions::get("NODE_PAUSE_IMAGE");
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{ttrpc}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
"#,
        root = p("containerd/root"),
        state = p("containerd/state"),
        sock = p("containerd.sock"),
        ttrpc = p("containerd.ttrpc.sock"),
        opt = p("containerd/opt"),
        cni = p("cni"),
    )
}

pub(super) fn kubelet_config(d: &Path, cgroup_root: &str, sync: Duration) -> String {
    let p = |s: &str| d.join(s).display().to_string();
    let mut fields: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    fn v(x: impl Into<serde_json::Value>) -> serde_json::Value {
        x.into()
    }
    fields.insert("apiVersion", v("kubelet.config.k8s.io/v1beta1"));
    fields.insert("kind", v("KubeletConfiguration"));
    fields.insert("cgroupDriver", v("cgroupfs"));
    fields.insert("cgroupRoot", v(format!("/{cgroup_root}")));
    fields.insert("failSwapOn", v(false));
    fields.insert("failCgroupV1", v(false));
    fields.insert(
        "containerRuntimeEndpoint",
        v(format!("unix://{}", p("containerd.sock"))),
    );
    fields.insert("podLogsDir", v(p("pod-logs")));
    fields.insert("volumePluginDir", v(p("volume-plugins")));
    fields.insert("enableServer", v(false));
    fields.insert("healthzPort", v(0));
    fields.insert("readOnlyPort", v(0));
    fields.insert("resolvConf", v(""));
    fields.insert("evictionHard", serde_json::json!({}));
    fields.insert("imageGCHighThresholdPercent", v(100));
    fields.insert("syncFrequency", v(format!("{}s", sync.as_secs().max(1))));
    fields.insert("nodeStatusUpdateFrequency", v("5s"));
    fields.insert("fileCheckFrequency", v("20s"));
    fields.insert("serializeImagePulls", v(false));
    fields.insert(
        "authentication",
        serde_json::json!({"anonymous": {"enabled": false}, "webhook": {"enabled": false}}),
    );
    fields.insert("authorization", serde_json::json!({"mode": "AlwaysAllow"}));
    // JSON is YAML; kubelet reads either.
    serde_json::to_string_pretty(&fields).unwrap_or_default()
}

/// Copies every `*.log` under `dir` to `to` (flat names: the relative path with `/` → `_`).
pub(super) fn copy_logs(base: &Path, dir: &Path, to: &Path) {
    let _ = std::fs::create_dir_all(to);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => copy_logs(base, &p, to),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "log") => {
                let rel = p
                    .strip_prefix(base)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('/', "_");
                let _ = std::fs::copy(&p, to.join(rel));
            }
            _ => {}
        }
    }
}
