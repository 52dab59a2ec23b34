//! `secrets-store status <pod> -n <ns>`: what the driver recorded about a pod's secrets-store
//! volumes, read from the API server: per mount the class, the objects at their versions
//! (SecretProviderClassPodStatus), when they last changed, the driver's last error (its Events
//! on the pod) and when the next refresh is due (the driver DaemonSet's rotation flags).
//! Nothing here reads a secret value: the pod status holds IDs and versions only.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use secrets_store_api::v1::SecretProviderClassPodStatus;
use serde::Serialize;

/// The CSI driver name whose volumes are reported.
pub const DRIVER: &str = "secrets-store.csi.k8s.io";

/// Event reasons the driver publishes on pods.
const DRIVER_REASONS: &[&str] = &[
    "FailedToMountSecretsStore",
    "MountRotationFailed",
    "FailedToCreateSecret",
    "SecretObjectNotMounted",
    "RolloutRestartFailed",
];
/// Of those, the ones that mean a fetch (mount or refresh) failed.
const REFRESH_FAILURES: &[&str] = &["FailedToMountSecretsStore", "MountRotationFailed"];

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("pod {namespace}/{name}: {source}")]
    Pod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "listing SecretProviderClassPodStatus in {namespace} (needs list on secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io): {source}"
    )]
    PodStatuses {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing Events in {namespace} (needs list on events.events.k8s.io): {source}")]
    Events {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// What the driver's DaemonSet says about rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Rotation {
    /// Rotation on, refreshing volumes older than `interval_secs`; `source` says where that
    /// was read.
    On { interval_secs: u64, source: String },
    /// Rotation off: mounted contents are never refreshed.
    Off { source: String },
    /// Not knowable (no readable driver DaemonSet and no `--rotation-poll-interval` given).
    Unknown { reason: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectVersion {
    pub id: String,
    pub version: String,
}

/// One secrets-store volume of the pod.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountStatus {
    pub volume: String,
    pub class: String,
    /// Whether the driver recorded the volume as mounted (a SecretProviderClassPodStatus
    /// exists and says so).
    pub mounted: bool,
    pub pod_status: Option<String>,
    pub objects: Vec<ObjectVersion>,
    /// When the driver last wrote the pod status, i.e. the objects or versions last changed
    /// (the driver writes only on change), RFC 3339.
    pub last_changed: Option<String>,
    /// In words: when the next refresh is due.
    pub next_refresh: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverEvent {
    pub time: Option<String>,
    pub type_: String,
    pub reason: String,
    pub note: String,
    pub count: i32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    pub pod: String,
    pub node: Option<String>,
    pub rotation: Rotation,
    pub mounts: Vec<MountStatus>,
    /// The newest failed mount or refresh, if it is newer than every recorded change.
    pub last_refresh_error: Option<DriverEvent>,
    pub events: Vec<DriverEvent>,
}

/// Reads everything the report needs. `rotation_override`: the interval given on the command
/// line, used instead of looking for the driver's DaemonSet.
pub async fn collect(
    client: &kube::Client,
    namespace: &str,
    pod_name: &str,
    rotation_override: Option<Duration>,
) -> Result<Report, StatusError> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod_name)
        .await
        .map_err(|source| StatusError::Pod {
            namespace: namespace.into(),
            name: pod_name.into(),
            source,
        })?;
    let uid = pod.uid().unwrap_or_default();
    let statuses = Api::<SecretProviderClassPodStatus>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|source| StatusError::PodStatuses {
            namespace: namespace.into(),
            source,
        })?
        .items
        .into_iter()
        .filter(|s| {
            s.status.as_ref().is_some_and(|st| st.pod_name == pod_name)
                && (s.owner_references().is_empty()
                    || s.owner_references().iter().any(|o| o.uid == uid))
        })
        .collect::<Vec<_>>();
    let mut events: Vec<DriverEvent> = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|source| StatusError::Events {
            namespace: namespace.into(),
            source,
        })?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Pod")
                    && r.name.as_deref() == Some(pod_name)
                    && (r.uid.is_none() || r.uid.as_deref() == Some(uid.as_str()))
            }) && e
                .reason
                .as_deref()
                .is_some_and(|r| DRIVER_REASONS.contains(&r))
        })
        .map(|e| DriverEvent {
            time: event_time(&e).map(|t| t.to_string()),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            note: e.note.clone().unwrap_or_default(),
            count: e.series.as_ref().map_or(1, |s| s.count),
        })
        .collect();
    events.sort_by(|a, b| a.time.cmp(&b.time));

    let rotation = match rotation_override {
        Some(i) => Rotation::On {
            interval_secs: i.as_secs(),
            source: "--rotation-poll-interval".into(),
        },
        None => driver_rotation(client).await,
    };

    let volumes: Vec<(String, String)> = pod
        .spec
        .as_ref()
        .map(|s| s.volumes.clone().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            let csi = v.csi?;
            (csi.driver == DRIVER).then(|| {
                let class = csi
                    .volume_attributes
                    .unwrap_or_default()
                    .get("secretProviderClass")
                    .cloned()
                    .unwrap_or_default();
                (v.name, class)
            })
        })
        .collect();
    let mut mounts = Vec::new();
    let mut newest_change: Option<Timestamp> = None;
    for (volume, class) in volumes {
        let want = format!("/volumes/kubernetes.io~csi/{volume}/mount");
        let found = statuses.iter().find(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.secret_provider_class_name == class && st.target_path.ends_with(&want)
            })
        });
        let st = found.and_then(|s| s.status.clone());
        let last_changed = found.and_then(last_write);
        if let Some(t) = last_changed {
            newest_change = newest_change.max(Some(t));
        }
        let mounted = st.as_ref().is_some_and(|s| s.mounted);
        mounts.push(MountStatus {
            next_refresh: next_refresh(&rotation, mounted),
            volume,
            class,
            mounted,
            pod_status: found.map(ResourceExt::name_any),
            objects: st
                .map(|s| {
                    s.objects
                        .into_iter()
                        .map(|o| ObjectVersion {
                            id: o.id,
                            version: o.version,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            last_changed: last_changed.map(|t| t.to_string()),
        });
    }
    let last_refresh_error = events
        .iter()
        .rev()
        .find(|e| REFRESH_FAILURES.contains(&e.reason.as_str()))
        .filter(|e| {
            let t = e.time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
            newest_change.is_none_or(|c| t.is_none_or(|t| t >= c))
        })
        .cloned();
    Ok(Report {
        namespace: namespace.into(),
        pod: pod_name.into(),
        node: pod.spec.and_then(|s| s.node_name),
        rotation,
        mounts,
        last_refresh_error,
        events,
    })
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The newest write of a pod status (its managed fields), else its creation.
fn last_write(s: &SecretProviderClassPodStatus) -> Option<Timestamp> {
    s.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
        .or_else(|| s.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The rotation flags of the driver's DaemonSet: the one whose container runs with
/// `--nodeid` and a `--drivername` of [`DRIVER`] (or none, the default), in any namespace.
async fn driver_rotation(client: &kube::Client) -> Rotation {
    let list = match Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l,
        Err(e) => {
            return Rotation::Unknown {
                reason: format!(
                    "the driver's DaemonSet cannot be read ({e}); pass --rotation-poll-interval to say"
                ),
            };
        }
    };
    for ds in list.items {
        let containers = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        for c in containers {
            let args: Vec<String> = c
                .command
                .unwrap_or_default()
                .into_iter()
                .chain(c.args.unwrap_or_default())
                .collect();
            let flag = |name: &str| {
                args.iter()
                    .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
            };
            if !args.iter().any(|a| a.starts_with("--nodeid")) {
                continue;
            }
            if flag("drivername").is_some_and(|d| d != DRIVER) {
                continue;
            }
            let source = format!(
                "DaemonSet {}/{}",
                ds.namespace().unwrap_or_default(),
                ds.name_any()
            );
            let on = args.iter().any(|a| a == "--enable-secret-rotation")
                || flag("enable-secret-rotation").is_some_and(|v| v == "true");
            if !on {
                return Rotation::Off { source };
            }
            let interval = flag("rotation-poll-interval").unwrap_or_else(|| "2m".into());
            return match daemon::parse_go_duration(&interval) {
                Ok(d) => Rotation::On {
                    interval_secs: d.as_secs(),
                    source,
                },
                Err(e) => Rotation::Unknown {
                    reason: format!("{source} has --rotation-poll-interval={interval}: {e}"),
                },
            };
        }
    }
    Rotation::Unknown {
        reason: "no secrets-store driver DaemonSet found; pass --rotation-poll-interval to say"
            .into(),
    }
}

fn next_refresh(rotation: &Rotation, mounted: bool) -> String {
    if !mounted {
        return "not mounted yet: kubelet retries the mount".into();
    }
    match rotation {
        Rotation::On { interval_secs, .. } => format!(
            "at kubelet's first republish (about every minute) once the contents are {} old; the driver does not record refreshes that changed nothing, so the exact time is not known here",
            human(*interval_secs)
        ),
        Rotation::Off { .. } => "never: rotation is off on the driver".into(),
        Rotation::Unknown { .. } => "unknown (driver rotation settings unknown)".into(),
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Report {
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Pod {}/{} on node {}",
            self.namespace,
            self.pod,
            self.node.as_deref().unwrap_or("(not scheduled)")
        );
        let _ = match &self.rotation {
            Rotation::On {
                interval_secs,
                source,
            } => writeln!(
                out,
                "Rotation: on, every {} ({source})",
                human(*interval_secs)
            ),
            Rotation::Off { source } => writeln!(out, "Rotation: off ({source})"),
            Rotation::Unknown { reason } => writeln!(out, "Rotation: unknown: {reason}"),
        };
        if self.mounts.is_empty() {
            let _ = writeln!(out, "No {DRIVER} volumes.");
        }
        for m in &self.mounts {
            let _ = writeln!(
                out,
                "\nVolume {} (SecretProviderClass {})",
                m.volume, m.class
            );
            let _ = writeln!(
                out,
                "  mounted:      {}{}",
                m.mounted,
                m.pod_status
                    .as_ref()
                    .map(|s| format!(" (SecretProviderClassPodStatus {s})"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                out,
                "  last changed: {}",
                m.last_changed.as_deref().unwrap_or("never recorded")
            );
            let _ = writeln!(out, "  next refresh: {}", m.next_refresh);
            if !m.objects.is_empty() {
                let _ = writeln!(out, "  objects:");
                let width = m.objects.iter().map(|o| o.id.len()).max().unwrap_or(0);
                for o in &m.objects {
                    let _ = writeln!(out, "    {:width$}  {}", o.id, o.version);
                }
            }
        }
        let _ = writeln!(out);
        match &self.last_refresh_error {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "Last refresh error ({}, {}): {}",
                    e.time.as_deref().unwrap_or("time unknown"),
                    e.reason,
                    e.note
                );
            }
            None => {
                let _ = writeln!(out, "Last refresh error: none since the last change");
            }
        }
        if !self.events.is_empty() {
            let _ = writeln!(out, "Driver events:");
            for e in &self.events {
                let _ = writeln!(
                    out,
                    "  {} {} {}{}: {}",
                    e.time.as_deref().unwrap_or("-"),
                    e.type_,
                    e.reason,
                    if e.count > 1 {
                        format!(" (x{})", e.count)
                    } else {
                        String::new()
                    },
                    e.note
                );
            }
        }
        out
    }
}
