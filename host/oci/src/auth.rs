//! Registry credentials from the Docker config file — `auths` entries and
//! credential helpers (`credHelpers` per registry, `credsStore` for all) —
//! and the challenge a registry answers 401 with (`WWW-Authenticate`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Deserialize;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    /// Registry host → helper name: `docker-credential-<name>` answers for
    /// that registry.
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    /// The helper answering for every other registry.
    #[serde(default)]
    creds_store: Option<String>,
}

/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

/// The credentials for `registry` from the Docker config file, if any.
/// A missing file means anonymous access; an unreadable one is an error.
pub fn docker_credentials(registry: &str) -> Result<Option<Credentials>> {
    match docker_config_path() {
        Some(path) if path.exists() => credentials_in(&path, registry),
        _ => Ok(None),
    }
}

/// The credentials for `registry` in the config file at `path`, the way
/// the Docker CLI finds them: its `credHelpers` helper, else the
/// `credsStore` helper, else its `auths` entry (also when the helper knows
/// none for it).
fn credentials_in(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the Docker config {}", path.display()))?;
    let config: DockerConfig = serde_json::from_str(&text)
        .with_context(|| format!("the Docker config {} is not valid JSON", path.display()))?;
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| host_of(key) == Some(registry))
        .map(|(_, helper)| helper)
        .or(config.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper
        && let Some(credentials) = helper_credentials(helper, registry).with_context(|| {
            format!("the credential helper of {} ({})", registry, path.display())
        })?
    {
        return Ok(Some(credentials));
    }
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| host_of(key) == Some(registry));
    let Some((key, auth)) = entry else {
        return Ok(None);
    };
    if let Some(encoded) = auth.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            bail!(
                "{}: auths.{key}.auth is not base64 of user:password",
                path.display()
            );
        };
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
    }
    match (&auth.username, &auth.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// The registry host of a config key: `host`, `https://host` or
/// `https://host/v1/`.
fn host_of(key: &str) -> Option<&str> {
    key.trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
}

/// What a credential helper prints for `get`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Asks `docker-credential-<helper> get` (the docker-credential-helpers
/// protocol: the registry on stdin, JSON on stdout) for `registry`'s
/// credentials; None when it has none.
fn helper_credentials(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{program}`: is it installed and on PATH?"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its
        // answer below, not by the broken pipe.
        let _ = stdin.write_all(registry.as_bytes());
    }
    let deadline = Instant::now() + HELPER_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{program} get` did not answer within {HELPER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's answer for a registry the helper has nothing for.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        bail!(
            "`{program} get` failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let answer: HelperAnswer = serde_json::from_str(&stdout)
        .with_context(|| format!("`{program} get` did not print Username and Secret as JSON"))?;
    if answer.username == "<token>" {
        bail!(
            "`{program} get` answered with an identity token for {registry}; Steward needs a user \
             name and password (or registry token) from it"
        );
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// The token endpoint and its parameters (distribution token spec).
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(params);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `key="value", key=value` pairs; quoted values may contain commas.
fn auth_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_keep_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn docker_config_auths_match_by_host_in_any_key_form() {
        let dir = std::env::temp_dir().join(format!("steward-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        // "alice:s3cr:et" in base64: the password may contain colons.
        std::fs::write(
            &path,
            r#"{"auths":{"https://reg.example.com/v1/":{"auth":"YWxpY2U6czNjcjpldA=="},
                "other.io":{"username":"bob","password":"pw"},
                "broken.io":{"auth":"!!!"}}}"#,
        )
        .unwrap();
        let c = credentials_in(&path, "reg.example.com").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cr:et")
        );
        assert_eq!(c.basic(), "Basic YWxpY2U6czNjcjpldA==");
        assert_eq!(
            credentials_in(&path, "other.io").unwrap().unwrap().username,
            "bob"
        );
        assert_eq!(credentials_in(&path, "none.io").unwrap(), None);
        let e = credentials_in(&path, "broken.io").unwrap_err().to_string();
        assert!(e.contains("auths.broken.io.auth is not base64"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
