//! A small client of the OCI distribution API: push and pull one Wasm
//! artifact, resolve a tag to its digest. Every byte read is checked
//! against its sha256 digest.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;

use super::artifact::{Artifact, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Manifest, WasmConfig};
use super::auth::{Challenge, Credentials, docker_credentials};
use super::reference::Reference;
use crate::digest;

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest blob or manifest read from a registry.
const MAX_BLOB_BYTES: usize = 256 << 20;

/// Environment variable listing extra registries reached over plain HTTP
/// (comma-separated `host:port`).
pub const INSECURE_ENV: &str = "STEWARD_INSECURE_REGISTRIES";

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Content that does not hash to the digest it was asked for or announced
/// with.
#[derive(Debug, thiserror::Error)]
#[error("digest mismatch: {0}")]
pub struct DigestMismatch(pub String);

/// An artifact read from a registry, every digest verified.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The immutable reference (`repo@sha256:...`).
    pub reference: Reference,
    pub manifest: Manifest,
    /// The config, when it is the CNCF Wasm config.
    pub config: Option<WasmConfig>,
    pub wasm: Vec<u8>,
}

impl Pulled {
    /// The manifest digest.
    pub fn digest(&self) -> &str {
        self.reference.digest.as_deref().unwrap_or_default()
    }
}

/// A registry client; cheap to share, keeps bearer tokens per repository.
pub struct RegistryClient {
    insecure: Vec<String>,
    http: Client<HttpConnector, Full<Bytes>>,
    https: std::result::Result<Client<Https, Full<Bytes>>, String>,
    tokens: Mutex<HashMap<(String, String), String>>,
}

struct Response {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl RegistryClient {
    /// `insecure`: registries (`host:port`) reached over plain HTTP, in
    /// addition to loopback ones and those in `STEWARD_INSECURE_REGISTRIES`.
    pub fn new(insecure: &[String]) -> RegistryClient {
        let mut insecure = insecure.to_vec();
        if let Ok(list) = std::env::var(INSECURE_ENV) {
            insecure.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        let executor = TokioExecutor::new();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|b| Client::builder(executor.clone()).build(b.https_only().enable_http1().build()))
            .map_err(|e| format!("no trusted root certificates for HTTPS registries: {e}"));
        RegistryClient {
            insecure,
            http: Client::builder(executor).build_http(),
            https,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn base(&self, r: &Reference) -> String {
        let scheme = if r.is_loopback() || self.insecure.iter().any(|i| i == &r.registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{}", r.registry, r.repository)
    }

    /// The manifest digest a tag (or pinned digest) currently names,
    /// without downloading the artifact.
    pub async fn resolve(&self, r: &Reference) -> Result<String> {
        if let Some(d) = &r.digest {
            return Ok(d.clone());
        }
        let url = format!("{}/manifests/{}", self.base(r), r.target());
        let resp = self
            .send(
                r,
                "pull",
                Method::HEAD,
                &url,
                &[(ACCEPT, MANIFEST_ACCEPT)],
                Bytes::new(),
            )
            .await?;
        expect(&resp, &[StatusCode::OK], &format!("resolving {r}"))?;
        match resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(d) => Ok(d.to_string()),
            None => Ok(self.manifest(r).await?.0),
        }
    }

    /// The manifest `r` names and its digest (verified when pinned).
    async fn manifest(&self, r: &Reference) -> Result<(String, Manifest)> {
        let resp = self.manifest_response(r).await?;
        let (actual, body) = verified_manifest(r, resp)?;
        let manifest = Manifest::parse(&body).with_context(|| format!("{r}"))?;
        Ok((actual, manifest))
    }

    /// The raw manifest `r` names and its digest (checked against the pin
    /// and the registry's claim), or None when the registry has none.
    pub async fn manifest_bytes(&self, r: &Reference) -> Result<Option<(String, Bytes)>> {
        let resp = self.manifest_response(r).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        verified_manifest(r, resp).map(Some)
    }

    async fn manifest_response(&self, r: &Reference) -> Result<Response> {
        let url = format!("{}/manifests/{}", self.base(r), r.target());
        self.send(
            r,
            "pull",
            Method::GET,
            &url,
            &[(ACCEPT, MANIFEST_ACCEPT)],
            Bytes::new(),
        )
        .await
    }

    /// A blob, checked against `expected` (its digest) and `size`.
    pub async fn blob(&self, r: &Reference, expected: &str, size: u64) -> Result<Bytes> {
        super::reference::check_digest(expected)?;
        let mut url = format!("{}/blobs/{expected}", self.base(r));
        // Registries may redirect blob reads to storage.
        for _ in 0..5 {
            let resp = self
                .send(r, "pull", Method::GET, &url, &[], Bytes::new())
                .await?;
            if resp.status.is_redirection() {
                let location = header(&resp, LOCATION).ok_or_else(|| {
                    anyhow!("the registry redirected blob {expected} without a Location")
                })?;
                url = absolute(&url, location);
                continue;
            }
            expect(
                &resp,
                &[StatusCode::OK],
                &format!("fetching blob {expected} of {r}"),
            )?;
            let actual = digest(&resp.body);
            if actual != expected {
                return Err(
                    DigestMismatch(format!("blob {expected} of {r} hashes to {actual}")).into(),
                );
            }
            if resp.body.len() as u64 != size {
                bail!(
                    "blob {expected} of {r} is {} bytes, the manifest says {size}",
                    resp.body.len()
                );
            }
            return Ok(resp.body);
        }
        bail!("too many redirects fetching blob {expected} of {r}")
    }

    /// Pulls the Wasm artifact `r` names, verifying every digest.
    pub async fn pull(&self, r: &Reference) -> Result<Pulled> {
        let (manifest_digest, manifest) = self.manifest(r).await?;
        let layer = manifest
            .wasm_layer()
            .with_context(|| format!("{r}"))?
            .clone();
        let wasm = self.blob(r, &layer.digest, layer.size).await?.to_vec();
        let config = if manifest.config.media_type == CONFIG_MEDIA_TYPE {
            let bytes = self
                .blob(r, &manifest.config.digest, manifest.config.size)
                .await?;
            Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("the Wasm config of {r} is not valid"))?,
            )
        } else {
            None
        };
        Ok(Pulled {
            reference: r.pinned(&manifest_digest),
            manifest,
            config,
            wasm,
        })
    }

    /// Pushes `artifact` to `r` (its tag, or by digest when untagged);
    /// returns the immutable reference.
    pub async fn push(&self, r: &Reference, artifact: &Artifact) -> Result<Reference> {
        self.push_blob(r, &artifact.manifest.config.digest, &artifact.config_json)
            .await?;
        self.push_blob(r, &artifact.manifest.layers[0].digest, &artifact.wasm)
            .await?;
        self.put_manifest(r, &artifact.manifest_json).await
    }

    /// Stores the OCI image manifest `json` under `r`'s tag (or by digest
    /// when untagged), its blobs pushed before; returns the immutable
    /// reference.
    pub async fn put_manifest(&self, r: &Reference, json: &[u8]) -> Result<Reference> {
        let manifest_digest = digest(json);
        let target = r.tag.clone().unwrap_or_else(|| manifest_digest.clone());
        let url = format!("{}/manifests/{target}", self.base(r));
        let resp = self
            .send(
                r,
                "pull,push",
                Method::PUT,
                &url,
                &[(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)],
                Bytes::copy_from_slice(json),
            )
            .await?;
        expect(
            &resp,
            &[StatusCode::CREATED, StatusCode::OK],
            &format!("pushing the manifest to {r}"),
        )?;
        if let Some(stored) = header(
            &resp,
            http::HeaderName::from_static("docker-content-digest"),
        ) && stored != manifest_digest
        {
            bail!(
                "the registry stored the manifest of {r} as {stored}, but it hashes to {manifest_digest}"
            );
        }
        Ok(r.pinned(&manifest_digest))
    }

    /// Uploads a blob unless the repository has it already.
    pub async fn push_blob(&self, r: &Reference, blob_digest: &str, bytes: &[u8]) -> Result<()> {
        let base = self.base(r);
        let head = self
            .send(
                r,
                "pull,push",
                Method::HEAD,
                &format!("{base}/blobs/{blob_digest}"),
                &[],
                Bytes::new(),
            )
            .await?;
        if head.status == StatusCode::OK {
            return Ok(());
        }
        let start = self
            .send(
                r,
                "pull,push",
                Method::POST,
                &format!("{base}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await?;
        expect(
            &start,
            &[StatusCode::ACCEPTED],
            &format!("starting a blob upload to {r}"),
        )?;
        let location = header(&start, LOCATION)
            .ok_or_else(|| anyhow!("the registry started an upload to {r} without a Location"))?;
        let mut url = absolute(&base, location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(blob_digest);
        let put = self
            .send(
                r,
                "pull,push",
                Method::PUT,
                &url,
                &[(CONTENT_TYPE, "application/octet-stream")],
                Bytes::copy_from_slice(bytes),
            )
            .await?;
        expect(
            &put,
            &[StatusCode::CREATED],
            &format!("uploading blob {blob_digest} to {r}"),
        )
    }

    /// Sends one request, answering a 401 challenge once (Basic with the
    /// Docker config's credentials, or the bearer token flow).
    async fn send(
        &self,
        r: &Reference,
        actions: &str,
        method: Method,
        url: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response> {
        let scope = format!("repository:{}:{actions}", r.repository);
        let key = (r.registry.clone(), scope.clone());
        let cached = self.tokens.lock().get(&key).cloned();
        let first = self
            .request(
                method.clone(),
                url,
                headers,
                cached.as_deref(),
                body.clone(),
            )
            .await
            .with_context(|| format!("registry {} is unreachable", r.registry))?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = header(&first, WWW_AUTHENTICATE).and_then(Challenge::parse);
        // A credential helper is a process: run it off the reactor.
        let registry = r.registry.clone();
        let credentials = tokio::task::spawn_blocking(move || docker_credentials(&registry))
            .await
            .map_err(|e| anyhow!("looking up credentials panicked: {e}"))??;
        let authorization = match challenge {
            Some(Challenge::Basic) => credentials
                .as_ref()
                .map(Credentials::basic)
                .ok_or_else(|| no_credentials(r))?,
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let token = self
                    .token(
                        &realm,
                        service.as_deref(),
                        asked.as_deref().unwrap_or(&scope),
                        credentials.as_ref(),
                    )
                    .await
                    .with_context(|| format!("cannot get a token for {r} from {realm}"))?;
                format!("Bearer {token}")
            }
            None => return Err(no_credentials(r)),
        };
        self.tokens.lock().insert(key, authorization.clone());
        let retry = self
            .request(method, url, headers, Some(&authorization), body)
            .await
            .with_context(|| format!("registry {} is unreachable", r.registry))?;
        if retry.status == StatusCode::UNAUTHORIZED || retry.status == StatusCode::FORBIDDEN {
            bail!(
                "registry {} refused the credentials for {r} ({}): check the Docker config ({})",
                r.registry,
                retry.status,
                super::auth::docker_config_path()
                    .map_or("~/.docker/config.json".into(), |p| p.display().to_string())
            );
        }
        Ok(retry)
    }

    /// The distribution token flow: GET realm?service=..&scope=.. .
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String> {
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            encode(scope)
        );
        if let Some(service) = service {
            url.push_str(&format!("&service={}", encode(service)));
        }
        let basic = credentials.map(Credentials::basic);
        let resp = self
            .request(Method::GET, &url, &[], basic.as_deref(), Bytes::new())
            .await?;
        expect(&resp, &[StatusCode::OK], "fetching a registry token")?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token =
            serde_json::from_slice(&resp.body).context("the token answer is not JSON")?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| anyhow!("the token answer has neither token nor access_token"))
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(http::HeaderName, &str)],
        authorization: Option<&str>,
        body: Bytes,
    ) -> Result<Response> {
        let mut builder = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(name, *value);
        }
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        let request = builder
            .body(Full::new(body))
            .with_context(|| format!("`{url}` is not a valid URL"))?;
        let call = async {
            let response = if url.starts_with("https://") {
                let client = self.https.as_ref().map_err(|e| anyhow!("{e}"))?;
                client.request(request).await
            } else {
                self.http.request(request).await
            }
            .with_context(|| format!("request to {url} failed"))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BLOB_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer of {url} failed: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| anyhow!("request to {url} timed out after {REQUEST_TIMEOUT:?}"))?
    }
}

fn no_credentials(r: &Reference) -> anyhow::Error {
    anyhow!(
        "registry {} asks for credentials for {r}, and the Docker config has none for it: run \
         `docker login {}`, add auths.\"{}\".auth (base64 of user:password) or a credential \
         helper (credHelpers, credsStore) to {}",
        r.registry,
        r.registry,
        r.registry,
        super::auth::docker_config_path()
            .map_or("~/.docker/config.json".into(), |p| p.display().to_string())
    )
}

/// The body of a manifest answer and its digest, refused unless the answer
/// is 200 and the body hashes to the pinned digest and to what the registry
/// claims.
fn verified_manifest(r: &Reference, resp: Response) -> Result<(String, Bytes)> {
    expect(
        &resp,
        &[StatusCode::OK],
        &format!("fetching the manifest of {r}"),
    )?;
    let actual = digest(&resp.body);
    if let Some(pinned) = &r.digest
        && pinned != &actual
    {
        return Err(DigestMismatch(format!(
            "{r} was asked for, but the registry sent a manifest with digest {actual}"
        ))
        .into());
    }
    if let Some(claimed) = header(
        &resp,
        http::HeaderName::from_static("docker-content-digest"),
    ) && claimed != actual
    {
        return Err(DigestMismatch(format!(
            "the registry says the manifest of {r} is {claimed}, but its content hashes to \
             {actual}"
        ))
        .into());
    }
    Ok((actual, resp.body))
}

fn header(resp: &Response, name: http::HeaderName) -> Option<&str> {
    resp.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Fails unless the status is one of `ok`, quoting the registry's error.
fn expect(resp: &Response, ok: &[StatusCode], doing: &str) -> Result<()> {
    if ok.contains(&resp.status) {
        return Ok(());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| {
            let errors = v.get("errors")?.as_array()?.clone();
            Some(
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                            e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&resp.body)
                .chars()
                .take(200)
                .collect()
        });
    bail!("{doing}: the registry answered {} {detail}", resp.status)
}

/// `location` resolved against the URL it came from.
fn absolute(from: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = from
        .find("://")
        .and_then(|i| from[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(from.len());
    format!("{}{location}", &from[..origin_end])
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_locations_resolve_against_the_origin() {
        assert_eq!(
            absolute(
                "http://127.0.0.1:5000/v2/a/blobs/uploads/",
                "/v2/a/blobs/uploads/u?x=1"
            ),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?x=1"
        );
        assert_eq!(absolute("http://a/v2", "https://s3/x"), "https://s3/x");
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn only_loopback_and_listed_registries_use_plain_http() {
        let client = RegistryClient::new(&["reg.internal:5000".into()]);
        let base = |s: &str| client.base(&s.parse().unwrap());
        assert_eq!(base("127.0.0.1:5000/a:1"), "http://127.0.0.1:5000/v2/a");
        assert_eq!(
            base("reg.internal:5000/a:1"),
            "http://reg.internal:5000/v2/a"
        );
        assert_eq!(base("ghcr.io/a:1"), "https://ghcr.io/v2/a");
    }
}
