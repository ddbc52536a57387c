//! Policy signatures in cosign's format, so `cosign verify --key` checks what
//! `steward sign` made and Steward checks what cosign made: the signature of
//! the artifact `sha256:<hex>` is the OCI manifest tagged `sha256-<hex>.sig`
//! in the same repository, with one layer per signature, each layer a
//! simple-signing payload (media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`) that names the
//! artifact's manifest digest, and the ECDSA P-256 / SHA-256 signature of it
//! (ASN.1 DER, base64) in the annotation `dev.cosignproject.cosign/signature`.
//! Keys are PEM as cosign and openssl write them: public keys
//! `PUBLIC KEY` (SubjectPublicKeyInfo), private keys `PRIVATE KEY`
//! (PKCS#8) or `EC PRIVATE KEY` (SEC 1).
//!
//! The registry's Referrers API (cosign's newer bundle form) is not used:
//! the distribution registries Steward is tested against do not offer it,
//! and the tag form is what every cosign version verifies.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::artifact::{Descriptor, MANIFEST_MEDIA_TYPE, Manifest};
use crate::client::RegistryClient;
use crate::digest;
use crate::reference::{Reference, check_digest};

/// The media type of a simple-signing payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a container image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The config media type of the signature manifest (an empty image config).
const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The tag holding the signatures of the manifest `manifest_digest`.
pub fn signature_tag(manifest_digest: &str) -> Result<String> {
    check_digest(manifest_digest)?;
    Ok(format!("{}.sig", manifest_digest.replacen(':', "-", 1)))
}

/// The simple-signing payload (Red Hat's "simple signing" format as cosign
/// writes it): what a signature vouches for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub critical: Critical,
    /// Annotations given when signing (cosign's `-a key=value`).
    pub optional: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `registry/repository` the artifact was signed in.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload vouching for the manifest `manifest_digest` of `r`'s
    /// repository.
    pub fn new(
        r: &Reference,
        manifest_digest: &str,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: format!("{}/{}", r.registry, r.repository),
                },
                image: Image {
                    docker_manifest_digest: manifest_digest.to_string(),
                },
                kind: PAYLOAD_TYPE.into(),
            },
            optional: (!annotations.is_empty()).then_some(annotations),
        }
    }
}

/// A private key that signs (ECDSA P-256, SHA-256).
pub struct SigningKey {
    pair: EcdsaKeyPair,
}

impl SigningKey {
    /// Reads a PEM private key (`PRIVATE KEY` or `EC PRIVATE KEY`).
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        SigningKey::from_pem(&text).with_context(|| format!("signing key {}", path.display()))
    }

    pub fn from_pem(text: &[u8]) -> Result<SigningKey> {
        let block = pem::parse(text).context("not a PEM file")?;
        match block.tag() {
            "PRIVATE KEY" | "EC PRIVATE KEY" => {}
            tag if tag.starts_with("ENCRYPTED") => bail!(
                "the key is encrypted ({tag}); Steward signs with unencrypted ECDSA P-256 keys: \
                 `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out cosign.key`"
            ),
            tag => bail!("a PEM `{tag}` is not a private key; expected `PRIVATE KEY` (PKCS#8)"),
        }
        let pair =
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, block.contents())
                .map_err(|e| anyhow!("not an ECDSA P-256 private key ({e})"))?;
        Ok(SigningKey { pair })
    }

    /// A new key; returns it with its private (PKCS#8) and public
    /// (SubjectPublicKeyInfo) PEM.
    pub fn generate() -> Result<(SigningKey, String, String)> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow!("cannot generate an ECDSA P-256 key"))?;
        let private = encode_pem("PRIVATE KEY", pkcs8.as_ref());
        let key = SigningKey::from_pem(private.as_bytes())?;
        let public = key.public_pem()?;
        Ok((key, private, public))
    }

    /// The public key, PEM `PUBLIC KEY`.
    pub fn public_pem(&self) -> Result<String> {
        use aws_lc_rs::encoding::AsDer as _;
        let der = self
            .pair
            .public_key()
            .as_der()
            .map_err(|_| anyhow!("cannot encode the public key"))?;
        Ok(encode_pem("PUBLIC KEY", der.as_ref()))
    }

    /// The ASN.1 DER signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| anyhow!("signing failed"))?;
        Ok(signature.as_ref().to_vec())
    }
}

/// PEM with `\n` line ends, as openssl and cosign write it.
fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A public key signatures are checked against, named by where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    spki: Vec<u8>,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (ECDSA P-256) file.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        PublicKey::from_pem(&path.display().to_string(), &text)
            .with_context(|| format!("public key {}", path.display()))
    }

    pub fn from_pem(name: &str, text: &[u8]) -> Result<PublicKey> {
        let block = pem::parse(text).context("not a PEM file")?;
        if block.tag() != "PUBLIC KEY" {
            bail!(
                "a PEM `{}` is not a public key; expected `PUBLIC KEY`",
                block.tag()
            );
        }
        let key = PublicKey {
            name: name.to_string(),
            spki: block.contents().to_vec(),
        };
        // An ECDSA P-256 key verifies; anything else is refused now rather
        // than failing every signature later.
        aws_lc_rs::signature::ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key.spki)
            .map_err(|e| anyhow!("not an ECDSA P-256 public key ({e})"))?;
        Ok(key)
    }

    /// Whether `signature` (ASN.1 DER) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.spki)
            .verify(message, signature)
            .is_ok()
    }
}

/// What `sign` stored.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signed artifact, pinned.
    pub artifact: Reference,
    /// The signature manifest, pinned.
    pub signature: Reference,
}

/// Signs the artifact `r` names: adds a layer to its `sha256-<hex>.sig`
/// manifest (creating it if it has none), keeping the signatures already
/// there.
pub async fn sign(
    client: &RegistryClient,
    r: &Reference,
    key: &SigningKey,
    annotations: BTreeMap<String, String>,
) -> Result<Signed> {
    let manifest_digest = client.resolve(r).await?;
    let payload = serde_json::to_vec(&Payload::new(r, &manifest_digest, annotations))?;
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload)?);
    let tag = signature_tag(&manifest_digest)?;
    let sig_ref = Reference {
        tag: Some(tag),
        digest: None,
        ..r.clone()
    };
    let mut layers = match client.manifest_bytes(&sig_ref).await? {
        Some((_, bytes)) => {
            Manifest::parse(&bytes)
                .with_context(|| format!("the existing signatures at {sig_ref}"))?
                .layers
        }
        None => Vec::new(),
    };
    client
        .push_blob(&sig_ref, &digest(&payload), &payload)
        .await?;
    layers.push(Descriptor {
        media_type: PAYLOAD_MEDIA_TYPE.into(),
        digest: digest(&payload),
        size: payload.len() as u64,
        annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature)]),
    });
    // cosign's config: an empty image config listing the layers.
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>(),
        },
        "config": {},
    }))?;
    client
        .push_blob(&sig_ref, &digest(&config), &config)
        .await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: None,
        config: Descriptor {
            media_type: IMAGE_CONFIG_MEDIA_TYPE.into(),
            digest: digest(&config),
            size: config.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: BTreeMap::new(),
    };
    let stored = client
        .put_manifest(&sig_ref, &serde_json::to_vec(&manifest)?)
        .await?;
    Ok(Signed {
        artifact: r.pinned(&manifest_digest),
        signature: stored,
    })
}

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The artifact, pinned to the digest that was verified.
    pub artifact: Reference,
    /// The key that verified it.
    pub key: String,
    /// The payload that key signed.
    pub payload: Payload,
}

/// Why an artifact's signatures were refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unverified(pub String);

/// Checks that the manifest `manifest_digest` of `r`'s repository carries a
/// signature by one of `keys`. Returns an [`Unverified`] error (in the
/// chain) when it is unsigned or signed by none of them, other errors when
/// the registry could not be read.
pub async fn verify(
    client: &RegistryClient,
    r: &Reference,
    manifest_digest: &str,
    keys: &[PublicKey],
) -> Result<Verified> {
    let artifact = r.pinned(manifest_digest);
    let sig_ref = Reference {
        tag: Some(signature_tag(manifest_digest)?),
        digest: None,
        ..r.clone()
    };
    let Some((_, bytes)) = client.manifest_bytes(&sig_ref).await? else {
        return Err(Unverified(format!(
            "{artifact} is not signed: the registry has no {sig_ref} (sign it with `steward \
             sign` or `cosign sign`)"
        ))
        .into());
    };
    let manifest = Manifest::parse(&bytes).map_err(|e| {
        Unverified(format!(
            "the signatures {sig_ref} are not a manifest: {e:#}"
        ))
    })?;
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    let mut problems = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE)
    {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION).and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
        }) else {
            problems.push(format!(
                "layer {} has no base64 {SIGNATURE_ANNOTATION}",
                layer.digest
            ));
            continue;
        };
        let payload = client.blob(&sig_ref, &layer.digest, layer.size).await?;
        let Some(key) = keys.iter().find(|k| k.verifies(&payload, &signature)) else {
            problems.push(format!(
                "layer {} is signed by none of the keys",
                layer.digest
            ));
            continue;
        };
        let payload: Payload = match serde_json::from_slice(&payload) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!(
                    "layer {} is not a simple-signing payload ({e})",
                    layer.digest
                ));
                continue;
            }
        };
        if payload.critical.kind != PAYLOAD_TYPE {
            problems.push(format!(
                "layer {} signs a `{}`, not a `{PAYLOAD_TYPE}`",
                layer.digest, payload.critical.kind
            ));
        } else if payload.critical.image.docker_manifest_digest != manifest_digest {
            problems.push(format!(
                "layer {} signs {}, another artifact",
                layer.digest, payload.critical.image.docker_manifest_digest
            ));
        } else {
            return Ok(Verified {
                artifact,
                key: key.name.clone(),
                payload,
            });
        }
    }
    if problems.is_empty() {
        problems.push("it holds no simple-signing layer".into());
    }
    Err(Unverified(format!(
        "{artifact} carries no valid signature by {}: {sig_ref}: {}",
        names.join(", "),
        problems.join("; ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4486c4c3bbe7f022ae5697b5960a0eb63788a64ca8f09450b7143d6d150fe80b";

    #[test]
    fn the_payload_is_cosigns_simple_signing_json() {
        let r: Reference = "127.0.0.1:5000/steward/p:1".parse().unwrap();
        let json = serde_json::to_string(&Payload::new(&r, DIGEST, BTreeMap::new())).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/steward/p"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert_eq!(
            signature_tag(DIGEST).unwrap(),
            "sha256-4486c4c3bbe7f022ae5697b5960a0eb63788a64ca8f09450b7143d6d150fe80b.sig"
        );
        assert!(signature_tag("latest").is_err());
    }

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let (key, _, public) = SigningKey::generate().unwrap();
        let (_, _, other) = SigningKey::generate().unwrap();
        let public = PublicKey::from_pem("ours", public.as_bytes()).unwrap();
        let other = PublicKey::from_pem("theirs", other.as_bytes()).unwrap();
        let signature = key.sign(b"payload").unwrap();
        assert!(public.verifies(b"payload", &signature));
        assert!(!public.verifies(b"payloaD", &signature));
        assert!(!other.verifies(b"payload", &signature));
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused_by_name() {
        let (_, private, public) = SigningKey::generate().unwrap();
        let e = PublicKey::from_pem("k", private.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`PRIVATE KEY` is not a public key"), "{e}");
        let e = SigningKey::from_pem(public.as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`PUBLIC KEY` is not a private key"), "{e}");
        let encrypted = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let e = SigningKey::from_pem(encrypted.as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is encrypted"), "{e}");
        let e = PublicKey::from_pem("k", b"junk").unwrap_err().to_string();
        assert!(e.contains("not a PEM file"), "{e}");
    }
}
