//! The Helm chart (`deploy/helm/steward`) linted and rendered by the real
//! Helm v4 (built from the Go module proxy): what each value changes, and a
//! configuration Steward accepts. Installing it on real control planes is
//! the end-to-end test `helm_chart_renders_the_bundle_installs_and_its_webhooks_answer`.

use std::path::PathBuf;

use serde_json::Value;
use steward::config::{Config, Hook};
use steward_tests::e2e::parse_objects;
use steward_tests::tools::{go_tool, run, run_ok};
use steward_tests::{TempDir, root};

const CHART: &str = "deploy/helm/steward";

fn helm() -> PathBuf {
    go_tool("helm")
}

/// `helm template` for a cluster of `kube_version` with `--set` values.
fn template(kube_version: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "steward",
        CHART,
        "--namespace",
        "steward-system",
        "--kube-version",
        kube_version,
    ];
    for set in sets {
        args.extend(["--set", *set]);
    }
    let text = run_ok(&helm(), &args, &[], &root());
    parse_objects(&text, CHART).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn steward_config(objects: &[Value]) -> Config {
    let text =
        find(objects, "ConfigMap", "steward-config").expect("the config")["data"]["steward.yaml"]
            .as_str()
            .unwrap()
            .to_string();
    Config::parse(&text).unwrap_or_else(|e| panic!("Steward refuses the chart's config: {e:#}"))
}

fn containers(objects: &[Value]) -> Vec<Value> {
    find(objects, "Deployment", "steward").expect("the Deployment")["spec"]["template"]["spec"]
        ["containers"]
        .as_array()
        .unwrap()
        .clone()
}

fn scheduler_config(objects: &[Value]) -> Value {
    let text = find(objects, "ConfigMap", "steward-scheduler-config").expect("scheduler config")
        ["data"]["kube-scheduler.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    serde_norway::from_str(&text).unwrap()
}

#[test]
fn the_chart_lints_and_renders_a_configuration_steward_accepts() {
    let out = run_ok(&helm(), &["lint", "--strict", CHART], &[], &root());
    assert!(out.contains("0 chart(s) failed"), "{out}");

    let objects = template("v1.37.2", &[]);
    let config = steward_config(&objects);
    assert_eq!(config.policies.len(), 6);
    assert!(config.signatures.public_keys.is_empty());
    assert_eq!(config.reconcile.lease_namespace, "steward-system");
    // tidb-guard lets the release's ServiceAccount act (values are templates).
    let guard = |config: &Config| {
        config
            .policies
            .iter()
            .find(|p| p.id == "tidb-guard")
            .expect("tidb-guard")
            .settings["stewardUsers"]
            .clone()
    };
    assert_eq!(
        guard(&config),
        serde_json::json!(["system:serviceaccount:steward-system:steward"])
    );
    let text = run_ok(
        &helm(),
        &["template", "tidb", CHART, "--namespace", "tidb-admin"],
        &[],
        &root(),
    );
    let objects_elsewhere = parse_objects(&text, CHART).unwrap();
    let renamed = find(&objects_elsewhere, "ConfigMap", "tidb-steward-config").expect("the config")
        ["data"]["steward.yaml"]
        .as_str()
        .unwrap();
    assert_eq!(
        guard(&Config::parse(renamed).unwrap()),
        serde_json::json!(["system:serviceaccount:tidb-admin:tidb-steward"])
    );
    // The self-signed certificate's CA is what the webhooks trust.
    let secret = find(&objects, "Secret", "steward-webhook-tls").expect("the TLS Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for hook in find(&objects, kind, "steward").unwrap()["webhooks"]
            .as_array()
            .unwrap()
        {
            assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
            let path = hook["clientConfig"]["service"]["path"].as_str().unwrap();
            let id = path.rsplit('/').next().unwrap();
            assert!(
                config
                    .policies
                    .iter()
                    .any(|p| p.id == id && p.hook == Hook::Admission),
                "{path}"
            );
        }
    }
    // The registry Secret is mounted, optional, as $DOCKER_CONFIG/config.json.
    let steward = &containers(&objects)[0];
    assert_eq!(steward["env"][0]["name"], "DOCKER_CONFIG");
    assert_eq!(steward["image"], "steward:0.1.0");
}

#[test]
fn the_scheduler_sidecar_and_apis_follow_the_clusters_version() {
    for (version, api) in [
        ("v1.20.2", "kubescheduler.config.k8s.io/v1beta1"),
        ("v1.24.3", "kubescheduler.config.k8s.io/v1beta3"),
        ("v1.37.2", "kubescheduler.config.k8s.io/v1"),
    ] {
        let objects = template(version, &[]);
        let sidecar = containers(&objects)[1].clone();
        assert_eq!(
            sidecar["image"],
            format!("registry.k8s.io/kube-scheduler:{version}").as_str()
        );
        assert_eq!(scheduler_config(&objects)["apiVersion"], api, "{version}");
        let pdb = find(&objects, "PodDisruptionBudget", "steward").unwrap();
        let expected = if version == "v1.20.2" {
            "policy/v1beta1"
        } else {
            "policy/v1"
        };
        assert_eq!(pdb["apiVersion"], expected, "{version}");
    }
    let pinned = template("v1.37.2", &["scheduler.image.tag=v1.36.0"]);
    assert_eq!(
        containers(&pinned)[1]["image"],
        "registry.k8s.io/kube-scheduler:v1.36.0"
    );
    let without = template("v1.37.2", &["scheduler.enabled=false"]);
    assert_eq!(containers(&without).len(), 1);
    assert!(find(&without, "ConfigMap", "steward-scheduler-config").is_none());
}

#[test]
fn values_set_replicas_reconcile_tls_keys_and_registry_credentials() {
    let dir = TempDir::new("helm-values");
    let objects = template(
        "v1.37.2",
        &[
            "replicas=3",
            "reconcile.enabled=false",
            "podDisruptionBudget.enabled=false",
            "image.repository=registry.example.com/steward",
            "image.tag=1.2.3",
            "registry.pollIntervalMs=5000",
        ],
    );
    let deployment = find(&objects, "Deployment", "steward").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        containers(&objects)[0]["image"],
        "registry.example.com/steward:1.2.3"
    );
    let config = steward_config(&objects);
    assert!(config.policies.iter().all(|p| p.hook != Hook::Reconcile));
    assert_eq!(config.registries.poll_interval_ms, 5000);
    assert!(find(&objects, "PodDisruptionBudget", "steward").is_none());

    // Signing keys: a ConfigMap mounted where the config names them; and
    // the registry Secret the chart creates from its content.
    let (_, _, public) = steward::oci::signature::SigningKey::generate().unwrap();
    let values = dir.path().join("keys.yaml");
    std::fs::write(
        &values,
        format!(
            "registry:\n  dockerConfigJson: '{{\"auths\":{{}}}}'\nsignatures:\n  publicKeys:\n    release.pub: |\n{}",
            public
                .lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    let text = run_ok(
        &helm(),
        &[
            "template",
            "steward",
            CHART,
            "-n",
            "steward-system",
            "-f",
            values.to_str().unwrap(),
        ],
        &[],
        &root(),
    );
    let objects = parse_objects(&text, CHART).unwrap();
    let config = steward_config(&objects);
    assert_eq!(
        config.signatures.public_keys,
        vec![PathBuf::from("/etc/steward/keys/release.pub")]
    );
    let keys = find(&objects, "ConfigMap", "steward-signature-keys").unwrap();
    assert_eq!(keys["data"]["release.pub"], public.as_str());
    let registry = find(&objects, "Secret", "steward-registry").expect("the registry Secret");
    assert_eq!(registry["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(registry["data"][".dockerconfigjson"], "eyJhdXRocyI6e319");

    // cert-manager: a Certificate, its CA injected, no chart-made Secret.
    let objects = template("v1.37.2", &["tls.mode=cert-manager"]);
    assert!(find(&objects, "Secret", "steward-webhook-tls").is_none());
    let certificate = find(&objects, "Certificate", "steward-webhook").unwrap();
    assert_eq!(certificate["spec"]["secretName"], "steward-webhook-tls");
    let hooks = find(&objects, "ValidatingWebhookConfiguration", "steward").unwrap();
    assert_eq!(
        hooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "steward-system/steward-webhook"
    );

    // An existing Secret needs the CA that signed it.
    let out = run(
        &helm(),
        &[
            "template",
            "steward",
            CHART,
            "--set",
            "tls.mode=secret",
            "--set",
            "tls.existingSecret=mine",
        ],
        &[],
        &root(),
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("tls.caBundle"), "{}", out.stderr);
    let objects = template(
        "v1.37.2",
        &[
            "tls.mode=secret",
            "tls.existingSecret=mine",
            "tls.caBundle=Q0E=",
        ],
    );
    let volumes =
        &find(&objects, "Deployment", "steward").unwrap()["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "mine")
    );
    let out = run(
        &helm(),
        &["template", "steward", CHART, "--set", "tls.mode=manual"],
        &[],
        &root(),
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("is not one of"), "{}", out.stderr);
}
