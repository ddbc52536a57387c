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
//!   `misbehave: settings rejected`.
//!
//! `prioritize` returns no scores except for `pass`.

use std::hint::black_box;

use serde::Deserialize;
use steward_sdk::Pod;
use steward_sdk::cluster::{ClusterView, HostCluster};
use steward_sdk::filter::Rejections;
use steward_sdk::scheduler::{
    Candidates, FilterResult, Guest, NodeScore, Rejection, SchedulerNeeds,
};

/// What the policy does, chosen by its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl Behaviour {
    /// Every behaviour with its settings name.
    pub const ALL: &[(&str, Behaviour)] = &[
        ("trap", Behaviour::Trap),
        ("spin", Behaviour::Spin),
        ("hog", Behaviour::Hog),
        ("error", Behaviour::Error),
        ("pass", Behaviour::Pass),
        ("reject-all", Behaviour::RejectAll),
        ("bad-index", Behaviour::BadIndex),
        ("sleepy-settings", Behaviour::SleepySettings),
    ];

    /// Parses settings JSON `{"behaviour": "<b>"}`.
    pub fn parse(settings: &str) -> Result<Behaviour, String> {
        #[derive(Deserialize)]
        struct Raw {
            behaviour: String,
        }
        let allowed = || {
            Self::ALL
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let raw: Raw = serde_json::from_str(settings).map_err(|e| {
            format!(
                "misbehave: settings must be {{\"behaviour\": \"<b>\"}} with <b> one of {}: {e}",
                allowed()
            )
        })?;
        Self::ALL
            .iter()
            .find(|(name, _)| *name == raw.behaviour)
            .map(|&(_, b)| b)
            .ok_or_else(|| {
                format!(
                    "misbehave: unknown behaviour {:?}; allowed: {}",
                    raw.behaviour,
                    allowed()
                )
            })
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

struct Misbehave;

impl Guest for Misbehave {
    fn validate_settings(settings: String) -> Result<SchedulerNeeds, String> {
        match Behaviour::parse(&settings)? {
            Behaviour::SleepySettings => Err("misbehave: settings rejected".to_string()),
            _ => Ok(SchedulerNeeds {
                node_labels: vec![],
            }),
        }
    }

    fn filter(settings: String, _pod: Pod, nodes: Candidates) -> Result<FilterResult, String> {
        filter(Behaviour::parse(&settings)?, &HostCluster, &nodes)
    }

    fn prioritize(
        settings: String,
        _pod: Pod,
        nodes: Candidates,
    ) -> Result<Vec<NodeScore>, String> {
        Ok(prioritize(Behaviour::parse(&settings)?, &nodes))
    }
}

steward_sdk::scheduler::export_scheduler_policy!(Misbehave with_types_in steward_sdk::scheduler);

#[cfg(test)]
mod tests {
    use super::*;
    use steward_sdk::build::node;
    use steward_sdk::cluster::FakeCluster;

    #[test]
    fn parses_every_behaviour() {
        for &(name, b) in Behaviour::ALL {
            let json = format!("{{\"behaviour\": \"{name}\"}}");
            assert_eq!(Behaviour::parse(&json), Ok(b));
        }
    }

    #[test]
    fn unknown_behaviour_names_the_allowed_ones() {
        let err = Behaviour::parse(r#"{"behaviour": "dance"}"#).unwrap_err();
        assert!(err.contains("dance") && err.contains("reject-all"), "{err}");
        assert!(Behaviour::parse("not json").is_err());
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
