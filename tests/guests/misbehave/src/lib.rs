//! misbehave: a scheduler-world policy that misbehaves on purpose, for the
//! host's sandbox tests (traps, deadlines, memory caps, output validation,
//! settings rejection). Never deploy it.
//!
//! Settings: `{"behaviour": "<b>"}`, where `<b>` is one of
//!
//! - `trap`: `filter` panics (the guest hits `unreachable`);
//! - `spin`: `filter` loops forever (the deadline must stop it);
//! - `hog`: `filter` allocates 1 MiB blocks without bound (the memory cap
//!   must stop it);
//! - `error`: `filter` returns `Err("misbehave: deliberate error")`;
//! - `pass`: `filter` rejects nothing, `prioritize` scores every node 7;
//! - `reject-all`: `filter` rejects every node with reason
//!   `misbehave rejects <node name>`;
//! - `bad-index`: `filter` rejects node index 999999 (out of range): the
//!   host must validate guest output;
//! - `sleepy-settings`: `validate-settings` fails with
//!   `invalid settings: misbehave: settings rejected`.
//!
//! `prioritize` returns no scores except for `pass`.

use std::hint::black_box;

use serde::Deserialize;
use steward_sdk::Pod;
use steward_sdk::cluster::ClusterView;
use steward_sdk::filter::Rejections;
use steward_sdk::scheduler::{Candidates, FilterResult, NodeScore, Rejection, SchedulerPolicy};

/// What the policy does, chosen by its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    Trap,
    Spin,
    Hog,
    Error,
    Pass,
    RejectAll,
    BadIndex,
    SleepySettings,
}

/// Settings JSON `{"behaviour": "<b>"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub behaviour: Behaviour,
}

impl steward_sdk::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        match self.behaviour {
            Behaviour::SleepySettings => Err("misbehave: settings rejected".into()),
            _ => Ok(()),
        }
    }
}

/// Loops until the host interrupts it; `black_box` keeps the optimiser from
/// proving the loop useless.
fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Allocates and fills 1 MiB blocks until allocation fails (the guest then
/// aborts) or the host stops it.
fn hog() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut fill: u8 = 1;
    loop {
        blocks.push(vec![fill; 1 << 20]);
        fill = fill.wrapping_add(1).max(1);
        black_box(&mut blocks);
    }
}

/// The filter verdict for `behaviour` on `nodes`.
pub fn filter(
    behaviour: Behaviour,
    cluster: &impl ClusterView,
    nodes: &Candidates,
) -> Result<FilterResult, String> {
    match behaviour {
        Behaviour::Trap => panic!("misbehave: deliberate trap"),
        Behaviour::Spin => spin(),
        Behaviour::Hog => hog(),
        Behaviour::Error => Err("misbehave: deliberate error".to_string()),
        Behaviour::SleepySettings => Err("misbehave: settings rejected".to_string()),
        Behaviour::Pass => Ok(Rejections::default().into()),
        Behaviour::RejectAll => {
            let mut r = Rejections::default();
            for (i, &id) in nodes.nodes.iter().enumerate() {
                let name = cluster.node_name(id).unwrap_or_else(|| format!("#{id}"));
                r.reject(i, format!("misbehave rejects {name}"), false);
            }
            Ok(r.into())
        }
        Behaviour::BadIndex => Ok(FilterResult {
            reasons: vec!["misbehave: node index out of range".to_string()],
            rejections: vec![Rejection {
                node: 999_999,
                reason: 0,
                unresolvable: false,
            }],
        }),
    }
}

/// The scores for `behaviour` on `nodes`: 7 for every node under `pass`.
pub fn prioritize(behaviour: Behaviour, nodes: &Candidates) -> Vec<NodeScore> {
    match behaviour {
        Behaviour::Pass => (0..nodes.nodes.len())
            .map(|i| NodeScore {
                node: i as u32,
                score: 7,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub struct Misbehave;

impl SchedulerPolicy for Misbehave {
    type Settings = Settings;

    fn filter(
        cluster: &impl ClusterView,
        s: &Settings,
        _: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, String> {
        filter(s.behaviour, cluster, nodes)
    }

    fn prioritize(
        _: &impl ClusterView,
        s: &Settings,
        _: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, String> {
        Ok(prioritize(s.behaviour, nodes))
    }
}

steward_sdk::export_scheduler_policy!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;
    use steward_sdk::build::node;
    use steward_sdk::cluster::FakeCluster;
    use steward_sdk::settings;

    #[test]
    fn settings_name_the_behaviour() {
        let s: Settings = settings::parse(r#"{"behaviour": "reject-all"}"#).unwrap();
        assert_eq!(s.behaviour, Behaviour::RejectAll);
        let err = settings::parse::<Settings>(r#"{"behaviour": "dance"}"#).unwrap_err();
        assert!(err.contains("dance") && err.contains("reject-all"), "{err}");
        let err = settings::parse::<Settings>(r#"{"behaviour": "sleepy-settings"}"#).unwrap_err();
        assert!(err.ends_with("misbehave: settings rejected"), "{err}");
        assert!(settings::parse::<Settings>("not json").is_err());
    }

    #[test]
    fn reject_all_and_pass() {
        let cluster = FakeCluster::default()
            .with_node(node("a"))
            .with_node(node("b"));
        let nodes = cluster.candidates(&["a", "b"], &[]);
        let r = filter(Behaviour::RejectAll, &cluster, &nodes).unwrap();
        assert_eq!(r.reasons, ["misbehave rejects a", "misbehave rejects b"]);
        assert_eq!(r.rejections.len(), 2);
        assert!(
            filter(Behaviour::Pass, &cluster, &nodes)
                .unwrap()
                .rejections
                .is_empty()
        );
        assert_eq!(prioritize(Behaviour::Pass, &nodes).len(), 2);
        assert!(prioritize(Behaviour::RejectAll, &nodes).is_empty());
        let bad = filter(Behaviour::BadIndex, &cluster, &nodes).unwrap();
        assert_eq!(bad.rejections[0].node, 999_999);
        assert_eq!(bad.reasons.len(), 1);
    }
}
