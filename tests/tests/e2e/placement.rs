//! End-to-end scenarios on a real Kubernetes 1.20.2 control plane on
//! loopback (`steward_tests::control_plane`): the real kube-scheduler calls
//! Steward's extender, which binds through the real API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use steward::config::{Config, Hook};
use steward_tests::control_plane::doubles::SELECTED_NODE;
use steward_tests::control_plane::{Binaries, ControlPlane};
use steward_tests::e2e::{
    Cluster, SCHEDULER_NAME, cordon, create, deploy_service_account, events_about, eventually,
    read_objects, scenario, untaint, wait_service_account,
};
use steward_tests::example_snapshot;

/// The policies of the Placement scenario, one per line (flow YAML;
/// `{stem}` is a built guest): adding a policy is adding a line.
const PLACEMENT_POLICIES: &[&str] = &[
    "{id: pd-quorum, hook: scheduler, module: '{pd_quorum}', failureMode: fail-closed, \
     select: {schedulerNames: [steward-scheduler]}}",
    "{id: local-pv, hook: scheduler, module: '{local_pv}', failureMode: fail-closed, \
     select: {schedulerNames: [steward-scheduler]}}",
];

/// What the seed's cluster had before the TidbCluster: nodes, the TiDB
/// namespace, HwameiStor's StorageClass and its node, disk and pool objects.
const SEED_KINDS: &[&str] = &[
    "Node",
    "Namespace",
    "StorageClass",
    "LocalDisk",
    "LocalDiskNode",
    "LocalStorageNode",
];

const NAMESPACE: &str = "tidb-cluster";

/// The seed's node without a HwameiStor HDD pool.
const NO_POOL_NODE: &str = "k8s-10-6-163-52";

/// Pod name → node name, for the pods of one component of `basic`.
async fn placement(client: &Client, component: &str) -> Result<BTreeMap<String, Option<String>>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector =
        format!("app.kubernetes.io/instance=basic,app.kubernetes.io/component={component}");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    Ok(list
        .items
        .into_iter()
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            (p.name_any(), node)
        })
        .collect())
}

/// Waits until `count` pods of `component` are bound; returns pod → node.
/// pd-quorum places the members one at a time and refuses the others while
/// one is in flight; kube-scheduler 1.20 retries such a pod on the next
/// cluster event or after 60-90 s in its unschedulable queue, so placing a
/// three-member component takes 10 s to about 3 minutes.
async fn bound(client: &Client, component: &str, count: usize) -> Result<BTreeMap<String, String>> {
    eventually(
        Duration::from_secs(300),
        &format!("{count} {component} pods bound to nodes"),
        || async {
            let placed = placement(client, component).await?;
            let bound: BTreeMap<String, String> = placed
                .into_iter()
                .filter_map(|(pod, node)| Some((pod, node?)))
                .collect();
            Ok((bound.len() == count).then_some(bound))
        },
    )
    .await
}

async fn scale(client: &Client, name: &str, replicas: i32) -> Result<()> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
    sets.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await?;
    Ok(())
}

/// Creates a node and its LocalStorageNode as copies of the snapshot's
/// `model`, renamed `name`, Ready and untainted.
async fn join_node_like(client: &Client, snapshot: &Path, model: &str, name: &str) -> Result<()> {
    for object in read_objects(snapshot)?.into_iter().filter(|o| {
        ["Node", "LocalStorageNode"].contains(&o["kind"].as_str().unwrap_or_default())
            && o["metadata"]["name"] == model
    }) {
        let renamed = serde_json::to_string(&object)?.replace(model, name);
        create(client, serde_json::from_str(&renamed)?).await?;
    }
    untaint(client, name).await
}

/// The seed's `basic` TiDB cluster placed by the real kube-scheduler
/// through Steward: PD and TiKV one per node (pd-quorum), claims provisioned
/// on the chosen nodes, and a PD replica that cannot keep the quorum waits
/// with pd-quorum's reason in its FailedScheduling event until a node joins.
#[test]
fn placement_respects_quorum_and_explains_refusals() {
    scenario(async {
        let snapshot = example_snapshot();
        let mut cluster = Cluster::start(&snapshot, SEED_KINDS, PLACEMENT_POLICIES).await?;
        let client = cluster.client();
        wait_service_account(&client, NAMESPACE).await?;
        let started = std::time::Instant::now();
        for set in read_objects(&snapshot)?
            .into_iter()
            .filter(|o| o["kind"] == "StatefulSet")
        {
            ensure!(
                set["spec"]["template"]["spec"]["schedulerName"] == SCHEDULER_NAME,
                "the snapshot's StatefulSets name Steward's scheduler profile"
            );
            create(&client, set).await?;
        }

        // Quorum: three PD and three TiKV pods, each on its own node.
        let pd = bound(&client, "pd", 3).await?;
        let tikv = bound(&client, "tikv", 3).await?;
        for (component, pods) in [("pd", &pd), ("tikv", &tikv)] {
            let nodes: BTreeSet<&String> = pods.values().collect();
            ensure!(nodes.len() == 3, "{component} pods share a node: {pods:?}");
        }
        // Capacity: k8s-10-6-163-52 has no HDD pool, so local-pv keeps every
        // pod with a new HDD claim off it.
        ensure!(
            pd.values().chain(tikv.values()).all(|n| n != NO_POOL_NODE),
            "a pod landed on {NO_POOL_NODE}, which has no HDD pool: {pd:?} {tikv:?}"
        );
        // Steward bound all six (bindVerb), and the provisioner double put
        // each claim's volume on its pod's node.
        let binds = cluster
            .steward
            .metric("steward_requests_total", &["endpoint=\"bind\""]);
        ensure!(
            binds == 6.0,
            "Steward handled {binds} bind requests, expected exactly 6"
        );
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NAMESPACE);
        eventually(
            Duration::from_secs(60),
            "the six claims to be Bound",
            || async {
                let list = claims.list(&ListParams::default()).await?;
                let bound = list.items.iter().filter(|c| {
                    c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                });
                Ok((bound.count() == 6).then_some(()))
            },
        )
        .await?;
        for (component, pods) in [("pd", &pd), ("tikv", &tikv)] {
            for (pod, node) in pods {
                let claim = claims.get(&format!("{component}-{pod}")).await?;
                let selected = claim.annotations().get(SELECTED_NODE);
                ensure!(
                    selected == Some(node),
                    "the claim of {pod} was provisioned for {selected:?}, the pod is on {node}"
                );
            }
        }
        // The kubelet double runs them: the StatefulSet controller sees them ready.
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
        eventually(
            Duration::from_secs(60),
            "both StatefulSets 3/3 ready",
            || async {
                let mut ready = 0;
                for name in ["basic-pd", "basic-tikv"] {
                    let set = sets.get(name).await?;
                    ready += set.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                }
                Ok((ready == 6).then_some(()))
            },
        )
        .await?;
        eprintln!(
            "placement: six pods placed and ready in {:?}",
            started.elapsed()
        );

        // A fourth PD replica while the only node without PD is cordoned:
        // every schedulable node already holds one, so it must wait.
        let all_nodes: BTreeSet<String> = ["51", "52", "53", "54"]
            .iter()
            .map(|n| format!("k8s-10-6-163-{n}"))
            .collect();
        let with_pd: BTreeSet<String> = pd.values().cloned().collect();
        let free = all_nodes
            .difference(&with_pd)
            .next()
            .expect("four nodes, three PD pods")
            .clone();
        cordon(&client, &free, true).await?;
        scale(&client, "basic-pd", 4).await?;
        let refusal = eventually(
            Duration::from_secs(120),
            "a FailedScheduling event of basic-pd-3 with pd-quorum's reason",
            || async {
                let events = events_about(&client, NAMESPACE, "basic-pd-3").await?;
                Ok(events.into_iter().find_map(|e| {
                    let message = e.message.unwrap_or_default();
                    (e.reason.as_deref() == Some("FailedScheduling")
                        && message.contains("pd-quorum: "))
                    .then_some(message)
                }))
            },
        )
        .await?;
        eprintln!("placement: basic-pd-3 refused: {refusal}");
        ensure!(
            refusal.contains("1 node(s) were unschedulable")
                && refusal.contains("at most 1 of 4 may share a domain so that losing one domain keeps the PD quorum"),
            "the event names the cordoned node and pd-quorum's rule: {refusal}"
        );
        ensure!(
            placement(&client, "pd").await?["basic-pd-3"].is_none(),
            "basic-pd-3 stays pending while it cannot keep the quorum"
        );

        // A fifth node joins (a copy of k8s-10-6-163-54, HDD pool included,
        // so it suits every placement policy): it takes the pod.
        let joined = "k8s-10-6-163-55";
        join_node_like(&client, &snapshot, "k8s-10-6-163-54", joined).await?;
        let pd = bound(&client, "pd", 4).await?;
        ensure!(
            pd["basic-pd-3"] == joined,
            "basic-pd-3 went to {}, not the new node {joined}",
            pd["basic-pd-3"]
        );

        // Scaled back, the StatefulSet controller deletes it and the kubelet
        // double confirms the deletion.
        scale(&client, "basic-pd", 3).await?;
        eventually(
            Duration::from_secs(60),
            "basic-pd-3 to be deleted",
            || async {
                Ok((!placement(&client, "pd").await?.contains_key("basic-pd-3")).then_some(()))
            },
        )
        .await?;
        eprintln!("placement: scenario took {:?}", started.elapsed());
        cluster.control_plane.check_running()?;
        Ok(())
    });
}

/// `kubectl kustomize <dir>` with kubectl 1.20.2 (kustomize v2.0.3, the
/// oldest the bundle supports): the rendered objects.
fn kustomize(kubectl: &Path, dir: &str) -> Result<Vec<serde_json::Value>> {
    let out = Command::new(kubectl)
        .args([
            "kustomize",
            &steward_tests::root().join(dir).display().to_string(),
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = std::env::temp_dir().join(format!("steward-kustomize-{}.yaml", std::process::id()));
    std::fs::write(&path, &out.stdout)?;
    let objects = read_objects(&path);
    std::fs::remove_file(&path)?;
    objects
}

fn find<'a>(
    objects: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> Result<&'a serde_json::Value> {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name))
        })
        .with_context(|| format!("no {kind} {name} in the rendered bundle"))
}

/// `deploy/` renders with kubectl 1.20's kustomize in every flavour, the
/// configuration it ships is one Steward accepts, and the 1.20 flavour
/// installs on Kubernetes 1.20 with the self-signed certificate script.
#[test]
fn deploy_bundle_renders_and_installs() {
    scenario(async {
        let binaries = Binaries::ensure()?;
        let base = kustomize(&binaries.kubectl, "deploy/base")?;
        let config = find(&base, "ConfigMap", "steward-config-")?;
        let text = config["data"]["steward.yaml"].as_str().unwrap_or_default();
        let parsed = Config::parse(text).context("deploy/base/steward.yaml")?;
        ensure!(
            parsed.policies.iter().any(|p| p.id == "pd-quorum"),
            "the bundle runs pd-quorum"
        );
        // Every webhook calls an admission policy of the config, and only
        // policies granted mutation sit behind the mutating endpoint.
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let hooks = find(&base, kind, "steward")?["webhooks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ensure!(!hooks.is_empty(), "{kind} has webhooks");
            for hook in hooks {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or_default();
                let (verb, id) = path
                    .strip_prefix("/admission/")
                    .and_then(|rest| rest.split_once('/'))
                    .with_context(|| format!("{kind} path {path}"))?;
                let policy = parsed
                    .policies
                    .iter()
                    .find(|p| p.id == id && p.hook == Hook::Admission)
                    .with_context(|| format!("{path} names no admission policy of the config"))?;
                ensure!(
                    (verb == "mutate") == policy.mutate,
                    "{path}: mutate endpoint iff the policy may mutate"
                );
            }
        }
        // The Deployment mounts the generated (hash-suffixed) ConfigMaps.
        let deployment = find(&base, "Deployment", "steward")?;
        let volumes: Vec<&str> = deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["configMap"]["name"].as_str())
            .collect();
        let scheduler_config = find(&base, "ConfigMap", "steward-scheduler-config-")?;
        for generated in [config, scheduler_config] {
            let name = generated["metadata"]["name"].as_str().unwrap_or_default();
            ensure!(
                volumes.contains(&name),
                "the Deployment mounts {name}: {volumes:?}"
            );
        }
        let current: serde_json::Value = serde_norway::from_str(
            scheduler_config["data"]["kube-scheduler.yaml"]
                .as_str()
                .unwrap_or_default(),
        )?;
        ensure!(
            current["apiVersion"] == "kubescheduler.config.k8s.io/v1",
            "the base schedules with KubeSchedulerConfiguration v1"
        );
        for kind in ["Service", "PodDisruptionBudget", "ClusterRole", "Role"] {
            find(&base, kind, "steward")?;
        }
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let webhook = find(&base, kind, "steward")?;
            let path = webhook["webhooks"][0]["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap_or_default();
            ensure!(path.starts_with("/admission/"), "{kind} calls {path}");
        }

        let old = kustomize(&binaries.kubectl, "deploy/overlays/scheduler-v1beta1")?;
        let scheduler_config = find(&old, "ConfigMap", "steward-scheduler-config-")?;
        let v1beta1: serde_json::Value = serde_norway::from_str(
            scheduler_config["data"]["kube-scheduler.yaml"]
                .as_str()
                .unwrap_or_default(),
        )?;
        ensure!(
            v1beta1["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1",
            "the overlay replaces the scheduler configuration with v1beta1"
        );
        // The v1beta1 file is the one the Placement scenario runs; the v1
        // file must configure the same profile and extender.
        for field in ["profiles", "extenders", "leaderElection"] {
            let (old_field, new_field) = (&v1beta1[field], &current[field]);
            let same = match field {
                "leaderElection" => ["leaderElect", "resourceNamespace", "resourceName"]
                    .iter()
                    .all(|k| old_field[k] == new_field[k]),
                _ => old_field == new_field,
            };
            ensure!(
                same,
                "{field} differs between the v1beta1 and v1 scheduler configurations"
            );
        }
        ensure!(
            find(&old, "PodDisruptionBudget", "steward")?["apiVersion"] == "policy/v1beta1",
            "Kubernetes 1.20 has no policy/v1"
        );

        let cert_manager = kustomize(&binaries.kubectl, "deploy/overlays/cert-manager")?;
        ensure!(
            find(&cert_manager, "Certificate", "steward-webhook")?["spec"]["secretName"]
                == "steward-webhook-tls",
            "cert-manager writes the Secret the Deployment mounts"
        );
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let webhook = find(&cert_manager, kind, "steward")?;
            ensure!(
                webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                    == "steward-system/steward-webhook",
                "cert-manager injects the CA into {kind}"
            );
        }

        // Install the 1.20 flavour on Kubernetes 1.20, then the certificate.
        let control_plane = ControlPlane::start().await?;
        let rendered = control_plane.dir.join("deploy.yaml");
        let out = Command::new(&binaries.kubectl)
            .args([
                "kustomize",
                &steward_tests::root()
                    .join("deploy/overlays/scheduler-v1beta1")
                    .display()
                    .to_string(),
            ])
            .output()?;
        std::fs::write(&rendered, &out.stdout)?;
        let kubectl = |args: &[&str]| -> Result<String> {
            let out = Command::new(&binaries.kubectl)
                .env("KUBECONFIG", &control_plane.admin_kubeconfig)
                .args(args)
                .output()?;
            ensure!(
                out.status.success(),
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        kubectl(&["apply", "-f", &rendered.display().to_string()])?;
        let script = Command::new(steward_tests::root().join("deploy/self-signed-tls.sh"))
            .env("KUBECONFIG", &control_plane.admin_kubeconfig)
            .env("KUBECTL", &binaries.kubectl)
            .output()?;
        ensure!(
            script.status.success(),
            "deploy/self-signed-tls.sh failed: {}",
            String::from_utf8_lossy(&script.stderr)
        );
        let secret = kubectl(&[
            "-n",
            "steward-system",
            "get",
            "secret",
            "steward-webhook-tls",
            "-o",
            "jsonpath={.type}",
        ])?;
        ensure!(
            secret == "kubernetes.io/tls",
            "the script stores a TLS Secret, got {secret}"
        );
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            let bundles = kubectl(&[
                "get",
                kind,
                "steward",
                "-o",
                "jsonpath={range .webhooks[*]}{.clientConfig.caBundle}{\"\\n\"}{end}",
            ])?;
            ensure!(
                !bundles.is_empty() && bundles.lines().all(|b| b.len() > 100),
                "every webhook of {kind} trusts the CA: {bundles:?}"
            );
        }
        Ok(())
    });
}

/// Leader election on a real API server, as Steward's ServiceAccount (the
/// bundle's RBAC): of two replicas exactly one holds the Lease; a release
/// hands it over at once; a holder that stops renewing loses it when it
/// expires, not before.
#[test]
fn lease_elects_exactly_one_replica() {
    use std::sync::Arc;
    use steward::reconcile::SystemClock;
    use steward::reconcile::lease::{Elector, KubeLease, Timing};
    scenario(async {
        let control_plane = ControlPlane::start().await?;
        let kubeconfig = deploy_service_account(&control_plane).await?;
        let client = steward_tests::control_plane::client_for(&kubeconfig).await?;
        let timing = Timing {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        };
        let replica = |name: &str| {
            Elector::new(
                KubeLease::new(client.clone(), "steward-system", "steward-reconcile"),
                name.to_string(),
                timing,
                Arc::new(SystemClock),
            )
        };
        let (a, b) = (replica("replica-a"), replica("replica-b"));
        // Both race for a Lease that does not exist yet: one wins.
        let (won_a, won_b) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let (won_a, won_b) = (won_a?, won_b?);
        ensure!(
            won_a != won_b,
            "exactly one replica takes the new Lease: {won_a} {won_b}"
        );
        let (holder, other) = if won_a { (&a, &b) } else { (&b, &a) };
        for _ in 0..3 {
            let (renewed, taken) =
                tokio::join!(holder.try_acquire_or_renew(), other.try_acquire_or_renew());
            ensure!(renewed? && !taken?, "the holder renews, the other waits");
        }
        holder.release().await?;
        ensure!(
            other.try_acquire_or_renew().await?,
            "a released Lease is taken at once"
        );
        ensure!(
            !holder.try_acquire_or_renew().await?,
            "the old holder waits while the new one holds it"
        );
        // The new holder stops renewing: the Lease is only taken once it
        // has expired (3 s).
        let stopped = std::time::Instant::now();
        let taken_after = eventually(Duration::from_secs(10), "the expired Lease", || async {
            Ok(holder
                .try_acquire_or_renew()
                .await?
                .then(|| stopped.elapsed()))
        })
        .await?;
        ensure!(
            taken_after >= Duration::from_millis(2_500),
            "the Lease was taken {taken_after:?} after its last renewal, before it expired"
        );
        Ok(())
    });
}
