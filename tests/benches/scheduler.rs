//! Scheduler benchmarks at the scale of SPEC §8: 5,000 candidate nodes and
//! 50,000 cached pods. Prints median and p99 per case, and the Wasm/native
//! ratio of the same pd-quorum logic on the same input, measured in one run.
//! The sandbox's price per request: the same filter request, in process and
//! over HTTP, with each built-in placement policy as its Wasm component and
//! compiled into this bench ([`Native`]) behind the same host path.
//!
//! `cargo bench -p steward-tests --bench scheduler`

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward::Hooks;
use steward::cli::bench::percentile;
use steward::cluster::Backend;
use steward::cluster::{ClusterCache, ClusterQuery};
use steward::extender::CandidateNodes;
use steward::policy::{PolicySet, ScheduledPolicy, Scheduler};
use steward::runtime::EvalError;
use steward::server::App;
use steward::wit::{Candidates, FilterResult, Node, NodeScore, Owner, Pod, build};
use steward_sdk::cluster::ClusterView;
use steward_sdk::scheduler::SchedulerPolicy;

const NODES: usize = 5_000;
const GIB: u64 = 1 << 30;
const PODS: usize = 50_000;

fn main() {
    startup();
    let app = app();
    let pd2 = pod_named(&app, "basic-pd-2");
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    println!(
        "cluster: {} nodes, {} pods cached; resident memory of this process: {} MiB",
        app.hooks.cluster.node_count(),
        app.hooks.cluster.pod_count(),
        resident_mib()
    );
    // `STEWARD_BENCH_CASE=local-pv` runs only the local-pv cases, and
    // `=pd-quorum` only pd-quorum's Wasm/native comparison (for profiling
    // one policy with `perf record`).
    match std::env::var("STEWARD_BENCH_CASE").as_deref() {
        Ok("local-pv") => return local_pv(&app, &names),
        Ok("pd-quorum") => return pd_quorum_ratio(&app, &pd2, &names),
        _ => {}
    }

    let native = with_native(
        &app,
        steward_tests::PD_QUORUM,
        Native::<pd_quorum::PdQuorum>::new(),
    );
    request_price("pd-quorum", &app, &native, &pd2, &names, || {});

    pd_quorum_ratio(&app, &pd2, &names);
    let accepted = app
        .hooks
        .extender
        .filter_pod(&pd2, CandidateNodes::Names(names.clone()))
        .node_names
        .unwrap()
        .len();
    println!("(pd-2 may go to {accepted} of {NODES} nodes)");
    local_pv(&app, &names);
}

/// The same pd-quorum logic, native and in Wasm, on identical input, next
/// to a no-op policy (the sandbox's own cost); at 5,000 and 50 candidates.
fn pd_quorum_ratio(app: &App, pd2: &Pod, names: &[String]) {
    let set = app.hooks.extender.policies.current();
    let policy = &set.scheduler[0].policy;
    let query = ClusterQuery::new(app.hooks.cluster.clone());
    let load = |policies_yaml: &str| {
        let config = steward_tests::config(policies_yaml);
        steward_tests::load_policies(steward_tests::runtime(), &config).expect("loads")
    };
    let noop_set = load(
        "- id: noop\n  hook: scheduler\n  module: {misbehave}\n  settings: {behaviour: pass}\n",
    );
    let lean_set = load("- id: lean\n  hook: scheduler\n  module: {lean_noop}\n");
    for count in [NODES, 50] {
        let ids: Vec<u32> = app
            .hooks
            .cluster
            .node_ids(&names[..count])
            .into_iter()
            .map(|id| id.expect("known node"))
            .collect();
        let candidates = steward::wit::Candidates {
            labels: app
                .hooks
                .cluster
                .label_columns(&ids, &policy.needs().node_labels),
            nodes: ids,
        };
        // A Wasm policy's filter on this input, fresh instance per call.
        let time = |policy: &dyn Scheduler| {
            measure(2_000, || {
                policy
                    .filter(query.clone(), pd2, &candidates)
                    .expect("filter runs");
            })
        };
        let noop = time(noop_set.scheduler[0].policy.as_ref());
        let lean = time(lean_set.scheduler[0].policy.as_ref());
        let wasm = time(policy.as_ref());
        let native_view = NativeView(query.clone());
        let settings = pd_quorum::Settings::default();
        let native = measure(2_000, || {
            // The same copy of the input the Wasm call makes.
            let nodes = sdk_candidates(&candidates);
            pd_quorum::filter(&native_view, &settings, &sdk_pod(pd2), &nodes);
        });
        println!("-- {count} candidates");
        report("a no-op filter in Wasm, same input (sandbox cost)", &noop);
        report("a no-op filter in Wasm without std, same input", &lean);
        report("pd-quorum filter in Wasm (fresh instance)", &wasm);
        report("pd-quorum filter native (same input)", &native);
        println!(
            "Wasm/native ratio at {count} candidates: {}",
            ratio(&wasm, &native)
        );
    }
}

/// local-pv on the same cache, every node with a HwameiStor SSD pool: a pod
/// with two new claims (20 + 30 GiB) against 5,000 candidates.
fn local_pv(app: &App, names: &[String]) {
    let cache = app.hooks.cluster.clone();
    for (i, name) in names.iter().enumerate() {
        // 1 TiB pools, 0..999 GiB used: nodes with under 50 GiB free refuse.
        let used = ((i * 7919) % 1000) as u64 * GIB;
        cache.upsert_storage_node(&serde_json::json!({
            "metadata": {"name": name},
            "status": {"state": "Ready", "pools": {"LocalStorage_PoolSSD": {
                "class": "SSD", "totalCapacityBytes": 1024 * GIB, "usedCapacityBytes": used,
                "freeCapacityBytes": 1024 * GIB - used,
                "totalVolumeCount": 1000, "usedVolumeCount": i % 1000,
            }}},
        }));
    }
    cache.upsert_storage_class(steward::wit::StorageClass {
        name: "hwameistor-storage-lvm-ssd".into(),
        provisioner: "lvm.hwameistor.io".into(),
        parameters: vec![
            ("poolClass".into(), "SSD".into()),
            ("replicaNumber".into(), "1".into()),
        ],
        binding_mode: "WaitForFirstConsumer".into(),
        reclaim_policy: "Delete".into(),
    });
    for (claim, gib) in [("data-db-0", 20), ("log-db-0", 30)] {
        cache.upsert_claim(steward::wit::Claim {
            namespace: "ns-0".into(),
            name: claim.into(),
            uid: format!("uid-{claim}"),
            labels: Vec::new(),
            annotations: Vec::new(),
            storage_class: Some("hwameistor-storage-lvm-ssd".into()),
            phase: "Pending".into(),
            volume_name: None,
            requested_bytes: gib * GIB,
            access_modes: vec!["ReadWriteOnce".into()],
            deleting: false,
        });
    }
    let mut db = pod("ns-0", "db-0", Vec::new(), None, None);
    db.claims = vec!["data-db-0".into(), "log-db-0".into()];
    cache.upsert_pod(db.clone());

    let config = steward_tests::config(steward_tests::LOCAL_PV);
    let policies =
        steward_tests::load_policies(steward_tests::runtime(), &config).expect("policies load");
    let lpv = App::new(
        &config,
        Hooks::new(policies, cache.clone(), Backend::Snapshot),
    );
    println!(
        "-- local-pv: {} nodes with pools, {} pods cached; resident memory: {} MiB",
        cache.node_count(),
        cache.pod_count(),
        resident_mib()
    );
    let native = with_native(
        &lpv,
        steward_tests::LOCAL_PV,
        Native::<local_pv::LocalPv>::new(),
    );
    // The filter records db-0 as in flight; clear it so every sample sees
    // the same cluster.
    request_price("local-pv", &lpv, &native, &db, names, || {
        cache.abandon_placement(&db.uid)
    });
    let candidates = CandidateNodes::Names(names.to_vec());
    let prioritize = measure(2_000, || {
        lpv.hooks.extender.prioritize_pod(&db, &candidates);
    });
    report("local-pv prioritize, in-process, 5,000 nodes", &prioritize);

    let set = lpv.hooks.extender.policies.current();
    let policy = &set.scheduler[0].policy;
    let query = ClusterQuery::new(cache.clone());
    let ids: Vec<u32> = cache
        .node_ids(names)
        .into_iter()
        .map(|id| id.expect("known node"))
        .collect();
    let candidates = steward::wit::Candidates {
        labels: Vec::new(),
        nodes: ids,
    };
    let wasm = measure(2_000, || {
        policy
            .filter(query.clone(), &db, &candidates)
            .expect("filter runs");
    });
    let native_view = NativeView(query.clone());
    let settings = local_pv::Settings::default();
    let native = measure(2_000, || {
        let nodes = sdk_candidates(&candidates);
        local_pv::filter(&native_view, &settings, &sdk_pod(&db), &nodes);
    });
    report("local-pv filter in Wasm (fresh instance)", &wasm);
    report("local-pv filter native (same input)", &native);
    println!(
        "local-pv Wasm/native ratio at {NODES} candidates: {}",
        ratio(&wasm, &native)
    );
    let refused = policy
        .filter(query.clone(), &db, &candidates)
        .expect("filter runs")
        .rejections
        .len();
    println!("(db-0 is refused by {refused} of {NODES} nodes: pools with under 50 GiB free)");
}

/// Engine start plus loading every built-in policy: compiling, then again
/// from the precompiled cache (what a restart does).
fn startup() {
    let dir = std::env::temp_dir().join(format!("steward-bench-cache-{}", std::process::id()));
    let config = steward_tests::config(steward_tests::PD_QUORUM);
    let start = || {
        let t = Instant::now();
        let runtime = steward::runtime::Runtime::new(Some(dir.clone())).expect("runtime");
        steward_tests::load_policies(&runtime, &config).expect("policies load");
        t.elapsed()
    };
    let cold = start();
    let cached: Vec<Duration> = {
        let mut v: Vec<Duration> = (0..20).map(|_| start()).collect();
        v.sort();
        v
    };
    println!(
        "{:<55} {:>8.1} ms",
        "start: engine + built-in policies, compiled",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "{:<55} median {:>6.1} ms   p99 {:>6.1} ms   (n=20)",
        "start: engine + built-in policies, precompiled cache",
        median(&cached).as_secs_f64() * 1e3,
        p99(&cached).as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// VmRSS of this process, in MiB.
fn resident_mib() -> u64 {
    steward_tests::e2e::resident_bytes(std::process::id()).map_or(0, |bytes| bytes >> 20)
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// 5,000 nodes in 50 zones; 50,000 pods in 100 namespaces; one TiDB
/// cluster whose pd-0 and pd-1 are placed and pd-2 is pending.
fn app() -> App {
    let cache = Arc::new(ClusterCache::default());
    for i in 0..NODES {
        let name = node_name(i);
        cache.upsert_node(Node {
            labels: vec![
                ("kubernetes.io/hostname".into(), name.clone()),
                ("kubernetes.io/os".into(), "linux".into()),
                ("kubernetes.io/arch".into(), "amd64".into()),
                (
                    "topology.kubernetes.io/zone".into(),
                    format!("zone-{}", i % 50),
                ),
                ("topology.kubernetes.io/region".into(), "region-1".into()),
                (
                    "node.kubernetes.io/instance-type".into(),
                    "m5.2xlarge".into(),
                ),
            ],
            name,
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
        });
    }
    for i in 0..PODS {
        let app_name = format!("app-{}", i % 700);
        cache.upsert_pod(pod(
            &format!("ns-{}", i % 100),
            &format!("{app_name}-{i}"),
            vec![
                ("app.kubernetes.io/name".into(), app_name.clone()),
                (
                    "app.kubernetes.io/instance".into(),
                    format!("{app_name}-prod"),
                ),
                ("pod-template-hash".into(), format!("{:08x}", i % 700)),
            ],
            Some(node_name(i % NODES)),
            None,
        ));
    }
    let tidb = |component: &str| {
        vec![
            ("app.kubernetes.io/instance".into(), "basic".into()),
            ("app.kubernetes.io/component".into(), component.to_string()),
            (
                "app.kubernetes.io/managed-by".into(),
                "tidb-operator".into(),
            ),
        ]
    };
    for (ordinal, node) in [(0, Some(node_name(0))), (1, Some(node_name(1))), (2, None)] {
        cache.upsert_pod(pod(
            "tidb-cluster",
            &format!("basic-pd-{ordinal}"),
            tidb("pd"),
            node,
            Some(Owner {
                kind: "StatefulSet".into(),
                name: "basic-pd".into(),
            }),
        ));
    }
    cache.upsert_workload(
        build::statefulset("tidb-cluster", "basic-pd", 3)
            .labels(tidb("pd"))
            .partition(3)
            .ready(2)
            .claim_templates(&["pd"]),
    );
    cache.mark_synced();
    let config = steward_tests::config(steward_tests::PD_QUORUM);
    let policies =
        steward_tests::load_policies(steward_tests::runtime(), &config).expect("policies load");
    App::new(&config, Hooks::new(policies, cache, Backend::Snapshot))
}

fn pod(
    ns: &str,
    name: &str,
    labels: Vec<(String, String)>,
    node: Option<String>,
    owner: Option<Owner>,
) -> Pod {
    let pod = build::pod(ns, name)
        .uid(&format!("uid-{ns}-{name}"))
        .labels(labels)
        .annotation("kubernetes.io/psp", "restricted")
        .scheduled_by("steward-scheduler");
    let pod = Pod { owner, ..pod };
    match node {
        Some(node) => pod.on(&node),
        None => pod.pending(),
    }
}

fn pod_named(app: &App, name: &str) -> Pod {
    ClusterQuery::new(app.hooks.cluster.clone())
        .get_pod("tidb-cluster", name)
        .expect("pod exists")
}

fn measure(iterations: usize, mut f: impl FnMut()) -> Vec<Duration> {
    measure_with(iterations, || (), |()| f())
}

/// Times `f` on a fresh `input()` per sample, after a tenth as many
/// untimed warm-up runs (see [`steward::cli::bench::sample`]).
fn measure_with<I, O>(
    iterations: usize,
    mut input: impl FnMut() -> I,
    mut f: impl FnMut(I) -> O,
) -> Vec<Duration> {
    steward::cli::bench::sample(
        iterations / 10,
        iterations,
        |_| input(),
        |i| Ok::<_, Infallible>(f(i)),
    )
    .unwrap_or_else(|never| match never {})
}

fn median(sorted: &[Duration]) -> Duration {
    percentile(sorted, 50)
}

fn p99(sorted: &[Duration]) -> Duration {
    percentile(sorted, 99)
}

fn report(what: &str, samples: &[Duration]) {
    println!(
        "{what:<55} median {:>8.1} µs   p99 {:>8.1} µs   (n={})",
        median(samples).as_secs_f64() * 1e6,
        p99(samples).as_secs_f64() * 1e6,
        samples.len()
    );
}

/// Filter round trips over one keep-alive HTTP/1.1 connection on loopback.
/// The last answer must refuse as many nodes as the same filter in process,
/// so a decoding slip cannot pass for speed.
fn http_round_trips(app: &App, pod: &Pod, names: &[String], iterations: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let addr = steward_tests::serve(app.clone()).await;
        let body = serde_json::json!({
            "Pod": k8s_pod_json(pod),
            "Nodes": null,
            "NodeNames": names,
        })
        .to_string();
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let mut samples = Vec::with_capacity(iterations);
        let mut last = hyper::body::Bytes::new();
        for i in 0..iterations + iterations / 10 {
            let req = hyper::Request::post(format!("http://{addr}/scheduler/filter"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(
                    body.clone(),
                )))
                .expect("request");
            sender.ready().await.expect("connection ready");
            let t = Instant::now();
            let res = sender.send_request(req).await.expect("response");
            assert_eq!(res.status(), 200);
            last = http_body_util::BodyExt::collect(res.into_body())
                .await
                .expect("body")
                .to_bytes();
            if i >= iterations / 10 {
                samples.push(t.elapsed());
            }
        }
        samples.sort();
        let refused =
            serde_json::from_slice::<serde_json::Value>(&last).expect("JSON answer")["FailedNodes"]
                .as_object()
                .map_or(0, |failed| failed.len());
        let in_process = app
            .hooks
            .extender
            .filter_pod(pod, CandidateNodes::Names(names.to_vec()))
            .failed_nodes
            .len();
        assert_eq!(refused, in_process, "HTTP and in-process filters disagree");
        samples
    })
}

/// The pod as kube-scheduler would send it: labels, owner and claims.
fn k8s_pod_json(p: &Pod) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = p
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let owners: Vec<serde_json::Value> = p
        .owner
        .iter()
        .map(|o| {
            serde_json::json!({"apiVersion": "apps/v1", "kind": o.kind, "name": o.name,
                               "uid": format!("uid-{}", o.name), "controller": true})
        })
        .collect();
    let volumes: Vec<serde_json::Value> = p
        .claims
        .iter()
        .map(|c| serde_json::json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    serde_json::json!({
        "metadata": {
            "name": p.name, "namespace": p.namespace, "uid": p.uid, "labels": labels,
            "ownerReferences": owners,
        },
        "spec": {
            "schedulerName": p.scheduler_name,
            "containers": [{"name": "main", "image": "pingcap/pd:v6.1.0"}],
            "volumes": volumes,
        },
        "status": {"phase": "Pending"},
    })
}

/// The same filter request for `pod` against `names` through `wasm` and
/// through `native` (the same policy compiled natively), in process and
/// over HTTP keep-alive; prints each and the sandbox's price per request,
/// Wasm over native. `reset` runs before each in-process sample.
fn request_price(
    policy: &str,
    wasm: &App,
    native: &App,
    pod: &Pod,
    names: &[String],
    reset: impl Fn(),
) {
    let both_paths = |app: &App, build: &str| {
        let in_process = measure_with(
            2_000,
            || {
                reset();
                CandidateNodes::Names(names.to_vec())
            },
            |candidates| app.hooks.extender.filter_pod(pod, candidates),
        );
        report(
            &format!("{policy} filter, in-process, {build}, 5,000 nodes"),
            &in_process,
        );
        let http = http_round_trips(app, pod, names, 1_000);
        report(
            &format!("{policy} filter over HTTP keep-alive, {build}, 5,000 nodes"),
            &http,
        );
        (in_process, http)
    };
    let (wasm_in, wasm_http) = both_paths(wasm, "Wasm");
    let (native_in, native_http) = both_paths(native, "native");
    println!(
        "{policy} request with Wasm / native, 5,000 nodes: in process {}, over HTTP {}",
        ratio(&wasm_in, &native_in),
        ratio(&wasm_http, &native_http)
    );
}

/// Wasm over native, medians and p99s: `median 1.23x, p99 1.45x`.
fn ratio(wasm: &[Duration], native: &[Duration]) -> String {
    format!(
        "median {:.2}x, p99 {:.2}x",
        median(wasm).as_secs_f64() / median(native).as_secs_f64(),
        p99(wasm).as_secs_f64() / p99(native).as_secs_f64()
    )
}

/// `app` (configured with `policies_yaml`) with its one scheduler policy
/// swapped for `native`, under the same id, selector and failure mode.
fn with_native(app: &App, policies_yaml: &str, native: impl Scheduler + 'static) -> App {
    let set = app.hooks.extender.policies.current();
    let wasm = &set.scheduler[0];
    let policies = PolicySet {
        scheduler: vec![Arc::new(ScheduledPolicy {
            id: wasm.id.clone(),
            digest: "native".into(),
            selector: wasm.selector.clone(),
            failure_mode: wasm.failure_mode,
            policy: Box::new(native),
        })],
        ..PolicySet::default()
    };
    let config = steward_tests::config(policies_yaml);
    App::new(
        &config,
        Hooks::new(policies, app.hooks.cluster.clone(), Backend::Snapshot),
    )
}

/// A built-in placement policy compiled into this bench with its default
/// settings (as the bench configures its component), answering the host's
/// calls with the same copies of the input a Wasm call makes.
struct Native<P: SchedulerPolicy> {
    settings: P::Settings,
    needs: steward::wit::SchedulerNeeds,
    policy: PhantomData<fn() -> P>,
}

impl<P: SchedulerPolicy> Native<P> {
    fn new() -> Native<P> {
        let needs = steward_sdk::scheduler::validate_settings::<P>("").expect("default settings");
        Native {
            settings: steward_sdk::settings::parse("").expect("default settings"),
            needs: steward::wit::SchedulerNeeds {
                node_labels: needs.node_labels,
                capacity_sources: needs
                    .capacity_sources
                    .into_iter()
                    .map(host_source)
                    .collect(),
                tidb_operator: needs.tidb_operator,
            },
            policy: PhantomData,
        }
    }
}

impl<P> Scheduler for Native<P>
where
    P: SchedulerPolicy,
    P::Settings: Send + Sync,
{
    fn needs(&self) -> &steward::wit::SchedulerNeeds {
        &self.needs
    }

    fn filter(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, EvalError> {
        let result = P::filter(
            &NativeView(cluster),
            &self.settings,
            &sdk_pod(pod),
            &sdk_candidates(nodes),
        )
        .map_err(EvalError::Guest)?;
        Ok(FilterResult {
            reasons: result.reasons,
            rejections: result
                .rejections
                .into_iter()
                .map(|r| steward::wit::Rejection {
                    node: r.node,
                    reason: r.reason,
                    unresolvable: r.unresolvable,
                })
                .collect(),
        })
    }

    fn prioritize(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, EvalError> {
        let scores = P::prioritize(
            &NativeView(cluster),
            &self.settings,
            &sdk_pod(pod),
            &sdk_candidates(nodes),
        )
        .map_err(EvalError::Guest)?;
        Ok(scores
            .into_iter()
            .map(|s| NodeScore {
                node: s.node,
                score: s.score,
            })
            .collect())
    }
}

fn sdk_candidates(nodes: &Candidates) -> steward_sdk::scheduler::Candidates {
    steward_sdk::scheduler::Candidates {
        nodes: nodes.nodes.clone(),
        labels: nodes.labels.clone(),
    }
}

/// pd-quorum's cluster queries answered natively from the same cache.
struct NativeView(ClusterQuery);

impl ClusterView for NativeView {
    fn list_pods(
        &self,
        ns: &str,
        selector: &[steward_sdk::SelectorRequirement],
    ) -> Vec<steward_sdk::Pod> {
        let selector: Vec<_> = selector.iter().map(host_requirement).collect();
        self.0
            .list_pods(ns, &selector)
            .iter()
            .map(sdk_pod)
            .collect()
    }
    fn get_pod(&self, ns: &str, name: &str) -> Option<steward_sdk::Pod> {
        self.0.get_pod(ns, name).as_ref().map(sdk_pod)
    }
    fn list_nodes(&self, selector: &[steward_sdk::SelectorRequirement]) -> Vec<steward_sdk::Node> {
        let selector: Vec<_> = selector.iter().map(host_requirement).collect();
        self.0.list_nodes(&selector).iter().map(sdk_node).collect()
    }
    fn get_node(&self, name: &str) -> Option<steward_sdk::Node> {
        self.0.get_node(name).as_ref().map(sdk_node)
    }
    fn get_claim(&self, ns: &str, name: &str) -> Option<steward_sdk::Claim> {
        self.0.get_claim(ns, name).map(|c| steward_sdk::Claim {
            namespace: c.namespace,
            name: c.name,
            uid: c.uid,
            labels: c.labels,
            annotations: c.annotations,
            storage_class: c.storage_class,
            phase: c.phase,
            volume_name: c.volume_name,
            requested_bytes: c.requested_bytes,
            access_modes: c.access_modes,
            deleting: c.deleting,
        })
    }
    fn get_volume(&self, _: &str) -> Option<steward_sdk::Volume> {
        // Neither benchmarked pod has a bound claim.
        None
    }
    fn get_storage_class(&self, name: &str) -> Option<steward_sdk::StorageClass> {
        self.list_storage_classes()
            .into_iter()
            .find(|c| c.name == name)
    }
    fn node_name(&self, id: u32) -> Option<String> {
        self.0.node_name(id)
    }
    fn node_names(&self, ids: &[u32]) -> Vec<Option<String>> {
        self.0.node_names(ids)
    }
    fn label_text(&self, key: &str, id: u32) -> Option<String> {
        self.0.label_text(key, id)
    }
    fn label_id(&self, key: &str, text: &str) -> Option<u32> {
        self.0.label_id(key, text)
    }
    fn node_label_id(&self, node: &str, key: &str) -> Option<u32> {
        self.0.node_label_id(node, key)
    }
    fn list_storage_classes(&self) -> Vec<steward_sdk::StorageClass> {
        self.0
            .list_storage_classes()
            .into_iter()
            .map(|c| steward_sdk::StorageClass {
                name: c.name,
                provisioner: c.provisioner,
                parameters: c.parameters,
                binding_mode: c.binding_mode,
                reclaim_policy: c.reclaim_policy,
            })
            .collect()
    }
    fn get_local_volume(&self, name: &str) -> Option<steward_sdk::LocalVolume> {
        self.0
            .get_local_volume(name)
            .map(|v| steward_sdk::LocalVolume {
                name: v.name,
                pool_name: v.pool_name,
                required_bytes: v.required_bytes,
                replica_number: v.replica_number,
                replica_hosts: v.replica_hosts,
                published_node: v.published_node,
                state: v.state,
                migrating: v.migrating,
            })
    }
    fn node_id(&self, name: &str) -> Option<u32> {
        self.0.node_id(name)
    }
    fn match_node_affinity(
        &self,
        terms: &[steward_sdk::NodeSelectorTerm],
        nodes: &[u32],
    ) -> Vec<bool> {
        let terms: Vec<_> = terms
            .iter()
            .map(|t| steward::wit::NodeSelectorTerm {
                match_expressions: t.match_expressions.iter().map(host_requirement).collect(),
                match_fields: t.match_fields.iter().map(host_requirement).collect(),
            })
            .collect();
        self.0.match_node_affinity(&terms, nodes)
    }
    fn storage_nodes(&self, source: steward_sdk::CapacitySource) -> Vec<u32> {
        self.0.storage_nodes(host_source(source))
    }
    fn pool_capacities(
        &self,
        source: steward_sdk::CapacitySource,
        pool: &str,
        classes: &[String],
        except_pod: &str,
        nodes: &[u32],
    ) -> steward_sdk::PoolColumns {
        let c = self
            .0
            .pool_capacities(host_source(source), pool, classes, except_pod, nodes);
        steward_sdk::PoolColumns {
            state: c.state,
            schedulable: c.schedulable,
            free_bytes: c.free_bytes,
            total_bytes: c.total_bytes,
            free_volumes: c.free_volumes,
            reserved_bytes: c.reserved_bytes,
            reserved_volumes: c.reserved_volumes,
        }
    }
    fn pool_problem(
        &self,
        source: steward_sdk::CapacitySource,
        pool: &str,
        node: u32,
    ) -> Option<String> {
        self.0.pool_problem(host_source(source), pool, node)
    }
    fn free_disks(
        &self,
        disk_type: &str,
        classes: &[String],
        except_pod: &str,
        nodes: &[u32],
    ) -> Vec<steward_sdk::NodeDisks> {
        self.0
            .free_disks(disk_type, classes, except_pod, nodes)
            .into_iter()
            .map(|d| steward_sdk::NodeDisks {
                state: sdk_state(d.state),
                schedulable: d.schedulable,
                free: d.free,
                reserved: d.reserved,
                problem: d.problem,
            })
            .collect()
    }
    fn get_workload(&self, kind: &str, ns: &str, name: &str) -> Option<steward_sdk::Workload> {
        self.0
            .get_workload(kind, ns, name)
            .map(|w| steward_sdk::Workload {
                kind: w.kind,
                namespace: w.namespace,
                name: w.name,
                uid: w.uid,
                labels: w.labels,
                annotations: w.annotations,
                replicas: w.replicas,
                partition: w.partition,
                update_strategy: w.update_strategy,
                generation: w.generation,
                observed_generation: w.observed_generation,
                status_replicas: w.status_replicas,
                ready_replicas: w.ready_replicas,
                updated_replicas: w.updated_replicas,
                current_revision: w.current_revision,
                update_revision: w.update_revision,
                selector: Vec::new(),
                claim_templates: w.claim_templates,
                desired_ordinals: w.desired_ordinals,
            })
    }
    fn get_tidb_cluster(&self, ns: &str, name: &str) -> Option<steward_sdk::TidbCluster> {
        let component = |c: steward::wit::TidbComponent| steward_sdk::TidbComponent {
            replicas: c.replicas,
            desired_replicas: c.desired_replicas,
            desired_ordinals: c.desired_ordinals,
            failure_pods: c.failure_pods,
            scheduler_name: c.scheduler_name,
        };
        self.0
            .get_tidb_cluster(ns, name)
            .map(|t| steward_sdk::TidbCluster {
                namespace: t.namespace,
                name: t.name,
                ha_topology_key: t.ha_topology_key,
                pd: t.pd.map(component),
                tikv: t.tikv.map(component),
            })
    }
    fn node_label_ids(&self, key: &str, nodes: &[u32]) -> Vec<u32> {
        self.0.node_label_ids(key, nodes)
    }
}

fn host_source(s: steward_sdk::CapacitySource) -> steward::wit::CapacitySource {
    use steward::wit::CapacitySource as H;
    use steward_sdk::CapacitySource as S;
    match s {
        S::Hwameistor => H::Hwameistor,
        S::Topolvm => H::Topolvm,
        S::CsiStorageCapacity => H::CsiStorageCapacity,
    }
}

fn sdk_state(s: steward::wit::PoolState) -> steward_sdk::PoolState {
    use steward::wit::PoolState as H;
    use steward_sdk::PoolState as S;
    match s {
        H::Ready => S::Ready,
        H::Missing => S::Missing,
        H::NotReady => S::NotReady,
        H::BadData => S::BadData,
    }
}

fn host_requirement(r: &steward_sdk::SelectorRequirement) -> steward::wit::SelectorRequirement {
    use steward::wit::SelectorOperator as H;
    use steward_sdk::SelectorOperator as S;
    steward::wit::SelectorRequirement {
        key: r.key.clone(),
        operator: match r.operator {
            S::In => H::In,
            S::NotIn => H::NotIn,
            S::Exists => H::Exists,
            S::DoesNotExist => H::DoesNotExist,
            S::Gt => H::Gt,
            S::Lt => H::Lt,
        },
        values: r.values.clone(),
    }
}

fn sdk_pod(p: &Pod) -> steward_sdk::Pod {
    steward_sdk::Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
        labels: p.labels.clone(),
        annotations: p.annotations.clone(),
        owner: p.owner.as_ref().map(|o| steward_sdk::Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
        }),
        node_name: p.node_name.clone(),
        scheduler_name: p.scheduler_name.clone(),
        phase: p.phase.clone(),
        ready: p.ready,
        deleting: p.deleting,
        claims: p.claims.clone(),
        in_flight: p.in_flight,
    }
}

fn sdk_node(n: &Node) -> steward_sdk::Node {
    steward_sdk::Node {
        name: n.name.clone(),
        labels: n.labels.clone(),
        ready: n.ready,
        unschedulable: n.unschedulable,
        taints: n
            .taints
            .iter()
            .map(|t| steward_sdk::Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.clone(),
            })
            .collect(),
    }
}
