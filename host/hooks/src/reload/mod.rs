//! Hot swap. Watches every policy's source — files polled every
//! [`FILE_POLL`], registry tags every `registries.pollIntervalMs` — and the
//! config file, and swaps a new version in off the request path:
//! (registry versions: verify the signature when `signatures.publicKeys`
//! is set →) fetch → verify digest → compile (or load precompiled) → check world and
//! WIT version → `validate-settings` → atomic swap of the policy set, with
//! the other policies' loaded versions reused as they are. Evaluations that
//! hold the old set finish on it. A refused version leaves the last good one
//! serving; the refusal shows in the log, the metrics and `GET /status`.

pub mod status;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, ModuleSource, PolicyConfig};
use crate::metrics::{Metrics, PolicyInfoLabels};
use crate::pd::SecretAccess;
use crate::policy::source::{Module, fetch};
use crate::policy::{LoadError, LoadedPolicy, PolicySet, PolicyStore, build_off_reactor, load_all};
use status::{ConfigStatus, PolicyStatus, Report, State, Status, now};
use steward_oci::RegistryClient;
use steward_runtime::Runtime;

/// How often watched files (modules and the config file) are checked.
pub const FILE_POLL: Duration = Duration::from_millis(100);

/// What identifies a file version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// One configured policy and the version of it that serves.
struct Entry {
    config: PolicyConfig,
    loaded: Option<LoadedPolicy>,
    /// What the source's current version is known by: the Wasm digest of a
    /// file, the manifest digest of a registry artifact.
    serving: Option<String>,
    /// The same for the last refused version: not retried until it changes.
    refused: Option<String>,
    /// File sources: the file as last seen.
    stamp: Option<Stamp>,
    /// File sources: what the file held when last read (its digest, or why
    /// it could not be read); only a change of it is acted on.
    observed: Option<String>,
    status: PolicyStatus,
}

impl Entry {
    fn new(config: PolicyConfig) -> Entry {
        let status = PolicyStatus {
            id: config.id.clone(),
            hook: hook_name(&config),
            source: config.module.to_string(),
            state: State::Failed,
            digest: None,
            resolved: None,
            version: None,
            signed_by: None,
            generation: 0,
            loaded_at: None,
            last_error: None,
            last_error_at: None,
            missing_kinds: None,
        };
        Entry {
            config,
            loaded: None,
            serving: None,
            refused: None,
            stamp: None,
            observed: None,
            status,
        }
    }

    /// Identity of `module` as its source knows it.
    fn source_digest(module: &Module) -> String {
        module
            .resolved
            .clone()
            .unwrap_or_else(|| module.digest.clone())
    }
}

/// Where the swapped sets, status and metrics go.
struct Outputs {
    store: Arc<PolicyStore>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

/// Owns the configured policies' state; runs as one task.
pub struct Reloader {
    runtime: Runtime,
    config: Config,
    client: Arc<RegistryClient>,
    entries: Vec<Entry>,
    config_stamp: Option<Stamp>,
    config_status: ConfigStatus,
    /// Registry tag pollers; aborted when replaced.
    pollers: Vec<AbortOnDrop>,
}

impl Reloader {
    /// Loads every configured policy (any failure refuses the start) and
    /// returns the set to serve first.
    pub async fn load(runtime: Runtime, config: Config) -> Result<(Reloader, PolicySet)> {
        let client = Arc::new(RegistryClient::new(&config.registries.insecure));
        let config_stamp = config.file.as_deref().and_then(stamp);
        let mut reloader = Reloader {
            runtime,
            config_status: ConfigStatus {
                file: config.file.as_ref().map(|f| f.display().to_string()),
                loaded_at: Some(now()),
                ..ConfigStatus::default()
            },
            config,
            client,
            entries: Vec::new(),
            config_stamp,
            pollers: Vec::new(),
        };
        let loaded = load_all(&reloader.runtime, &reloader.client, &reloader.config).await?;
        for (p, (policy, module)) in reloader.config.policies.iter().zip(loaded) {
            let mut entry = Entry::new(p.clone());
            entry.stamp = file_path(&reloader.config, p).as_deref().and_then(stamp);
            entry.serve(policy, &module);
            reloader.entries.push(entry);
        }
        let set = reloader.set();
        Ok((reloader, set))
    }

    /// Watches the sources and swaps new versions into `store` until the
    /// runtime shuts down.
    pub fn spawn(
        self,
        store: Arc<PolicyStore>,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
    ) -> JoinHandle<()> {
        tokio::spawn(self.run(Outputs {
            store,
            status,
            metrics,
        }))
    }

    async fn run(mut self, out: Outputs) {
        for e in &self.entries {
            out.metrics.policy_serving(e.info());
        }
        out.status.set(self.report());
        let (tx, mut rx) = mpsc::channel(64);
        self.start_pollers(&tx);
        let (notified, mut changes) = mpsc::channel(1);
        let mut _watcher = self.watch_files(&notified);
        let mut tick = tokio::time::interval(FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set by a file notification: the next check reads every module file
        // whatever its size and modification time say.
        let mut reread = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.check_config(&out).await {
                        self.start_pollers(&tx);
                        _watcher = self.watch_files(&notified);
                    }
                    self.check_files(&out, std::mem::take(&mut reread)).await;
                }
                Some(()) = changes.recv() => reread = true,
                Some((id, resolved)) = rx.recv() => self.on_resolved(&out, id, resolved).await,
            }
        }
    }

    fn set(&self) -> PolicySet {
        PolicySet::assemble(self.entries.iter().filter_map(|e| e.loaded.clone()))
    }

    fn report(&self) -> Report {
        Report {
            config: self.config_status.clone(),
            policies: self.entries.iter().map(|e| e.status.clone()).collect(),
        }
    }

    fn publish(&self, out: &Outputs) {
        out.store.swap(self.set());
        out.status.set(self.report());
    }

    /// (Re)starts one poller per registry tag, each sending the digest its
    /// tag names now.
    fn start_pollers(&mut self, tx: &mpsc::Sender<(String, Result<String>)>) {
        let interval = Duration::from_millis(self.config.registries.poll_interval_ms);
        self.pollers = self
            .entries
            .iter()
            .filter_map(|e| match &e.config.module {
                ModuleSource::Oci(r) if r.digest.is_none() => {
                    Some((e.config.id.clone(), r.clone()))
                }
                _ => None,
            })
            .map(|(id, reference)| {
                let client = self.client.clone();
                let tx = tx.clone();
                AbortOnDrop(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(interval).await;
                        let resolved = client.resolve(&reference).await;
                        if tx.send((id.clone(), resolved)).await.is_err() {
                            return;
                        }
                    }
                }))
            })
            .collect();
    }

    /// A registry tag was resolved: pull and swap if it names a new digest.
    async fn on_resolved(&mut self, out: &Outputs, id: String, resolved: Result<String>) {
        let Some(i) = self.entries.iter().position(|e| e.config.id == id) else {
            return;
        };
        let ModuleSource::Oci(reference) = self.entries[i].config.module.clone() else {
            return;
        };
        match resolved {
            Err(e) => {
                let e = LoadError::Fetch(
                    e.context(format!("cannot check {reference} for a new version")),
                );
                self.entries[i].refuse(out, &e, None);
                out.status.set(self.report());
            }
            Ok(digest) => {
                let pinned = format!("oci://{}", reference.pinned(&digest));
                if self.entries[i].is_current(&pinned) {
                    out.status.set(self.report());
                    return;
                }
                tracing::info!(policy = %id, reference = %pinned, "new version in the registry");
                let source = ModuleSource::Oci(reference.pinned(&digest));
                let p = self.entries[i].config.clone();
                self.attempt(out, i, p, &source, Some(pinned)).await;
                self.publish(out);
            }
        }
    }

    /// Watches the directories of the file sources (a file replaced by
    /// rename, as editors and ConfigMaps do, is an event on its directory);
    /// each event sends on `notified`. None when the platform cannot
    /// notify: the size-and-time poll still runs.
    fn watch_files(&self, notified: &mpsc::Sender<()>) -> Option<RecommendedWatcher> {
        let notified = notified.clone();
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = notified.try_send(());
        })
        .map_err(|e| tracing::warn!("cannot watch module files for changes ({e}); polling them"))
        .ok()?;
        let dirs: HashSet<PathBuf> = self
            .entries
            .iter()
            .filter_map(|e| file_path(&self.config, &e.config))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), "cannot watch for changes ({e}); polling it");
            }
        }
        Some(watcher)
    }

    /// Checks every file source; a file with new content is loaded, a
    /// missing or unreadable one reported while the last good version
    /// serves. Without `reread`, only files whose size or modification
    /// time changed are read.
    async fn check_files(&mut self, out: &Outputs, reread: bool) {
        for i in 0..self.entries.len() {
            let Some(path) = file_path(&self.config, &self.entries[i].config) else {
                continue;
            };
            let seen = stamp(&path);
            if !reread && seen == self.entries[i].stamp {
                continue;
            }
            self.entries[i].stamp = seen;
            let read = tokio::fs::read(&path).await;
            let observed = match &read {
                Ok(wasm) => steward_oci::digest(wasm),
                Err(e) => format!("unreadable: {e}"),
            };
            let entry = &mut self.entries[i];
            let first = entry.observed.is_none();
            if entry.observed.as_deref() == Some(observed.as_str())
                || (first && entry.serving.as_deref() == Some(observed.as_str()))
            {
                entry.observed = Some(observed);
                continue;
            }
            entry.observed = Some(observed.clone());
            if let Err(e) = read {
                let e = LoadError::Fetch(anyhow::anyhow!(
                    "cannot read the module file {} ({e}); the last good version keeps serving \
                     until it is back",
                    path.display()
                ));
                entry.refuse(out, &e, Some(observed));
                out.status.set(self.report());
                continue;
            }
            let digest = observed;
            if self.entries[i].is_current(&digest) {
                out.status.set(self.report());
                continue;
            }
            let entry = &self.entries[i];
            tracing::info!(policy = %entry.config.id, file = %path.display(), %digest, "module file changed");
            let p = entry.config.clone();
            let source = p.module.clone();
            self.attempt(out, i, p, &source, Some(digest)).await;
            self.publish(out);
        }
    }

    /// Fetches `source` and builds it with `p` as entry `i`'s new version,
    /// or records why not; the caller publishes. `known`: the source
    /// digest, when already known.
    async fn attempt(
        &mut self,
        out: &Outputs,
        i: usize,
        p: PolicyConfig,
        source: &ModuleSource,
        known: Option<String>,
    ) -> bool {
        let started = Instant::now();
        let module = match fetch(&self.client, &self.config, source).await {
            Ok(m) => m,
            Err(e) => {
                // An unsigned version may be signed after it was pushed:
                // not remembered as refused, so the next poll checks again.
                let known = known.filter(|_| !matches!(e, LoadError::Signature(_)));
                self.entries[i].refuse(out, &e, known);
                return false;
            }
        };
        let secrets = SecretAccess::of_cluster(&self.config.cluster);
        match build_off_reactor(&self.runtime, &p, &module, &secrets).await {
            Ok(loaded) => {
                let entry = &mut self.entries[i];
                entry.config = p;
                entry.status.source = entry.config.module.to_string();
                entry.status.hook = hook_name(&entry.config);
                entry.serve(loaded, &module);
                out.metrics.reload(&entry.config.id, "ok");
                out.metrics.policy_serving(entry.info());
                tracing::info!(
                    policy = %self.entries[i].config.id,
                    digest = %module.digest,
                    took_ms = started.elapsed().as_millis() as u64,
                    "new version serving"
                );
                true
            }
            Err(e) => {
                self.entries[i].refuse(out, &e, Some(Entry::source_digest(&module)));
                false
            }
        }
    }

    /// Re-reads the config file if it changed; returns whether the policy
    /// sources changed (pollers must restart).
    async fn check_config(&mut self, out: &Outputs) -> bool {
        let Some(file) = self.config.file.clone() else {
            return false;
        };
        let seen = stamp(&file);
        if seen.is_none() || seen == self.config_stamp {
            return false;
        }
        self.config_stamp = seen;
        let new = match Config::load(&file) {
            Ok(c) => c,
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(file = %file.display(), error = %message, "config file refused; the previous configuration stays");
                out.metrics.reload("(config)", "invalid");
                self.config_status.last_error = Some(message);
                self.config_status.last_error_at = Some(now());
                out.status.set(self.report());
                return false;
            }
        };
        tracing::info!(file = %file.display(), "config file changed");
        self.apply(out, new).await;
        true
    }

    /// Moves to configuration `new`: unchanged policies keep their loaded
    /// version, changed and added ones are loaded, removed ones dropped.
    async fn apply(&mut self, out: &Outputs, new: Config) {
        if new.registries != self.config.registries {
            self.client = Arc::new(RegistryClient::new(&new.registries.insecure));
        }
        self.config = new;
        self.config_status.loaded_at = Some(now());
        self.config_status.last_error = None;
        self.config_status.last_error_at = None;
        // The new entry list first (changed policies keep their loaded
        // version until the new one is built), then the loads, then one swap.
        let mut old: Vec<Entry> = std::mem::take(&mut self.entries);
        let mut to_load = Vec::new();
        for p in self.config.policies.clone() {
            match old.iter().position(|e| e.config.id == p.id) {
                Some(j) => {
                    let entry = old.remove(j);
                    if entry.config != p {
                        tracing::info!(policy = %p.id, "policy configuration changed");
                        to_load.push((self.entries.len(), p));
                    }
                    self.entries.push(entry);
                }
                None => {
                    tracing::info!(policy = %p.id, "policy added");
                    let mut entry = Entry::new(p.clone());
                    entry.stamp = file_path(&self.config, &p).as_deref().and_then(stamp);
                    to_load.push((self.entries.len(), p));
                    self.entries.push(entry);
                }
            }
        }
        for (i, p) in to_load {
            let watched = file_path(&self.config, &p).as_deref().and_then(stamp);
            if self.attempt(out, i, p.clone(), &p.module, None).await {
                self.entries[i].stamp = watched;
            }
        }
        for removed in old {
            tracing::info!(policy = %removed.config.id, "policy removed");
            out.metrics.policy_removed(&removed.config.id);
        }
        self.publish(out);
    }
}

impl Entry {
    /// Whether the source's version `digest` needs no load: it serves, or
    /// was refused already. A source back at the serving version after an
    /// error (a broken file replaced, a registry reachable again) serves
    /// as the newest version again.
    fn is_current(&mut self, digest: &str) -> bool {
        if self.serving.as_deref() == Some(digest) {
            if self.status.state == State::Degraded {
                tracing::info!(policy = %self.config.id, "the source is back at the serving version");
                self.status.state = State::Serving;
                self.status.last_error = None;
                self.status.last_error_at = None;
                self.refused = None;
            }
            return true;
        }
        self.refused.as_deref() == Some(digest)
    }

    fn serve(&mut self, loaded: LoadedPolicy, module: &Module) {
        self.loaded = Some(loaded);
        self.serving = Some(Entry::source_digest(module));
        self.refused = None;
        self.status.state = State::Serving;
        self.status.digest = Some(module.digest.clone());
        self.status.resolved = module.resolved.clone();
        self.status.version = module.version.clone();
        self.status.signed_by = module.signed_by.clone();
        self.status.generation += 1;
        self.status.loaded_at = Some(now());
        self.status.last_error = None;
        self.status.last_error_at = None;
    }

    fn refuse(&mut self, out: &Outputs, e: &LoadError, digest: Option<String>) {
        let message = format!("{e}");
        tracing::warn!(
            policy = %self.config.id,
            step = e.kind(),
            error = %message,
            "new version refused; the last good version keeps serving"
        );
        out.metrics.reload(&self.config.id, e.kind());
        if digest.is_some() {
            self.refused = digest;
        }
        self.status.state = if self.loaded.is_some() {
            State::Degraded
        } else {
            State::Failed
        };
        self.status.last_error = Some(message);
        self.status.last_error_at = Some(now());
    }

    fn info(&self) -> PolicyInfoLabels {
        PolicyInfoLabels {
            policy: self.config.id.clone(),
            source: self.config.module.to_string(),
            digest: self.status.digest.clone().unwrap_or_default(),
            version: self.status.version.clone().unwrap_or_default(),
        }
    }
}

fn hook_name(p: &PolicyConfig) -> String {
    format!("{:?}", p.hook).to_lowercase()
}

/// The watched file of a file source.
fn file_path(config: &Config, p: &PolicyConfig) -> Option<PathBuf> {
    match &p.module {
        ModuleSource::File(path) => Some(config.resolve(path)),
        ModuleSource::Oci(_) => None,
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
