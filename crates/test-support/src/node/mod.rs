//! A real Kubernetes node for tests: containerd (Debian's, private root, state and socket) and
//! kubelet (built by `scripts/peers.sh`, private root dir and config) registered with a
//! [`ControlPlane`]. Pods run from the locally assembled images (no registry is reachable).
//!
//! The test process must first enter [`crate::PrivateNamespaces`]: the node's mounts and
//! addresses live there. What kubelet changes on the machine itself (cgroups under a private
//! cgroup root, a handful of kernel sysctls) is undone by [`Node::stop`], which then checks that
//! no process, mount, cgroup, sysctl change or folder is left.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Event, Node as K8sNode, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};

mod config;
mod host;

use config::{containerd_config, copy_logs, kubelet_config};
use host::{CgroupRoot, recover_crashed_nodes, state_file, umount_detach};

use crate::{ChildGuard, ControlPlane, Peer, peer, versions};

/// Sysctls kubelet sets at start (its "protect kernel defaults" list). They are global, so the
/// node records them first and puts them back when it stops.
const KUBELET_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// How long the node gets to become Ready, and a pod to start or go away.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Everything that can go wrong with the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file or folder operation failed.
    #[error("node I/O ({what}): {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A process could not be started or failed.
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    /// Something did not happen in time.
    #[error("{what} did not happen within {timeout:?}\n{detail}")]
    Timeout {
        what: String,
        timeout: Duration,
        detail: String,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// After stopping, something of the node was still there.
    #[error("the node left things behind:\n{0}")]
    Leftovers(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// How the node is set up.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's name (kubelet's `--hostname-override`).
    pub name: String,
    /// kubelet's `syncFrequency`: also the period of CSI republish calls (× 1–1.5 jitter).
    pub sync_frequency: Duration,
    /// A pod network (a `bridge` CNI network with `host-local` addresses from this IPv4 CIDR,
    /// gateway on the first address, inside the test's network namespace) for pods that are
    /// not hostNetwork. `None`: hostNetwork pods only.
    pub pod_cidr: Option<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            name: "sscsi-node".into(),
            sync_frequency: Duration::from_secs(10),
            pod_cidr: None,
        }
    }
}

/// A running containerd + kubelet pair. Call [`Node::stop`] to stop it and check that nothing is
/// left; dropping it stops it too, without the check.
pub struct Node {
    kubelet: Option<ChildGuard>,
    containerd: Option<ChildGuard>,
    kubelet_cmd: Vec<String>,
    kubelet_restarts: u32,
    name: String,
    node_ip: Ipv4Addr,
    cgroups: CgroupRoot,
    sysctls: Vec<(PathBuf, String)>,
    client: Client,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    keep_logs: Option<PathBuf>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("dir", &self.path)
            .finish()
    }
}

/// The image every test pod runs (busybox-static, `/bin/sh` and the applets).
pub fn workload_image() -> &'static str {
    versions::get("NODE_WORKLOAD_IMAGE")
}

impl Node {
    /// Starts containerd and kubelet against `cp` and waits until the node is Ready. Returns
    /// `None` (outside CI) when kubelet or the node images are not installed; under `CI=true` a
    /// missing peer panics with the install command.
    pub async fn start(
        cp: &ControlPlane,
        node_ip: Ipv4Addr,
        options: NodeOptions,
    ) -> Option<Result<Self, NodeError>> {
        let kubelet = peer(Peer::Kubelet)?;
        let images = peer(Peer::NodeImages)?;
        let _containerd = peer(Peer::Containerd)?;
        Some(Self::start_with(cp, &kubelet, images.parent()?, node_ip, options).await)
    }

    async fn start_with(
        cp: &ControlPlane,
        kubelet_bin: &Path,
        images: &Path,
        node_ip: Ipv4Addr,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        recover_crashed_nodes();
        let dir = tempfile::Builder::new()
            .prefix("node-")
            .tempdir()
            .map_err(io("creating the node folder"))?;
        let d = dir.path().to_path_buf();
        let cgroups = CgroupRoot::new(format!("sscsi-node-{}", std::process::id()));
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .map(|s| {
                let p = Path::new("/proc/sys").join(s);
                let v = std::fs::read_to_string(&p).map_err(io(format!("reading {s}")))?;
                Ok((p, v.trim().to_owned()))
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let mut node = Self {
            kubelet: None,
            containerd: None,
            kubelet_cmd: Vec::new(),
            kubelet_restarts: 0,
            name: options.name.clone(),
            node_ip,
            cgroups,
            sysctls,
            client: cp.client(),
            path: d.clone(),
            dir: Some(dir),
            keep_logs: None,
        };
        // From here on a failure drops `node`, which undoes what was done so far; if the test
        // process dies instead, the next node's start undoes it from this record.
        std::fs::write(state_file(std::process::id()), node.record())
            .map_err(io("writing the node's recovery record"))?;
        node.cgroups
            .create()
            .map_err(io("creating the node's cgroups"))?;

        // --- containerd ---
        for sub in [
            "containerd/root",
            "containerd/state",
            "containerd/opt",
            "cni",
            "pod-logs",
        ] {
            std::fs::create_dir_all(d.join(sub)).map_err(io(format!("creating {sub}")))?;
        }
        let cni = match &options.pod_cidr {
            None => serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "loopback-only",
                "plugins": [{ "type": "loopback" }],
            }),
            Some(cidr) => serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "pods",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": cidr }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": d.join("cni-ipam"),
                    },
                }],
            }),
        };
        std::fs::write(d.join("cni/10-pods.conflist"), cni.to_string())
            .map_err(io("writing the CNI config"))?;
        let sock = d.join("containerd.sock");
        std::fs::write(d.join("containerd.toml"), containerd_config(&d))
            .map_err(io("writing containerd.toml"))?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(d.join("containerd.toml"));
        node.cgroups
            .join_daemons(&mut cmd)
            .map_err(io("placing containerd in the node's cgroup"))?;
        node.containerd = Some(
            ChildGuard::spawn("containerd", cmd, &d.join("containerd.log"))
                .map_err(io("starting containerd"))?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() || node.ctr(&["version"]).is_err() {
            if Instant::now() > deadline
                || !node.containerd.as_mut().is_some_and(|c| c.is_running())
            {
                return Err(NodeError::Timeout {
                    what: "containerd serving its socket".into(),
                    timeout: Duration::from_secs(30),
                    detail: node.containerd_log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for image in ["pause.tar", "workload.tar"] {
            let path = images.join(image);
            node.ctr(&["images", "import", &path.to_string_lossy()])?;
        }

        // --- kubelet ---
        std::fs::write(
            d.join("kubelet.yaml"),
            kubelet_config(&d, node.cgroups.name(), options.sync_frequency),
        )
        .map_err(io("writing kubelet.yaml"))?;
        node.kubelet_cmd = vec![
            kubelet_bin.to_string_lossy().into_owned(),
            format!("--config={}", d.join("kubelet.yaml").display()),
            format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            format!("--root-dir={}", d.join("kubelet").display()),
            format!("--node-ip={node_ip}"),
            format!("--hostname-override={}", options.name),
            "--v=2".into(),
        ];
        node.spawn_kubelet()?;
        node.wait_ready().await?;
        Ok(node)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's IP (an extra address on the namespace's `lo`).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// kubelet's root dir.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.path.join("kubelet")
    }

    /// kubelet's plugin-registration folder (`<root>/plugins_registry`).
    pub fn plugins_registry_dir(&self) -> PathBuf {
        self.kubelet_dir().join("plugins_registry")
    }

    /// The folder where a CSI driver's socket goes (`<root>/plugins/<driver>`), created.
    pub fn plugin_dir(&self, driver: &str) -> Result<PathBuf, NodeError> {
        let p = self.kubelet_dir().join("plugins").join(driver);
        std::fs::create_dir_all(&p).map_err(io("creating the plugin folder"))?;
        Ok(p)
    }

    /// A scratch folder inside the node's folder (created), for the test's own files.
    pub fn scratch(&self, name: &str) -> Result<PathBuf, NodeError> {
        let p = self.path.join("scratch").join(name);
        std::fs::create_dir_all(&p).map_err(io("creating a scratch folder"))?;
        Ok(p)
    }

    /// When the node stops, copy every `*.log` file of its folder (kubelet, containerd, pod logs,
    /// and whatever the test wrote under [`Self::scratch`]) to `dir` first, for post-mortems.
    pub fn keep_logs_in(&mut self, dir: PathBuf) {
        self.keep_logs = Some(dir);
    }

    /// The last bytes of kubelet's log.
    pub fn kubelet_log(&self) -> String {
        self.kubelet
            .as_ref()
            .map(|k| k.log_tail(12_000))
            .unwrap_or_default()
    }

    /// Lines of kubelet's log (all restarts) containing `needle`.
    pub fn kubelet_log_lines(&self, needle: &str) -> Vec<String> {
        (0..=self.kubelet_restarts)
            .flat_map(|i| std::fs::read_to_string(self.path.join(format!("kubelet.{i}.log"))))
            .flat_map(|t| {
                t.lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn containerd_log(&self) -> String {
        self.containerd
            .as_ref()
            .map(|k| k.log_tail(6_000))
            .unwrap_or_default()
    }

    /// Stops kubelet (SIGTERM) and starts it again with the same configuration; waits until the
    /// node is Ready again. Pods keep running meanwhile (containerd is untouched).
    pub async fn restart_kubelet(&mut self) -> Result<(), NodeError> {
        if let Some(mut k) = self.kubelet.take() {
            k.stop(Duration::from_secs(10));
        }
        self.kubelet_restarts += 1;
        self.spawn_kubelet()?;
        // The Ready condition may still be set from before; wait for a fresh heartbeat.
        let since = k8s_openapi::jiff::Timestamp::now();
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        let api: Api<K8sNode> = Api::all(self.client.clone());
        while Instant::now() < deadline {
            if let Ok(n) = api.get(&self.name).await
                && ready_since(&n, since)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(NodeError::Timeout {
            what: "the node reporting Ready after the kubelet restart".into(),
            timeout: NODE_READY_TIMEOUT,
            detail: self.kubelet_log(),
        })
    }

    fn spawn_kubelet(&mut self) -> Result<(), NodeError> {
        let mut cmd = Command::new(&self.kubelet_cmd[0]);
        cmd.args(&self.kubelet_cmd[1..]);
        self.cgroups
            .join_daemons(&mut cmd)
            .map_err(io("placing kubelet in the node's cgroup"))?;
        let log = self
            .path
            .join(format!("kubelet.{}.log", self.kubelet_restarts));
        self.kubelet =
            Some(ChildGuard::spawn("kubelet", cmd, &log).map_err(io("starting kubelet"))?);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), NodeError> {
        let api: Api<K8sNode> = Api::all(self.client.clone());
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        while Instant::now() < deadline {
            if !self.kubelet.as_mut().is_some_and(|k| k.is_running()) {
                break;
            }
            if let Ok(n) = api.get(&self.name).await
                && condition(&n, "Ready") == Some("True")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(NodeError::Timeout {
            what: format!("node {} becoming Ready", self.name),
            timeout: NODE_READY_TIMEOUT,
            detail: format!("{}\n{}", self.kubelet_log(), self.containerd_log()),
        })
    }

    /// Creates `pod` (its `spec.nodeName` is set to this node) and waits until it runs with
    /// every container ready. On timeout the error carries the pod's status, its Events and the
    /// end of kubelet's log.
    pub async fn run_pod(&self, pod: Pod, timeout: Duration) -> Result<Pod, NodeError> {
        let pod = self.create_pod(pod).await?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.wait_running(&ns, &name, timeout).await
    }

    /// Creates `pod` bound to this node (no scheduler runs) without waiting.
    pub async fn create_pod(&self, mut pod: Pod) -> Result<Pod, NodeError> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(self.name.clone());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        Ok(api.create(&PostParams::default(), &pod).await?)
    }

    /// Waits until the pod runs with every container ready.
    pub async fn wait_running(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Pod, NodeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + timeout;
        loop {
            let pod = api.get(name).await?;
            if pod_ready(&pod) {
                return Ok(pod);
            }
            if Instant::now() > deadline {
                return Err(NodeError::Timeout {
                    what: format!("pod {ns}/{name} running"),
                    timeout,
                    detail: format!(
                        "status: {}\nevents:\n{}\n{}",
                        serde_json::to_string(&pod.status).unwrap_or_default(),
                        self.event_messages(ns, name).await.join("\n"),
                        self.kubelet_log()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes a pod and waits until kubelet has stopped it, unmounted its volumes and removed
    /// the object.
    pub async fn delete_pod(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let deadline = Instant::now() + timeout;
        loop {
            match api.get_opt(name).await? {
                None => return Ok(()),
                Some(_) if Instant::now() > deadline => {
                    return Err(NodeError::Timeout {
                        what: format!("pod {ns}/{name} going away"),
                        timeout,
                        detail: self.kubelet_log(),
                    });
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The messages of the Events about a pod (`reason: message`), oldest first.
    pub async fn event_messages(&self, ns: &str, pod: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        api.list(&lp)
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.reason.unwrap_or_default(),
                            e.message.unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until the pod's Event messages satisfy `until` (Events are sent in
    /// the background, a moment after the call that raised them); returns the last ones seen.
    pub async fn event_messages_until(
        &self,
        ns: &str,
        pod: &str,
        timeout: Duration,
        until: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.event_messages(ns, pod).await;
            if until(&events) || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `argv` inside a running container of `pod` (through containerd, as `kubectl exec`
    /// would through kubelet) and returns its stdout.
    pub fn exec(&self, pod: &Pod, container: &str, argv: &[&str]) -> Result<String, NodeError> {
        let id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .and_then(|c| c.container_id.as_deref())
            .and_then(|id| id.strip_prefix("containerd://"))
            .ok_or_else(|| NodeError::Command {
                what: format!("exec in {container}"),
                detail: "the pod status names no containerd container id".into(),
            })?
            .to_owned();
        let exec_id = format!("exec-{}", uuid::Uuid::new_v4().simple());
        let mut args = vec!["tasks", "exec", "--exec-id", &exec_id, &id];
        args.extend_from_slice(argv);
        self.ctr(&args)
    }

    /// What a container of `pod` wrote to stdout and stderr so far (kubelet's CRI log file, with
    /// the timestamp/stream/tag prefix of each line removed), as `kubectl logs` shows it.
    pub fn pod_log(&self, pod: &Pod, container: &str) -> Result<String, NodeError> {
        let meta = &pod.metadata;
        let dir = self.path.join("pod-logs").join(format!(
            "{}_{}_{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default()
        ));
        let file = dir.join(container).join("0.log");
        let text =
            std::fs::read_to_string(&file).map_err(io(format!("reading {}", file.display())))?;
        Ok(text
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Runs `ctr` against this node's containerd in the `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String, NodeError> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.path.join("containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .map_err(io("running ctr"))?;
        if !out.status.success() {
            return Err(NodeError::Command {
                what: format!("ctr {}", args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Mount points below `dir` in this mount namespace.
    pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(dir))
            .collect()
    }

    /// Stops kubelet, every container and containerd, unmounts what is left, removes the cgroups
    /// and the folder and restores the sysctls; then checks that nothing of the node remains.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.teardown();
        let mut left = Vec::new();
        let procs = self.cgroups.procs_except(&[]);
        if !procs.is_empty() {
            left.push(format!("processes still in the node's cgroups: {procs:?}"));
        }
        let mounts = Self::mounts_under(&self.path);
        if !mounts.is_empty() {
            left.push(format!("mounts: {mounts:?}"));
        }
        for p in self.cgroups.existing() {
            left.push(format!("cgroup {}", p.display()));
        }
        for (p, v) in &self.sysctls {
            let now = std::fs::read_to_string(p).unwrap_or_default();
            if now.trim() != v {
                left.push(format!(
                    "sysctl {} is {} (was {v})",
                    p.display(),
                    now.trim()
                ));
            }
        }
        if self.path.exists() {
            left.push(format!("folder {}", self.path.display()));
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Leftovers(left.join("\n")))
        }
    }

    fn teardown(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop(Duration::from_secs(10));
        }
        // Containers and shims first (they hold mounts), then containerd, then stragglers.
        self.cgroups.kill_except(&["daemons"]);
        if let Some(mut c) = self.containerd.take() {
            c.stop(Duration::from_secs(10));
        }
        self.cgroups.kill_except(&[]);
        let mut mounts = Self::mounts_under(&self.path);
        mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in mounts {
            let _ = umount_detach(&m);
        }
        self.cgroups.remove();
        if let Some(keep) = &self.keep_logs {
            copy_logs(&self.path, &self.path, keep);
        }
        for (p, v) in &self.sysctls {
            let _ = std::fs::write(p, v);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
        let _ = std::fs::remove_file(state_file(std::process::id()));
    }

    /// What [`recover_crashed_nodes`] needs to undo this node: folder, cgroup root, sysctls.
    fn record(&self) -> String {
        let sysctls: BTreeMap<String, String> = self
            .sysctls
            .iter()
            .map(|(p, v)| (p.display().to_string(), v.clone()))
            .collect();
        serde_json::json!({
            "dir": self.path,
            "cgroup_root": self.cgroups.name(),
            "sysctls": sysctls,
        })
        .to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.dir.is_some() {
            self.teardown();
        }
    }
}

fn condition<'a>(node: &'a K8sNode, kind: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

fn ready_since(node: &K8sNode, since: k8s_openapi::jiff::Timestamp) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| {
            c.status == "True" && c.last_heartbeat_time.as_ref().is_some_and(|t| t.0 > since)
        })
}

/// Running, and every container ready.
pub fn pod_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .as_ref()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}
