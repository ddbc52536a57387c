//! The control plane's certificates: one throwaway CA per run, serving
//! certificates it signs (kube-apiserver's, later Steward's webhook), and the
//! service-account signing key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA whose certificate is written to `ca.crt` in the run's directory.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub ca_cert: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct KeyPairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Creates the CA under `dir`.
    pub fn create(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "steward-e2e-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_cert = dir.join("ca.crt");
        write(&ca_cert, &cert.pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_cert,
        })
    }

    /// Issues a serving certificate for `sans` (IP addresses or DNS names),
    /// written as `<name>.crt` and `<name>.key`.
    pub fn serving(&self, name: &str, sans: &[&str]) -> Result<KeyPairFiles> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = KeyPairFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }

    /// A fresh key pair for service-account tokens (no certificate).
    pub fn service_account_key(&self) -> Result<ServiceAccountKey> {
        let key = KeyPair::generate()?;
        let files = ServiceAccountKey {
            private: self.dir.join("sa.key"),
            public: self.dir.join("sa.pub"),
        };
        write(&files.private, &key.serialize_pem())?;
        write(&files.public, &key.public_key_pem())?;
        Ok(files)
    }
}

/// The service-account token key: kube-apiserver signs and verifies with it,
/// kube-controller-manager signs the legacy token secrets.
pub struct ServiceAccountKey {
    pub private: PathBuf,
    pub public: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
