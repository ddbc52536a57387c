//! PD over mutual TLS with its material in the TiDB cluster's client
//! Secret (tidb-operator's `<cluster>-cluster-client-secret`), read from
//! the real API server as Steward's ServiceAccount once it has the Role the
//! README describes.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;
use steward::config::{PdConfig, PdTlsConfig};
use steward::pd::{PdBase, PdClient, PdEndpoint, SecretAccess};
use steward::wit::PdCluster;
use steward_tests::control_plane::{ControlPlane, client_for};
use steward_tests::e2e::{DEPLOY_NAMESPACE, create, deploy_service_account, eventually, scenario};
use steward_tests::pd_double::PdDouble;
use steward_tests::tls::TestCa;

use crate::tidb::{CLUSTER, NAMESPACE};

const T: Duration = Duration::from_secs(2);

/// Where the cluster's PD is, its TLS material in its client Secret.
fn pd_base(pd: &PdDouble) -> PdBase {
    let config = PdConfig {
        url: pd.url(),
        timeout_ms: 1_000,
        tls: Some(PdTlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            secret: Some("{cluster}-cluster-client-secret".into()),
        }),
    };
    let cluster = PdCluster {
        name: CLUSTER.into(),
        namespace: NAMESPACE.into(),
    };
    PdEndpoint::from_config(&config).base(&cluster)
}

/// Without the Role the read is refused, naming the Secret; with it but
/// no Secret, the error says which Secret to create; with the Secret, PD
/// answers over mutual TLS.
#[test]
fn pd_tls_material_comes_from_the_clusters_client_secret() {
    scenario(
        "pd_tls_material_comes_from_the_clusters_client_secret",
        |version| async move {
            let mut control_plane = ControlPlane::start(version).await?;
            let client = control_plane.client.clone();
            let ca = TestCa::new();
            let pd = PdDouble::start_tls(NAMESPACE, CLUSTER, &ca).await;
            create(
                &client,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            )
            .await?;
            let kubeconfig = deploy_service_account(&control_plane).await?;
            let steward = PdClient::new(SecretAccess::Client(client_for(&kubeconfig).await?));
            let base = pd_base(&pd);
            let secret = format!("{NAMESPACE}/{CLUSTER}-cluster-client-secret");

            let forbidden = steward
                .stores(&base, T)
                .await
                .err()
                .context("a Secret read without the Role succeeded")?;
            ensure!(
                forbidden.contains(&format!("reading Secret {secret} for PD's TLS")),
                "{forbidden}"
            );

            create(
                &client,
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                       "metadata": {"name": "steward-pd-tls", "namespace": NAMESPACE},
                       "rules": [{"apiGroups": [""], "resources": ["secrets"],
                                  "verbs": ["get"]}]}),
            )
            .await?;
            create(
                &client,
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": "steward-pd-tls", "namespace": NAMESPACE},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                   "name": "steward-pd-tls"},
                       "subjects": [{"kind": "ServiceAccount", "name": "steward",
                                     "namespace": DEPLOY_NAMESPACE}]}),
            )
            .await?;
            let missing = eventually(
                Duration::from_secs(30),
                "the Role to let Steward look for the Secret",
                || async {
                    let e = steward.stores(&base, T).await.err().unwrap_or_default();
                    Ok(e.contains("does not exist").then_some(e))
                },
            )
            .await?;
            ensure!(
                missing.contains(&format!("Secret {secret} for PD's TLS does not exist")),
                "{missing}"
            );

            let issued = ca.issue("steward");
            create(
                &client,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": format!("{CLUSTER}-cluster-client-secret"),
                                    "namespace": NAMESPACE},
                       "stringData": {"ca.crt": ca.pem(), "tls.crt": issued.cert_pem,
                                      "tls.key": issued.key_pem}}),
            )
            .await?;
            let stores = steward
                .stores(&base, T)
                .await
                .map_err(anyhow::Error::msg)
                .context("reading PD's stores over TLS with the Secret's material")?;
            ensure!(stores.len() == 3, "PD answered over mutual TLS: {stores:?}");
            control_plane.check().await
        },
    );
}
