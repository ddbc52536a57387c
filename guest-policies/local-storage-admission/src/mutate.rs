//! The mutation, written against [`ClusterView`] so it is tested natively.

use serde::Deserialize;
use steward_sdk::admission::{AdmissionRequest, Verdict};
use steward_sdk::cluster::ClusterView;
use steward_sdk::{Pod, settings};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// The scheduler profile pods of local claims get.
    pub scheduler_name: String,
    /// A provisioner ending with one of these is local.
    pub local_provisioner_suffixes: Vec<String>,
    /// Further local provisioners, by exact name.
    pub local_provisioners: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scheduler_name: "steward-scheduler".into(),
            local_provisioner_suffixes: vec!["hwameistor.io".into()],
            local_provisioners: Vec::new(),
        }
    }
}

impl settings::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        if self.scheduler_name.is_empty() {
            return Err("schedulerName must name a scheduler profile".into());
        }
        if self.local_provisioner_suffixes.iter().any(String::is_empty) {
            return Err("localProvisionerSuffixes may not contain an empty suffix \
                 (it would make every provisioner local)"
                .into());
        }
        Ok(())
    }
}

impl Settings {
    fn is_local(&self, provisioner: &str) -> bool {
        self.local_provisioners.iter().any(|p| p == provisioner)
            || self
                .local_provisioner_suffixes
                .iter()
                .any(|s| provisioner.ends_with(s.as_str()))
    }
}

/// Pod CREATE: the JSONPatch that gives the pod the Steward scheduler when
/// one of its claims is local; every other request passes unchanged.
pub fn review(cluster: &impl ClusterView, s: &Settings, request: &AdmissionRequest) -> Verdict {
    let pod = match &request.pod {
        Some(pod) if request.operation == "CREATE" && request.sub_resource.is_none() => pod,
        _ => return Verdict::allow(),
    };
    let mut verdict = Verdict::allow();
    let mut local = None;
    for claim in &pod.claims {
        match provisioner(cluster, pod, claim) {
            Lookup::Found(p) if s.is_local(&p) => {
                local = Some((claim, p));
                break;
            }
            Lookup::Found(_) | Lookup::NoProvisioner => {}
            Lookup::Unknown(what) => {
                verdict = verdict.warning(format!(
                    "{what} is not known to Steward yet; schedulerName was not changed for it"
                ))
            }
        }
    }
    let Some((claim, provisioner)) = local else {
        return verdict;
    };
    if pod.scheduler_name == s.scheduler_name {
        return verdict;
    }
    let op = if pod.scheduler_name.is_empty() {
        "add"
    } else {
        "replace"
    };
    let value = serde_json::Value::String(s.scheduler_name.clone()).to_string();
    let mut verdict = verdict.patch(op, "/spec/schedulerName", Some(value));
    verdict.audit_annotations.push((
        "reason".into(),
        format!("claim {claim} uses local provisioner {provisioner}"),
    ));
    verdict
}

enum Lookup {
    Found(String),
    /// A static volume without CSI, or a claim without a class.
    NoProvisioner,
    Unknown(String),
}

fn provisioner(cluster: &impl ClusterView, pod: &Pod, name: &str) -> Lookup {
    let Some(claim) = cluster.get_claim(&pod.namespace, name) else {
        return Lookup::Unknown(format!("claim {}/{name}", pod.namespace));
    };
    if let Some(volume) = claim
        .volume_name
        .as_deref()
        .filter(|_| claim.phase == "Bound")
    {
        return match cluster.get_volume(volume) {
            Some(v) => v.csi_driver.map_or(Lookup::NoProvisioner, Lookup::Found),
            None => Lookup::Unknown(format!("volume {volume} of claim {}/{name}", pod.namespace)),
        };
    }
    let Some(class) = claim.storage_class.as_deref() else {
        return Lookup::NoProvisioner;
    };
    match cluster.get_storage_class(class) {
        Some(c) => Lookup::Found(c.provisioner),
        None => Lookup::Unknown(format!(
            "storage class {class} of claim {}/{name}",
            pod.namespace
        )),
    }
}

#[cfg(test)]
mod tests;
