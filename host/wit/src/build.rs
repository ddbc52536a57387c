//! Builders of the host's records for tests and benchmarks, so each test
//! states only what matters to it: `pod("tidb", "basic-pd-0").on("node-a")`.

use crate::{Owner, Pod, Workload};

/// A running, ready pod of `default-scheduler`, not on a node, with uid
/// `uid-<name>`.
pub fn pod(namespace: &str, name: &str) -> Pod {
    Pod {
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Vec::new(),
        annotations: Vec::new(),
        owner: None,
        node_name: None,
        scheduler_name: "default-scheduler".into(),
        phase: "Running".into(),
        ready: true,
        deleting: false,
        claims: Vec::new(),
        in_flight: false,
    }
}

impl Pod {
    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = uid.into();
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn labels(mut self, labels: Vec<(String, String)>) -> Self {
        self.labels.extend(labels);
        self
    }
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }
    /// Owned by the StatefulSet `statefulset`.
    pub fn of_statefulset(mut self, statefulset: &str) -> Self {
        self.owner = Some(Owner {
            kind: "StatefulSet".into(),
            name: statefulset.into(),
        });
        self
    }
    pub fn scheduled_by(mut self, scheduler: &str) -> Self {
        self.scheduler_name = scheduler.into();
        self
    }
    /// Bound to `node`.
    pub fn on(mut self, node: &str) -> Self {
        self.node_name = Some(node.into());
        self
    }
    /// Not yet bound, so not running or ready.
    pub fn pending(mut self) -> Self {
        self.node_name = None;
        self.phase = "Pending".into();
        self.ready = false;
        self
    }
    pub fn claims(mut self, claims: &[&str]) -> Self {
        self.claims = claims.iter().map(|c| c.to_string()).collect();
        self
    }
}

/// A settled, RollingUpdate StatefulSet: every replica ready and updated,
/// one revision `<name>-r1`, no partition, uid `uid-<name>`.
pub fn statefulset(namespace: &str, name: &str, replicas: u32) -> Workload {
    Workload {
        kind: "StatefulSet".into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Vec::new(),
        annotations: Vec::new(),
        replicas,
        partition: None,
        update_strategy: "RollingUpdate".into(),
        generation: 1,
        observed_generation: 1,
        status_replicas: replicas,
        ready_replicas: replicas,
        updated_replicas: replicas,
        current_revision: format!("{name}-r1"),
        update_revision: format!("{name}-r1"),
        selector: Vec::new(),
        claim_templates: Vec::new(),
        desired_ordinals: (0..replicas).collect(),
    }
}

impl Workload {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn labels(mut self, labels: Vec<(String, String)>) -> Self {
        self.labels.extend(labels);
        self
    }
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn ready(mut self, ready: u32) -> Self {
        self.ready_replicas = ready;
        self
    }
    pub fn claim_templates(mut self, templates: &[&str]) -> Self {
        self.claim_templates = templates.iter().map(|t| t.to_string()).collect();
        self
    }
}
