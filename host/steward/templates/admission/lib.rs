//! An admission policy: a pod is created only if it carries the label the
//! `requiredLabel` setting names (default `app.kubernetes.io/name`).

use serde::Deserialize;
use steward_sdk::admission::{AdmissionPolicy, AdmissionRequest, Verdict};
use steward_sdk::cluster::ClusterView;
use steward_sdk::labels;
use steward_sdk::pd::PdView;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    pub required_label: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            required_label: "app.kubernetes.io/name".into(),
        }
    }
}

impl steward_sdk::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        if self.required_label.is_empty() {
            return Err("requiredLabel must name a pod label".into());
        }
        Ok(())
    }
}

pub struct Policy;

impl AdmissionPolicy for Policy {
    type Settings = Settings;

    fn review(
        _cluster: &impl ClusterView,
        _pd: &impl PdView,
        settings: &Settings,
        request: &AdmissionRequest,
    ) -> Result<Verdict, String> {
        let Some(pod) = request.pod.as_ref() else {
            return Ok(Verdict::allow());
        };
        if request.operation != "CREATE"
            || labels::get(&pod.labels, &settings.required_label).is_some()
        {
            return Ok(Verdict::allow());
        }
        Ok(Verdict::deny(format!(
            "pod {} has no label {}: add it to the pod's template",
            pod.name, settings.required_label
        )))
    }
}

steward_sdk::export_admission_policy!(Policy);

#[cfg(test)]
mod tests {
    use steward_sdk::build::{create_pod, pod};
    use steward_sdk::cluster::FakeCluster;
    use steward_sdk::pd::FakePd;
    use steward_sdk::settings;

    use super::*;

    fn review(request: &AdmissionRequest) -> Verdict {
        let settings: Settings = settings::parse("{}").unwrap();
        Policy::review(
            &FakeCluster::default(),
            &FakePd::default(),
            &settings,
            request,
        )
        .unwrap()
    }

    #[test]
    fn a_pod_without_the_label_is_denied() {
        let verdict = review(&create_pod(pod("web-0")));
        assert!(!verdict.allowed);
        assert_eq!(
            verdict.message.as_deref(),
            Some("pod web-0 has no label app.kubernetes.io/name: add it to the pod's template")
        );
    }

    #[test]
    fn a_labelled_pod_is_allowed() {
        let labelled = pod("web-0").label("app.kubernetes.io/name", "web");
        assert_eq!(review(&create_pod(labelled)), Verdict::allow());
    }
}
