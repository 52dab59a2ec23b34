//! Command-line flags (upstream names and defaults) and the typed config built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Flags as upstream's `secrets-store-csi-driver` (Go `flag` style `--name=value` works; bare
/// booleans mean true).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "secrets-store-csi-driver",
    about = "Secrets Store CSI node plugin",
    disable_version_flag = true
)]
pub struct DriverArgs {
    /// CSI endpoint: unix:///path/csi.sock (or unix://path, made absolute as upstream).
    #[arg(long, default_value = "unix://tmp/csi.sock", env = "CSI_ENDPOINT")]
    pub endpoint: String,
    /// Name of the driver.
    #[arg(long, default_value = crate::DEFAULT_DRIVER_NAME)]
    pub drivername: String,
    /// Node name (the DaemonSet passes spec.nodeName).
    #[arg(long, default_value = "", env = "KUBE_NODE_NAME")]
    pub nodeid: String,
    /// Provider socket directory, searched last.
    #[arg(long, default_value = "/var/run/secrets-store-csi-providers")]
    pub provider_volume: PathBuf,
    /// Comma-separated provider socket directories, searched first.
    #[arg(
        long,
        default_value = "/etc/kubernetes/secrets-store-csi-providers",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    pub additional_provider_volume_paths: String,
    /// Prometheus endpoint (`:8095` listens on every address).
    #[arg(long, default_value = ":8095")]
    pub metrics_addr: String,
    /// Refresh contents on kubelet's republish (CSIDriver requiresRepublish).
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub enable_secret_rotation: bool,
    /// Minimum time between two refreshes of one volume (Go duration: 2m, 30s, 1h30m).
    #[arg(long, default_value = "2m", value_parser = parse_go_duration)]
    pub rotation_poll_interval: Duration,
    /// Call Version on providers periodically and log the result.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub provider_health_check: bool,
    #[arg(long, default_value = "2m", value_parser = parse_go_duration)]
    pub provider_health_check_interval: Duration,
    /// Largest provider response accepted, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_call_recv_msg_size: usize,
    /// JSON log lines.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub log_format_json: bool,
    /// klog-style verbosity (0 = info, 4+ = debug, 6+ = trace).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Print the version as JSON and exit.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub version: bool,
    /// Accepted for compatibility; only Prometheus exists.
    #[arg(long, default_value = "Prometheus")]
    pub metrics_backend: String,
    /// Accepted for compatibility; pprof has no Rust counterpart and is ignored.
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub enable_pprof: bool,
    #[arg(long, default_value_t = 6065)]
    pub pprof_port: u16,
    /// Kubeconfig for the API server (default: in-cluster config, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Read SecretProviderClasses from this YAML file instead of the API server (demo / no
    /// cluster). Pod status, Secret sync and Events are then off.
    #[arg(long)]
    pub class_file: Option<PathBuf>,
    /// kubelet's plugin-registration folder (`<kubelet root>/plugins_registry`). When set, the
    /// driver registers itself with kubelet through `<dir>/<drivername>-reg.sock` and no
    /// node-driver-registrar sidecar is needed. Unset: registration is left to a sidecar.
    #[arg(long)]
    pub plugin_registration_dir: Option<PathBuf>,
    /// The CSI socket path as kubelet sees it (host path), told to kubelet at registration.
    /// Default: the path of --endpoint.
    #[arg(long)]
    pub kubelet_registration_path: Option<PathBuf>,
    /// Serve a liveness endpoint here (`:9808` or host:port): `GET /healthz` runs a CSI Probe
    /// through the driver's own socket, as the livenessprobe sidecar does. Empty: off (the
    /// sidecar's job).
    #[arg(long, default_value = "")]
    pub health_addr: String,
    /// Use a plain directory instead of tmpfs (no privileges needed; secrets land on disk).
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub no_tmpfs: bool,
    /// Async worker threads (0: 2, whatever the core count; fs work runs on the blocking pool).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
    /// Let SecretProviderClasses annotated `secrets-store.csi.k8s.io/on-change: rollout-restart`
    /// restart the pod's owning Deployment/StatefulSet/DaemonSet when rotation changes their
    /// objects (needs get on replicasets and get/patch on the workloads; chart
    /// `rotation.restartOwners`).
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub rotation_restart_owners: bool,
    /// Least time between two restarts of one workload by rotation (Go duration).
    #[arg(long, default_value = "5m", value_parser = parse_go_duration)]
    pub rotation_restart_min_interval: Duration,
    /// Without a command the driver runs as the CSI node plugin.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-shot commands of the driver binary (so that its image serves the chart's hooks).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The SecretProviderClass and SecretProviderClassPodStatus CRDs built into this binary.
    #[command(subcommand)]
    Crds(CrdsCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CrdsCommand {
    /// Install or upgrade the CRDs by server-side apply and wait until they are served (the
    /// chart's pre-install/pre-upgrade hook). Uses the in-cluster config, or --kubeconfig.
    Apply {
        /// How long to wait for each CRD to become Established (Go duration).
        #[arg(long, default_value = "60s", value_parser = parse_go_duration)]
        timeout: Duration,
    },
    /// Print the CRDs as YAML.
    Print,
}

/// Where the CSI server listens (`--endpoint`), and the shared parsers the flags use.
pub use daemon::{Endpoint, parse_endpoint, parse_go_duration};

/// The validated configuration the library runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub driver_name: String,
    pub node_id: String,
    pub provider_dirs: Vec<PathBuf>,
    pub rotation: Option<Duration>,
    pub max_recv_msg_size: usize,
    /// Used when kubelet sends no grpc-timeout (kubelet's CSI calls use 2 minutes).
    pub default_timeout: Duration,
    /// `--rotation-restart-owners`: the least time between two restarts of one workload, when
    /// rollout restarts are allowed.
    pub restart_owners: Option<Duration>,
}

impl Config {
    /// A config for tests, the demo and benchmarks.
    pub fn new(node_id: impl Into<String>, provider_dirs: Vec<PathBuf>) -> Self {
        Self {
            driver_name: crate::DEFAULT_DRIVER_NAME.into(),
            node_id: node_id.into(),
            provider_dirs,
            rotation: None,
            max_recv_msg_size: 4 * 1024 * 1024,
            default_timeout: Duration::from_secs(120),
            restart_owners: None,
        }
    }
}

impl DriverArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        if self.nodeid.is_empty() {
            anyhow::bail!("--nodeid is required (the DaemonSet passes --nodeid=$(KUBE_NODE_NAME))");
        }
        if self.drivername.is_empty() {
            anyhow::bail!("--drivername must not be empty");
        }
        if self.provider_health_check && self.provider_health_check_interval.is_zero() {
            anyhow::bail!(
                "--provider-health-check-interval=0: the interval must be above zero (e.g. 2m), or leave --provider-health-check off"
            );
        }
        let mut provider_dirs: Vec<PathBuf> = self
            .additional_provider_volume_paths
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        provider_dirs.push(self.provider_volume.clone());
        Ok(Config {
            driver_name: self.drivername.clone(),
            node_id: self.nodeid.clone(),
            provider_dirs,
            rotation: self
                .enable_secret_rotation
                .then_some(self.rotation_poll_interval),
            max_recv_msg_size: self.max_call_recv_msg_size,
            default_timeout: Duration::from_secs(120),
            restart_owners: self
                .rotation_restart_owners
                .then_some(self.rotation_restart_min_interval),
        })
    }

    /// What to tell kubelet at registration, when built-in registration is on
    /// (`--plugin-registration-dir`).
    pub fn registration(
        &self,
    ) -> anyhow::Result<Option<(PathBuf, crate::registration::RegistrationInfo)>> {
        let Some(dir) = &self.plugin_registration_dir else {
            return Ok(None);
        };
        let endpoint = match (&self.kubelet_registration_path, self.endpoint()?) {
            (Some(path), _) => path.clone(),
            (None, Endpoint::Unix(path)) => path,
            (None, Endpoint::Tcp(addr)) => anyhow::bail!(
                "--plugin-registration-dir needs a unix socket: --endpoint=tcp://{addr} cannot be registered with kubelet; use unix:// or set --kubelet-registration-path"
            ),
        };
        if !endpoint.is_absolute() {
            anyhow::bail!(
                "--kubelet-registration-path={}: must be an absolute path (the CSI socket as kubelet sees it, e.g. /var/lib/kubelet/plugins/csi-secrets-store/csi.sock)",
                endpoint.display()
            );
        }
        Ok(Some((
            dir.clone(),
            crate::registration::RegistrationInfo {
                driver_name: self.drivername.clone(),
                endpoint,
            },
        )))
    }

    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        parse_endpoint(&self.endpoint).map_err(|e| anyhow::anyhow!("--endpoint: {e}"))
    }

    pub fn metrics_addr(&self) -> anyhow::Result<SocketAddr> {
        listen_addr("--metrics-addr", &self.metrics_addr)
    }

    /// The liveness endpoint's address, when `--health-addr` is set.
    pub fn health_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.health_addr.is_empty() {
            return Ok(None);
        }
        listen_addr("--health-addr", &self.health_addr).map(Some)
    }
}

/// `host:port`, or `:port` for every address.
fn listen_addr(flag: &str, a: &str) -> anyhow::Result<SocketAddr> {
    let full = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_owned()
    };
    full.parse()
        .map_err(|e| anyhow::anyhow!("{flag}={a}: {e} (expected host:port or :port)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_flags() -> anyhow::Result<()> {
        let args = |extra: &[&str]| {
            let mut v = vec!["driver", "--nodeid=n1", "--endpoint=unix:///csi/csi.sock"];
            v.extend_from_slice(extra);
            DriverArgs::try_parse_from(v)
        };
        assert!(args(&[])?.registration()?.is_none(), "off unless asked for");
        let (dir, info) = args(&["--plugin-registration-dir=/registration"])?
            .registration()?
            .expect("on");
        assert_eq!(dir, PathBuf::from("/registration"));
        assert_eq!(info.endpoint, PathBuf::from("/csi/csi.sock"));
        assert_eq!(info.driver_name, "secrets-store.csi.k8s.io");
        let (_, info) = args(&[
            "--plugin-registration-dir=/registration",
            "--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
        ])?
        .registration()?
        .expect("on");
        assert_eq!(
            info.endpoint,
            PathBuf::from("/var/lib/kubelet/plugins/csi-secrets-store/csi.sock")
        );
        let err = args(&[
            "--plugin-registration-dir=/registration",
            "--kubelet-registration-path=relative/csi.sock",
        ])?
        .registration()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--kubelet-registration-path") && err.contains("absolute"),
            "{err}"
        );
        let err = DriverArgs::try_parse_from([
            "driver",
            "--nodeid=n1",
            "--endpoint=tcp://127.0.0.1:10000",
            "--plugin-registration-dir=/registration",
        ])?
        .registration()
        .unwrap_err()
        .to_string();
        assert!(err.contains("unix socket"), "{err}");
        Ok(())
    }

    /// Every duration flag goes through the checked parser: a value too large for a duration is
    /// a flag error, not a panic, and Go's forms parse (single-dash flags too, as Go's `flag`).
    #[test]
    fn duration_flags_are_checked() -> anyhow::Result<()> {
        let parse = |args: &[&str]| {
            DriverArgs::try_parse_from(daemon::normalize_args(
                std::iter::once("driver".to_owned()).chain(args.iter().map(|s| (*s).to_owned())),
            ))
        };
        for args in [
            &["--rotation-poll-interval=99999999999999999999h"][..],
            &["--provider-health-check-interval=99999999999999999999h"],
            &["crds", "apply", "--timeout=99999999999999999999h"],
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains("too large"), "{args:?}: {e}");
        }
        let a = parse(&["-rotation-poll-interval=1m30s", "-nodeid=n1", "-v=4"])?;
        assert_eq!(a.rotation_poll_interval, Duration::from_secs(90));
        assert_eq!((a.nodeid.as_str(), a.verbosity), ("n1", 4));
        let e = parse(&["--endpoint=udp://x"])?
            .endpoint()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--endpoint") && e.contains("unix://"), "{e}");
        Ok(())
    }

    #[test]
    fn upstream_style_flags() -> anyhow::Result<()> {
        let a = DriverArgs::try_parse_from([
            "secrets-store-csi-driver",
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=node-1",
            "--provider-volume=/var/run/secrets-store-csi-providers",
            "--additional-provider-volume-paths=/etc/a,/etc/b",
            "--enable-secret-rotation=true",
            "--rotation-poll-interval=30s",
            "--metrics-addr=:8095",
            "--provider-health-check",
            "-v=5",
        ])?;
        let c = a.config()?;
        assert_eq!(
            c.provider_dirs,
            [
                PathBuf::from("/etc/a"),
                "/etc/b".into(),
                "/var/run/secrets-store-csi-providers".into()
            ]
        );
        assert_eq!(c.rotation, Some(Duration::from_secs(30)));
        assert!(a.provider_health_check);
        assert_eq!(a.verbosity, 5);
        assert_eq!(a.endpoint()?, Endpoint::Unix("/csi/csi.sock".into()));
        assert_eq!(
            parse_endpoint("unix://tmp/csi.sock")?,
            Endpoint::Unix("/tmp/csi.sock".into())
        );
        assert_eq!(a.metrics_addr()?.port(), 8095);
        Ok(())
    }

    /// `tokio::time::interval` panics on a zero period: the flag is refused up front (a huge
    /// one is fine: main sleeps between checks, and `sleep` saturates).
    #[test]
    fn a_zero_health_check_interval_is_a_clear_error() -> anyhow::Result<()> {
        let parse = |extra: &str| {
            DriverArgs::try_parse_from(["driver", "--nodeid=n1", "--provider-health-check", extra])
        };
        let e = parse("--provider-health-check-interval=0")?
            .config()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("--provider-health-check-interval=0") && e.contains("above zero"),
            "{e}"
        );
        assert!(
            parse("--provider-health-check-interval=5124095576030431h")?
                .config()
                .is_ok()
        );
        Ok(())
    }

    #[test]
    fn missing_nodeid_is_a_clear_error() -> anyhow::Result<()> {
        let a = DriverArgs::try_parse_from(["secrets-store-csi-driver"])?;
        let e = a.config().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("--nodeid"), "{e}");
        Ok(())
    }
}
