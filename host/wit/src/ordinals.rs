//! tidb-operator's Advanced StatefulSet as host and guests name it, and
//! which ordinals of a StatefulSet are desired, as tidb-operator computes
//! them for it (`GetPodOrdinalsFromReplicasAndDeleteSlots` in
//! `pkg/apis/pingcap/v1alpha1/helpers.go`): `replicas` slots counted from
//! 0, each delete slot below the count skipped and the count extended by
//! one. Shared by the host (which computes them) and the guest SDK, so the
//! two cannot disagree.

/// The annotation of an Advanced StatefulSet listing its delete slots.
pub const ADVANCED_DELETE_SLOTS: &str = "delete-slots";

/// The kind owner and workload records give an Advanced StatefulSet: it is
/// a `StatefulSet` of another API group, and its own kind name keeps the
/// two apart.
pub const ADVANCED_STATEFULSET: &str = "AdvancedStatefulSet";

/// The API group of tidb-operator's Advanced StatefulSet.
pub const ADVANCED_STATEFULSET_GROUP: &str = "apps.pingcap.com";

/// The workload kind of a `StatefulSet` of API group `group`.
pub fn statefulset_kind(group: &str) -> &'static str {
    if group == ADVANCED_STATEFULSET_GROUP {
        ADVANCED_STATEFULSET
    } else {
        "StatefulSet"
    }
}

/// The desired ordinals of a StatefulSet of workload kind `kind` with
/// `annotations` at `replicas`: `0..replicas`, or for an Advanced
/// StatefulSet `replicas` slots skipping its delete slots (tidb-operator's
/// `helper.GetPodOrdinals`).
pub fn of_statefulset(kind: &str, annotations: &[(String, String)], replicas: u32) -> Vec<u32> {
    if kind != ADVANCED_STATEFULSET {
        return (0..replicas).collect();
    }
    let slots = annotations
        .iter()
        .find(|(k, _)| k == ADVANCED_DELETE_SLOTS)
        .map(|(_, v)| parse_delete_slots(v))
        .unwrap_or_default();
    desired(replicas, &slots)
}

/// The desired ordinals, ascending.
pub fn desired(replicas: u32, delete_slots: &[i32]) -> Vec<u32> {
    let mut slots: Vec<u32> = delete_slots
        .iter()
        .filter_map(|&s| u32::try_from(s).ok())
        .collect();
    slots.sort_unstable();
    slots.dedup();
    let mut count = replicas;
    let mut skipped = Vec::new();
    for slot in slots {
        if slot < count {
            count += 1;
            skipped.push(slot);
        }
    }
    (0..count).filter(|o| !skipped.contains(o)).collect()
}

/// The ordinals of a delete-slots annotation (a JSON list of integers);
/// none when it is not one, as tidb-operator reads it.
pub fn parse_delete_slots(text: &str) -> Vec<i32> {
    let inner = text.trim();
    let Some(inner) = inner.strip_prefix('[').and_then(|i| i.strip_suffix(']')) else {
        return Vec::new();
    };
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|n| n.trim().parse::<i32>())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_slots_below_the_count_extend_it() {
        assert_eq!(desired(3, &[]), [0, 1, 2]);
        // tidb-operator's example: 3 replicas, delete slot 1 → 0, 2, 3.
        assert_eq!(desired(3, &[1]), [0, 2, 3]);
        // A slot reached only because an earlier one extended the count.
        assert_eq!(desired(3, &[1, 3]), [0, 2, 4]);
        // Slots beyond the count, negative or repeated change nothing.
        assert_eq!(desired(2, &[5, -1, 0, 0]), [1, 2]);
        assert_eq!(desired(0, &[0]), Vec::<u32>::new());
    }

    #[test]
    fn only_an_advanced_statefulset_reads_its_delete_slots() {
        let annotations = [(ADVANCED_DELETE_SLOTS.to_string(), "[1]".to_string())];
        assert_eq!(of_statefulset("StatefulSet", &annotations, 3), [0, 1, 2]);
        assert_eq!(
            of_statefulset(ADVANCED_STATEFULSET, &annotations, 3),
            [0, 2, 3]
        );
        assert_eq!(of_statefulset(ADVANCED_STATEFULSET, &[], 2), [0, 1]);
        assert_eq!(statefulset_kind("apps"), "StatefulSet");
        assert_eq!(
            statefulset_kind(ADVANCED_STATEFULSET_GROUP),
            ADVANCED_STATEFULSET
        );
    }

    #[test]
    fn the_annotation_is_a_json_list_or_nothing() {
        assert_eq!(parse_delete_slots("[1, 2]"), [1, 2]);
        assert_eq!(parse_delete_slots(" [] "), Vec::<i32>::new());
        assert_eq!(parse_delete_slots("[1,x]"), Vec::<i32>::new());
        assert_eq!(parse_delete_slots("1"), Vec::<i32>::new());
    }
}
