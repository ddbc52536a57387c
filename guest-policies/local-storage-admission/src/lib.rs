//! local-storage-admission: a pod that uses a claim of a local-volume
//! provisioner must be placed by a scheduler that knows local capacity, so
//! its `spec.schedulerName` is set (or replaced) with the Steward scheduler
//! profile on CREATE (HwameiStor's admission controller, `mutate.go`).
//!
//! A claim's provisioner is its volume's CSI driver once bound, else its
//! StorageClass's provisioner. Claims the cache does not know yet are
//! skipped with a warning.

mod mutate;

pub use mutate::{Settings, review};

use steward_sdk::admission::{AdmissionPolicy, AdmissionRequest, Verdict};
use steward_sdk::cluster::ClusterView;
use steward_sdk::pd::PdView;

pub struct LocalStorageAdmission;

impl AdmissionPolicy for LocalStorageAdmission {
    type Settings = Settings;

    fn review(
        cluster: &impl ClusterView,
        _: &impl PdView,
        s: &Settings,
        request: &AdmissionRequest,
    ) -> Result<Verdict, String> {
        Ok(review(cluster, s, request))
    }
}

steward_sdk::export_admission_policy!(LocalStorageAdmission);
