//! OCI references: `registry[:port]/repository[:tag][@sha256:<hex>]`.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

/// A parsed image reference. The registry is always explicit: Steward has
/// no default registry, so a reference never silently means Docker Hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host` or `host:port`.
    pub registry: String,
    /// `path/to/repo`, lower case.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`: a pinned reference never changes.
    pub digest: Option<String>,
}

impl Reference {
    /// What to ask the registry for: the digest if pinned, else the tag
    /// (`latest` when neither is given).
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The immutable reference to `digest` in this repository.
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The registry host without its port.
    pub fn host(&self) -> &str {
        match self.registry.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => &self.registry,
        }
    }

    /// Loopback registries (tests, local development) are reached over
    /// plain HTTP without being listed as insecure.
    pub fn is_loopback(&self) -> bool {
        let host = self.host().trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Checks `sha256:<64 hex>`.
pub fn check_digest(digest: &str) -> Result<()> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
        {
            Ok(())
        }
        _ => bail!(
            "`{digest}` is not a sha256 digest (sha256: followed by 64 lower-case hex digits)"
        ),
    }
}

impl FromStr for Reference {
    type Err = anyhow::Error;

    /// Parses `[oci://]registry/repository[:tag][@sha256:...]`.
    fn from_str(s: &str) -> Result<Reference> {
        let text = s.strip_prefix("oci://").unwrap_or(s);
        let Some((registry, rest)) = text.split_once('/') else {
            bail!(
                "`{s}` is not an OCI reference: write registry/repository[:tag][@sha256:digest], \
                 e.g. registry.example.com/policies/pd-quorum:1.0"
            );
        };
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            bail!(
                "`{s}`: `{registry}` is not a registry host; the reference must start with the \
                 registry (host or host:port), e.g. registry.example.com/{rest}"
            );
        }
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                check_digest(digest).map_err(|e| anyhow::anyhow!("`{s}`: {e}"))?;
                (name, Some(digest.to_string()))
            }
            None => (rest, None),
        };
        // A tag is what follows the last `:` after the last `/`.
        let (repository, tag) = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (name, None),
        };
        let valid_repo = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
        if !valid_repo {
            bail!(
                "`{s}`: repository `{repository}` must be lower-case letters, digits, `.`, `_`, \
                 `-` in `/`-separated parts"
            );
        }
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                bail!("`{s}`: tag `{tag}` must be 1-128 letters, digits, `.`, `_` or `-`");
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4486c4c3bbe7f022ae5697b5960a0eb63788a64ca8f09450b7143d6d150fe80b";

    #[test]
    fn parses_tags_digests_ports_and_the_scheme() {
        let r: Reference = "oci://127.0.0.1:5000/steward/pd-quorum:1.0"
            .parse()
            .unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "steward/pd-quorum");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.target(), "1.0");
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/steward/pd-quorum:1.0");

        let pinned: Reference = format!("ghcr.io/acme/policy@{DIGEST}").parse().unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.target(), DIGEST);
        assert!(!pinned.is_loopback());
        assert_eq!(
            r.pinned(DIGEST).to_string(),
            format!("127.0.0.1:5000/steward/pd-quorum@{DIGEST}")
        );

        let untagged: Reference = "localhost:5000/p".parse().unwrap();
        assert_eq!(untagged.target(), "latest");
        assert_eq!(untagged.host(), "localhost");
    }

    #[test]
    fn refuses_references_without_a_registry_or_with_bad_parts() {
        for (bad, says) in [
            ("pd-quorum.wasm", "not an OCI reference"),
            ("library/pd-quorum:1", "is not a registry host"),
            ("r.io/Policy:1", "must be lower-case"),
            ("r.io/p:bad tag", "tag `bad tag`"),
            ("r.io/p@sha256:abc", "not a sha256 digest"),
        ] {
            let e = bad.parse::<Reference>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
