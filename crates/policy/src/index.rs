//! Identities and the inverted label index that resolves selectors to identity bitsets with a
//! handful of word-parallel bitset operations instead of matching every pod.

use std::collections::HashMap;

use fixedbitset::FixedBitSet;
use furynet_model::{LabelSelector, Labels, Operator};

use crate::ir::{Identity, IdentityId};

/// Identities plus an inverted index over their labels.
#[derive(Debug, Default)]
pub(crate) struct IdentityIndex {
    pub identities: Vec<Identity>,
    /// `(key, value)` -> identities having that label.
    by_label: HashMap<(String, String), FixedBitSet>,
    /// `key` -> identities having that key.
    by_key: HashMap<String, FixedBitSet>,
    /// Namespace index -> identities in it (selectable ones only).
    pub by_namespace: Vec<FixedBitSet>,
    /// All identities that selectors may match (not host-network).
    pub selectable: FixedBitSet,
}

impl IdentityIndex {
    pub fn new(identities: Vec<Identity>, namespace_count: usize) -> Self {
        let n = identities.len();
        let mut idx = IdentityIndex {
            by_namespace: vec![FixedBitSet::with_capacity(n); namespace_count],
            selectable: FixedBitSet::with_capacity(n),
            ..Default::default()
        };
        for (id, ident) in identities.iter().enumerate() {
            if ident.host_network {
                continue;
            }
            idx.selectable.insert(id);
            if let Some(ns) = idx.by_namespace.get_mut(ident.namespace) {
                ns.insert(id);
            }
            for (k, v) in &ident.labels {
                idx.by_label
                    .entry((k.clone(), v.clone()))
                    .or_insert_with(|| FixedBitSet::with_capacity(n))
                    .insert(id);
                idx.by_key
                    .entry(k.clone())
                    .or_insert_with(|| FixedBitSet::with_capacity(n))
                    .insert(id);
            }
        }
        idx.identities = identities;
        idx
    }

    pub fn len(&self) -> usize {
        self.identities.len()
    }

    fn empty(&self) -> FixedBitSet {
        FixedBitSet::with_capacity(self.len())
    }

    fn label_set(&self, key: &str, value: &str) -> Option<&FixedBitSet> {
        // Allocation-free lookups would need a borrowed tuple key; selectors are compiled once,
        // so the clone here is off the hot path.
        self.by_label.get(&(key.to_string(), value.to_string()))
    }

    /// Narrows `candidates` to the identities `selector` matches.
    pub fn restrict(&self, selector: &LabelSelector, candidates: &mut FixedBitSet) {
        for (k, v) in &selector.match_labels {
            match self.label_set(k, v) {
                Some(set) => candidates.intersect_with(set),
                None => candidates.clear(),
            }
        }
        for req in &selector.match_expressions {
            match req.operator {
                Operator::In | Operator::NotIn => {
                    let mut any = self.empty();
                    for v in &req.values {
                        if let Some(set) = self.label_set(&req.key, v) {
                            any.union_with(set);
                        }
                    }
                    if req.operator == Operator::In {
                        candidates.intersect_with(&any);
                    } else {
                        candidates.difference_with(&any);
                    }
                }
                Operator::Exists => match self.by_key.get(&req.key) {
                    Some(set) => candidates.intersect_with(set),
                    None => candidates.clear(),
                },
                Operator::DoesNotExist => {
                    if let Some(set) = self.by_key.get(&req.key) {
                        candidates.difference_with(set);
                    }
                }
            }
        }
    }

    /// Identities of namespace `ns` matched by `selector`.
    pub fn select_in_namespace(&self, ns: usize, selector: &LabelSelector) -> FixedBitSet {
        let mut set = self
            .by_namespace
            .get(ns)
            .cloned()
            .unwrap_or_else(|| self.empty());
        self.restrict(selector, &mut set);
        set
    }

    /// Identities in any of the namespaces `namespaces`, matched by `selector` (if any).
    pub fn select_in_namespaces(
        &self,
        namespaces: &FixedBitSet,
        selector: Option<&LabelSelector>,
    ) -> FixedBitSet {
        let mut set = self.empty();
        for ns in namespaces.ones() {
            if let Some(members) = self.by_namespace.get(ns) {
                set.union_with(members);
            }
        }
        if let Some(sel) = selector {
            self.restrict(sel, &mut set);
        }
        set
    }
}

/// Interns identities: `(namespace, labels, host_network)` -> id.
#[derive(Debug, Default)]
pub(crate) struct IdentityInterner {
    ids: HashMap<(usize, bool, Labels), IdentityId>,
    pub identities: Vec<Identity>,
}

impl IdentityInterner {
    pub fn intern(&mut self, namespace: usize, labels: &Labels, host_network: bool) -> IdentityId {
        if let Some(id) = self.ids.get(&(namespace, host_network, labels.clone())) {
            return *id;
        }
        let id = self.identities.len();
        self.identities.push(Identity {
            namespace,
            labels: labels.clone(),
            host_network,
        });
        self.ids
            .insert((namespace, host_network, labels.clone()), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furynet_model::Requirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn index_agrees_with_direct_matching() {
        let sets = [
            labels(&[("app", "a"), ("env", "prod")]),
            labels(&[("app", "b")]),
            labels(&[("app", "a"), ("env", "dev")]),
            labels(&[]),
        ];
        let mut interner = IdentityInterner::default();
        for (i, l) in sets.iter().enumerate() {
            interner.intern(i % 2, l, false);
        }
        let idx = IdentityIndex::new(interner.identities.clone(), 2);
        let selectors = [
            LabelSelector::everything(),
            LabelSelector {
                match_labels: labels(&[("app", "a")]),
                ..Default::default()
            },
            LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![Requirement {
                    key: "env".into(),
                    operator: Operator::NotIn,
                    values: ["prod".to_string()].into(),
                }],
            },
            LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![Requirement {
                    key: "env".into(),
                    operator: Operator::DoesNotExist,
                    values: Default::default(),
                }],
            },
            LabelSelector {
                match_labels: labels(&[("nope", "x")]),
                ..Default::default()
            },
        ];
        for sel in &selectors {
            let mut all = FixedBitSet::with_capacity(idx.len());
            all.insert_range(..);
            let mut got = all.clone();
            idx.restrict(sel, &mut got);
            for (id, ident) in idx.identities.iter().enumerate() {
                assert_eq!(
                    got.contains(id),
                    sel.matches(&ident.labels),
                    "{sel} on {:?}",
                    ident.labels
                );
            }
            for ns in 0..2 {
                let scoped = idx.select_in_namespace(ns, sel);
                for (id, ident) in idx.identities.iter().enumerate() {
                    assert_eq!(
                        scoped.contains(id),
                        ident.namespace == ns && sel.matches(&ident.labels)
                    );
                }
            }
        }
    }

    #[test]
    fn host_network_identities_are_never_selected() {
        let mut interner = IdentityInterner::default();
        interner.intern(0, &labels(&[("app", "a")]), true);
        interner.intern(0, &labels(&[("app", "a")]), false);
        assert_eq!(interner.identities.len(), 2);
        let idx = IdentityIndex::new(interner.identities, 1);
        let set = idx.select_in_namespace(0, &LabelSelector::everything());
        assert_eq!(set.ones().collect::<Vec<_>>(), vec![1]);
    }
}
