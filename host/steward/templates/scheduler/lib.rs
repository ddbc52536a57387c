//! A scheduler policy: pods run only on nodes that carry the label the
//! `requiredLabel` setting names (default `topology.kubernetes.io/zone`).

use serde::Deserialize;
use steward_sdk::Pod;
use steward_sdk::cluster::ClusterView;
use steward_sdk::filter::Rejections;
use steward_sdk::scheduler::{Candidates, FilterResult, SchedulerPolicy};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub required_label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            required_label: "topology.kubernetes.io/zone".into(),
        }
    }
}

impl steward_sdk::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        if self.required_label.is_empty() {
            return Err("requiredLabel must name a node label".into());
        }
        Ok(())
    }
}

pub struct Policy;

impl SchedulerPolicy for Policy {
    type Settings = Settings;

    /// Each call's candidates then carry the label's value ids in column 0.
    fn node_labels(settings: &Settings) -> Vec<String> {
        vec![settings.required_label.clone()]
    }

    fn filter(
        cluster: &impl ClusterView,
        settings: &Settings,
        _pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, String> {
        let mut refused = Rejections::default();
        for (index, &node) in nodes.nodes.iter().enumerate() {
            if nodes.label(0, index).is_none() {
                let name = cluster.node_name(node).unwrap_or_default();
                let reason = format!("node {name} has no label {}", settings.required_label);
                // No preemption gives the node the label.
                refused.reject(index, reason, true);
            }
        }
        Ok(refused.into())
    }
}

steward_sdk::export_scheduler_policy!(Policy);

#[cfg(test)]
mod tests {
    use steward_sdk::build::{node, pod};
    use steward_sdk::cluster::FakeCluster;
    use steward_sdk::settings;

    use super::*;

    const ZONE: &str = "topology.kubernetes.io/zone";

    #[test]
    fn nodes_without_the_label_are_refused() {
        let cluster = FakeCluster::default()
            .with_node(node("a").label(ZONE, "zone-1"))
            .with_node(node("b"));
        let nodes = cluster.candidates(&["a", "b"], &[ZONE]);
        let settings: Settings = settings::parse("{}").unwrap();
        let result = Policy::filter(&cluster, &settings, &pod("web-0"), &nodes).unwrap();
        assert_eq!(result.reasons, [format!("node b has no label {ZONE}")]);
        let refused: Vec<u32> = result.rejections.iter().map(|r| r.node).collect();
        assert_eq!(refused, [1]);
    }

    #[test]
    fn an_empty_label_is_refused() {
        let e = settings::parse::<Settings>(r#"{"requiredLabel": ""}"#).unwrap_err();
        assert!(e.contains("requiredLabel must name a node label"), "{e}");
    }
}
