//! The seed's `basic` TiDB cluster running on a real control plane, for
//! the scenarios that need its PD and TiKV StatefulSets: Steward with a
//! reconcile policy, tidb-guard's webhooks, or both; PD played by the PD
//! double and TiKV's heartbeats by the doubles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use steward::reconcile::{OPT_IN_ANNOTATION, OPT_IN_LABEL};
use steward_tests::control_plane::KubeVersion;
use steward_tests::e2e::{
    Cluster, DEPLOY_NAMESPACE, SCHEDULER_NAME, create, eventually, read_objects,
};
use steward_tests::pd_double::PdDouble;
use steward_tests::tls::TestCa;
use steward_tests::{TempDir, example_snapshot};

pub const NAMESPACE: &str = "tidb-cluster";
pub const CLUSTER: &str = "basic";
pub const TIKV: &str = "basic-tikv";

/// The image an upgrade rolls out.
pub const NEW_TIKV_IMAGE: &str = "pingcap/tikv:v6.5.0";

/// What the pods need to run: nodes, their namespace and HwameiStor's
/// StorageClass (placement is the Placement scenario's concern; here the
/// extender passes every node).
pub const KINDS: &[&str] = &["Node", "Namespace", "StorageClass"];

/// A reconcile policy the StatefulSets opt in to.
pub struct Reconcile<'a> {
    pub policy: &'a str,
    /// The built guest's stem, e.g. `upgrade_gate`.
    pub module: &'a str,
    /// Its settings, a YAML flow mapping.
    pub settings: &'a str,
}

/// The seed's cluster running.
pub struct Tidb {
    pub cluster: Cluster,
    pub pd: Arc<PdDouble>,
    pub client: Client,
    /// The webhook's certificate and key, while it serves.
    _tls: Option<TempDir>,
}

/// The admission policies as `deploy/base/steward.yaml` runs them, PD at
/// the double.
pub fn admission_policies(pd_url: &str) -> Vec<String> {
    vec![
        format!(
            "{{id: local-storage-admission, hook: admission, module: '{{local_storage_admission}}', \
             mutate: true, failureMode: fail-open, settings: {{schedulerName: {SCHEDULER_NAME}}}}}"
        ),
        format!(
            "{{id: tidb-guard, hook: admission, module: '{{tidb_guard}}', mode: enforce, \
             failureMode: fail-closed, deadlineMs: 2000, pd: {{url: '{pd_url}', timeoutMs: 1000}}}}"
        ),
    ]
}

/// `deploy/base`'s webhook configurations, each webhook calling Steward at
/// `https://<webhook><its path>` and trusting `ca`.
pub async fn register_webhooks(client: &Client, webhook: SocketAddr, ca: &TestCa) -> Result<()> {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca.pem());
    let file = steward_tests::root().join("deploy/base/webhooks.yaml");
    for mut configuration in read_objects(&file)? {
        let hooks = configuration["webhooks"]
            .as_array_mut()
            .with_context(|| format!("{}: a configuration without webhooks", file.display()))?;
        for hook in hooks {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .with_context(|| format!("{}: a webhook without a path", file.display()))?
                .to_string();
            hook["clientConfig"] = json!({
                "url": format!("https://{webhook}{path}"),
                "caBundle": bundle,
            });
        }
        create(client, configuration).await?;
    }
    Ok(())
}

/// A certificate for the webhook, signed by a new CA, and the admission
/// section of Steward's config serving it.
pub fn webhook_tls() -> (TempDir, TestCa, String) {
    let tls = TempDir::new("e2e-admission-tls");
    let (cert, key) = (tls.path().join("tls.crt"), tls.path().join("tls.key"));
    let ca = TestCa::new();
    ca.issue("steward-webhook").write(&cert, &key);
    let section = format!(
        "admission: {{listen: '127.0.0.1:0', certFile: {}, keyFile: {}}}",
        cert.display(),
        key.display()
    );
    (tls, ca, section)
}

/// Starts the control plane of `version` and Steward as the ServiceAccount
/// of `deploy/`, with `reconcile` (asking the PD double) and, if `guard`,
/// the admission policies behind `deploy/`'s webhooks; creates basic's PD
/// and TiKV StatefulSets (TiKV pods on distinct nodes, so a node is one
/// store), PD opted in to `reconcile` by the label and TiKV by the
/// annotation alone; waits until the six pods are ready and every store
/// heartbeats.
pub async fn tidb_cluster(
    version: KubeVersion,
    reconcile: Option<Reconcile<'_>>,
    guard: bool,
) -> Result<Tidb> {
    let pd = Arc::new(PdDouble::start(NAMESPACE, CLUSTER).await);
    let mut policies = Vec::new();
    // The Lease lives where deploy/'s RBAC allows it; failed reconciles
    // retry quickly.
    let mut sections = vec![format!(
        "reconcile: {{leaseNamespace: {DEPLOY_NAMESPACE}, backoffBaseMs: 500, backoffMaxMs: 5000}}"
    )];
    if let Some(r) = &reconcile {
        policies.push(reconcile_policy(r, &pd.url()));
    }
    let tls = guard.then(webhook_tls);
    if let Some((_, _, section)) = &tls {
        policies.extend(admission_policies(&pd.url()));
        sections.push(section.clone());
    }
    let policies: Vec<&str> = policies.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with(
        version,
        &example_snapshot(),
        KINDS,
        &policies,
        &sections.join("\n"),
    )
    .await?;
    if let Some((_, ca, _)) = &tls {
        let webhook = cluster
            .steward
            .webhook
            .context("Steward serves no admission webhook")?;
        register_webhooks(&cluster.client(), webhook, ca).await?;
    }
    run_tidb(
        cluster,
        pd,
        reconcile.map(|r| r.policy),
        tls.map(|(dir, _, _)| dir),
    )
    .await
}

/// Reconcile policy `r` asking the PD at `pd_url`.
pub fn reconcile_policy(r: &Reconcile<'_>, pd_url: &str) -> String {
    format!(
        "{{id: {}, hook: reconcile, module: '{{{}}}', deadlineMs: 5000, \
         pd: {{url: '{pd_url}', timeoutMs: 1000}}, settings: {}}}",
        r.policy, r.module, r.settings
    )
}

/// Creates basic's PD and TiKV StatefulSets on `cluster` (TiKV pods on
/// distinct nodes, so a node is one store), PD opted in to `policy` by the
/// label and TiKV by the annotation alone; waits until the six pods are
/// ready and every store heartbeats. `tls` is kept while the webhook serves.
pub async fn run_tidb(
    mut cluster: Cluster,
    pd: Arc<PdDouble>,
    policy: Option<&str>,
    tls: Option<TempDir>,
) -> Result<Tidb> {
    let client = cluster.client();
    cluster.doubles.play_tikv(&client, pd.clone(), NAMESPACE);
    cluster
        .control_plane
        .wait_service_account(NAMESPACE)
        .await?;
    for mut set in read_objects(&example_snapshot())?
        .into_iter()
        .filter(|o| o["kind"] == "StatefulSet")
    {
        let tikv = set["metadata"]["name"] == TIKV;
        if let Some(policy) = policy {
            let opt_in = if tikv {
                &mut set["metadata"]["annotations"][OPT_IN_ANNOTATION]
            } else {
                &mut set["metadata"]["labels"][OPT_IN_LABEL]
            };
            *opt_in = policy.into();
        }
        if tikv {
            set["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {
                        "app.kubernetes.io/instance": CLUSTER,
                        "app.kubernetes.io/component": "tikv",
                    }},
                    "topologyKey": "kubernetes.io/hostname",
                }],
            }});
        }
        create(&client, set).await?;
    }
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(
        Duration::from_secs(180),
        "basic's PD and TiKV pods ready and every store heartbeating",
        || async {
            for name in ["basic-pd", TIKV] {
                let ready = sets.get(name).await?.status.and_then(|s| s.ready_replicas);
                if ready != Some(3) {
                    return Ok(None);
                }
            }
            let pd = pd.state();
            let all = pd
                .stores
                .iter()
                .all(|s| s.state == "Up" && pd.is_heartbeating(s.id));
            Ok(all.then_some(()))
        },
    )
    .await?;
    Ok(Tidb {
        cluster,
        pd,
        client,
        _tls: tls,
    })
}

pub fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .partition
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn revision(pod: &Pod) -> String {
    pod.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

/// Whether the TiKV upgrade is over: every pod ready at the update
/// revision with the new image, the partition held at 3 again and the
/// gate's state gone.
pub async fn upgraded(client: &Client) -> Result<Option<()>> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
    let set = sets.get(TIKV).await?;
    let status = set.status.clone().unwrap_or_default();
    let update = status.update_revision.clone().unwrap_or_default();
    if status.current_revision.as_deref() != Some(&update)
        || status.ready_replicas != Some(3)
        || partition(&set) != Some(3)
        || set.annotations().contains_key("steward.io/upgrade-gate")
    {
        return Ok(None);
    }
    let pods = pods_at(client, NAMESPACE, "tikv", &update, NEW_TIKV_IMAGE).await?;
    let done = pods.len() == 3 && pods.iter().all(|(_, at)| *at);
    Ok(done.then_some(()))
}

/// The pods of TiDB component `component` in `namespace` by name, each
/// with whether it runs Ready at `update_revision` with `image`.
pub async fn pods_at(
    client: &Client,
    namespace: &str,
    component: &str,
    update_revision: &str,
    image: &str,
) -> Result<Vec<(String, bool)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}")))
        .await?;
    let mut pods: Vec<(String, bool)> = list
        .items
        .iter()
        .map(|p| {
            let running = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first()?.image.clone());
            let at =
                pod_ready(p) && revision(p) == update_revision && running.as_deref() == Some(image);
            (p.name_any(), at)
        })
        .collect();
    pods.sort();
    Ok(pods)
}
