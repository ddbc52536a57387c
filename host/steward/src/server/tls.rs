//! TLS for the webhook: the certificate and key come from PEM files and are
//! re-read when the files change. Every new handshake takes the current
//! pair; connections already open keep the one they began with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The serving certificate, kept in step with its files.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// What the files looked like when `current` was read.
    seen: Mutex<Stamp>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    };
    [one(cert), one(key)]
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    CertifiedKey::from_der(chain, private, &provider()).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {} (or is of an unsupported type)",
            key.display(),
            cert.display()
        )
    })
}

impl CertFiles {
    /// Reads the pair; an unusable pair is an error naming the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertFiles>> {
        let seen = stamp(cert, key);
        let pair = read_pair(cert, key)?;
        Ok(Arc::new(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(pair),
            seen: Mutex::new(seen),
        }))
    }

    /// Re-reads the files if they changed since the last read. A broken new
    /// pair (half-written, mismatched) is reported and the old one kept;
    /// it is tried again on the next change.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let now = stamp(&self.cert, &self.key);
        let mut seen = self.seen.lock();
        if *seen == now {
            return Ok(false);
        }
        *seen = now;
        let pair = read_pair(&self.cert, &self.key)?;
        self.current.store(Arc::new(pair));
        Ok(true)
    }

    /// Checks the files every [`RELOAD_INTERVAL`] for as long as the
    /// returned task runs.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let files = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                match files.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %files.cert.display(), "serving certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("keeping the previous serving certificate: {e:#}"),
                }
            }
        })
    }

    /// A rustls server configuration that serves the current pair.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("no TLS protocol version is available")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
