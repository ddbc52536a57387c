//! An in-memory cluster for reconcile tests: StatefulSets, pods, claims and
//! nodes in a [`ClusterCache`], and a model of Kubernetes' StatefulSet
//! controller (`OrderedReady`, `RollingUpdate` with a partition) that moves
//! them one step per [`Cluster::tick`], keeping the PD double in step with
//! the pods: a TiKV pod that goes away leaves its store `Disconnected`
//! (leaders move off it), a PD pod that goes away leaves its member
//! unhealthy (leadership moves), and both come back when the new pod is
//! Ready.

use std::sync::Arc;

use steward::cluster::{ClusterCache, ClusterQuery};
use steward::wit::{Claim, Node, Pod, Workload, build};

use crate::pd_double::{DoubleMember, DoubleStore, PdDouble};

pub const NAMESPACE: &str = "tidb";
pub const CLUSTER: &str = "basic";

/// Something the model saw that must never happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// Two pods of one StatefulSet were unavailable at once.
    TwoUnavailable {
        statefulset: String,
        pods: Vec<String>,
    },
    /// The PD leader's pod was restarted while it led.
    LeaderRestarted { pod: String },
    /// A scale-in removed a pod PD still counted on: a PD member not yet
    /// deleted from PD, or a TiKV store not yet Tombstone.
    RemovedWhileInPd { pod: String },
}

pub struct Cluster {
    pub cache: Arc<ClusterCache>,
    pub violations: Vec<Violation>,
    next_member_id: u64,
}

impl Cluster {
    /// A TiDB cluster `basic` in namespace `tidb`: StatefulSets
    /// `basic-pd` and `basic-tikv` with `replicas` each, every pod Ready
    /// on its own node at revision `<sts>-r1`, claims bound.
    pub fn tidb(replicas: u32, policies: &[(&str, &str)]) -> Cluster {
        let cache = Arc::new(ClusterCache::default());
        for n in 0..6 {
            cache.upsert_node(Node {
                name: format!("node-{n}"),
                labels: vec![("kubernetes.io/hostname".into(), format!("node-{n}"))],
                ready: true,
                unschedulable: false,
                taints: vec![],
            });
        }
        let mut cluster = Cluster {
            cache,
            violations: Vec::new(),
            next_member_id: 5000,
        };
        for (component, policy) in policies {
            let w = statefulset(component, replicas, policy);
            for o in 0..replicas {
                cluster.create_pod(&w, o, &w.current_revision, true);
            }
            cluster.cache.upsert_workload(w);
        }
        cluster
    }

    pub fn query(&self) -> ClusterQuery {
        ClusterQuery::new(self.cache.clone())
    }

    pub fn workload(&self, name: &str) -> Workload {
        self.query()
            .get_workload("StatefulSet", NAMESPACE, name)
            .expect("the StatefulSet exists")
    }

    pub fn pods(&self, statefulset: &str) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .query()
            .list_pods(NAMESPACE, &[])
            .into_iter()
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.name == statefulset))
            .collect();
        pods.sort_by_key(|p| ordinal(&p.name));
        pods
    }

    pub fn pod(&self, name: &str) -> Option<Pod> {
        self.query().get_pod(NAMESPACE, name)
    }

    /// A template change: the update revision becomes `<sts>-<revision>`.
    pub fn change_template(&self, name: &str, revision: &str) {
        let mut w = self.workload(name);
        w.update_revision = format!("{name}-{revision}");
        w.generation += 1;
        w.observed_generation = w.generation;
        self.cache.upsert_workload(w);
    }

    /// Marks a pod not Ready (its process died, or its node did).
    pub fn fail_pod(&self, name: &str) {
        let mut pod = self.pod(name).expect("the pod exists");
        pod.ready = false;
        self.cache.upsert_pod(pod);
    }

    fn create_pod(&mut self, w: &Workload, ordinal: u32, revision: &str, ready: bool) {
        let name = format!("{}-{ordinal}", w.name);
        let claims: Vec<String> = w
            .claim_templates
            .iter()
            .map(|t| format!("{t}-{name}"))
            .collect();
        for c in &claims {
            if self.query().get_claim(NAMESPACE, c).is_none() {
                self.cache.upsert_claim(claim(c));
            }
        }
        let mut pod = build::pod(NAMESPACE, &name)
            .uid(&format!("uid-{name}-{revision}-{}", self.next_member_id))
            .label("app.kubernetes.io/instance", CLUSTER)
            .label("app.kubernetes.io/component", component(w))
            .label("controller-revision-hash", revision)
            .of_statefulset(&w.name)
            .on(&format!("node-{}", ordinal % 6));
        pod.claims = claims;
        if !ready {
            pod.phase = "Pending".into();
            pod.ready = false;
        }
        self.cache.upsert_pod(pod);
        self.next_member_id += 1;
    }

    /// One step of the StatefulSet controller for every StatefulSet, then
    /// the invariants are checked.
    pub fn tick(&mut self, pd: &PdDouble) {
        let names: Vec<String> = self
            .query()
            .list_pods(NAMESPACE, &[])
            .iter()
            .filter_map(|p| p.owner.as_ref().map(|o| o.name.clone()))
            .chain(["basic-pd".to_string(), "basic-tikv".to_string()])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for name in names {
            if self
                .query()
                .get_workload("StatefulSet", NAMESPACE, &name)
                .is_some()
            {
                self.step(&name, pd);
                self.check(&name);
            }
        }
    }

    fn step(&mut self, name: &str, pd: &PdDouble) {
        let mut w = self.workload(name);
        let pods = self.pods(name);
        let partition = w.partition.unwrap_or(0);
        let target = |o: u32| {
            if o >= partition {
                w.update_revision.clone()
            } else {
                w.current_revision.clone()
            }
        };
        // Pods created last tick become Ready (and healthy in PD).
        let mut acted = false;
        for p in pods.iter().filter(|p| !p.ready && p.phase == "Pending") {
            let mut p = p.clone();
            p.ready = true;
            p.phase = "Running".into();
            self.came_up(&w, &p, pd);
            self.cache.upsert_pod(p);
            acted = true;
        }
        if !acted {
            let all_ready = pods.iter().all(|p| p.ready);
            let missing = (0..w.replicas).find(|o| !pods.iter().any(|p| ordinal(&p.name) == *o));
            let extra = pods.iter().rev().find(|p| ordinal(&p.name) >= w.replicas);
            let stale = pods.iter().rev().find(|p| {
                let o = ordinal(&p.name);
                o < w.replicas && o >= partition && revision(p) != w.update_revision
            });
            if let Some(o) = missing {
                let lower_ready = pods
                    .iter()
                    .filter(|p| ordinal(&p.name) < o)
                    .all(|p| p.ready);
                if lower_ready {
                    self.create_pod(&w, o, &target(o), false);
                }
            } else if let Some(p) = extra.filter(|_| all_ready) {
                if in_pd(&w, p, pd) {
                    self.violations.push(Violation::RemovedWhileInPd {
                        pod: p.name.clone(),
                    });
                }
                self.went_down(&w, p, pd);
                self.cache.remove_pod(NAMESPACE, &p.name);
            } else if let Some(p) = stale.filter(|_| all_ready) {
                self.went_down(&w, p, pd);
                self.cache.remove_pod(NAMESPACE, &p.name);
            }
        }
        let pods = self.pods(name);
        w = self.workload(name);
        w.status_replicas = pods.len() as u32;
        w.ready_replicas = pods.iter().filter(|p| p.ready).count() as u32;
        w.updated_replicas = pods
            .iter()
            .filter(|p| revision(p) == w.update_revision)
            .count() as u32;
        if w.updated_replicas == w.replicas
            && w.ready_replicas == w.replicas
            && w.status_replicas == w.replicas
        {
            w.current_revision = w.update_revision.clone();
        }
        self.cache.upsert_workload(w);
    }

    fn went_down(&mut self, w: &Workload, pod: &Pod, pd: &PdDouble) {
        let mut state = pd.state();
        match component(w) {
            "tikv" => {
                if let Some(s) = store_of(&mut state.stores, &pod.name) {
                    s.state = "Disconnected".into();
                    // Raft elects new leaders elsewhere.
                    s.leaders = 0.0;
                }
            }
            "pd" => {
                if state.leader == pod.name {
                    self.violations.push(Violation::LeaderRestarted {
                        pod: pod.name.clone(),
                    });
                    if let Some(next) = state
                        .members
                        .iter()
                        .find(|m| m.name != pod.name && m.healthy)
                    {
                        state.leader = next.name.clone();
                    }
                }
                if let Some(m) = state.members.iter_mut().find(|m| m.name == pod.name) {
                    m.healthy = false;
                }
            }
            _ => {}
        }
    }

    fn came_up(&mut self, w: &Workload, pod: &Pod, pd: &PdDouble) {
        let mut state = pd.state();
        match component(w) {
            "tikv" => {
                if let Some(s) = store_of(&mut state.stores, &pod.name) {
                    s.state = "Up".into();
                }
            }
            "pd" => match state.members.iter_mut().find(|m| m.name == pod.name) {
                Some(m) => m.healthy = true,
                None => {
                    // A pod whose member was deleted joins PD again.
                    state.members.push(DoubleMember {
                        id: self.next_member_id,
                        name: pod.name.clone(),
                        healthy: true,
                    });
                    self.next_member_id += 1;
                }
            },
            _ => {}
        }
    }

    /// At most one pod of the StatefulSet missing or not Ready.
    fn check(&mut self, name: &str) {
        let w = self.workload(name);
        let pods = self.pods(name);
        let down: Vec<String> = (0..w.replicas.min(w.status_replicas.max(w.replicas)))
            .map(|o| format!("{name}-{o}"))
            .filter(|n| !pods.iter().any(|p| &p.name == n && p.ready))
            .collect();
        if down.len() > 1 {
            self.violations.push(Violation::TwoUnavailable {
                statefulset: name.into(),
                pods: down,
            });
        }
    }
}

/// Whether PD still counts on `pod`: its member, or its store not yet a
/// Tombstone.
fn in_pd(w: &Workload, pod: &Pod, pd: &PdDouble) -> bool {
    let state = pd.state();
    match component(w) {
        "pd" => state.members.iter().any(|m| m.name == pod.name),
        "tikv" => state
            .stores
            .iter()
            .any(|s| s.address.starts_with(&format!("{}.", pod.name)) && s.state != "Tombstone"),
        _ => false,
    }
}

fn component(w: &Workload) -> &str {
    w.name.rsplit_once('-').map_or("", |(_, c)| c)
}

/// The store of `pod` whose state follows the pod's heartbeats: an Offline
/// or Tombstone store keeps its state whatever the pod does, as in PD.
fn store_of<'a>(stores: &'a mut [DoubleStore], pod: &str) -> Option<&'a mut DoubleStore> {
    stores.iter_mut().find(|s| {
        s.address.starts_with(&format!("{pod}.")) && s.state != "Offline" && s.state != "Tombstone"
    })
}

pub fn ordinal(pod: &str) -> u32 {
    pod.rsplit_once('-')
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or(u32::MAX)
}

pub fn revision(pod: &Pod) -> String {
    pod.labels
        .iter()
        .find(|(k, _)| k == "controller-revision-hash")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn statefulset(component: &str, replicas: u32, policy: &str) -> Workload {
    build::statefulset(NAMESPACE, &format!("{CLUSTER}-{component}"), replicas)
        .label("app.kubernetes.io/instance", CLUSTER)
        .label("app.kubernetes.io/component", component)
        .label(steward::reconcile::OPT_IN_LABEL, policy)
        .claim_templates(&[component])
}

fn claim(name: &str) -> Claim {
    Claim {
        namespace: NAMESPACE.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: vec![],
        annotations: vec![],
        storage_class: Some("local".into()),
        phase: "Bound".into(),
        volume_name: Some(format!("pv-{name}")),
        requested_bytes: 1 << 30,
        access_modes: vec!["ReadWriteOnce".into()],
        deleting: false,
    }
}
