//! A reconcile policy: while a StatefulSet carries the annotation the
//! `holdAnnotation` setting names (default `example.steward.io/hold`) set
//! to `"true"`, its rolling update is held at partition = replicas, so a
//! new template restarts no pod; without it the partition is 0.

use serde::Deserialize;
use steward_sdk::cluster::ClusterView;
use steward_sdk::labels;
use steward_sdk::pd::PdView;
use steward_sdk::reconcile::{Plan, ReconcilePolicy, WorkloadState};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub hold_annotation: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hold_annotation: "example.steward.io/hold".into(),
        }
    }
}

impl steward_sdk::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        if self.hold_annotation.is_empty() {
            return Err("holdAnnotation must name an annotation".into());
        }
        Ok(())
    }
}

pub struct Policy;

impl ReconcilePolicy for Policy {
    type Settings = Settings;

    fn reconcile(
        _cluster: &impl ClusterView,
        _pd: &impl PdView,
        settings: &Settings,
        state: &WorkloadState,
    ) -> Result<Plan, String> {
        let workload = &state.workload;
        if workload.update_strategy != "RollingUpdate" {
            return Ok(Plan::new());
        }
        let held = labels::get(&workload.annotations, &settings.hold_annotation) == Some("true");
        let partition = if held { workload.replicas } else { 0 };
        if workload.partition.unwrap_or(0) == partition {
            return Ok(Plan::new());
        }
        Ok(Plan::new().set_partition(partition))
    }
}

steward_sdk::export_reconcile_policy!(Policy);

#[cfg(test)]
mod tests {
    use steward_sdk::build::{statefulset, workload_state};
    use steward_sdk::cluster::FakeCluster;
    use steward_sdk::pd::FakePd;
    use steward_sdk::settings;

    use super::*;

    fn plan(state: &WorkloadState) -> Plan {
        let settings: Settings = settings::parse("{}").unwrap();
        Policy::reconcile(
            &FakeCluster::default(),
            &FakePd::default(),
            &settings,
            state,
        )
        .unwrap()
    }

    #[test]
    fn a_held_statefulset_gets_partition_replicas() {
        let held = statefulset("web", 3).annotation("example.steward.io/hold", "true");
        assert_eq!(plan(&workload_state(held)), Plan::new().set_partition(3));
    }

    #[test]
    fn a_released_statefulset_goes_back_to_partition_0() {
        let released = statefulset("web", 3).partition(3);
        assert_eq!(
            plan(&workload_state(released)),
            Plan::new().set_partition(0)
        );
        assert_eq!(plan(&workload_state(statefulset("web", 3))), Plan::new());
    }
}
