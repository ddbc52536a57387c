//! The kinds Steward watches only when a configured policy needs them
//! (CRDs, or APIs a Kubernetes release may lack), and what the cache knows
//! of each: being listed, synced, or not served by the API server.

use std::collections::BTreeSet;

use kube::api::{ApiResource, GroupVersionKind};
use steward_wit::CapacitySource;

/// A kind watched only for the policies that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OptionalKind {
    /// `storage.k8s.io/v1` (Kubernetes 1.24 and later).
    CsiStorageCapacity,
    /// HwameiStor's CRDs (`hwameistor.io/v1alpha1`).
    LocalStorageNode,
    LocalDiskNode,
    LocalVolume,
    /// tidb-operator's CRDs: read where served, never missed (a policy
    /// falls back to its settings and the `apps/v1` StatefulSet).
    TidbCluster,
    AdvancedStatefulSet,
}

impl OptionalKind {
    /// tidb-operator's kinds, for policies whose needs ask for them.
    pub const TIDB_OPERATOR: [OptionalKind; 2] =
        [OptionalKind::TidbCluster, OptionalKind::AdvancedStatefulSet];

    /// The kinds a capacity source's figures come from (TopoLVM's are
    /// Node annotations, always watched).
    pub fn of_source(source: CapacitySource) -> &'static [OptionalKind] {
        match source {
            CapacitySource::Hwameistor => &[
                OptionalKind::LocalStorageNode,
                OptionalKind::LocalDiskNode,
                OptionalKind::LocalVolume,
            ],
            CapacitySource::Topolvm => &[],
            CapacitySource::CsiStorageCapacity => &[OptionalKind::CsiStorageCapacity],
        }
    }

    /// The kinds of every source in `sources`.
    pub fn of_sources(sources: &[CapacitySource]) -> BTreeSet<OptionalKind> {
        sources
            .iter()
            .flat_map(|&s| OptionalKind::of_source(s))
            .copied()
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            OptionalKind::CsiStorageCapacity => "CSIStorageCapacity",
            OptionalKind::LocalStorageNode => "LocalStorageNode",
            OptionalKind::LocalDiskNode => "LocalDiskNode",
            OptionalKind::LocalVolume => "LocalVolume",
            OptionalKind::TidbCluster => "TidbCluster",
            OptionalKind::AdvancedStatefulSet => "StatefulSet",
        }
    }

    /// API group and version.
    pub fn group_version(self) -> (&'static str, &'static str) {
        match self {
            OptionalKind::CsiStorageCapacity => ("storage.k8s.io", "v1"),
            OptionalKind::TidbCluster => ("pingcap.com", "v1alpha1"),
            OptionalKind::AdvancedStatefulSet => ("apps.pingcap.com", "v1"),
            _ => ("hwameistor.io", "v1alpha1"),
        }
    }

    /// How the API reads and writes it, as a dynamic object (custom
    /// resources: the kind's schema is its CRD's).
    pub fn api_resource(self) -> ApiResource {
        let (group, version) = self.group_version();
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.name()),
            self.plural(),
        )
    }

    /// The resource name in the API's discovery document.
    pub fn plural(self) -> &'static str {
        match self {
            OptionalKind::CsiStorageCapacity => "csistoragecapacities",
            OptionalKind::LocalStorageNode => "localstoragenodes",
            OptionalKind::LocalDiskNode => "localdisknodes",
            OptionalKind::LocalVolume => "localvolumes",
            OptionalKind::TidbCluster => "tidbclusters",
            OptionalKind::AdvancedStatefulSet => "statefulsets",
        }
    }

    /// What makes the API server serve the kind, for messages.
    pub fn provided_by(self) -> String {
        let (group, version) = self.group_version();
        match self {
            OptionalKind::CsiStorageCapacity => format!(
                "{group}/{version} {}, served by Kubernetes 1.24 and later",
                self.name()
            ),
            OptionalKind::TidbCluster | OptionalKind::AdvancedStatefulSet => format!(
                "{} ({group}/{version}), from tidb-operator's CRD {}.{group}",
                self.name(),
                self.plural()
            ),
            _ => format!(
                "{} ({group}/{version}), from HwameiStor's CRD {}.{group}",
                self.name(),
                self.plural()
            ),
        }
    }
}

impl std::fmt::Display for OptionalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionalKind::AdvancedStatefulSet => f.write_str("StatefulSet (apps.pingcap.com/v1)"),
            kind => f.write_str(kind.name()),
        }
    }
}

/// What the cache holds of an optional kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindState {
    /// Not known to be served yet, or its initial list has not arrived.
    Listing,
    /// Its watch delivered the initial list and keeps it current.
    Synced,
    /// The API server does not serve it: the cache holds none.
    NotServed,
}

/// Why the API server lacks `missing`, in one sentence for `/status` and
/// refusals; empty when nothing is missing.
pub fn not_served_sentence(missing: &[OptionalKind]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let list: Vec<String> = missing.iter().map(|k| k.provided_by()).collect();
    Some(format!(
        "the API server does not serve {}; Steward sees none of {} until it does, and starts \
         watching without a restart once it is installed",
        list.join(", "),
        if missing.len() == 1 { "it" } else { "them" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_capacity_source_maps_to_the_kinds_it_reads() {
        assert_eq!(
            OptionalKind::of_sources(&[CapacitySource::Hwameistor]),
            BTreeSet::from([
                OptionalKind::LocalStorageNode,
                OptionalKind::LocalDiskNode,
                OptionalKind::LocalVolume
            ])
        );
        assert!(OptionalKind::of_sources(&[CapacitySource::Topolvm]).is_empty());
        assert_eq!(
            OptionalKind::of_sources(&[CapacitySource::CsiStorageCapacity]),
            BTreeSet::from([OptionalKind::CsiStorageCapacity])
        );
        assert!(OptionalKind::of_sources(&[]).is_empty());
    }

    #[test]
    fn the_sentence_names_each_missing_crd() {
        assert_eq!(not_served_sentence(&[]), None);
        let text = not_served_sentence(&[OptionalKind::LocalStorageNode]).unwrap();
        assert!(
            text.starts_with(
                "the API server does not serve LocalStorageNode (hwameistor.io/v1alpha1), from \
                 HwameiStor's CRD localstoragenodes.hwameistor.io;"
            ),
            "{text}"
        );
        let text = not_served_sentence(&[OptionalKind::CsiStorageCapacity]).unwrap();
        assert!(
            text.contains("storage.k8s.io/v1 CSIStorageCapacity, served by Kubernetes 1.24"),
            "{text}"
        );
    }
}
