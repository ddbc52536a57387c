//! Admission on real Kubernetes control planes (every release the harness
//! runs): kube-apiserver calls Steward's webhooks, configured as
//! `deploy/base/webhooks.yaml` configures them but reaching Steward in this
//! process by `clientConfig.url` and `caBundle`. Steward runs as the
//! ServiceAccount of `deploy/` (its RBAC).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use steward_sdk::tidb::EVICT_LEADER_BEGIN_ANNOTATION;
use steward_tests::TempDir;
use steward_tests::control_plane::{ControlPlane, KubeVersion};
use steward_tests::e2e::{
    Cluster, SCHEDULER_NAME, create, deploy_service_account, events_about, eventually,
    read_objects, scenario,
};
use steward_tests::example_snapshot;
use steward_tests::pd_double::{Fault, PdDouble};

use crate::tidb::{
    CLUSTER as TIDB_CLUSTER, NAMESPACE, admission_policies, register_webhooks, webhook_tls,
};

/// The TiKV pod under test and its store in the PD double.
const TIKV_POD: &str = "basic-tikv-0";
const TIKV_STORE: u64 = 1;

/// The storage class of the snapshot's claims (HwameiStor's).
fn local_storage_class() -> Result<String> {
    read_objects(&example_snapshot())?
        .into_iter()
        .find(|o| o["kind"] == "StorageClass")
        .and_then(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .context("the snapshot has no StorageClass")
}

fn pod(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Result<Pod> {
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.2"}]},
    });
    for (key, value) in spec.as_object().into_iter().flatten() {
        object["spec"][key] = value.clone();
    }
    Ok(serde_json::from_value(object)?)
}

fn scheduler_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.clone())
        .unwrap_or_default()
}

/// The control plane of `version` with the snapshot's nodes, namespace
/// and StorageClass, and Steward serving `policies` behind `deploy/`'s
/// webhooks; returns once the namespace has its ServiceAccount. The
/// directory holds the webhook's certificate while it serves.
async fn serving_webhooks(version: KubeVersion, policies: &[&str]) -> Result<(Cluster, TempDir)> {
    let (tls, ca, sections) = webhook_tls();
    let mut cluster = Cluster::start_with(
        version,
        &example_snapshot(),
        &["Node", "Namespace", "StorageClass"],
        policies,
        &sections,
    )
    .await?;
    let webhook = cluster
        .steward
        .webhook
        .context("Steward serves no admission webhook")?;
    register_webhooks(&cluster.client(), webhook, &ca).await?;
    cluster
        .control_plane
        .wait_service_account(NAMESPACE)
        .await?;
    Ok((cluster, tls))
}

/// The apiserver's refusal of a request, or a failure if it was allowed.
fn refusal<T>(result: kube::Result<T>) -> Result<String> {
    match result {
        Err(kube::Error::Api(status)) => Ok(status.message),
        Err(e) => Err(e.into()),
        Ok(_) => bail!("the request was allowed"),
    }
}

/// Pods with a HwameiStor claim get Steward's scheduler, others keep the
/// default; deleting a TiKV pod whose store holds leaders is denied with
/// tidb-guard's message and begins the leader eviction in PD (not on a dry
/// run), stays denied while leaders remain, and is allowed once PD reports
/// none; an eviction (a node drain) is denied the same way; the pod
/// created again ends the eviction. `kubectl scale` of PD is refused while
/// a member is unhealthy.
#[test]
fn admission_webhooks_on_a_real_apiserver() {
    scenario(
        "admission_webhooks_on_a_real_apiserver",
        |version| async move {
            let pd = PdDouble::start(NAMESPACE, TIDB_CLUSTER).await;
            let policies = admission_policies(&pd.url());
            let policies: Vec<&str> = policies.iter().map(String::as_str).collect();
            let (mut cluster, _tls) = serving_webhooks(version, &policies).await?;
            let client = cluster.client();
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);

            // (a) A pod with a claim of HwameiStor's class gets Steward's
            // scheduler. The claim must be in Steward's cache and the webhook
            // configuration in the apiserver's: wait with dry runs.
            let class = local_storage_class()?;
            create(
                &client,
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "data-local", "namespace": NAMESPACE},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                             "resources": {"requests": {"storage": "1Gi"}}},
                }),
            )
            .await?;
            let with_claim = pod(
                "with-local-claim",
                json!({}),
                json!({"volumes": [{"name": "data",
                                "persistentVolumeClaim": {"claimName": "data-local"}}]}),
            )?;
            let dry_run = PostParams {
                dry_run: true,
                ..Default::default()
            };
            eventually(
                Duration::from_secs(60),
                "a dry-run pod with a HwameiStor claim to get Steward's scheduler",
                || async {
                    let created = pods.create(&dry_run, &with_claim).await?;
                    Ok((scheduler_name(&created) == SCHEDULER_NAME).then_some(()))
                },
            )
            .await?;
            let created = pods.create(&PostParams::default(), &with_claim).await?;
            ensure!(
                scheduler_name(&created) == SCHEDULER_NAME,
                "with-local-claim got scheduler {:?}",
                scheduler_name(&created)
            );

            // A pod without such claims is reviewed and left alone.
            let allowed = |steward: &steward_tests::e2e::Steward| {
                steward.metric(
                    "steward_admission_verdicts_total",
                    &["policy=\"local-storage-admission\"", "verdict=\"allowed\""],
                )
            };
            let before = allowed(&cluster.steward);
            let plain = pod(
                "without-claims",
                json!({}),
                json!({"volumes": [{"name": "scratch", "emptyDir": {}}]}),
            )?;
            let created = pods.create(&PostParams::default(), &plain).await?;
            ensure!(
                scheduler_name(&created) == "default-scheduler",
                "without-claims got scheduler {:?}",
                scheduler_name(&created)
            );
            ensure!(
                allowed(&cluster.steward) == before + 1.0,
                "local-storage-admission reviewed without-claims and allowed it unchanged"
            );

            // (b) A TiKV pod of `basic`, running on a node, whose store holds
            // leaders. A dry-run delete is denied without side effects.
            let tikv = pod(
                TIKV_POD,
                json!({
                    "app.kubernetes.io/component": "tikv",
                    "app.kubernetes.io/instance": TIDB_CLUSTER,
                    "app.kubernetes.io/managed-by": "tidb-operator",
                    "app.kubernetes.io/name": "tidb-cluster",
                }),
                json!({"nodeName": "k8s-10-6-163-51", "hostname": TIKV_POD,
                   "subdomain": format!("{TIDB_CLUSTER}-tikv-peer")}),
            )?;
            pods.create(&PostParams::default(), &tikv).await?;
            let leaders = pd.state().leaders(TIKV_STORE);
            ensure!(leaders > 0, "store {TIKV_STORE} starts with leaders");
            let dry_delete = DeleteParams {
                dry_run: true,
                ..Default::default()
            };
            let dry_refusal = eventually(
                Duration::from_secs(60),
                "a dry-run delete of the TiKV pod to be denied",
                || async { Ok(refusal(pods.delete(TIKV_POD, &dry_delete).await).ok()) },
            )
            .await?;
            ensure!(
                dry_refusal.contains(&format!(
                    "store {TIKV_STORE} still holds {leaders} Raft leader(s); Steward would begin \
                 evicting them"
                )),
                "the dry run is denied with tidb-guard's message: {dry_refusal}"
            );
            ensure!(
                pd.state().evicting.is_empty(),
                "a dry run begins no leader eviction"
            );

            // The real delete is denied and begins the eviction. PD is stuck,
            // so leaders stay until it recovers. The apiserver validates a
            // graceful delete against its cached pod first and, once denied,
            // again against etcd's: the second review already sees the
            // annotation Steward wrote in the first, so either refusal may come
            // back.
            pd.set_fault(Fault::LeadersStuck);
            let Err(kube::Error::Api(status)) =
                pods.delete(TIKV_POD, &DeleteParams::default()).await
            else {
                bail!("the delete of {TIKV_POD} was allowed");
            };
            ensure!(
                status.code == 403,
                "a DELETE is refused with 403: {status:?}"
            );
            let denied = status.message;
            eprintln!("admission: delete denied: {denied}");
            let began = format!(
                "TiKV pod {NAMESPACE}/{TIKV_POD}: store {TIKV_STORE} still holds {leaders} Raft \
             leader(s); Steward began evicting them through PD"
            );
            let evicting = format!(
                "TiKV pod {NAMESPACE}/{TIKV_POD}: evicting Raft leaders from store {TIKV_STORE}: \
             {leaders} left after"
            );
            ensure!(
                denied.contains("admission webhook \"tidb-guard.steward.io\" denied the request")
                    && (denied.contains(&began) || denied.contains(&evicting))
                    && !denied.contains("could not"),
                "the delete is denied with tidb-guard's message: {denied}"
            );
            ensure!(
                pd.state().evicting.contains(&TIKV_STORE)
                    && pd.state().count("POST /pd/api/v1/schedulers") == 1,
                "PD got one evict-leader scheduler for store {TIKV_STORE}"
            );
            // Steward recorded when the eviction began on the pod and said so
            // in an Event (its RBAC allows both).
            eventually(
                Duration::from_secs(30),
                "the evict-leader annotation and Event on the TiKV pod",
                || async {
                    let annotated = pods
                        .get(TIKV_POD)
                        .await?
                        .annotations()
                        .contains_key(EVICT_LEADER_BEGIN_ANNOTATION);
                    let events = events_about(&client, NAMESPACE, TIKV_POD).await?;
                    let evented = events.iter().any(|e| {
                        e.reason.as_deref() == Some("EvictingLeaders")
                            && e.message.as_deref().is_some_and(|m| m.contains(&began))
                    });
                    Ok((annotated && evented).then_some(()))
                },
            )
            .await?;
            // Once Steward's cache has the annotation, the refusal says how the
            // eviction is going.
            let waiting = eventually(
                Duration::from_secs(30),
                "a refusal that reports the eviction's progress",
                || async {
                    let message = refusal(pods.delete(TIKV_POD, &DeleteParams::default()).await)?;
                    Ok(message.contains("evicting Raft leaders").then_some(message))
                },
            )
            .await?;
            ensure!(
                waiting.contains(&evicting),
                "the delete stays denied while leaders remain: {waiting}"
            );
            // A node drain evicts instead of deleting: the eviction webhook
            // sends it to tidb-guard, which refuses it the same way.
            // It answers 429, as a PodDisruptionBudget does, so drains retry;
            // the DELETE above got 403.
            let Err(kube::Error::Api(status)) = pods.evict(TIKV_POD, &EvictParams::default()).await
            else {
                bail!("the eviction of {TIKV_POD} was not refused by the API server");
            };
            ensure!(
                status.message.contains(
                    "admission webhook \"tidb-guard-subresources.steward.io\" denied the request"
                ) && status.message.contains(&evicting)
                    && status.code == 429,
                "the eviction is refused with 429 and tidb-guard's message: {status:?}"
            );

            // PD moves the leaders away; then the same delete is allowed and
            // the kubelet double finishes it.
            pd.set_fault(Fault::None);
            eventually(
                Duration::from_secs(30),
                "the PD double to drain the store's leaders",
                || async { Ok((pd.state().leaders(TIKV_STORE) == 0).then_some(())) },
            )
            .await?;
            pods.delete(TIKV_POD, &DeleteParams::default())
                .await
                .context("deleting the TiKV pod once its store has no leaders")?;
            eventually(
                Duration::from_secs(60),
                "the TiKV pod to be gone",
                || async { Ok(pods.get_opt(TIKV_POD).await?.is_none().then_some(())) },
            )
            .await?;

            // Created again (as its StatefulSet would), the pod ends the
            // eviction: PD gives the store its leaders back.
            pods.create(&PostParams::default(), &tikv).await?;
            eventually(
                Duration::from_secs(30),
                "the evict-leader scheduler of the store to end",
                || async {
                    let state = pd.state();
                    let ended = state.count(&format!(
                        "DELETE /pd/api/v1/schedulers/evict-leader-scheduler-{TIKV_STORE}"
                    )) == 1;
                    Ok((ended && !state.evicting.contains(&TIKV_STORE)).then_some(()))
                },
            )
            .await?;

            // `kubectl scale` of the PD StatefulSet goes through the `scale`
            // subresource: refused while a PD member is unhealthy, allowed once
            // every member is healthy. Its pods stay pending (no node matches).
            create(
                &client,
                json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "basic-pd", "namespace": NAMESPACE, "labels": {
                        "app.kubernetes.io/component": "pd",
                        "app.kubernetes.io/instance": TIDB_CLUSTER,
                        "app.kubernetes.io/managed-by": "tidb-operator"}},
                    "spec": {
                        "replicas": 3, "serviceName": "basic-pd-peer",
                        "selector": {"matchLabels": {"app.kubernetes.io/component": "pd"}},
                        "template": {
                            "metadata": {"labels": {"app.kubernetes.io/component": "pd"}},
                            "spec": {"nodeSelector": {"steward.io/no-such-node": "true"},
                                     "containers": [{"name": "pd",
                                                     "image": "registry.k8s.io/pause:3.2"}]}}},
                }),
            )
            .await?;
            pd.state().member("basic-pd-0").healthy = false;
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
            let to_two = Patch::Merge(json!({"spec": {"replicas": 2}}));
            let scale_refusal = eventually(
                Duration::from_secs(60),
                "a dry-run scale-down of PD to be refused",
                || async {
                    let dry = PatchParams::default().dry_run();
                    Ok(refusal(sets.patch_scale("basic-pd", &dry, &to_two).await).ok())
                },
            )
            .await?;
            ensure!(
                scale_refusal.contains(
                    "admission webhook \"tidb-guard-subresources.steward.io\" denied the request"
                ) && scale_refusal.contains(
                    "scaling PD from 3 to 2 replicas while member(s) basic-pd-0 are unhealthy"
                ),
                "kubectl scale is refused with tidb-guard's message: {scale_refusal}"
            );
            // Healthy, but basic-pd-2 is still a member: refused, naming the
            // safe way; allowed once it has left PD.
            pd.state().member("basic-pd-0").healthy = true;
            let in_pd = refusal(
                sets.patch_scale("basic-pd", &PatchParams::default(), &to_two)
                    .await,
            )?;
            ensure!(
                in_pd.contains("PD still counts on: PD member basic-pd-2")
                    && in_pd.contains("steward.io/scale-in=2"),
                "a scale-down past a PD member is refused: {in_pd}"
            );
            pd.state().members.retain(|m| m.name != "basic-pd-2");
            sets.patch_scale("basic-pd", &PatchParams::default(), &to_two)
                .await
                .context("scaling PD down once every member is healthy and basic-pd-2 left")?;
            cluster.control_plane.check().await
        },
    );
}

/// The real StatefulSet controller creates each pod's claim from the
/// template and the pod right after it, often before Steward's watch has
/// delivered the claim: every pod of a Parallel StatefulSet with a
/// HwameiStor claim template still gets Steward's scheduler, because the
/// mutator reads a claim it lacks from the API server.
#[test]
fn statefulset_pods_with_local_claim_templates_get_stewards_scheduler() {
    scenario(
        "statefulset_pods_with_local_claim_templates_get_stewards_scheduler",
        |version| async move {
            const REPLICAS: usize = 6;
            let mutator = format!(
                "{{id: local-storage-admission, hook: admission, \
                 module: '{{local_storage_admission}}', mutate: true, failureMode: fail-open, \
                 settings: {{schedulerName: {SCHEDULER_NAME}}}}}"
            );
            let (mut cluster, _tls) = serving_webhooks(version, &[mutator.as_str()]).await?;
            let client = cluster.client();
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            // The webhook configuration reaches the apiserver's cache
            // asynchronously: wait until a dry-run pod is reviewed.
            let probe = pod("probe", json!({}), json!({}))?;
            let dry_run = PostParams {
                dry_run: true,
                ..Default::default()
            };
            let reviewed = || {
                cluster.steward.metric(
                    "steward_admission_verdicts_total",
                    &["policy=\"local-storage-admission\""],
                )
            };
            eventually(
                Duration::from_secs(60),
                "the mutating webhook to review a dry-run pod",
                || async {
                    let before = reviewed();
                    pods.create(&dry_run, &probe).await?;
                    Ok((reviewed() > before).then_some(()))
                },
            )
            .await?;

            create(
                &client,
                json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "local-data", "namespace": NAMESPACE},
                    "spec": {
                        "replicas": REPLICAS, "serviceName": "local-data",
                        "podManagementPolicy": "Parallel",
                        "selector": {"matchLabels": {"app": "local-data"}},
                        "template": {
                            "metadata": {"labels": {"app": "local-data"}},
                            "spec": {"containers": [{"name": "main",
                                                     "image": "registry.k8s.io/pause:3.2"}]}},
                        "volumeClaimTemplates": [{
                            "metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"],
                                     "storageClassName": local_storage_class()?,
                                     "resources": {"requests": {"storage": "1Gi"}}}}],
                    },
                }),
            )
            .await?;
            let created = eventually(
                Duration::from_secs(60),
                "the StatefulSet controller to create every pod",
                || async {
                    let list = pods.list(&Default::default()).await?;
                    let members: Vec<Pod> = list
                        .items
                        .into_iter()
                        .filter(|p| p.name_any().starts_with("local-data-"))
                        .collect();
                    Ok((members.len() == REPLICAS).then_some(members))
                },
            )
            .await?;
            let wrong: Vec<String> = created
                .iter()
                .filter(|p| scheduler_name(p) != SCHEDULER_NAME)
                .map(|p| format!("{} ({})", p.name_any(), scheduler_name(p)))
                .collect();
            ensure!(
                wrong.is_empty(),
                "every pod with a HwameiStor claim gets {SCHEDULER_NAME}; these did not: {}",
                wrong.join(", ")
            );
            cluster.control_plane.check().await
        },
    );
}

/// The claim lookup without the race: a hook whose cache has the cluster's
/// StorageClass but not yet the pod's claim (as when a review outruns
/// Steward's watch) reads the claim from the real API server, as Steward's
/// ServiceAccount, and gives the pod Steward's scheduler.
#[test]
fn a_claim_the_cache_lacks_is_read_from_the_api_server() {
    use std::sync::Arc;
    use steward::Hooks;
    use steward::admission::Endpoint;
    use steward::cluster::{Backend, ClusterCache, load_objects};
    scenario(
        "a_claim_the_cache_lacks_is_read_from_the_api_server",
        |version| async move {
            let mut control_plane = ControlPlane::start(version).await?;
            let client = control_plane.client.clone();
            let objects = read_objects(&example_snapshot())?;
            let of_kind = |kind: &str| -> Vec<serde_json::Value> {
                objects
                    .iter()
                    .filter(|o| o["kind"] == kind)
                    .cloned()
                    .collect()
            };
            for object in of_kind("Namespace")
                .into_iter()
                .chain(of_kind("StorageClass"))
            {
                create(&client, object).await?;
            }
            create(
                &client,
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "data-db-0", "namespace": NAMESPACE},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "storageClassName": local_storage_class()?,
                             "resources": {"requests": {"storage": "1Gi"}}},
                }),
            )
            .await?;
            let kubeconfig = deploy_service_account(&control_plane).await?;

            let config = steward_tests::config(&format!(
                "- id: local-storage-admission\n  hook: admission\n  \
                 module: {{local_storage_admission}}\n  mutate: true\n  \
                 settings: {{schedulerName: {SCHEDULER_NAME}}}\n"
            ));
            let policies = steward_tests::load_policies(steward_tests::runtime(), &config)?;
            let cache = Arc::new(ClusterCache::default());
            load_objects(&cache, &of_kind("StorageClass"))?;
            let backend = Backend::connect(&kubeconfig.display().to_string()).await?;
            let hooks = Hooks::new(policies, cache, backend);
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "5b1c1f1e-0000-4000-8000-000000000001",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "name": "db-0", "namespace": NAMESPACE, "operation": "CREATE",
                    "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller"},
                    "object": {
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "db-0", "namespace": NAMESPACE},
                        "spec": {"containers": [{"name": "main", "image": "pause"}],
                                 "volumes": [{"name": "data", "persistentVolumeClaim":
                                              {"claimName": "data-db-0"}}]},
                    },
                },
            });
            let reviewed = tokio::task::spawn_blocking(move || {
                hooks
                    .admission
                    .review(
                        Endpoint::Mutate,
                        "local-storage-admission",
                        review.to_string().as_bytes(),
                    )
                    .map(|r| r.response)
                    .map_err(|r| anyhow::anyhow!("HTTP {}: {}", r.status, r.message))
            })
            .await??;
            let patch = reviewed
                .patch
                .as_deref()
                .map(|p| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(p)
                })
                .transpose()?
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_default();
            ensure!(
                patch.contains("/spec/schedulerName") && patch.contains(SCHEDULER_NAME),
                "the pod whose claim only the API server had got Steward's scheduler: \
                 patch {patch:?}, warnings {:?}",
                reviewed.warnings
            );
            control_plane.check().await
        },
    );
}
