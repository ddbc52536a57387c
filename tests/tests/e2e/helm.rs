//! The Helm chart (`deploy/helm/steward`) with the real Helm v4 (built from
//! the Go module proxy) on real control planes, each release: with default
//! values it renders the objects the release's kustomize flavour renders;
//! `helm install` creates them with the kube-scheduler sidecar at the
//! cluster's version; Steward run as the installed Deployment runs it (its
//! ConfigMap, the chart's self-signed certificate, the ServiceAccount)
//! answers the API server's admission calls through the chart's CA bundle;
//! `helm upgrade` keeps the certificate.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use steward_tests::control_plane::{Binaries, ControlPlane, KubeVersion};
use steward_tests::e2e::{
    DEPLOY_NAMESPACE, create, install_crds, parse_objects, read_objects, scenario,
    steward_kubeconfig,
};
use steward_tests::tools::{go_tool, run};

use crate::placement::{SCHEDULER_IMAGE, config_file, relative, render, start_as_installed};

/// The chart, relative to the repository.
const CHART: &str = "deploy/helm/steward";

/// Labels the chart adds for Helm's release tracking (the kustomize bundle
/// has none of them, or only the first).
const RELEASE_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

/// Runs Helm (against the cluster of `kubeconfig`, if any); stdout, or an
/// error with its stderr.
fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Result<String> {
    let kubeconfig = kubeconfig.map(|k| k.display().to_string());
    let env: Vec<(&str, &str)> = kubeconfig
        .iter()
        .map(|k| ("KUBECONFIG", k.as_str()))
        .collect();
    let out = run(&go_tool("helm"), args, &env, &steward_tests::root());
    ensure!(out.ok, "helm {} failed: {}", args.join(" "), out.stderr);
    Ok(out.stdout)
}

/// What is compared of rendered objects, by kind, namespace and name:
/// without the Namespace (the chart has none: Helm keeps its release in
/// the namespace, which exists before), the chart's release labels, empty
/// label and annotation maps,
/// kustomize's ConfigMap name hashes,
/// the webhooks' CA bundles (made at install) and the chart's self-signed
/// TLS Secret (the bundle's comes from a script or cert-manager); the
/// ConfigMaps' files parsed.
fn comparable(objects: Vec<Value>) -> BTreeMap<String, Value> {
    let unhashed = |name: &str| -> String {
        match name.rsplit_once('-') {
            Some((stem, hash))
                if stem.starts_with("steward-") && stem.ends_with("config") && hash.len() == 10 =>
            {
                stem.to_string()
            }
            _ => name.to_string(),
        }
    };
    let mut out = BTreeMap::new();
    for mut o in objects {
        if o["kind"] == "Namespace" || (o["kind"] == "Secret" && o["type"] == "kubernetes.io/tls") {
            continue;
        }
        if let Some(labels) = o["metadata"]["labels"].as_object_mut() {
            labels.retain(|k, _| !RELEASE_LABELS.contains(&k.as_str()));
        }
        // kustomize v2 writes `annotations: {}` on replaced ConfigMaps.
        if let Some(metadata) = o["metadata"].as_object_mut() {
            metadata.retain(|k, v| {
                !(["labels", "annotations"].contains(&k.as_str())
                    && v.as_object().is_some_and(|m| m.is_empty()))
            });
        }
        if o["kind"] == "ConfigMap" {
            let name = unhashed(o["metadata"]["name"].as_str().unwrap_or_default());
            o["metadata"]["name"] = name.into();
            for (_, file) in o["data"].as_object_mut().into_iter().flatten() {
                let parsed: Value = serde_norway::from_str(file.as_str().unwrap_or_default())
                    .unwrap_or(Value::Null);
                *file = parsed;
            }
        }
        for volume in o["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(name) = volume["configMap"]["name"].as_str() {
                volume["configMap"]["name"] = unhashed(name).into();
            }
        }
        for hook in o["webhooks"].as_array_mut().into_iter().flatten() {
            hook["clientConfig"]
                .as_object_mut()
                .map(|c| c.remove("caBundle"));
        }
        let key = format!(
            "{} {}/{}",
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        );
        out.insert(key, o);
    }
    out
}

/// The first place `a` and `b` differ, as a JSON pointer with both values.
fn difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{at}/{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(p, q, &format!("{at}/{i}"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

/// With default values and this release's version, the chart renders what
/// the release's kustomize flavour renders with its sidecar at the
/// release (as the deploy-bundle test installs it).
fn check_same_objects(version: KubeVersion, kubectl: &Path) -> Result<()> {
    let dir = steward_tests::TempDir::new("helm-compare");
    let flavour = steward_tests::root().join(version.deploy_flavour());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "bases:\n- {}\nimages:\n- name: {SCHEDULER_IMAGE}\n  newTag: {}\n",
            relative(dir.path(), &flavour).display(),
            version.release()
        ),
    )?;
    let bundle = comparable(parse_objects(
        &render(kubectl, dir.path())?,
        version.deploy_flavour(),
    )?);
    let chart = comparable(parse_objects(
        &helm(
            &[
                "template",
                "steward",
                CHART,
                "--namespace",
                DEPLOY_NAMESPACE,
                "--kube-version",
                version.release(),
            ],
            None,
        )?,
        CHART,
    )?);
    let (only_bundle, only_chart): (Vec<_>, Vec<_>) = (
        bundle.keys().filter(|k| !chart.contains_key(*k)).collect(),
        chart.keys().filter(|k| !bundle.contains_key(*k)).collect(),
    );
    ensure!(
        only_bundle.is_empty() && only_chart.is_empty(),
        "only in {}: {only_bundle:?}; only in the chart: {only_chart:?}",
        version.deploy_flavour()
    );
    for (key, object) in &bundle {
        if let Some(d) = difference(object, &chart[key], "") {
            bail!(
                "{key} differs between {} and the chart: {d}",
                version.deploy_flavour()
            );
        }
    }
    Ok(())
}

#[test]
fn helm_chart_renders_the_bundle_installs_and_its_webhooks_answer() {
    scenario(
        "helm_chart_renders_the_bundle_installs_and_its_webhooks_answer",
        |version| async move {
            let binaries = Binaries::ensure(version)?;
            check_same_objects(version, &binaries.kubectl)?;

            let mut control_plane = ControlPlane::start(version).await?;
            let client = control_plane.client.clone();
            let admin = control_plane.admin_kubeconfig.clone();
            // `localhost` beside the Service's names: the API server calls
            // Steward in this process by URL, through the chart's CA.
            let install = |verb: &'static str| {
                helm(
                    &[
                        verb,
                        "steward",
                        CHART,
                        "--namespace",
                        DEPLOY_NAMESPACE,
                        "--set",
                        "tls.extraDNSNames={localhost}",
                    ],
                    Some(&admin),
                )
            };
            // The namespace as the bundle makes it, labelled so that the
            // webhooks leave it out, then the release in it.
            for namespace in
                read_objects(&steward_tests::root().join("deploy/base/namespace.yaml"))?
            {
                create(&client, namespace).await?;
            }
            install("install")?;

            // The sidecar follows the cluster's version.
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
            let deployment = deployments.get("steward").await?;
            let images: Vec<String> = deployment
                .spec
                .template
                .spec
                .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
                .unwrap_or_default();
            let sidecar = format!("{SCHEDULER_IMAGE}:{}", version.release());
            ensure!(
                images.contains(&sidecar),
                "the installed Deployment runs {images:?}, not {sidecar}"
            );

            install_crds(
                &client,
                &steward_tests::root().join("tests/control-plane/hwameistor-crds.yaml"),
            )
            .await?;
            let kubeconfig = steward_kubeconfig(&control_plane).await?;
            let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
            let config = config_file(
                &serde_json::to_value(configmaps.get("steward-config").await?)?,
                "steward.yaml",
            )?;
            let steward =
                start_as_installed(&control_plane, config, "steward-webhook-tls", &kubeconfig)
                    .await?;
            let webhook = steward
                .webhook
                .context("the chart's config serves admission")?;
            let as_installed = point_webhooks_at(&client, webhook.port()).await?;

            // A pod anywhere but Steward's namespace goes through the
            // mutating webhook.
            control_plane.wait_service_account("default").await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "admitted-by-the-chart"},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.2"}]},
            }))?;
            pods.create(&PostParams::default(), &pod).await?;
            let verdicts = steward.metric(
                "steward_admission_verdicts_total",
                &["policy=\"local-storage-admission\""],
            );
            ensure!(
                verdicts >= 1.0,
                "the API server called the chart's mutating webhook ({verdicts} verdicts)"
            );

            // An upgrade keeps the certificate the webhooks trust. The
            // webhooks go back to the Service first: Helm applies server
            // side, which would keep the URL beside the Service.
            set_webhooks(&client, &as_installed).await?;
            let secrets: Api<Secret> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
            let before = secrets.get("steward-webhook-tls").await?.data;
            install("upgrade")?;
            let after = secrets.get("steward-webhook-tls").await?.data;
            ensure!(
                before == after,
                "helm upgrade replaced the webhook certificate"
            );
            // The upgraded webhooks' CA bundle still trusts Steward's
            // certificate.
            point_webhooks_at(&client, webhook.port()).await?;
            let mut second = pod.clone();
            second.metadata.name = Some("admitted-after-the-upgrade".into());
            pods.create(&PostParams::default(), &second).await?;
            let after_upgrade = steward.metric(
                "steward_admission_verdicts_total",
                &["policy=\"local-storage-admission\""],
            );
            ensure!(
                after_upgrade > verdicts,
                "the webhook answers after the upgrade ({after_upgrade} verdicts)"
            );
            control_plane.check().await
        },
    );
}

/// The installed webhook configurations (both named `steward`), by kind.
const WEBHOOK_KINDS: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn webhook_api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    Api::all_with(client.clone(), &resource)
}

/// Points every installed webhook at `https://localhost:<port>` with its
/// path, keeping the CA bundle the chart installed; returns the webhooks
/// as they were, by kind, for [`set_webhooks`].
async fn point_webhooks_at(client: &kube::Client, port: u16) -> Result<Vec<(&'static str, Value)>> {
    let mut before = Vec::new();
    let mut pointed = Vec::new();
    for kind in WEBHOOK_KINDS {
        let installed = serde_json::to_value(webhook_api(client, kind).get("steward").await?)?;
        let mut webhooks = installed["webhooks"].clone();
        for hook in webhooks.as_array_mut().into_iter().flatten() {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .context("a webhook without a service path")?
                .to_string();
            let ca = hook["clientConfig"]["caBundle"].clone();
            ensure!(ca.is_string(), "a webhook without the chart's caBundle");
            hook["clientConfig"] =
                json!({"url": format!("https://localhost:{port}{path}"), "caBundle": ca});
        }
        before.push((kind, installed["webhooks"].clone()));
        pointed.push((kind, webhooks));
    }
    set_webhooks(client, &pointed).await?;
    Ok(before)
}

/// Replaces the webhooks of each kind's `steward` configuration with
/// `webhooks` (a merge patch replaces the list whole).
async fn set_webhooks(client: &kube::Client, webhooks: &[(&str, Value)]) -> Result<()> {
    for (kind, list) in webhooks {
        webhook_api(client, kind)
            .patch(
                "steward",
                &PatchParams::default(),
                &Patch::Merge(&json!({"webhooks": list})),
            )
            .await?;
    }
    Ok(())
}
