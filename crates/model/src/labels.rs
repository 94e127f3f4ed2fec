//! Labels and label selectors, with Kubernetes matching semantics.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A set of labels (key -> value), ordered so output is stable.
pub type Labels = BTreeMap<String, String>;

/// The label the API server puts on every namespace (Kubernetes >= 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Operator of a `matchExpressions` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    /// Parses the Kubernetes spelling (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "In" => Some(Self::In),
            "NotIn" => Some(Self::NotIn),
            "Exists" => Some(Self::Exists),
            "DoesNotExist" => Some(Self::DoesNotExist),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Values for `In`/`NotIn`; empty for `Exists`/`DoesNotExist` (validation enforces this).
    pub values: BTreeSet<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self.operator {
            Operator::In => labels
                .get(&self.key)
                .is_some_and(|v| self.values.contains(v)),
            // NotIn also matches objects that do not have the key at all.
            Operator::NotIn => labels
                .get(&self.key)
                .is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => labels.contains_key(&self.key),
            Operator::DoesNotExist => !labels.contains_key(&self.key),
        }
    }
}

/// A `metav1.LabelSelector`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// A selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// All requirements are ANDed: `matchLabels` entries and `matchExpressions` alike.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The selector as a `kubectl`-style string (`app=web,tier in (a,b),!legacy`).
    pub fn to_selector_string(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            let vals = r.values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r.operator {
                Operator::In => format!("{} in ({vals})", r.key),
                Operator::NotIn => format!("{} notin ({vals})", r.key),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        if parts.is_empty() {
            "<all>".to_string()
        } else {
            parts.join(",")
        }
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_selector_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::everything().matches(&Labels::new()));
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web"), ("tier", "fe")]),
            ..Default::default()
        };
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn operators() {
        let l = labels(&[("env", "prod")]);
        assert!(req("env", Operator::In, &["prod", "dev"]).matches(&l));
        assert!(!req("env", Operator::In, &["dev"]).matches(&l));
        assert!(!req("missing", Operator::In, &["prod"]).matches(&l));
        assert!(!req("env", Operator::NotIn, &["prod"]).matches(&l));
        assert!(req("env", Operator::NotIn, &["dev"]).matches(&l));
        assert!(
            req("missing", Operator::NotIn, &["dev"]).matches(&l),
            "NotIn matches absent keys"
        );
        assert!(req("env", Operator::Exists, &[]).matches(&l));
        assert!(!req("missing", Operator::Exists, &[]).matches(&l));
        assert!(req("missing", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!req("env", Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "db")]),
            match_expressions: vec![req("env", Operator::NotIn, &["test"])],
        };
        assert!(sel.matches(&labels(&[("app", "db")])));
        assert!(!sel.matches(&labels(&[("app", "db"), ("env", "test")])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        assert_eq!(sel.to_selector_string(), "app=db,env notin (test)");
    }
}
