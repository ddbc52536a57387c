//! The placement rule, written against [`ClusterView`] so it is tested on
//! fixtures natively and runs on the host's cache inside Wasm.

use std::collections::{BTreeSet, HashMap};

use desired::{Desired, Unknown};

use serde::Deserialize;
use steward_sdk::cluster::ClusterView;
use steward_sdk::filter::Rejections;
use steward_sdk::labels;
use steward_sdk::scheduler::{Candidates, NO_LABEL};
use steward_sdk::tidb::{COMPONENT_LABEL, INSTANCE_LABEL};
use steward_sdk::{Pod, settings};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Node label whose values are the failure domains; a TidbCluster's
    /// `pingcap.com/ha-topology-key` annotation overrides it for its pods.
    pub topology_key: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            topology_key: "kubernetes.io/hostname".into(),
        }
    }
}

impl settings::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        if self.topology_key.is_empty() {
            return Err("topologyKey must name a node label".into());
        }
        Ok(())
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
/// or TiKV members of a TiDB cluster pass untouched. `nodes.labels[0]` is
/// the topology column (the one label this policy asks for).
pub fn filter(
    cluster: &impl ClusterView,
    s: &Settings,
    pod: &Pod,
    nodes: &Candidates,
) -> Rejections {
    let mut out = Rejections::default();
    let (Some(component), Some(instance)) =
        (Component::of(pod), labels::get(&pod.labels, INSTANCE_LABEL))
    else {
        return out;
    };
    let count = nodes.nodes.len();
    if count == 0 {
        return out;
    }
    let reject_all = |out: &mut Rejections, reason: &str, unresolvable: bool| {
        for i in 0..count {
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
    // Rescheduling: kube-scheduler already narrowed a pod with a bound local
    // volume to the volume's node.
    if count == 1 && claims_bound(cluster, pod) {
        return out;
    }

    let desired = match Desired::of(cluster, pod, instance, component.name(), &s.topology_key) {
        Ok(d) => d,
        Err(Unknown {
            reason,
            unresolvable,
        }) => {
            reject_all(&mut out, &reason, unresolvable);
            return out;
        }
    };
    let replicas = desired.replicas;
    let key = &desired.topology_key;
    // The candidates' domains: the column of the setting's key, or the
    // TidbCluster's own key asked for now.
    let domains: Vec<Option<u32>> = if *key == s.topology_key {
        (0..count).map(|i| nodes.label(0, i)).collect()
    } else {
        cluster
            .node_label_ids(key, &nodes.nodes)
            .into_iter()
            .map(|id| (id != NO_LABEL).then_some(id))
            .collect()
    };
    let column = || domains.iter().copied();

    // Desired, healthy members per domain; every domain hosting one counts
    // as in use. Members between filter and bind may still land in any
    // domain: each counts in every domain against the limit (never towards
    // balance or the domains in use, which would loosen it), so several
    // members are placed at once and the limit holds wherever they land.
    let mut counts = DomainCounts::default();
    let mut domains_in_use: BTreeSet<u32> = BTreeSet::new();
    let mut in_flight: Vec<&str> = Vec::new();
    for member in &members {
        if member.uid == pod.uid || !desired.counts(member) {
            continue;
        }
        if member.in_flight {
            in_flight.push(&member.name);
            continue;
        }
        let Some(domain) = member
            .node_name
            .as_deref()
            .and_then(|n| cluster.node_label_id(n, key))
        else {
            continue;
        };
        counts.add_member(domain);
        domains_in_use.insert(domain);
    }

    let no_label = format!("node has no {key} label, so it belongs to no topology domain");
    let Some(max) = component.max_per_domain(replicas, domains_in_use.len()) else {
        for (i, d) in column().enumerate() {
            if d.is_none() {
                out.reject(i, &no_label, true);
            }
        }
        return out;
    };
    let unsettled = in_flight.len() as u32;
    let least = counts.least_below(column().flatten(), max.saturating_sub(unsettled));
    let comp = component.name();
    let mut reasons: HashMap<u32, String> = HashMap::new();
    for (i, domain) in column().enumerate() {
        let Some(domain) = domain else {
            out.reject(i, &no_label, true);
            continue;
        };
        let n = counts.get(domain);
        if n + unsettled < max && Some(n) == least {
            continue;
        }
        // Full only if members in flight land here: that may change.
        let full_if_in_flight_land = n < max && n + unsettled >= max;
        let reason = reasons.entry(domain).or_insert_with(|| {
            let text = cluster
                .label_text(key, domain)
                .unwrap_or_else(|| format!("#{domain}"));
            if n >= max {
                format!(
                    "{key}={text} already has {n} {comp} pod(s) of {instance}; at most {max} of \
                     {replicas} may share a domain {}",
                    component.why()
                )
            } else if full_if_in_flight_land {
                format!(
                    "{key}={text} has {n} {comp} pod(s) of {instance}, and {} may still land \
                     there (placed, not bound yet); at most {max} of {replicas} may share a \
                     domain {}",
                    in_flight.join(", "),
                    component.why()
                )
            } else {
                format!(
                    "{key}={text} has {n} {comp} pod(s) of {instance} while other domains have \
                     {}: the least-loaded domains are filled first",
                    least.unwrap_or(0)
                )
            }
        });
        out.reject(i, &*reason, !full_if_in_flight_land);
    }
    out
}

/// Member counts by domain id. Ids are dense, so a Vec is the map; it only
/// reaches the largest id a member uses, and ids past it count 0.
#[derive(Default)]
struct DomainCounts {
    counts: Vec<u32>,
}

impl DomainCounts {
    fn add_member(&mut self, domain: u32) {
        let d = domain as usize;
        if d >= self.counts.len() {
            self.counts.resize(d + 1, 0);
        }
        self.counts[d] += 1;
    }

    fn get(&self, domain: u32) -> u32 {
        self.counts.get(domain as usize).copied().unwrap_or(0)
    }

    /// The smallest count below `max` among `domains` (the candidates'),
    /// stopping at the first empty one: nothing is less loaded.
    fn least_below(&self, domains: impl Iterator<Item = u32>, max: u32) -> Option<u32> {
        let mut least = None;
        for n in domains.map(|d| self.get(d)).filter(|&n| n < max) {
            if least.is_none_or(|l| n < l) {
                least = Some(n);
                if n == 0 {
                    break;
                }
            }
        }
        least
    }
}

fn claims_bound(cluster: &impl ClusterView, pod: &Pod) -> bool {
    pod.claims.iter().any(|c| {
        cluster
            .get_claim(&pod.namespace, c)
            .is_some_and(|claim| claim.phase == "Bound")
    })
}

mod desired;
#[cfg(test)]
mod tests;
