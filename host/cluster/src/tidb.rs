//! tidb-operator's kinds as the records guests read: a `TidbCluster`
//! (`pingcap.com/v1alpha1`) with the figures its HA predicate computes,
//! and an Advanced StatefulSet (`apps.pingcap.com/v1`) as a workload of
//! kind `AdvancedStatefulSet`. Read from JSON: the CRDs' schemas are
//! tidb-operator's, and a field Steward does not read may be anything.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::ApiResource;
use serde_json::Value;
use steward_wit::ordinals;
pub use steward_wit::ordinals::{ADVANCED_STATEFULSET, ADVANCED_STATEFULSET_GROUP};
use steward_wit::{TidbCluster, TidbComponent, Workload};

use crate::convert;
use crate::kinds::OptionalKind;

/// How the API reads and writes a StatefulSet of workload kind `kind`
/// (`StatefulSet` or [`ADVANCED_STATEFULSET`]), as a dynamic object.
pub fn statefulset_resource(kind: &str) -> ApiResource {
    if kind == ADVANCED_STATEFULSET {
        OptionalKind::AdvancedStatefulSet.api_resource()
    } else {
        ApiResource::erase::<StatefulSet>(&())
    }
}

/// TidbCluster annotation naming the HA predicate's topology label.
pub const HA_TOPOLOGY_KEY: &str = "pingcap.com/ha-topology-key";

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn count(v: &Value, pointer: &str) -> Option<u32> {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .map(|n| n.clamp(0, u32::MAX as i64) as u32)
}

/// A TidbCluster object (JSON) as guests see it.
pub fn tidb_cluster(v: &Value) -> TidbCluster {
    TidbCluster {
        namespace: text(v, "/metadata/namespace").unwrap_or_default().into(),
        name: text(v, "/metadata/name").unwrap_or_default().into(),
        ha_topology_key: annotation(v, HA_TOPOLOGY_KEY)
            .filter(|k| !k.is_empty())
            .map(str::to_string),
        pd: component(v, "pd"),
        tikv: component(v, "tikv"),
    }
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// `spec.<name>` with tidb-operator's `<Name>StsDesiredReplicas` and
/// `<Name>StsDesiredOrdinals(false)`, and its failure members' pods.
fn component(v: &Value, name: &str) -> Option<TidbComponent> {
    let spec = v
        .pointer(&format!("/spec/{name}"))
        .filter(|s| s.is_object())?;
    let replicas = count(spec, "/replicas").unwrap_or(0);
    let status = v.pointer(&format!("/status/{name}"));
    // PD: failureMembers by member name; TiKV: failureStores by store id.
    let failures: Vec<&Value> = status
        .and_then(|s| {
            s.get(if name == "pd" {
                "failureMembers"
            } else {
                "failureStores"
            })
        })
        .and_then(Value::as_object)
        .map(|m| m.values().collect())
        .unwrap_or_default();
    let counted = if name == "pd" {
        failures
            .iter()
            .filter(|f| f.get("memberDeleted").and_then(Value::as_bool) == Some(true))
            .count()
    } else {
        failures.len()
    };
    let replacing = status
        .and_then(|s| s.get("volReplaceInProgress"))
        .and_then(Value::as_bool)
        == Some(true);
    // tidb-operator's defaulting sets spareVolReplaceReplicas to 1.
    let spare = if replacing {
        count(spec, "/spareVolReplaceReplicas").unwrap_or(1)
    } else {
        0
    };
    let desired_replicas = replicas
        .saturating_add(counted as u32)
        .saturating_add(spare);
    let delete_slots = annotation(v, &format!("{name}.tidb.pingcap.com/delete-slots"))
        .map(ordinals::parse_delete_slots)
        .unwrap_or_default();
    Some(TidbComponent {
        replicas,
        desired_replicas,
        desired_ordinals: ordinals::desired(desired_replicas, &delete_slots),
        failure_pods: failures
            .iter()
            .filter_map(|f| f.get("podName").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        scheduler_name: text(spec, "/schedulerName")
            .or_else(|| text(v, "/spec/schedulerName"))
            .unwrap_or_default()
            .into(),
    })
}

/// An Advanced StatefulSet object (JSON): its spec and status are those
/// of an `apps/v1` StatefulSet; its desired ordinals skip its delete slots.
pub fn advanced_statefulset(v: &Value) -> Workload {
    let as_apps_v1 = |spec: Option<&Value>| {
        let object = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": v.get("metadata"), "spec": spec, "status": v.get("status"),
        });
        serde_json::from_value::<StatefulSet>(object)
    };
    // A spec `apps/v1` cannot read still gives its replicas.
    let set = as_apps_v1(v.get("spec"))
        .or_else(|_| {
            let replicas = v.pointer("/spec/replicas").cloned().unwrap_or(Value::Null);
            as_apps_v1(Some(&serde_json::json!({
                "replicas": replicas, "selector": {}, "template": {},
            })))
        })
        .unwrap_or_default();
    let mut w = convert::workload(&set);
    w.kind = ADVANCED_STATEFULSET.into();
    w.desired_ordinals = ordinals::of_statefulset(&w.kind, &w.annotations, w.replicas);
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tc(annotations: Value, status: Value) -> Value {
        json!({
            "apiVersion": "pingcap.com/v1alpha1", "kind": "TidbCluster",
            "metadata": {"namespace": "tidb", "name": "basic", "annotations": annotations},
            "spec": {
                "schedulerName": "steward-scheduler",
                "pd": {"replicas": 3},
                "tikv": {"replicas": 3, "schedulerName": "tikv-scheduler", "spareVolReplaceReplicas": 2},
            },
            "status": status,
        })
    }

    #[test]
    fn the_topology_key_comes_from_the_annotation_when_set() {
        let with = tidb_cluster(&tc(
            json!({HA_TOPOLOGY_KEY: "topology.kubernetes.io/zone"}),
            json!({}),
        ));
        assert_eq!(
            with.ha_topology_key.as_deref(),
            Some("topology.kubernetes.io/zone")
        );
        assert_eq!(
            tidb_cluster(&tc(json!({HA_TOPOLOGY_KEY: ""}), json!({}))).ha_topology_key,
            None
        );
        assert_eq!(
            tidb_cluster(&tc(json!(null), json!(null))).ha_topology_key,
            None
        );
    }

    #[test]
    fn desired_replicas_and_failures_follow_tidb_operator() {
        let status = json!({
            "pd": {"failureMembers": {
                "basic-pd-1": {"podName": "basic-pd-1", "memberDeleted": true},
                "basic-pd-2": {"podName": "basic-pd-2", "memberDeleted": false},
            }},
            "tikv": {"failureStores": {"4": {"podName": "basic-tikv-0"}}, "volReplaceInProgress": true},
        });
        let c = tidb_cluster(&tc(
            json!({"pd.tidb.pingcap.com/delete-slots": "[1]"}),
            status,
        ));
        let pd = c.pd.unwrap();
        // PDStsDesiredReplicas: 3 + one deleted failure member.
        assert_eq!((pd.replicas, pd.desired_replicas), (3, 4));
        // Slot 1 deleted: 4 desired slots are 0, 2, 3, 4.
        assert_eq!(pd.desired_ordinals, [0, 2, 3, 4]);
        let mut failed = pd.failure_pods.clone();
        failed.sort();
        assert_eq!(failed, ["basic-pd-1", "basic-pd-2"]);
        assert_eq!(pd.scheduler_name, "steward-scheduler");
        let tikv = c.tikv.unwrap();
        // TiKVStsDesiredReplicas: 3 + 1 failure store + 2 spare replicas.
        assert_eq!(tikv.desired_replicas, 6);
        assert_eq!(tikv.desired_ordinals, [0, 1, 2, 3, 4, 5]);
        assert_eq!(tikv.failure_pods, ["basic-tikv-0"]);
        assert_eq!(tikv.scheduler_name, "tikv-scheduler");
    }

    #[test]
    fn a_cluster_without_a_component_has_none() {
        let mut v = tc(json!({}), json!({}));
        v["spec"].as_object_mut().unwrap().remove("tikv");
        assert!(tidb_cluster(&v).tikv.is_none());
    }

    #[test]
    fn an_advanced_statefulset_with_an_unreadable_spec_keeps_its_replicas() {
        let w = advanced_statefulset(&json!({
            "metadata": {"namespace": "tidb", "name": "basic-tikv"},
            "spec": {"replicas": 4, "template": "not a template"},
        }));
        assert_eq!((w.name.as_str(), w.replicas), ("basic-tikv", 4));
        assert_eq!(w.desired_ordinals, [0, 1, 2, 3]);
    }

    #[test]
    fn an_advanced_statefulset_skips_its_delete_slots() {
        let w = advanced_statefulset(&json!({
            "apiVersion": "apps.pingcap.com/v1", "kind": "StatefulSet",
            "metadata": {"namespace": "tidb", "name": "basic-pd", "annotations": {"delete-slots": "[2]"}},
            "spec": {"replicas": 3, "serviceName": "basic-pd-peer", "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}}},
        }));
        assert_eq!(w.kind, ADVANCED_STATEFULSET);
        assert_eq!((w.name.as_str(), w.replicas), ("basic-pd", 3));
        assert_eq!(w.desired_ordinals, [0, 1, 3]);
    }
}
