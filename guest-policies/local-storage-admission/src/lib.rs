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

use steward_sdk::admission::{AdmissionRequest, Guest, Verdict};
use steward_sdk::cluster::HostCluster;

struct LocalStorageAdmission;

impl Guest for LocalStorageAdmission {
    fn validate_settings(settings: String) -> Result<(), String> {
        Settings::parse(&settings).map(|_| ())
    }

    fn review(settings: String, request: AdmissionRequest) -> Result<Verdict, String> {
        let s = Settings::parse(&settings)?;
        Ok(review(&HostCluster, &s, &request))
    }
}

steward_sdk::admission::export_admission_policy!(LocalStorageAdmission with_types_in steward_sdk::admission);
