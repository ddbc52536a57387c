//! End-to-end scenarios on real Kubernetes control planes on loopback
//! (`steward_tests::control_plane`), each on every release the harness
//! runs: the real kube-scheduler calls Steward's extender, which binds
//! through the real API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use steward::cluster::SELECTED_NODE_ANNOTATION;
use steward::config::{Config, Hook};
use steward_tests::control_plane::{Binaries, ControlPlane, KubeVersion};
use steward_tests::e2e::{
    Cluster, DEPLOY_NAMESPACE, SCHEDULER_NAME, Steward, add_ready_node, cordon, create,
    deploy_service_account, eventually, install_crds, parse_objects, read_objects, scenario,
    scheduling_refusal, steward_kubeconfig, untaint,
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
/// pd-quorum places the members one at a time: a member filtered while
/// another is in flight waits in Steward's filter until that one is bound
/// (or is requeued once it is), so no release parks it for its 60-second
/// unschedulable flush. The bound is a failure guard under that flush (a
/// member parked there fails it), not a figure: BENCHMARKS.md has those.
async fn bound(client: &Client, component: &str, count: usize) -> Result<BTreeMap<String, String>> {
    eventually(
        Duration::from_secs(60),
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
    scenario(
        "placement_respects_quorum_and_explains_refusals",
        |version| async move {
            let snapshot = example_snapshot();
            let mut cluster =
                Cluster::start(version, &snapshot, SEED_KINDS, PLACEMENT_POLICIES).await?;
            let client = cluster.client();
            cluster
                .control_plane
                .wait_service_account(NAMESPACE)
                .await?;
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
                    let selected = claim.annotations().get(SELECTED_NODE_ANNOTATION);
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
            let refusal = scheduling_refusal(&client, NAMESPACE, "basic-pd-3", "pd-quorum").await?;
            eprintln!("placement: basic-pd-3 refused: {refusal}");
            let rule = "at most 1 of 4 may share a domain so that losing one domain keeps the \
                        PD quorum";
            ensure!(
                refusal.contains("1 node(s) were unschedulable") && refusal.contains(rule),
                "the event names the cordoned node and pd-quorum's rule: {refusal}"
            );
            // kube-scheduler from 1.21 on reads the extender's
            // FailedAndUnresolvableNodes: it tries no preemption on the nodes
            // pd-quorum refused (nor on the cordoned one).
            ensure!(
                version == KubeVersion::V1_20
                    || refusal.contains("4 Preemption is not helpful for scheduling"),
                "kube-scheduler {} looks for preemption victims on nodes Steward called \
                 unresolvable: {refusal}",
                version.release()
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
            cluster.control_plane.check().await?;
            Ok(())
        },
    );
}

/// `kubectl kustomize <dir>` with `kubectl` (1.20.2 embeds kustomize
/// v2.0.3, the oldest the bundle supports; 1.37.2 kustomize v5): the
/// rendered YAML.
pub(crate) fn render(kubectl: &Path, dir: &Path) -> Result<String> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| format!("cannot run {}", kubectl.display()))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// [`render`] of `dir` (relative to the repository): the objects.
fn kustomize(kubectl: &Path, dir: &str) -> Result<Vec<serde_json::Value>> {
    let text = render(kubectl, &steward_tests::root().join(dir))?;
    parse_objects(&text, &format!("kubectl kustomize {dir}"))
}

pub(crate) fn find<'a>(
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

/// The kube-scheduler sidecar's image.
pub(crate) const SCHEDULER_IMAGE: &str = "registry.k8s.io/kube-scheduler";

/// The image of the Deployment's kube-scheduler sidecar.
pub(crate) fn sidecar_image(objects: &[serde_json::Value]) -> Result<String> {
    find(objects, "Deployment", "steward")?["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "kube-scheduler")
        .and_then(|c| c["image"].as_str())
        .map(str::to_string)
        .context("the Deployment has no kube-scheduler container with an image")
}

/// The minor version of a `registry.k8s.io/kube-scheduler:v1.<minor>.<patch>` image.
fn sidecar_minor(image: &str) -> Option<u32> {
    let tag = image.strip_prefix(SCHEDULER_IMAGE)?.strip_prefix(":v1.")?;
    tag.split('.').next()?.parse().ok()
}

/// The contents of one file of a generated ConfigMap, as JSON.
pub(crate) fn config_file(configmap: &serde_json::Value, file: &str) -> Result<serde_json::Value> {
    let text = configmap["data"][file]
        .as_str()
        .with_context(|| format!("the ConfigMap has no {file}"))?;
    serde_norway::from_str(text).with_context(|| format!("the ConfigMap's {file} is not YAML"))
}

/// What every flavour must render to, with this release's kubectl: the
/// configuration Steward accepts, webhooks calling its admission policies,
/// the generated ConfigMaps mounted, the same scheduler profile and
/// extender in the v1 and v1beta1 scheduler configurations, and each
/// flavour's sidecar on a release of its range.
fn check_flavours(kubectl: &Path) -> Result<()> {
    let base = kustomize(kubectl, "deploy/base")?;
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
    let current = config_file(scheduler_config, "kube-scheduler.yaml")?;
    ensure!(
        current["apiVersion"] == "kubescheduler.config.k8s.io/v1",
        "the base schedules with KubeSchedulerConfiguration v1"
    );
    for kind in ["Service", "PodDisruptionBudget", "ClusterRole", "Role"] {
        find(&base, kind, "steward")?;
    }
    // The sidecar's release: the base defaults to the newest release the
    // end-to-end tests run.
    let newest = KubeVersion::ALL[KubeVersion::ALL.len() - 1];
    let image = sidecar_image(&base)?;
    ensure!(
        image == format!("{SCHEDULER_IMAGE}:{}", newest.release()),
        "the base's kube-scheduler sidecar is {image}, not the newest tested release {}",
        newest.release()
    );

    let old = kustomize(kubectl, "deploy/overlays/scheduler-v1beta1")?;
    let v1beta1 = config_file(
        find(&old, "ConfigMap", "steward-scheduler-config-")?,
        "kube-scheduler.yaml",
    )?;
    ensure!(
        v1beta1["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1",
        "the overlay replaces the scheduler configuration with v1beta1"
    );
    // Both files must configure the same profile and extender.
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
    let image = sidecar_image(&old)?;
    ensure!(
        sidecar_minor(&image).is_some_and(|m| (19..=22).contains(&m)),
        "the v1beta1 overlay's kube-scheduler sidecar is {image}, not a 1.19-1.22 release"
    );

    let cert_manager = kustomize(kubectl, "deploy/overlays/cert-manager")?;
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
    Ok(())
}

/// `to` relative to the directory `from` (both absolute): kustomize
/// refuses absolute paths of bases.
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from[common..].iter().map(|_| "..").collect();
    path.extend(&to[common..]);
    path
}

/// A Ready, untainted node.
async fn add_node(client: &Client, name: &str) -> Result<()> {
    let capacity = json!({"cpu": "8", "memory": "32Gi", "pods": "110"});
    add_ready_node(client, name, capacity).await
}

/// `deploy/` renders with this release's kubectl in every flavour; the
/// release's flavour (1.20: the v1beta1 overlay; 1.37: the base), its
/// sidecar set to the cluster's release as the bundle says, installs with
/// that kubectl and the self-signed certificate script; then the bundle
/// works as its pod would run it: Steward with the bundle's configuration
/// and the kube-scheduler sidecar with the bundle's scheduler
/// configuration, both as the bundle's ServiceAccount (its RBAC, leader
/// election included), place a pod of the `steward-scheduler` profile, and
/// the scheduler is refused nothing.
#[test]
fn deploy_bundle_renders_and_installs() {
    scenario("deploy_bundle_renders_and_installs", |version| async move {
        let binaries = Binaries::ensure(version)?;
        check_flavours(&binaries.kubectl)?;

        let mut control_plane = ControlPlane::start(version).await?;
        let client = control_plane.client.clone();
        // The release's flavour with its sidecar at the cluster's release,
        // set where the bundle says: an `images` entry of an overlay.
        let overlay = control_plane.dir.join("bundle");
        std::fs::create_dir_all(&overlay)?;
        let flavour = steward_tests::root().join(version.deploy_flavour());
        std::fs::write(
            overlay.join("kustomization.yaml"),
            format!(
                "bases:\n- {}\nimages:\n- name: {SCHEDULER_IMAGE}\n  newTag: {}\n",
                relative(&overlay, &flavour).display(),
                version.release()
            ),
        )?;
        let rendered = render(&binaries.kubectl, &overlay)?;
        let objects = parse_objects(&rendered, version.deploy_flavour())?;
        let image = sidecar_image(&objects)?;
        ensure!(
            image == format!("{SCHEDULER_IMAGE}:{}", version.release()),
            "the overlay's images entry sets the sidecar to the cluster's release: {image}"
        );
        let file = control_plane.dir.join("deploy.yaml");
        std::fs::write(&file, &rendered)?;
        let kubectl = |args: &[&str]| -> Result<String> {
            let out = Command::new(&binaries.kubectl)
                .env("KUBECONFIG", &control_plane.admin_kubeconfig)
                .args(args)
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.success(),
                "kubectl {} failed: {stderr}",
                args.join(" ")
            );
            // The API server's warnings (deprecated APIs, fields it drops).
            ensure!(
                !stderr.contains("Warning:"),
                "kubectl {} warned: {stderr}",
                args.join(" ")
            );
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        kubectl(&["apply", "-f", &file.display().to_string()])?;
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
            DEPLOY_NAMESPACE,
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

        // The pod's two containers, in this process: what they mount is
        // what was applied (the configuration, the TLS Secret), their
        // identity the ServiceAccount's token.
        install_crds(
            &client,
            &steward_tests::root().join("tests/control-plane/hwameistor-crds.yaml"),
        )
        .await?;
        let kubeconfig = steward_kubeconfig(&control_plane).await?;
        let config = config_file(
            find(&objects, "ConfigMap", "steward-config-")?,
            "steward.yaml",
        )?;
        let steward =
            start_as_installed(&control_plane, config, "steward-webhook-tls", &kubeconfig).await?;
        let scheduler_config = config_file(
            find(&objects, "ConfigMap", "steward-scheduler-config-")?,
            "kube-scheduler.yaml",
        )?;
        control_plane
            .start_sidecar_scheduler(
                scheduler_config,
                "the bundle's steward-scheduler-config",
                &kubeconfig,
                steward.addr,
            )
            .await?;

        // A pod of the profile, in Steward's namespace (which the webhooks
        // leave alone: no Service endpoint answers them here).
        let node = "bundle-node";
        add_node(&client, node).await?;
        control_plane.wait_service_account(DEPLOY_NAMESPACE).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "placed-by-the-bundle"},
            "spec": {"schedulerName": SCHEDULER_NAME,
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.2"}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        eventually(
            Duration::from_secs(120),
            "the bundle's scheduler and Steward to place placed-by-the-bundle",
            || async {
                let pod = pods.get("placed-by-the-bundle").await?;
                Ok((pod.spec.and_then(|s| s.node_name).as_deref() == Some(node)).then_some(()))
            },
        )
        .await?;
        let binds = steward.metric("steward_requests_total", &["endpoint=\"bind\""]);
        ensure!(
            binds == 1.0,
            "Steward bound the pod ({binds} bind requests)"
        );
        // Both leader elections run under the bundle's Role.
        let leases: Api<Lease> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
        for name in ["steward-scheduler", "steward-reconcile"] {
            eventually(
                Duration::from_secs(60),
                &format!("a holder of the Lease {DEPLOY_NAMESPACE}/{name}"),
                || async {
                    let lease = leases.get_opt(name).await?;
                    let holder = lease.and_then(|l| l.spec?.holder_identity);
                    Ok(holder.filter(|h| !h.is_empty()))
                },
            )
            .await?;
        }
        // The scheduler's RBAC: nothing it asked for was forbidden.
        let log = control_plane.log("kube-scheduler");
        let text = std::fs::read_to_string(&log)?;
        let forbidden: Vec<&str> = text.lines().filter(|l| l.contains("forbidden")).collect();
        ensure!(
            forbidden.is_empty(),
            "the bundle's RBAC refuses the kube-scheduler sidecar ({}):\n{}",
            log.display(),
            forbidden.join("\n")
        );
        control_plane.check().await
    });
}

/// Steward as the installed Deployment's container runs it, in this
/// process: `config` (the installed ConfigMap's steward.yaml) with its
/// cluster the ServiceAccount's `kubeconfig`, the webhook's certificate and
/// key from the installed TLS Secret `tls_secret`, the policies the image
/// holds from the built guests, and the webhook on a free loopback port.
pub(crate) async fn start_as_installed(
    control_plane: &ControlPlane,
    mut config: serde_json::Value,
    tls_secret: &str,
    kubeconfig: &Path,
) -> Result<Steward> {
    let secrets: Api<Secret> = Api::namespaced(control_plane.client.clone(), DEPLOY_NAMESPACE);
    let tls = secrets.get(tls_secret).await?.data.unwrap_or_default();
    for file in ["tls.crt", "tls.key"] {
        let bytes = tls
            .get(file)
            .with_context(|| format!("the TLS Secret has no {file}"))?;
        std::fs::write(control_plane.dir.join(file), &bytes.0)?;
    }
    config["cluster"]["kubeconfig"] = kubeconfig.display().to_string().into();
    config["cacheDir"] = control_plane
        .dir
        .join("modules")
        .display()
        .to_string()
        .into();
    config["admission"]["listen"] = "127.0.0.1:0".into();
    for (field, file) in [("certFile", "tls.crt"), ("keyFile", "tls.key")] {
        config["admission"][field] = control_plane.dir.join(file).display().to_string().into();
    }
    for policy in config["policies"].as_array_mut().into_iter().flatten() {
        let module = policy["module"].as_str().unwrap_or_default();
        let stem = module
            .strip_prefix("/usr/lib/steward/policies/")
            .and_then(|m| m.strip_suffix(".wasm"))
            .with_context(|| format!("a policy module outside the image's directory: {module}"))?;
        policy["module"] = steward_tests::guest(stem).display().to_string().into();
    }
    Steward::start_config(&serde_json::to_string(&config)?).await
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
    scenario("lease_elects_exactly_one_replica", |version| async move {
        let mut control_plane = ControlPlane::start(version).await?;
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
        control_plane.check().await
    });
}
