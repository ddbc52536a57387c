//! Building a filter verdict: most rejected nodes share a handful of reasons.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Collects rejections and de-duplicates their reasons.
#[derive(Default)]
pub struct Rejections {
    reasons: Vec<String>,
    /// Positions in `reasons`, looked up by text, so each text is stored
    /// once. FxHash: reasons are long and a filter may refuse thousands of
    /// nodes.
    index: HashTable<u32>,
    rejected: Vec<(u32, u32, bool)>,
}

impl Rejections {
    /// Rejects candidate `node` (its index in the candidate list).
    /// `unresolvable`: no preemption on that node can help. A `String`
    /// reason is kept without a copy when it is new.
    pub fn reject(
        &mut self,
        node: usize,
        reason: impl AsRef<str> + Into<String>,
        unresolvable: bool,
    ) {
        let text = reason.as_ref();
        let hash = FxBuildHasher.hash_one(text);
        let reasons = &mut self.reasons;
        let reason = match self.index.find(hash, |&i| reasons[i as usize] == text) {
            Some(&i) => i,
            None => {
                let i = reasons.len() as u32;
                reasons.push(reason.into());
                self.index
                    .insert_unique(hash, i, |&j| FxBuildHasher.hash_one(&reasons[j as usize]));
                i
            }
        };
        self.rejected.push((node as u32, reason, unresolvable));
    }

    /// Rejected candidate indices with their reasons, for tests and logs.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        self.rejected
            .iter()
            .map(|&(n, r, _)| (n as usize, self.reasons[r as usize].as_str()))
    }

    pub fn is_rejected(&self, node: usize) -> bool {
        self.rejected.iter().any(|&(n, _, _)| n as usize == node)
    }

    /// Parts of a `filter-result`: (reasons, (node, reason, unresolvable)).
    pub fn into_parts(self) -> (Vec<String>, Vec<(u32, u32, bool)>) {
        (self.reasons, self.rejected)
    }
}

impl From<Rejections> for crate::scheduler::FilterResult {
    fn from(r: Rejections) -> Self {
        let (reasons, rejected) = r.into_parts();
        crate::scheduler::FilterResult {
            reasons,
            rejections: rejected
                .into_iter()
                .map(|(node, reason, unresolvable)| crate::scheduler::Rejection {
                    node,
                    reason,
                    unresolvable,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_reasons_are_stored_once() {
        let mut r = Rejections::default();
        r.reject(0, "full", false);
        r.reject(3, "full", false);
        r.reject(4, "no label", true);
        assert!(r.is_rejected(3) && !r.is_rejected(1));
        let (reasons, rejected) = r.into_parts();
        assert_eq!(reasons, ["full", "no label"]);
        assert_eq!(rejected, [(0, 0, false), (3, 0, false), (4, 1, true)]);
    }
}
