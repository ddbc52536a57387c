//! The policy's settings document.

use std::collections::BTreeMap;

use serde::Deserialize;
use steward_sdk::CapacitySource;

/// HwameiStor's LVM provisioner.
pub const HWAMEISTOR_LVM: &str = "lvm.hwameistor.io";
/// HwameiStor's whole-disk provisioner.
pub const HWAMEISTOR_DISK: &str = "disk.hwameistor.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// HwameiStor `LocalStorageNode` pools.
    Hwameistor,
    /// TopoLVM `capacity.topolvm.io/<device-class>` node annotations.
    Topolvm,
    /// `CSIStorageCapacity` objects.
    CsiStorageCapacity,
}

impl Source {
    pub fn wit(self) -> CapacitySource {
        match self {
            Source::Hwameistor => CapacitySource::Hwameistor,
            Source::Topolvm => CapacitySource::Topolvm,
            Source::CsiStorageCapacity => CapacitySource::CsiStorageCapacity,
        }
    }
}

/// How `prioritize` turns free capacity into 0..=10 (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scoring {
    /// Most free capacity first (TopoLVM's score).
    Spread,
    /// Least capacity left after the pod's claims first.
    BinPack,
    /// HwameiStor's plugin score: mean share of free space left per claim.
    Hwameistor,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Provisioners whose claims are carved from a node's pool.
    pub lvm_provisioners: Vec<String>,
    /// Provisioners whose claims take a whole free disk of a node.
    pub disk_provisioners: Vec<String>,
    pub capacity_source: Source,
    pub scoring: Scoring,
    /// TopoLVM's `default-divisor`: free GiB are divided by it before the
    /// log2 of `spread` and `binPack`.
    pub divisor: f64,
    /// Per-pool divisors (TopoLVM's `divisors`, keyed by pool / device class).
    pub divisors: BTreeMap<String, f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lvm_provisioners: vec![HWAMEISTOR_LVM.into()],
            disk_provisioners: vec![HWAMEISTOR_DISK.into()],
            capacity_source: Source::Hwameistor,
            scoring: Scoring::Spread,
            divisor: 1.0,
            divisors: BTreeMap::new(),
        }
    }
}

impl steward_sdk::Settings for Settings {
    fn check(&self) -> Result<(), String> {
        let bad_divisor = std::iter::once(("divisor".to_string(), self.divisor))
            .chain(
                self.divisors
                    .iter()
                    .map(|(k, v)| (format!("divisors.{k}"), *v)),
            )
            .find(|(_, v)| !(v.is_finite() && *v > 0.0));
        if let Some((field, value)) = bad_divisor {
            return Err(format!("{field} is {value}; divisors must be positive"));
        }
        if let Some(p) = self
            .lvm_provisioners
            .iter()
            .find(|p| self.disk_provisioners.contains(p))
        {
            return Err(format!(
                "provisioner {p} is listed as both an LVM and a disk provisioner"
            ));
        }
        Ok(())
    }
}

impl Settings {
    pub fn divisor_of(&self, pool: &str) -> f64 {
        self.divisors.get(pool).copied().unwrap_or(self.divisor)
    }

    pub fn is_local(&self, provisioner: &str) -> bool {
        self.lvm_provisioners.iter().any(|p| p == provisioner)
            || self.disk_provisioners.iter().any(|p| p == provisioner)
    }
}
