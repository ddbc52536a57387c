//! The placement rule, written against [`ClusterView`] so it is tested on
//! fixtures natively and runs on the host's cache inside Wasm.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use steward_sdk::cluster::ClusterView;
use steward_sdk::filter::Rejections;
use steward_sdk::labels::{self, ordinal};
use steward_sdk::tidb::{self, COMPONENT_LABEL, INSTANCE_LABEL};
use steward_sdk::{Node, Pod, settings};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Node label whose values are the failure domains.
    pub topology_key: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            topology_key: "kubernetes.io/hostname".into(),
        }
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Settings, String> {
        let s: Settings = settings::parse(json)?;
        if s.topology_key.is_empty() {
            return Err("invalid settings: topologyKey must name a node label".into());
        }
        Ok(s)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Component {
    Pd,
    Tikv,
}

impl Component {
    fn of(pod: &Pod) -> Option<Component> {
        match labels::get(&pod.labels, COMPONENT_LABEL)? {
            "pd" => Some(Component::Pd),
            "tikv" => Some(Component::Tikv),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Component::Pd => "pd",
            Component::Tikv => "tikv",
        }
    }

    /// Most pods of this component one domain may hold, or None for no limit.
    fn max_per_domain(self, replicas: u32, domains_in_use: usize) -> Option<u32> {
        match self {
            Component::Pd => Some(replicas.div_ceil(2).saturating_sub(1).max(1)),
            Component::Tikv if replicas < 3 => None,
            Component::Tikv if domains_in_use < 3 => Some(1),
            Component::Tikv => Some(replicas.div_ceil(3)),
        }
    }

    fn why(self) -> &'static str {
        match self {
            Component::Pd => "so that losing one domain keeps the PD quorum",
            Component::Tikv => "so that losing one domain keeps every Raft group's majority",
        }
    }
}

/// Decides which candidate `nodes` the pod may not use. Pods that are not PD
/// or TiKV members of a TiDB cluster pass untouched.
pub fn filter(cluster: &impl ClusterView, s: &Settings, pod: &Pod, nodes: &[Node]) -> Rejections {
    let mut out = Rejections::default();
    let (Some(component), Some(instance)) =
        (Component::of(pod), labels::get(&pod.labels, INSTANCE_LABEL))
    else {
        return out;
    };
    if nodes.is_empty() {
        return out;
    }
    let reject_all = |out: &mut Rejections, reason: &str, unresolvable: bool| {
        for i in 0..nodes.len() {
            out.reject(i, reason, unresolvable);
        }
    };

    let members = cluster.list_pods(
        &pod.namespace,
        &[
            labels::eq(INSTANCE_LABEL, instance),
            labels::eq(COMPONENT_LABEL, component.name()),
        ],
    );
    if let Some(other) = members.iter().find(|p| p.in_flight && p.uid != pod.uid) {
        let reason = format!(
            "waiting for pod {}/{} to be bound: {} pods of {instance} are placed one at a time",
            other.namespace,
            other.name,
            component.name()
        );
        reject_all(&mut out, &reason, false);
        return out;
    }

    // Rescheduling: kube-scheduler already narrowed a pod with a bound local
    // volume to the volume's node.
    if nodes.len() == 1 && claims_bound(cluster, pod) {
        return out;
    }

    let Some(owner) = pod.owner.as_ref().filter(|o| o.kind == "StatefulSet") else {
        let reason = format!(
            "pod {}/{} has no owning StatefulSet, so its {} replica count is unknown",
            pod.namespace,
            pod.name,
            component.name()
        );
        reject_all(&mut out, &reason, true);
        return out;
    };
    let Some(workload) = cluster.get_workload("StatefulSet", &pod.namespace, &owner.name) else {
        let reason = format!(
            "StatefulSet {}/{} of pod {} is not in the cluster cache yet",
            pod.namespace, owner.name, pod.name
        );
        reject_all(&mut out, &reason, false);
        return out;
    };
    let failures = match tidb::failures(&workload) {
        Ok(f) => f,
        Err(e) => {
            reject_all(&mut out, &e, false);
            return out;
        }
    };
    let failed: BTreeSet<&str> = failures.iter().map(|f| f.pod.as_str()).collect();
    let replicas = workload.replicas;

    // Candidate domains; nodes without the topology label are never eligible.
    let key = &s.topology_key;
    let mut domain_of_candidate: HashMap<&str, &str> = HashMap::new();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        match labels::get(&node.labels, key) {
            Some(domain) => {
                domain_of_candidate.insert(&node.name, domain);
                counts.insert(domain, 0);
            }
            None => out.reject(
                i,
                &format!("node has no {key} label, so it belongs to no topology domain"),
                true,
            ),
        }
    }

    // Count the desired, healthy members per domain.
    let mut domains_in_use: BTreeSet<String> = BTreeSet::new();
    for member in &members {
        let desired = ordinal(&member.name).is_some_and(|o| o < replicas);
        if member.uid == pod.uid || !desired || failed.contains(member.name.as_str()) {
            continue;
        }
        let Some(node_name) = member.node_name.as_deref() else {
            continue;
        };
        let domain = match domain_of_candidate.get(node_name) {
            Some(d) => Some(d.to_string()),
            None => cluster
                .get_node(node_name)
                .and_then(|n| labels::get(&n.labels, key).map(str::to_string)),
        };
        if let Some(domain) = domain {
            if let Some(count) = counts.get_mut(domain.as_str()) {
                *count += 1;
            }
            domains_in_use.insert(domain);
        }
    }

    let Some(max) = component.max_per_domain(replicas, domains_in_use.len()) else {
        return out;
    };
    let least = counts.values().copied().filter(|&c| c < max).min();
    let summary = || {
        counts
            .iter()
            .map(|(d, c)| format!("{d} ({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let comp = component.name();
    for (i, node) in nodes.iter().enumerate() {
        let Some(domain) = domain_of_candidate.get(node.name.as_str()) else {
            continue;
        };
        let count = counts[domain];
        if count >= max {
            out.reject(
                i,
                &format!(
                    "{key}={domain} already has {count} {comp} pod(s) of {instance}; at most {max} \
                     of {replicas} may share a domain {}",
                    component.why()
                ),
                true,
            );
        } else if Some(count) != least {
            out.reject(
                i,
                &format!(
                    "{key}={domain} has {count} {comp} pod(s) of {instance} while other domains \
                     have {}: the least-loaded domains are filled first (domains: {})",
                    least.unwrap_or(0),
                    summary()
                ),
                true,
            );
        }
    }
    out
}

fn claims_bound(cluster: &impl ClusterView, pod: &Pod) -> bool {
    pod.claims.iter().any(|c| {
        cluster
            .get_claim(&pod.namespace, c)
            .is_some_and(|claim| claim.phase == "Bound")
    })
}

#[cfg(test)]
mod tests;
