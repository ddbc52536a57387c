//! `steward test <policy.wasm> <suite.yaml>`: declarative fixture suites.
//!
//! A suite is YAML: the policy's hook, default settings, cluster and PD
//! state, and cases. Each case evaluates one request against the compiled
//! component through the same path the server uses (policy loading,
//! cluster cache, extender, admission hook, reconcile state) and compares
//! the verdict with the expectation. Every case gives exactly one check:
//! `filter`/`prioritize` (scheduler), `review` (admission), `reconcile`
//! (reconcile) or `settingsRejected` (any hook). Admission and reconcile
//! policies read PD through the host's real client from an in-memory PD on
//! 127.0.0.1 that answers from `pd` ([`crate::cli::testing::pd_state`]);
//! actions are reported, never performed.
//!
//! ```yaml
//! hook: scheduler                   # scheduler | admission | reconcile
//! settings: {topologyKey: kubernetes.io/hostname}
//! cluster:
//!   snapshot: ../../../deploy/examples/basic-cluster.yaml  # relative to the suite
//!   objects: []                     # more Kubernetes objects, inline
//!   placements: {tidb-cluster/basic-pd-0: k8s-10-6-163-51}  # pod -> node
//! pd:                               # what PD reports (admission, reconcile)
//!   stores: [{id: 1, address: "basic-tikv-0.basic-tikv-peer.tidb-cluster.svc:20160",
//!             state: Up, leaderCount: 10, regionCount: 20, lastHeartbeatMs: 0}]
//!   members: [{name: basic-pd-0, healthy: true}]  # id: position from 1 unless given
//!   leader: basic-pd-0
//!   schedulers: [evict-leader-scheduler-1]
//! cases:
//!   - name: a third PD avoids the nodes holding one
//!     cluster: {placements: {tidb-cluster/basic-pd-1: k8s-10-6-163-53}}  # adds to the suite's
//!     filter:
//!       pod: tidb-cluster/basic-pd-2  # a pod of the cluster, or an inline Pod object
//!       nodes: [k8s-10-6-163-51, k8s-10-6-163-54]  # candidates; default: every node
//!       passes: [k8s-10-6-163-54]     # exactly these pass
//!       fails: {k8s-10-6-163-51: "already has 1 pd pod"}  # node -> regex on the reason
//!   - name: the policy expresses no preference
//!     prioritize: {pod: tidb-cluster/basic-pd-2, scores: {k8s-10-6-163-51: 0}}
//!   - name: a TiKV pod holding leaders stays          # hook: admission
//!     pd: {stores: [...]}             # replaces the suite's
//!     review:
//!       request: ../../../tests/fixtures/admission/pod-delete-basic-tikv-1.json  # or inline
//!       dryRun: true                  # replaces request.dryRun
//!       allowed: false
//!       message: "still holds 12 Raft leader"  # regex on the status message
//!       code: 403                     # the status code of a refusal (429: retry later)
//!       warnings: []                  # one regex per warning, in order
//!       patch: []                     # the JSON patch operations, exactly
//!       actions: []                   # action names Steward would perform (none on a dry run)
//!   - name: an idle StatefulSet is held            # hook: reconcile
//!     reconcile:
//!       statefulSet: apps/web         # a StatefulSet of the cluster
//!       nowMs: 1700000000000          # the policy's clock
//!       actions: [set-partition]      # the plan's action names, in order
//!       described: ["set the partition to 2"]  # one regex per action's description
//!       # error: "regex"              # instead: the policy fails to plan
//!   - name: an empty topology key is refused
//!     settings: {topologyKey: ""}
//!     settingsRejected: "topologyKey"
//! ```
//!
//! Admission policies are loaded with `mutate: true` and reviewed on the
//! mutating endpoint, in enforce mode, so the patch is always compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1 as k8s;
use regex::Regex;
use serde::Deserialize;

use crate::cli::testing::pd_state::{FixturePd, PdState};
use steward_cluster::Backend;
use steward_cluster::{ClusterCache, ClusterQuery, convert, load_objects, load_snapshot};
use steward_hooks::actions::{self, Executor};
use steward_hooks::admission::{AdmissionHook, Endpoint, Reviewed};
use steward_hooks::config::{Config, Hook};
use steward_hooks::extender::{CandidateNodes, Extender};
use steward_hooks::metrics::Metrics;
use steward_hooks::policy::{PolicySet, PolicyStore};
use steward_hooks::reconcile::state::observe;
use steward_runtime::Runtime;
use steward_wit::{Action, Pod};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suite {
    /// The hook the policy serves; decides which checks cases may use.
    pub hook: Hook,
    /// Settings of every case that gives none.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// The cluster every case starts from.
    #[serde(default)]
    pub cluster: ClusterFixture,
    /// What PD reports in every case that gives no `pd` (admission).
    #[serde(default)]
    pub pd: PdState,
    pub cases: Vec<Case>,
}

/// A cluster inventory: a snapshot file, inline objects, and placements
/// of its pods.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterFixture {
    /// Multi-document YAML of Kubernetes objects, relative to the suite.
    pub snapshot: Option<PathBuf>,
    /// Kubernetes objects loaded after the snapshot (same kinds).
    #[serde(default)]
    pub objects: Vec<serde_json::Value>,
    /// `namespace/name: node`: pods bound to nodes before the case runs.
    #[serde(default)]
    pub placements: BTreeMap<String, String>,
}

impl ClusterFixture {
    /// This fixture extended by a case's: its snapshot replaces ours, its
    /// objects and placements come after ours.
    fn with(&self, case: Option<&ClusterFixture>) -> ClusterFixture {
        let mut merged = self.clone();
        if let Some(case) = case {
            if case.snapshot.is_some() {
                merged.snapshot = case.snapshot.clone();
            }
            merged.objects.extend(case.objects.iter().cloned());
            merged.placements.extend(case.placements.clone());
        }
        merged
    }

    fn load(&self, base: &Path) -> Result<Arc<ClusterCache>> {
        let cache = Arc::new(ClusterCache::default());
        if let Some(snapshot) = &self.snapshot {
            load_snapshot(&cache, &base.join(snapshot))?;
        }
        load_objects(&cache, &self.objects).context("cluster.objects")?;
        for (pod, node) in &self.placements {
            let (namespace, name) = namespaced(pod)?;
            if !cache.bind_in_place(namespace, name, node) {
                bail!("cluster.placements: pod {pod} is not in the cluster");
            }
        }
        cache.mark_synced();
        Ok(cache)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Replaces the suite's settings.
    pub settings: Option<serde_json::Value>,
    /// Extends the suite's cluster.
    pub cluster: Option<ClusterFixture>,
    pub filter: Option<FilterCheck>,
    pub prioritize: Option<PrioritizeCheck>,
    pub review: Option<ReviewCheck>,
    pub reconcile: Option<ReconcileCheck>,
    /// A regex the policy's rejection of the settings must match.
    pub settings_rejected: Option<String>,
    /// Replaces the suite's PD state.
    pub pd: Option<PdState>,
}

/// What one case checks. Scheduler policies answer `filter` and
/// `prioritize`, admission policies `review`; every hook validates
/// settings.
#[derive(Debug)]
pub enum Check<'a> {
    Filter(&'a FilterCheck),
    Prioritize(&'a PrioritizeCheck),
    Review(&'a ReviewCheck),
    Reconcile(&'a ReconcileCheck),
    SettingsRejected(&'a str),
}

impl Check<'_> {
    /// The hook that answers this check; `None`: every hook.
    fn hook(&self) -> Option<Hook> {
        match self {
            Check::Filter(_) | Check::Prioritize(_) => Some(Hook::Scheduler),
            Check::Review(_) => Some(Hook::Admission),
            Check::Reconcile(_) => Some(Hook::Reconcile),
            Check::SettingsRejected(_) => None,
        }
    }
}

impl Case {
    /// The case's one check.
    pub fn check(&self) -> Result<Check<'_>> {
        let mut checks = Vec::new();
        if let Some(f) = &self.filter {
            checks.push(Check::Filter(f));
        }
        if let Some(p) = &self.prioritize {
            checks.push(Check::Prioritize(p));
        }
        if let Some(r) = &self.review {
            checks.push(Check::Review(r));
        }
        if let Some(r) = &self.reconcile {
            checks.push(Check::Reconcile(r));
        }
        if let Some(r) = &self.settings_rejected {
            checks.push(Check::SettingsRejected(r));
        }
        if checks.len() != 1 {
            bail!(
                "give exactly one of filter, prioritize, review, reconcile or settingsRejected \
                 (found {})",
                checks.len()
            );
        }
        let check = checks.remove(0);
        match &check {
            Check::Filter(f) if f.passes.is_none() && f.fails.is_empty() => {
                bail!("the filter case expects nothing: give passes and/or fails")
            }
            Check::Reconcile(r)
                if r.actions.is_none() && r.described.is_none() && r.error.is_none() =>
            {
                bail!(
                    "the reconcile case expects nothing: give actions, described and/or error \
                     (actions: [] expects an empty plan)"
                )
            }
            _ => Ok(check),
        }
    }
}

/// The pod a request is about.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PodFixture {
    /// `namespace/name` of a pod in the case's cluster.
    Name(String),
    /// A Kubernetes Pod object.
    Object(Box<serde_json::Value>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterCheck {
    pub pod: PodFixture,
    /// Candidate node names; default: every node of the cluster.
    pub nodes: Option<Vec<String>>,
    /// Exactly the nodes that pass.
    pub passes: Option<Vec<String>>,
    /// Node → regex its failure reason must match.
    #[serde(default)]
    pub fails: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrioritizeCheck {
    pub pod: PodFixture,
    pub nodes: Option<Vec<String>>,
    /// Node → expected score (0..=10).
    pub scores: BTreeMap<String, i64>,
}

/// An AdmissionReview and the response expected for it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewCheck {
    pub request: RequestFixture,
    /// Replaces the review's `request.dryRun`.
    pub dry_run: Option<bool>,
    pub allowed: bool,
    /// A regex on the response's status message (`<policy>: <message>`).
    pub message: Option<String>,
    /// The status code of a refusal: 403, or 429 for one that clears by
    /// itself (drains retry it).
    pub code: Option<u16>,
    /// One regex per warning, in order; the count must match too.
    pub warnings: Option<Vec<String>>,
    /// The JSON patch operations, exactly; `[]`: no patch.
    pub patch: Option<Vec<serde_json::Value>>,
    /// Names of the actions Steward would perform, in order (none on a dry
    /// run), e.g. `pd-evict-leader-begin`.
    pub actions: Option<Vec<String>>,
}

/// A StatefulSet of the cluster at a moment, and the plan expected for it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconcileCheck {
    /// `namespace/name` of a StatefulSet in the case's cluster.
    pub stateful_set: String,
    /// The policy's `now`, Unix milliseconds.
    pub now_ms: i64,
    /// Names of the plan's actions, in order, e.g. `set-partition`.
    pub actions: Option<Vec<String>>,
    /// One regex per action on its description (`set the partition to 1`).
    pub described: Option<Vec<String>>,
    /// A regex the policy's failure to plan must match; the plan is then
    /// not compared.
    pub error: Option<String>,
}

/// An `admission.k8s.io/v1` AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RequestFixture {
    /// A JSON file, relative to the suite.
    Path(PathBuf),
    /// The review itself.
    Object(Box<serde_json::Value>),
}

/// The verdict of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    pub name: String,
    /// Empty when the case passed; otherwise what differed.
    pub differences: Vec<String>,
}

impl Suite {
    /// Reads a suite; errors name the field.
    pub fn load(path: &Path) -> Result<Suite> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read suite {}", path.display()))?;
        let de = serde_norway::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner().to_string();
            // YAML errors already say where (`... at line 4 column 4`).
            if inner.contains(" at line ") {
                anyhow!("{}: {inner}", path.display())
            } else {
                anyhow!("{}: {}: {inner}", path.display(), e.path())
            }
        })
    }
}

/// Runs every case of the suite at `suite_path` against the policy at
/// `module`.
pub fn run(runtime: &Runtime, module: &Path, suite_path: &Path) -> Result<Vec<CaseReport>> {
    let suite = Suite::load(suite_path)?;
    let base = suite_path.parent().unwrap_or(Path::new("."));
    let pd = match suite.hook {
        Hook::Scheduler => None,
        _ => Some(FixturePd::start()?),
    };
    let mut policies = Policies {
        runtime,
        module: std::path::absolute(module)?,
        hook: suite.hook,
        pd_url: pd.as_ref().map(|pd| pd.url().to_string()),
        loaded: HashMap::new(),
    };
    Ok(suite
        .cases
        .iter()
        .map(|case| {
            let differences = run_case(&suite, case, base, &mut policies, pd.as_ref())
                .unwrap_or_else(|e| vec![format!("{e:#}")]);
            CaseReport {
                name: case.name.clone(),
                differences,
            }
        })
        .collect())
}

/// A suite checks verdicts, not latency: a deadline far above the
/// server's default keeps a loaded machine from turning a verdict into a
/// timeout.
const SUITE_DEADLINE_MS: u64 = 10_000;

/// The policy loaded once per distinct settings.
struct Policies<'a> {
    runtime: &'a Runtime,
    module: PathBuf,
    hook: Hook,
    /// The suite's PD, for policies of hooks that read PD.
    pd_url: Option<String>,
    loaded: HashMap<String, Result<Arc<PolicyStore>, String>>,
}

impl Policies<'_> {
    /// The policy with `settings`, or why loading it failed (settings
    /// rejected included).
    fn with(&mut self, settings: &serde_json::Value) -> Result<Arc<PolicyStore>, String> {
        let key = settings.to_string();
        if let Some(loaded) = self.loaded.get(&key) {
            return loaded.clone();
        }
        let mut config =
            Config::single_policy(PathBuf::new(), self.module.clone(), settings.clone());
        let policy = &mut config.policies[0];
        policy.hook = self.hook;
        policy.deadline_ms = SUITE_DEADLINE_MS;
        // Suites compare the patch, so mutating policies may return one.
        policy.mutate = self.hook == Hook::Admission;
        if let Some(url) = &self.pd_url {
            policy.pd.url = url.clone();
        }
        let loaded = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(PolicySet::load(self.runtime, &config)))
            .map(|set| Arc::new(PolicyStore::new(set)))
            .map_err(|e| format!("{e:#}"));
        self.loaded.insert(key, loaded.clone());
        loaded
    }
}

fn run_case(
    suite: &Suite,
    case: &Case,
    base: &Path,
    policies: &mut Policies,
    pd: Option<&FixturePd>,
) -> Result<Vec<String>> {
    let check = case.check()?;
    if let Some(hook) = check.hook()
        && hook != suite.hook
    {
        bail!(
            "the suite's hook is {:?}, whose policies cannot answer this case's check (it is for \
             {hook:?} policies)",
            suite.hook
        );
    }
    let settings = case.settings.as_ref().unwrap_or(&suite.settings);
    let loaded = policies.with(settings);
    if let Check::SettingsRejected(pattern) = check {
        let pattern = regex(pattern)?;
        return Ok(match loaded {
            Ok(_) => vec![format!(
                "settings {settings} were accepted; expected a rejection matching `{pattern}`"
            )],
            Err(e) if pattern.is_match(&e) => Vec::new(),
            Err(e) => vec![format!(
                "the policy failed to load with \"{e}\", which does not match `{pattern}`"
            )],
        });
    }
    let store = loaded.map_err(|e| anyhow!("the policy does not load: {e}"))?;
    let cluster = suite.cluster.with(case.cluster.as_ref()).load(base)?;
    if let Check::Review(_) | Check::Reconcile(_) = check {
        let pd = pd.ok_or_else(|| anyhow!("the suite has no PD"))?;
        pd.set(case.pd.clone().unwrap_or_else(|| suite.pd.clone()));
    }
    if let Check::Reconcile(r) = check {
        let policy = store
            .current()
            .reconcile
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("the policy loaded as no reconcile policy"))?;
        let (namespace, name) = namespaced(&r.stateful_set)?;
        let query = ClusterQuery::new(cluster);
        let workload = query
            .get_workload("StatefulSet", namespace, name)
            .ok_or_else(|| {
                anyhow!(
                    "StatefulSet {} is not in the case's cluster",
                    r.stateful_set
                )
            })?;
        let state = observe(&query, workload, r.now_ms);
        let _runtime = pd.map(FixturePd::enter);
        let plan = policy.policy.reconcile(query, &state);
        return compare_plan(r, plan.map(|p| p.actions).map_err(|e| e.to_string()));
    }
    if let Check::Review(r) = check {
        let pd = pd.ok_or_else(|| anyhow!("the suite has no PD"))?;
        let hook = AdmissionHook {
            policies: store.clone(),
            cluster: cluster.clone(),
            backend: Backend::Snapshot,
            metrics: Arc::new(Metrics::default()),
            executor: Executor::new(&Backend::Snapshot, cluster),
        };
        let body = review_body(r, base)?;
        let policy_id = store
            .current()
            .admission
            .first()
            .map(|p| p.id.clone())
            .ok_or_else(|| anyhow!("the policy loaded as no admission policy"))?;
        let _runtime = pd.enter();
        return Ok(match hook.review(Endpoint::Mutate, &policy_id, &body) {
            Ok(reviewed) => compare_review(r, &reviewed)?,
            Err(rejected) => vec![format!(
                "the webhook refused the review with HTTP {}: {}",
                rejected.status, rejected.message
            )],
        });
    }
    let extender = Extender::new(
        store,
        cluster.clone(),
        Arc::new(Metrics::default()),
        Backend::Snapshot,
    );
    match check {
        Check::Filter(f) => {
            let pod = pod(&cluster, &f.pod)?;
            let nodes = candidates(&cluster, &f.nodes);
            let verdict = extender.filter_pod(&pod, CandidateNodes::Names(nodes));
            compare_filter(
                f,
                &verdict.node_names.unwrap_or_default(),
                &verdict.failed_nodes,
            )
        }
        Check::Prioritize(p) => {
            let pod = pod(&cluster, &p.pod)?;
            let nodes = candidates(&cluster, &p.nodes);
            let scores: BTreeMap<String, i64> = extender
                .prioritize_pod(&pod, &CandidateNodes::Names(nodes))
                .into_iter()
                .map(|h| (h.host, h.score))
                .collect();
            Ok(compare_scores(&p.scores, &scores))
        }
        Check::Review(_) | Check::Reconcile(_) | Check::SettingsRejected(_) => {
            unreachable!("answered above")
        }
    }
}

fn namespaced(pod: &str) -> Result<(&str, &str)> {
    pod.split_once('/')
        .ok_or_else(|| anyhow!("pod {pod:?} is not namespace/name"))
}

fn pod(cluster: &Arc<ClusterCache>, fixture: &PodFixture) -> Result<Pod> {
    match fixture {
        PodFixture::Name(name) => {
            let (namespace, pod) = namespaced(name)?;
            ClusterQuery::new(cluster.clone())
                .get_pod(namespace, pod)
                .ok_or_else(|| anyhow!("pod {name} is not in the case's cluster"))
        }
        PodFixture::Object(object) => {
            let pod: k8s::Pod = serde_path_to_error::deserialize(object.as_ref())
                .map_err(|e| anyhow!("pod: field {}: {}", e.path(), e.inner()))?;
            Ok(convert::pod(&pod))
        }
    }
}

/// The named candidates, or every node of the cluster by name.
fn candidates(cluster: &ClusterCache, nodes: &Option<Vec<String>>) -> Vec<String> {
    match nodes {
        Some(names) => names.clone(),
        None => {
            let mut all: Vec<String> = cluster.all_nodes().into_iter().map(|n| n.name).collect();
            all.sort();
            all
        }
    }
}

fn regex(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("`{pattern}` is not a valid regex"))
}

/// What differs between the expected and the actual filter verdict.
pub fn compare_filter(
    expected: &FilterCheck,
    passed: &[String],
    failed: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let mut differences = Vec::new();
    if let Some(passes) = &expected.passes {
        let want: BTreeSet<&String> = passes.iter().collect();
        let got: BTreeSet<&String> = passed.iter().collect();
        if want != got {
            let list = |set: &BTreeSet<&String>| {
                set.iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut line = format!(
                "passing nodes: expected [{}], got [{}]",
                list(&want),
                list(&got)
            );
            for extra in got.difference(&want) {
                let _ = write!(line, "\n    + {extra} passed");
            }
            for missing in want.difference(&got) {
                let why = failed.get(*missing).map_or("", String::as_str);
                let _ = write!(line, "\n    - {missing} failed: {why}");
            }
            differences.push(line);
        }
    }
    for (node, pattern) in &expected.fails {
        let pattern = regex(pattern)?;
        match failed.get(node) {
            None => differences.push(format!(
                "node {node}: expected to fail matching `{pattern}`, but it passed"
            )),
            Some(reason) if !pattern.is_match(reason) => differences.push(format!(
                "node {node}: failed with \"{reason}\", which does not match `{pattern}`"
            )),
            Some(_) => {}
        }
    }
    Ok(differences)
}

/// The review's body: the fixture, its `request.dryRun` replaced if the
/// case says so.
fn review_body(check: &ReviewCheck, base: &Path) -> Result<Vec<u8>> {
    let mut review = match &check.request {
        RequestFixture::Path(path) => {
            let path = base.join(path);
            let text = std::fs::read(&path)
                .with_context(|| format!("cannot read review {}", path.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("review {} is not JSON", path.display()))?
        }
        RequestFixture::Object(review) => (**review).clone(),
    };
    if let Some(dry_run) = check.dry_run {
        let request = review
            .get_mut("request")
            .and_then(|r| r.as_object_mut())
            .ok_or_else(|| anyhow!("review.request: the AdmissionReview has no request object"))?;
        request.insert("dryRun".into(), dry_run.into());
    }
    Ok(serde_json::to_vec(&review)?)
}

/// What differs between the expected and the actual admission response.
pub fn compare_review(expected: &ReviewCheck, reviewed: &Reviewed) -> Result<Vec<String>> {
    let response = &reviewed.response;
    let message = response.status.as_ref().map(|s| s.message.as_str());
    let mut differences = Vec::new();
    if expected.allowed != response.allowed {
        differences.push(match message {
            Some(m) if !response.allowed => format!("expected allowed, got denied: \"{m}\""),
            _ if response.allowed => "expected denied, got allowed".to_string(),
            _ => "expected allowed, got denied without a message".to_string(),
        });
    }
    if let Some(pattern) = &expected.message {
        let pattern = regex(pattern)?;
        match message {
            None => differences.push(format!(
                "message: expected one matching `{pattern}`, got none"
            )),
            Some(m) if !pattern.is_match(m) => {
                differences.push(format!("message: \"{m}\" does not match `{pattern}`"))
            }
            Some(_) => {}
        }
    }
    if let Some(want) = expected.code {
        let got = response.status.as_ref().map(|s| s.code);
        if got != Some(want) {
            differences.push(format!("code: expected {want}, got {got:?}"));
        }
    }
    if let Some(patterns) = &expected.warnings
        && !match_in_order(patterns, &response.warnings)?
    {
        differences.push(format!(
            "warnings: expected [{}], got {:?}",
            quoted(patterns),
            response.warnings
        ));
    }
    if let Some(want) = &expected.patch {
        let got: Vec<serde_json::Value> = match &response.patch {
            None => Vec::new(),
            Some(encoded) => {
                use base64::Engine as _;
                let json = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .context("the response's patch is not base64")?;
                serde_json::from_slice(&json).context("the response's patch is not JSON")?
            }
        };
        if &got != want {
            differences.push(format!(
                "patch: expected {}, got {}",
                serde_json::to_string(want)?,
                serde_json::to_string(&got)?
            ));
        }
    }
    if let Some(want) = &expected.actions {
        let got: Vec<&str> = reviewed.pending().iter().map(actions::name).collect();
        if got != *want {
            differences.push(format!("actions: expected {want:?}, got {got:?}"));
        }
    }
    Ok(differences)
}

/// What differs between the expected and the actual plan (or failure).
pub fn compare_plan(
    expected: &ReconcileCheck,
    plan: std::result::Result<Vec<Action>, String>,
) -> Result<Vec<String>> {
    let actions = match (plan, &expected.error) {
        (Err(e), Some(pattern)) => {
            let pattern = regex(pattern)?;
            return Ok(if pattern.is_match(&e) {
                Vec::new()
            } else {
                vec![format!(
                    "the plan failed with \"{e}\", which does not match `{pattern}`"
                )]
            });
        }
        (Err(e), None) => return Ok(vec![format!("the policy could not plan: {e}")]),
        (Ok(actions), Some(pattern)) => {
            let got: Vec<String> = actions.iter().map(actions::describe).collect();
            return Ok(vec![format!(
                "expected the plan to fail matching `{pattern}`, got actions {got:?}"
            )]);
        }
        (Ok(actions), None) => actions,
    };
    let mut differences = Vec::new();
    if let Some(want) = &expected.actions {
        let got: Vec<&str> = actions.iter().map(actions::name).collect();
        if got != *want {
            differences.push(format!("actions: expected {want:?}, got {got:?}"));
        }
    }
    let described: Vec<String> = actions.iter().map(actions::describe).collect();
    if let Some(patterns) = &expected.described
        && !match_in_order(patterns, &described)?
    {
        differences.push(format!(
            "actions: expected descriptions matching [{}], got {described:?}",
            quoted(patterns)
        ));
    }
    Ok(differences)
}

/// Whether there are as many texts as patterns and each matches its own.
fn match_in_order(patterns: &[String], texts: &[String]) -> Result<bool> {
    if patterns.len() != texts.len() {
        return Ok(false);
    }
    for (pattern, text) in patterns.iter().zip(texts) {
        if !regex(pattern)?.is_match(text) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Patterns as a report lists them.
fn quoted(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs between the expected and the actual scores.
pub fn compare_scores(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(node, want)| match actual.get(node) {
            Some(got) if got == want => None,
            Some(got) => Some(format!("node {node}: expected score {want}, got {got}")),
            None => Some(format!(
                "node {node}: expected score {want}, but it was not scored"
            )),
        })
        .collect()
}

/// The report: one line per case, the differences of the failed ones, and
/// a summary line.
pub fn render(suite: &Path, reports: &[CaseReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "running {} case{} of {}",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        suite.display()
    );
    for r in reports {
        if r.differences.is_empty() {
            let _ = writeln!(out, "case {} ... ok", r.name);
        } else {
            let _ = writeln!(out, "case {} ... FAILED", r.name);
            for d in &r.differences {
                let _ = writeln!(out, "    {d}");
            }
        }
    }
    let failed = reports.iter().filter(|r| !r.differences.is_empty()).count();
    let _ = writeln!(
        out,
        "\nsuite result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        reports.len() - failed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::Case;

    fn check_error(case_yaml: &str) -> String {
        let case: Case = serde_norway::from_str(case_yaml).expect("the case parses");
        match case.check() {
            Ok(_) => panic!("the case was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cases_that_expect_nothing_are_refused() {
        let filter = check_error("name: f\nfilter: {pod: ns/p}\n");
        assert!(
            filter.contains("the filter case expects nothing"),
            "{filter}"
        );
        let reconcile = check_error("name: r\nreconcile: {statefulSet: ns/s, nowMs: 0}\n");
        assert!(
            reconcile.contains("the reconcile case expects nothing"),
            "{reconcile}"
        );
    }

    #[test]
    fn an_empty_plan_is_an_expectation() {
        let case: Case = serde_norway::from_str(
            "name: r\nreconcile: {statefulSet: ns/s, nowMs: 0, actions: []}\n",
        )
        .expect("the case parses");
        assert!(case.check().is_ok());
    }
}
