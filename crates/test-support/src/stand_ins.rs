//! What a real cluster has and a test node lacks, kept as small as the tests need:
//!
//! - [`ServiceRelay`]: the `kubernetes` Service's cluster IP reachable from pods (kube-proxy's
//!   job): a TCP relay from an address inside the test's network namespace to the API server;
//! - [`Controllers`]: the parts of kube-controller-manager that installing a chart needs — one
//!   pod per DaemonSet on the node (replaced when the template changes) with the DaemonSet's
//!   status kept current, one pod per Job with the Job's completion recorded, garbage collection
//!   of the pods whose owner is gone, and the `kube-root-ca.crt` ConfigMap in every namespace.
//!
//! Both are tokio tasks that stop when the value is dropped.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{Hash as _, Hasher as _},
    net::SocketAddr,
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        batch::v1::Job,
        core::v1::{ConfigMap, Namespace, Pod},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource as _, ResourceExt as _,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};

/// Relays TCP connections from `listen` to `target` (both inside the test's namespace).
#[derive(Debug)]
pub struct ServiceRelay {
    task: tokio::task::JoinHandle<()>,
    listen: SocketAddr,
}

impl ServiceRelay {
    /// Listens on `listen` (its address must be on an interface, e.g. added to `lo`).
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self { task, listen })
    }

    /// Where it listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }
}

impl Drop for ServiceRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Label the stand-in puts on the pods it creates: the owner's `<kind>/<namespace>/<name>`.
const OWNER_LABEL: &str = "test-support.sscsi/owner";
/// Label with the hash of the template a pod was made from.
const TEMPLATE_LABEL: &str = "test-support.sscsi/template-hash";

/// The DaemonSet, Job, garbage-collection and root-CA controllers for one node.
#[derive(Debug)]
pub struct Controllers {
    task: tokio::task::JoinHandle<()>,
}

impl Controllers {
    /// Starts reconciling every `period` for the node `node`; `ca_pem` goes into each
    /// namespace's `kube-root-ca.crt`.
    pub fn start(client: Client, node: &str, ca_pem: &str, period: Duration) -> Self {
        let node = node.to_owned();
        let ca_pem = ca_pem.to_owned();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = reconcile(&client, &node, &ca_pem).await {
                    eprintln!("test-support controllers: {e}");
                }
                tokio::time::sleep(period).await;
            }
        });
        Self { task }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reconcile(client: &Client, node: &str, ca_pem: &str) -> Result<(), kube::Error> {
    root_ca(client, ca_pem).await?;
    let pods: Api<Pod> = Api::all(client.clone());
    let owned: Vec<Pod> = pods
        .list(&ListParams::default().labels(OWNER_LABEL))
        .await?
        .items;
    let mut owners = BTreeSet::new();
    for ds in Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        owners.insert(owner_key(
            "DaemonSet",
            &ds.namespace().unwrap_or_default(),
            &ds.name_any(),
        ));
        daemon_set(client, node, &ds, &owned).await?;
    }
    for job in Api::<Job>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        owners.insert(owner_key(
            "Job",
            &job.namespace().unwrap_or_default(),
            &job.name_any(),
        ));
        job_pod(client, node, &job, &owned).await?;
    }
    // Garbage collection: pods whose owner is gone.
    for pod in &owned {
        let key = pod.labels().get(OWNER_LABEL).cloned().unwrap_or_default();
        if !owners.contains(&key) && pod.metadata.deletion_timestamp.is_none() {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            ignore_missing(api.delete(&pod.name_any(), &DeleteParams::default()).await)?;
        }
    }
    Ok(())
}

fn owner_key(kind: &str, ns: &str, name: &str) -> String {
    // Label values allow [A-Za-z0-9._-]: kind.namespace.name, with the name's dots kept.
    format!("{kind}.{ns}.{name}")
}

fn template_hash(template: &impl serde::Serialize) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(template)
        .unwrap_or_default()
        .hash(&mut h);
    format!("{:x}", h.finish())
}

async fn root_ca(client: &Client, ca_pem: &str) -> Result<(), kube::Error> {
    for ns in Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        let name = ns.name_any();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
        if api.get_opt("kube-root-ca.crt").await?.is_some() {
            continue;
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("kube-root-ca.crt".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("ca.crt".to_owned(), ca_pem.to_owned())])),
            ..Default::default()
        };
        ignore_conflict(api.create(&PostParams::default(), &cm).await)?;
    }
    Ok(())
}

/// A pod made from `template` for `owner`, bound to `node`.
fn pod_for(
    owner: OwnerReference,
    key: &str,
    hash: &str,
    name: String,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    node: &str,
) -> Pod {
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.name = Some(name);
    meta.owner_references = Some(vec![owner]);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(OWNER_LABEL.into(), key.to_owned());
    labels.insert(TEMPLATE_LABEL.into(), hash.to_owned());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.node_name = Some(node.to_owned());
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn daemon_set(
    client: &Client,
    node: &str,
    ds: &DaemonSet,
    owned: &[Pod],
) -> Result<(), kube::Error> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = owner_key("DaemonSet", &ns, &name);
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(());
    };
    let hash = template_hash(&spec.template);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mine: Vec<&Pod> = owned
        .iter()
        .filter(|p| p.labels().get(OWNER_LABEL) == Some(&key))
        .collect();
    // An outdated pod goes first (maxUnavailable 1 on a one-node cluster); the new one follows
    // once it has gone.
    for p in &mine {
        if p.labels().get(TEMPLATE_LABEL) != Some(&hash) && p.metadata.deletion_timestamp.is_none()
        {
            ignore_missing(pods.delete(&p.name_any(), &DeleteParams::default()).await)?;
        }
    }
    let current: Vec<&&Pod> = mine
        .iter()
        .filter(|p| p.labels().get(TEMPLATE_LABEL) == Some(&hash))
        .collect();
    if mine.is_empty() {
        let owner = ds.controller_owner_ref(&()).unwrap_or_default();
        let pod = pod_for(
            owner,
            &key,
            &hash,
            format!("{name}-{}", &hash[..5.min(hash.len())]),
            &spec.template,
            node,
        );
        ignore_conflict(pods.create(&PostParams::default(), &pod).await)?;
    }
    let is_ready = current.iter().any(|p| ready(p));
    let status = serde_json::json!({
        "status": {
            "currentNumberScheduled": 1,
            "desiredNumberScheduled": 1,
            "numberMisscheduled": 0,
            "numberReady": i32::from(is_ready),
            "numberAvailable": i32::from(is_ready),
            "numberUnavailable": i32::from(!is_ready),
            "updatedNumberScheduled": i32::from(!current.is_empty()),
            "observedGeneration": ds.metadata.generation.unwrap_or(0),
        }
    });
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    ignore_missing(
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(|_| ()),
    )
}

async fn job_pod(client: &Client, node: &str, job: &Job, owned: &[Pod]) -> Result<(), kube::Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let key = owner_key("Job", &ns, &name);
    let done = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    if done {
        return Ok(());
    }
    let Some(spec) = job.spec.as_ref() else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mine: Vec<&Pod> = owned
        .iter()
        .filter(|p| p.labels().get(OWNER_LABEL) == Some(&key))
        .collect();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let Some(pod) = mine.first() else {
        let owner = job.controller_owner_ref(&()).unwrap_or_default();
        let hash = template_hash(&spec.template);
        let pod = pod_for(
            owner,
            &key,
            &hash,
            format!("{name}-{}", &hash[..5.min(hash.len())]),
            &spec.template,
            node,
        );
        ignore_conflict(pods.create(&PostParams::default(), &pod).await)?;
        let status = serde_json::json!({ "status": { "startTime": now, "active": 1 } });
        let api: Api<Job> = Api::namespaced(client.clone(), &ns);
        return ignore_missing(
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map(|_| ()),
        );
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let (kind, counter) = match phase.as_str() {
        "Succeeded" => ("Complete", "succeeded"),
        "Failed" => ("Failed", "failed"),
        _ => return Ok(()),
    };
    let mut conditions = vec![
        serde_json::json!({ "type": kind, "status": "True", "lastTransitionTime": now, "lastProbeTime": now }),
    ];
    if kind == "Complete" {
        // The Job API requires SuccessCriteriaMet before Complete (1.31+).
        conditions.insert(0, serde_json::json!({ "type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "lastProbeTime": now }));
    } else {
        conditions.insert(0, serde_json::json!({ "type": "FailureTarget", "status": "True", "lastTransitionTime": now, "lastProbeTime": now }));
    }
    let mut status =
        serde_json::json!({ "status": { "active": 0, counter: 1, "conditions": conditions } });
    if kind == "Complete" {
        status["status"]["completionTime"] = serde_json::to_value(&now).unwrap_or_default();
    }
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    ignore_missing(
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(|_| ()),
    )
}

fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn ignore_conflict<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    ignore_missing(r)
}
