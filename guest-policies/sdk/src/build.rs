//! Builders for test fixtures, so tests read like the rules they check:
//! `pod("basic-pd-1").component("basic", "pd").on("node-a")`.

use crate::cluster::{FakeDisks, FakePool, PoolCapacity};
use crate::{
    CapacitySource, Claim, LocalVolume, Node, NodeDisks, NodeSelectorTerm, Owner, Pod, PoolState,
    SelectorRequirement, StorageClass, TidbCluster, TidbComponent, Volume, Workload,
};

fn pairs(map: &[(&str, &str)]) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A running, ready pod in namespace `default`, not yet on a node.
pub fn pod(name: &str) -> Pod {
    Pod {
        namespace: "default".into(),
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
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }
    /// A tidb-operator member pod: instance/component labels and the owning
    /// StatefulSet `<instance>-<component>`.
    pub fn component(self, instance: &str, component: &str) -> Self {
        let mut p = self
            .label("app.kubernetes.io/instance", instance)
            .label("app.kubernetes.io/component", component);
        p.owner = Some(Owner {
            kind: "StatefulSet".into(),
            name: format!("{instance}-{component}"),
        });
        p
    }
    pub fn on(mut self, node: &str) -> Self {
        self.node_name = Some(node.into());
        self
    }
    pub fn pending(mut self) -> Self {
        self.node_name = None;
        self.phase = "Pending".into();
        self.ready = false;
        self
    }
    pub fn in_flight(mut self) -> Self {
        self.in_flight = true;
        self
    }
    pub fn claim(mut self, name: &str) -> Self {
        self.claims.push(name.into());
        self
    }
    pub fn scheduler(mut self, name: &str) -> Self {
        self.scheduler_name = name.into();
        self
    }
}

/// A ready, schedulable node whose hostname label is its name.
pub fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        labels: pairs(&[("kubernetes.io/hostname", name)]),
        ready: true,
        unschedulable: false,
        taints: Vec::new(),
    }
}

impl Node {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.retain(|(k, _)| k != key);
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn without_label(mut self, key: &str) -> Self {
        self.labels.retain(|(k, _)| k != key);
        self
    }
}

/// A pending claim in namespace `default`.
pub fn claim(name: &str) -> Claim {
    Claim {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Vec::new(),
        annotations: Vec::new(),
        storage_class: None,
        phase: "Pending".into(),
        volume_name: None,
        requested_bytes: 0,
        access_modes: vec!["ReadWriteOnce".into()],
        deleting: false,
    }
}

impl Claim {
    pub fn bound_to(mut self, volume: &str) -> Self {
        self.phase = "Bound".into();
        self.volume_name = Some(volume.into());
        self
    }
    pub fn class(mut self, storage_class: &str) -> Self {
        self.storage_class = Some(storage_class.into());
        self
    }
    pub fn requesting(mut self, bytes: u64) -> Self {
        self.requested_bytes = bytes;
        self
    }
}

/// A settled StatefulSet in namespace `default` with `replicas` replicas.
pub fn statefulset(name: &str, replicas: u32) -> Workload {
    Workload {
        kind: "StatefulSet".into(),
        namespace: "default".into(),
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
        current_revision: format!("{name}-1"),
        update_revision: format!("{name}-1"),
        selector: Vec::new(),
        claim_templates: Vec::new(),
        desired_ordinals: (0..replicas).collect(),
    }
}

impl Workload {
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
    /// `spec.replicas`, the desired ordinals following (an Advanced
    /// StatefulSet's skip its delete slots).
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self.desired_ordinals = crate::tidb::ordinals_at(&self, replicas);
        self
    }
    /// tidb-operator's Advanced StatefulSet with these delete slots
    /// (annotation and desired ordinals as the host sets them).
    pub fn advanced(mut self, delete_slots: &[i32]) -> Self {
        let text = format!(
            "[{}]",
            delete_slots
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        self.kind = crate::tidb::ADVANCED_STATEFULSET.into();
        self.desired_ordinals = steward_wit::ordinals::desired(self.replicas, delete_slots);
        self.annotation(steward_wit::ordinals::ADVANCED_DELETE_SLOTS, &text)
    }
    /// A StatefulSet of TiDB cluster `instance`'s `component`, with the
    /// component's labels (`basic`, `tikv` → `basic-tikv`).
    pub fn component(self, instance: &str, component: &str) -> Self {
        self.label(crate::tidb::INSTANCE_LABEL, instance)
            .label(crate::tidb::COMPONENT_LABEL, component)
    }
    /// A new template: the update revision moves to `revision`.
    pub fn updating_to(mut self, revision: &str) -> Self {
        self.update_revision = revision.into();
        self.updated_replicas = 0;
        self
    }
}

/// A TidbCluster `name` in namespace `default` without components; add
/// them with [`TidbCluster::with_pd`] / [`TidbCluster::with_tikv`].
pub fn tidb_cluster(name: &str) -> TidbCluster {
    TidbCluster {
        namespace: "default".into(),
        name: name.into(),
        ha_topology_key: None,
        pd: None,
        tikv: None,
    }
}

/// A component of `replicas` without failures or delete slots: desired
/// replicas and ordinals as tidb-operator computes them then.
pub fn tidb_component(replicas: u32) -> TidbComponent {
    TidbComponent {
        replicas,
        desired_replicas: replicas,
        desired_ordinals: (0..replicas).collect(),
        failure_pods: Vec::new(),
        scheduler_name: String::new(),
    }
}

impl TidbCluster {
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }
    /// Annotation `pingcap.com/ha-topology-key`.
    pub fn ha_topology_key(mut self, key: &str) -> Self {
        self.ha_topology_key = Some(key.into());
        self
    }
    pub fn with_pd(mut self, pd: TidbComponent) -> Self {
        self.pd = Some(pd);
        self
    }
    pub fn with_tikv(mut self, tikv: TidbComponent) -> Self {
        self.tikv = Some(tikv);
        self
    }
}

impl TidbComponent {
    /// A failure member (PD) or store (TiKV) on `pod`; `counted` when
    /// tidb-operator adds a replica for it (a PD member deleted from PD,
    /// every TiKV failure store).
    pub fn failure(mut self, pod: &str, counted: bool) -> Self {
        self.failure_pods.push(pod.into());
        if counted {
            self.desired_replicas += 1;
        }
        self.desired_ordinals = steward_wit::ordinals::desired(self.desired_replicas, &[]);
        self
    }
    /// Delete slots (annotation `<component>.tidb.pingcap.com/delete-slots`);
    /// after any [`TidbComponent::failure`].
    pub fn delete_slots(mut self, slots: &[i32]) -> Self {
        self.desired_ordinals = steward_wit::ordinals::desired(self.desired_replicas, slots);
        self
    }
}

pub use states::*;

mod states {
    use crate::reconcile::{Plan, Replica, WorkloadState};
    use crate::{Action, Pod, Target, Workload};

    /// The state of `workload` with one ready pod per desired ordinal,
    /// owned by it, at its current revision, at Unix time 0.
    pub fn workload_state(workload: Workload) -> WorkloadState {
        let replicas = workload
            .desired_ordinals
            .iter()
            .map(|&o| {
                let mut pod = crate::build::pod(&format!("{}-{o}", workload.name))
                    .in_namespace(&workload.namespace)
                    .on(&format!("node-{o}"));
                pod.owner = Some(crate::Owner {
                    kind: workload.kind.clone(),
                    name: workload.name.clone(),
                });
                replica(o, &workload.current_revision, pod)
            })
            .collect();
        WorkloadState {
            workload,
            replicas,
            claims: Vec::new(),
            nodes: Vec::new(),
            now_ms: 0,
        }
    }

    pub fn replica(ordinal: u32, revision: &str, pod: Pod) -> Replica {
        Replica {
            ordinal,
            revision: revision.into(),
            pod,
        }
    }

    impl WorkloadState {
        pub fn at(mut self, now_ms: i64) -> Self {
            self.now_ms = now_ms;
            self
        }
        /// Pod `ordinal` moved to `revision`.
        pub fn with_revision(mut self, ordinal: u32, revision: &str) -> Self {
            if let Some(r) = self.replicas.iter_mut().find(|r| r.ordinal == ordinal) {
                r.revision = revision.into();
            }
            self
        }
        /// Pod `ordinal` is not ready.
        pub fn not_ready(mut self, ordinal: u32) -> Self {
            if let Some(r) = self.replicas.iter_mut().find(|r| r.ordinal == ordinal) {
                r.pod.ready = false;
            }
            self
        }
        pub fn without_pod(mut self, ordinal: u32) -> Self {
            self.replicas.retain(|r| r.ordinal != ordinal);
            self
        }
        /// The state once the host performed `plan`'s replica changes and
        /// workload annotations, the desired ordinals moving with the
        /// replicas as the host computes them; pods and PD unchanged.
        pub fn after(mut self, plan: &Plan) -> Self {
            let w = &mut self.workload;
            for action in &plan.actions {
                match action {
                    Action::SetReplicas(r) => {
                        w.replicas = *r;
                        w.desired_ordinals = crate::tidb::ordinals_at(w, *r);
                    }
                    Action::Annotate((Target::Workload(_), list)) => {
                        for a in list {
                            w.annotations.retain(|(k, _)| *k != a.key);
                            if let Some(v) = &a.value {
                                w.annotations.push((a.key.clone(), v.clone()));
                            }
                        }
                    }
                    _ => {}
                }
            }
            self
        }
    }
}

pub use review::*;

mod review {
    use crate::admission::{AdmissionRequest, UserInfo};
    use crate::{Pod, Workload};

    /// An admission request for `operation` on `resource` (`pods`,
    /// `statefulsets`) in namespace `default`, at Unix time 0.
    pub fn review(operation: &str, resource: &str) -> AdmissionRequest {
        let (group, kind) = match resource {
            "statefulsets" => ("apps", "StatefulSet"),
            _ => ("", "Pod"),
        };
        AdmissionRequest {
            uid: "705ab4f5-6393-11e8-b7cc-42010a800002".into(),
            kind: (group.into(), "v1".into(), kind.into()),
            resource: (group.into(), "v1".into(), resource.into()),
            sub_resource: None,
            name: String::new(),
            namespace: "default".into(),
            operation: operation.into(),
            user_info: UserInfo {
                username: "admin".into(),
                uid: String::new(),
                groups: vec!["system:authenticated".into()],
            },
            dry_run: false,
            object: None,
            old_object: None,
            pod: None,
            workload: None,
            old_workload: None,
            now_ms: 0,
        }
    }

    /// CREATE of the pod.
    pub fn create_pod(pod: Pod) -> AdmissionRequest {
        review("CREATE", "pods").about_pod(pod)
    }

    /// DELETE of the pod (the old object is the pod).
    pub fn delete_pod(pod: Pod) -> AdmissionRequest {
        review("DELETE", "pods").about_pod(pod)
    }

    /// CREATE of the pod's `eviction` subresource (a drain); the request
    /// carries an Eviction, not the pod.
    pub fn evict_pod(pod: &Pod) -> AdmissionRequest {
        let mut r = review("CREATE", "pods");
        r.kind = ("policy".into(), "v1beta1".into(), "Eviction".into());
        r.sub_resource = Some("eviction".into());
        r.name = pod.name.clone();
        r.namespace = pod.namespace.clone();
        r
    }

    /// UPDATE of a StatefulSet from `old` to `new`.
    pub fn update_statefulset(old: Workload, new: Workload) -> AdmissionRequest {
        let mut r = review("UPDATE", "statefulsets");
        if new.kind == crate::tidb::ADVANCED_STATEFULSET {
            r = r.advanced();
        }
        r.name = new.name.clone();
        r.namespace = new.namespace.clone();
        r.workload = Some(new);
        r.old_workload = Some(old);
        r
    }

    /// `kubectl scale` of StatefulSet `name` from `from` to `to` replicas:
    /// an UPDATE of its `scale` subresource, carrying autoscaling/v1 Scales.
    pub fn scale_statefulset(namespace: &str, name: &str, from: u32, to: u32) -> AdmissionRequest {
        let scale = |replicas: u32| {
            format!(
                r#"{{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{{"name":"{name}","namespace":"{namespace}"}},"spec":{{"replicas":{replicas}}}}}"#
            )
        };
        let mut r = review("UPDATE", "statefulsets");
        r.kind = ("autoscaling".into(), "v1".into(), "Scale".into());
        r.sub_resource = Some("scale".into());
        r.name = name.into();
        r.namespace = namespace.into();
        r.object = Some(scale(to));
        r.old_object = Some(scale(from));
        r
    }

    impl AdmissionRequest {
        fn about_pod(mut self, pod: Pod) -> AdmissionRequest {
            self.name = pod.name.clone();
            self.namespace = pod.namespace.clone();
            self.pod = Some(pod);
            self
        }
        pub fn dry_run(mut self) -> Self {
            self.dry_run = true;
            self
        }
        pub fn at(mut self, now_ms: i64) -> Self {
            self.now_ms = now_ms;
            self
        }
        /// Made by user `username` (the builders' requests are `admin`'s).
        pub fn by(mut self, username: &str) -> Self {
            self.user_info.username = username.into();
            self
        }
        /// About an Advanced StatefulSet (`apps.pingcap.com/v1`) rather
        /// than an `apps/v1` one.
        pub fn advanced(mut self) -> Self {
            let group = crate::tidb::ADVANCED_STATEFULSET_GROUP;
            if self.kind.0 == "apps" {
                self.kind.0 = group.into();
            }
            self.resource.0 = group.into();
            self
        }
    }
}

/// A WaitForFirstConsumer storage class of `provisioner`.
pub fn storage_class(name: &str, provisioner: &str) -> StorageClass {
    StorageClass {
        name: name.into(),
        provisioner: provisioner.into(),
        parameters: Vec::new(),
        binding_mode: "WaitForFirstConsumer".into(),
        reclaim_policy: "Delete".into(),
    }
}

impl StorageClass {
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.parameters.retain(|(k, _)| k != key);
        self.parameters.push((key.into(), value.into()));
        self
    }
    pub fn immediate(mut self) -> Self {
        self.binding_mode = "Immediate".into();
        self
    }
}

/// A bound persistent volume with no node affinity and no source.
pub fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        labels: Vec::new(),
        annotations: Vec::new(),
        capacity_bytes: 0,
        storage_class: None,
        phase: "Bound".into(),
        claim: None,
        csi_driver: None,
        csi_handle: None,
        local_path: None,
        node_affinity: Vec::new(),
    }
}

impl Volume {
    pub fn class(mut self, storage_class: &str) -> Self {
        self.storage_class = Some(storage_class.into());
        self
    }
    /// A CSI volume of `driver` with volume handle `handle`.
    pub fn csi(mut self, driver: &str, handle: &str) -> Self {
        self.csi_driver = Some(driver.into());
        self.csi_handle = Some(handle.into());
        self
    }
    /// A `local` volume at `path`.
    pub fn local(mut self, path: &str) -> Self {
        self.local_path = Some(path.into());
        self
    }
    /// Required node affinity `key In [value]` (one more ORed term).
    pub fn pinned(mut self, key: &str, value: &str) -> Self {
        self.node_affinity.push(NodeSelectorTerm {
            match_expressions: vec![SelectorRequirement {
                key: key.into(),
                operator: crate::SelectorOperator::In,
                values: vec![value.into()],
            }],
            match_fields: Vec::new(),
        });
        self
    }
}

/// A ready single-replica HwameiStor LVM volume in the HDD pool.
pub fn local_volume(name: &str) -> LocalVolume {
    LocalVolume {
        name: name.into(),
        pool_name: "LocalStorage_PoolHDD".into(),
        required_bytes: 0,
        replica_number: 1,
        replica_hosts: Vec::new(),
        published_node: None,
        state: "Ready".into(),
        migrating: false,
    }
}

impl LocalVolume {
    pub fn replica_on(mut self, node: &str) -> Self {
        self.replica_hosts.push(node.into());
        self.replica_number = self.replica_hosts.len() as u32;
        self
    }
    pub fn published_on(mut self, node: &str) -> Self {
        self.published_node = Some(node.into());
        self
    }
}

/// A ready HwameiStor pool `name` on `node` of `total` bytes, `used` used,
/// with 1000 volume slots.
pub fn pool(node: &str, name: &str, total: u64, used: u64) -> FakePool {
    FakePool {
        node: node.into(),
        source: CapacitySource::Hwameistor,
        name: name.into(),
        capacity: PoolCapacity {
            state: PoolState::Ready,
            schedulable: true,
            free_bytes: total.saturating_sub(used),
            total_bytes: total,
            free_volumes: 1000,
            reserved_bytes: 0,
            reserved_volumes: 0,
        },
        problem: None,
    }
}

impl FakePool {
    pub fn source(mut self, source: CapacitySource) -> Self {
        self.source = source;
        self
    }
    pub fn free_volumes(mut self, n: u32) -> Self {
        self.capacity.free_volumes = n;
        self
    }
    pub fn reserved(mut self, bytes: u64, volumes: u32) -> Self {
        self.capacity.reserved_bytes = bytes;
        self.capacity.reserved_volumes = volumes;
        self
    }
    /// The pool is in `state`, and `pool-problem` says `problem`.
    pub fn broken(mut self, state: PoolState, problem: &str) -> Self {
        self.capacity.state = state;
        self.problem = Some(problem.into());
        self
    }
}

/// A ready HwameiStor disk node with free disks of `disk_type` of these sizes.
pub fn disks(node: &str, disk_type: &str, free: &[u64]) -> FakeDisks {
    let mut free = free.to_vec();
    free.sort_unstable_by(|a, b| b.cmp(a));
    FakeDisks {
        node: node.into(),
        disk_type: disk_type.into(),
        disks: NodeDisks {
            state: PoolState::Ready,
            schedulable: true,
            free,
            reserved: Vec::new(),
            problem: None,
        },
    }
}
