//! `steward test <policy.wasm> <suite.yaml>`: declarative fixture suites.
//!
//! A suite is YAML: the policy's hook, default settings and cluster, and
//! cases. Each case evaluates one request against the compiled component
//! through the same path the server uses (policy loading, cluster cache,
//! extender) and compares the verdict with the expectation:
//!
//! ```yaml
//! hook: scheduler                   # the hook the policy serves
//! settings: {topologyKey: kubernetes.io/hostname}
//! cluster:
//!   snapshot: ../../../deploy/examples/basic-cluster.yaml  # relative to the suite
//!   objects: []                     # more Kubernetes objects, inline
//!   placements: {tidb-cluster/basic-pd-0: k8s-10-6-163-51}  # pod -> node
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
//!   - name: an empty topology key is refused
//!     settings: {topologyKey: ""}
//!     settingsRejected: "topologyKey"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1 as k8s;
use regex::Regex;
use serde::Deserialize;

use crate::cluster::{ClusterCache, ClusterQuery, convert, load_objects, load_snapshot};
use crate::config::{Config, Hook};
use crate::extender::{Binder, CandidateNodes, Extender};
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore};
use crate::runtime::{Pod, Runtime};

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
    /// A regex the policy's rejection of the settings must match.
    pub settings_rejected: Option<String>,
}

/// What one case checks. Scheduler policies answer `filter` and
/// `prioritize`; every hook validates settings. Admission cases (`review`:
/// the request, expected allowed/denied, a message pattern and the patch)
/// belong here once the admission hook is served.
#[derive(Debug)]
pub enum Check<'a> {
    Filter(&'a FilterCheck),
    Prioritize(&'a PrioritizeCheck),
    SettingsRejected(&'a str),
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
        if let Some(r) = &self.settings_rejected {
            checks.push(Check::SettingsRejected(r));
        }
        if checks.len() != 1 {
            bail!(
                "give exactly one of filter, prioritize or settingsRejected (found {})",
                checks.len()
            );
        }
        let check = checks.remove(0);
        if let Check::Filter(f) = &check
            && f.passes.is_none()
            && f.fails.is_empty()
        {
            bail!("the filter case expects nothing: give passes and/or fails");
        }
        Ok(check)
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
    if suite.hook != Hook::Scheduler {
        bail!(
            "{}: suites for {:?} policies are not supported yet; only the scheduler hook is served",
            suite_path.display(),
            suite.hook
        );
    }
    let base = suite_path.parent().unwrap_or(Path::new("."));
    let mut policies = Policies {
        runtime,
        module: std::path::absolute(module)?,
        loaded: HashMap::new(),
    };
    Ok(suite
        .cases
        .iter()
        .map(|case| {
            let differences = run_case(&suite, case, base, &mut policies)
                .unwrap_or_else(|e| vec![format!("{e:#}")]);
            CaseReport {
                name: case.name.clone(),
                differences,
            }
        })
        .collect())
}

/// The policy loaded once per distinct settings.
struct Policies<'a> {
    runtime: &'a Runtime,
    module: PathBuf,
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
        let config = Config::single_policy(PathBuf::new(), self.module.clone(), settings.clone());
        let loaded = PolicySet::load(self.runtime, &config)
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
) -> Result<Vec<String>> {
    let check = case.check()?;
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
    let extender = Extender {
        policies: store,
        cluster: cluster.clone(),
        metrics: Arc::new(Metrics::default()),
        binder: Binder::Snapshot,
    };
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
        Check::SettingsRejected(_) => unreachable!("answered above"),
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
