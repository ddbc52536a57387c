//! Mutual TLS to PD, for TiDB clusters with tidb-operator's `tlsCluster`:
//! PD serves a certificate of the cluster's own CA and verifies its
//! clients'. The material comes from files or the cluster's client Secret,
//! and is read again after [`REFRESH`] so rotated certificates are used.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use steward_cluster::Backend;
use steward_wit::PdCluster;

use super::PdError;
use crate::config::{ClusterSource, PdTlsConfig};

/// How long built TLS material is used before it is read again.
const REFRESH: Duration = Duration::from_secs(300);

pub(super) type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where one TiDB cluster's PD client certificate, key and CA are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlsSource {
    Files {
        ca: PathBuf,
        cert_key: Option<(PathBuf, PathBuf)>,
    },
    Secret {
        namespace: String,
        name: String,
    },
}

impl TlsSource {
    /// The source of `cluster`'s material, placeholders filled in.
    pub fn of(config: &PdTlsConfig, cluster: &PdCluster) -> TlsSource {
        let fill = |template: &str| {
            template
                .replace("{cluster}", &cluster.name)
                .replace("{namespace}", &cluster.namespace)
        };
        match &config.secret {
            Some(name) => TlsSource::Secret {
                namespace: cluster.namespace.clone(),
                name: fill(name),
            },
            None => TlsSource::Files {
                ca: fill(config.ca_file.as_deref().unwrap_or_default()).into(),
                cert_key: config
                    .cert_file
                    .as_deref()
                    .zip(config.key_file.as_deref())
                    .map(|(cert, key)| (fill(cert).into(), fill(key).into())),
            },
        }
    }
}

impl std::fmt::Display for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::Files { ca, .. } => write!(f, "pd.tls files (CA {})", ca.display()),
            TlsSource::Secret { namespace, name } => write!(f, "Secret {namespace}/{name}"),
        }
    }
}

/// How Secrets are read: with the host's API client, made on first use
/// from the cluster source. A snapshot has no Secrets.
#[derive(Clone, Default)]
pub enum SecretAccess {
    #[default]
    None,
    Client(kube::Client),
    Kubeconfig(String, Arc<tokio::sync::OnceCell<kube::Client>>),
}

impl SecretAccess {
    pub fn of_backend(backend: &Backend) -> SecretAccess {
        match backend {
            Backend::Snapshot => SecretAccess::None,
            Backend::Kubernetes { client, .. } => SecretAccess::Client(client.clone()),
        }
    }

    pub fn of_cluster(cluster: &ClusterSource) -> SecretAccess {
        match cluster {
            ClusterSource::Snapshot(_) => SecretAccess::None,
            ClusterSource::Kubeconfig { path, .. } => {
                SecretAccess::Kubeconfig(path.clone(), Arc::default())
            }
        }
    }

    async fn client(&self) -> Result<kube::Client, PdError> {
        match self {
            SecretAccess::None => Err(
                "PD's TLS material is configured as a Secret, but a snapshot has no Secrets; \
                 use pd.tls caFile, certFile and keyFile"
                    .into(),
            ),
            SecretAccess::Client(client) => Ok(client.clone()),
            SecretAccess::Kubeconfig(path, client) => client
                .get_or_try_init(|| async {
                    match Backend::connect(path).await {
                        Ok(Backend::Kubernetes { client, .. }) => Ok(client),
                        Ok(Backend::Snapshot) => Err("no API client".to_string()),
                        Err(e) => Err(format!("{e:#}")),
                    }
                })
                .await
                .cloned()
                .map_err(|e| format!("cannot reach the API server to read PD's TLS Secret: {e}")),
        }
    }
}

/// HTTPS clients of PD, one per TLS source, rebuilt after [`REFRESH`].
#[derive(Default)]
pub struct TlsClients {
    secrets: SecretAccess,
    built: parking_lot::Mutex<HashMap<TlsSource, (HttpsClient, Instant)>>,
}

impl TlsClients {
    pub fn new(secrets: SecretAccess) -> TlsClients {
        TlsClients {
            secrets,
            built: Default::default(),
        }
    }

    /// The client for `source`; reading or parsing its material fails
    /// closed, with a sentence naming the file or Secret.
    pub async fn client(&self, source: &TlsSource) -> Result<HttpsClient, PdError> {
        if let Some((client, at)) = self.built.lock().get(source)
            && at.elapsed() < REFRESH
        {
            return Ok(client.clone());
        }
        let material = self.read(source).await?;
        let client = https_client(&material).map_err(|e| format!("{source} for PD: {e}"))?;
        self.built
            .lock()
            .insert(source.clone(), (client.clone(), Instant::now()));
        Ok(client)
    }

    async fn read(&self, source: &TlsSource) -> Result<Material, PdError> {
        match source {
            TlsSource::Files { ca, cert_key } => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|e| {
                        format!("cannot read {} for PD's TLS (pd.tls): {e}", path.display())
                    })
                };
                let (cert, key) = match cert_key {
                    Some((cert, key)) => (Some(read(cert)?), Some(read(key)?)),
                    None => (None, None),
                };
                Ok(Material {
                    ca: read(ca)?,
                    cert,
                    key,
                })
            }
            TlsSource::Secret { namespace, name } => {
                let client = self.secrets.client().await?;
                let secrets: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
                let secret = secrets
                    .get_opt(name)
                    .await
                    .map_err(|e| format!("reading Secret {namespace}/{name} for PD's TLS: {e}"))?
                    .ok_or_else(|| {
                        format!(
                            "Secret {namespace}/{name} for PD's TLS does not exist; tidb-operator \
                             creates <cluster>-cluster-client-secret with tlsCluster enabled, \
                             or fix pd.tls.secret"
                        )
                    })?;
                let data = secret.data.unwrap_or_default();
                let field = |key: &str| {
                    data.get(key).map(|b| b.0.clone()).ok_or_else(|| {
                        format!("Secret {namespace}/{name} for PD's TLS has no {key}")
                    })
                };
                Ok(Material {
                    ca: field("ca.crt")?,
                    cert: Some(field("tls.crt")?),
                    key: Some(field("tls.key")?),
                })
            }
        }
    }
}

/// PEM texts: the CA that issued PD's certificate, and the client's.
struct Material {
    ca: Vec<u8>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

fn https_client(material: &Material) -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&material.ca) {
        let cert = cert.map_err(|e| format!("the CA is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&material.cert, &material.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("the client key is not PEM: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
