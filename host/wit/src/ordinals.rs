//! Which ordinals of a StatefulSet are desired, as tidb-operator computes
//! them for its Advanced StatefulSet (`GetPodOrdinalsFromReplicasAndDeleteSlots`
//! in `pkg/apis/pingcap/v1alpha1/helpers.go`): `replicas` slots counted
//! from 0, each delete slot below the count skipped and the count extended
//! by one. Shared by the host (which computes them) and the guest SDK's
//! fixtures.

/// The annotation of an Advanced StatefulSet listing its delete slots.
pub const ADVANCED_DELETE_SLOTS: &str = "delete-slots";

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
    fn the_annotation_is_a_json_list_or_nothing() {
        assert_eq!(parse_delete_slots("[1, 2]"), [1, 2]);
        assert_eq!(parse_delete_slots(" [] "), Vec::<i32>::new());
        assert_eq!(parse_delete_slots("[1,x]"), Vec::<i32>::new());
        assert_eq!(parse_delete_slots("1"), Vec::<i32>::new());
    }
}
