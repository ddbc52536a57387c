//! Label maps and label selectors, with Kubernetes semantics.

use crate::{SelectorOperator, SelectorRequirement};

/// The value of `key` in a label or annotation list.
pub fn get<'a>(map: &'a [(String, String)], key: &str) -> Option<&'a str> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `key` must equal `value` (a `matchLabels` entry).
pub fn eq(key: &str, value: &str) -> SelectorRequirement {
    SelectorRequirement {
        key: key.to_string(),
        operator: SelectorOperator::In,
        values: vec![value.to_string()],
    }
}

/// `key` must be present.
pub fn exists(key: &str) -> SelectorRequirement {
    SelectorRequirement {
        key: key.to_string(),
        operator: SelectorOperator::Exists,
        values: Vec::new(),
    }
}

/// Whether `labels` satisfy one requirement.
pub fn matches_requirement(labels: &[(String, String)], req: &SelectorRequirement) -> bool {
    let value = get(labels, &req.key);
    match req.operator {
        SelectorOperator::In => value.is_some_and(|v| req.values.iter().any(|w| w == v)),
        SelectorOperator::NotIn => value.is_none_or(|v| req.values.iter().all(|w| w != v)),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
        SelectorOperator::Gt | SelectorOperator::Lt => {
            let as_int = |s: &str| s.parse::<i64>().ok();
            match (
                value.and_then(as_int),
                req.values.first().and_then(|v| as_int(v)),
            ) {
                (Some(v), Some(bound)) if req.operator == SelectorOperator::Gt => v > bound,
                (Some(v), Some(bound)) => v < bound,
                _ => false,
            }
        }
    }
}

/// Whether `labels` satisfy every requirement (an empty selector matches all).
pub fn matches(labels: &[(String, String)], selector: &[SelectorRequirement]) -> bool {
    selector.iter().all(|r| matches_requirement(labels, r))
}

/// The ordinal of a StatefulSet pod: the number after the last `-`.
pub fn ordinal(pod_name: &str) -> Option<u32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_semantics_follow_kubernetes() {
        let labels = map(&[("app", "pd"), ("zone", "a")]);
        assert!(matches(&labels, &[]));
        assert!(matches(&labels, &[eq("app", "pd"), exists("zone")]));
        assert!(!matches(&labels, &[eq("app", "tikv")]));
        let not_in = SelectorRequirement {
            key: "zone".into(),
            operator: SelectorOperator::NotIn,
            values: vec!["b".into()],
        };
        assert!(matches(&labels, std::slice::from_ref(&not_in)));
        let absent = SelectorRequirement {
            key: "rack".into(),
            operator: SelectorOperator::DoesNotExist,
            values: vec![],
        };
        assert!(matches(&labels, &[absent]));
        let numeric = map(&[("cores", "8")]);
        let gt = |v: &str| SelectorRequirement {
            key: "cores".into(),
            operator: SelectorOperator::Gt,
            values: vec![v.into()],
        };
        assert!(matches(&numeric, &[gt("4")]));
        assert!(!matches(&numeric, &[gt("8")]));
        assert!(!matches(&labels, &[gt("1")]));
    }

    #[test]
    fn ordinals_come_from_the_name_suffix() {
        assert_eq!(ordinal("basic-pd-2"), Some(2));
        assert_eq!(ordinal("basic-tikv-10"), Some(10));
        assert_eq!(ordinal("standalone"), None);
    }
}
