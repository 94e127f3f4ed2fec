//! `metadata` (name, namespace, labels, owner references) and label selectors, validated as
//! the API server validates `ObjectMeta` and `metav1.LabelSelector`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::value::{
    as_obj, child, field, index, opt_arr, opt_obj, opt_str, opt_string_map, str_items, Errors, Obj,
};
use crate::labels::{LabelSelector, Labels, Operator, Requirement};
use crate::validate;
use crate::workload::naming;

/// Which name rule an object kind follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// Namespaces.
    Dns1123Label,
    /// Services.
    Dns1035Label,
    /// Everything else.
    Dns1123Subdomain,
}

/// One `metadata.ownerReferences` entry (what de-duplication needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerRef {
    pub kind: String,
    pub name: String,
}

/// Decoded `metadata`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    /// The name (or the name generated from `generateName`); `None` if missing.
    pub name: Option<String>,
    /// For namespaced kinds: `metadata.namespace`, defaulted to `default`.
    pub namespace: Option<String>,
    pub labels: Labels,
    pub owners: Vec<OwnerRef>,
    pub uid: Option<String>,
}

pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// Decodes and validates `metadata`. `seed` makes names generated from `generateName`
/// deterministic (the API server would pick a random suffix).
pub(crate) fn decode_meta(
    obj: &Obj,
    namespaced: bool,
    rule: NameRule,
    seed: &str,
    errs: &mut Errors,
) -> Meta {
    let mut meta = Meta::default();
    let empty = Obj::new();
    let md = opt_obj(obj, "metadata", "", errs).unwrap_or(&empty);
    let path = "metadata";

    if namespaced {
        let ns = opt_str(md, "namespace", path, errs).unwrap_or("");
        let ns = if ns.is_empty() { DEFAULT_NAMESPACE } else { ns };
        for msg in validate::dns1123_label(ns) {
            errs.invalid_str(child(path, "namespace"), ns, &msg);
        }
        meta.namespace = Some(ns.to_string());
    }

    let name = opt_str(md, "name", path, errs).filter(|n| !n.is_empty());
    let generate = opt_str(md, "generateName", path, errs).filter(|n| !n.is_empty());
    let name = match (name, generate) {
        (Some(n), _) => Some(n.to_string()),
        (None, Some(prefix)) => Some(naming::generate_name(prefix, seed)),
        (None, None) => {
            errs.required(child(path, "name"), "name or generateName is required");
            None
        }
    };
    if let Some(n) = &name {
        let msgs = match rule {
            NameRule::Dns1123Label => validate::dns1123_label(n),
            NameRule::Dns1035Label => validate::dns1035_label(n),
            NameRule::Dns1123Subdomain => validate::dns1123_subdomain(n),
        };
        for msg in msgs {
            errs.invalid_str(child(path, "name"), n, &msg);
        }
    }
    meta.name = name;

    if let Some(labels) = opt_string_map(md, "labels", path, errs) {
        validate_labels(&labels, &child(path, "labels"), errs);
        meta.labels = labels;
    }
    meta.uid = opt_str(md, "uid", path, errs).map(str::to_string);

    let refs_path = child(path, "ownerReferences");
    for (i, r) in opt_arr(md, "ownerReferences", path, errs)
        .iter()
        .enumerate()
    {
        let rp = index(&refs_path, i);
        let Some(r) = as_obj(r, &rp, errs) else {
            continue;
        };
        let kind = opt_str(r, "kind", &rp, errs);
        let name = opt_str(r, "name", &rp, errs);
        if let (Some(kind), Some(name)) = (kind, name) {
            meta.owners.push(OwnerRef {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        }
    }
    meta
}

/// `ValidateLabels`: keys are qualified names, values valid label values; errors are reported
/// at the map's path, as the API server does.
pub(crate) fn validate_labels(labels: &Labels, path: &str, errs: &mut Errors) {
    for (k, v) in labels {
        for msg in validate::qualified_name(k) {
            errs.invalid_str(path.to_string(), k, &msg);
        }
        for msg in validate::label_value(v) {
            errs.invalid_str(path.to_string(), v, &msg);
        }
    }
}

/// Decodes and validates a `metav1.LabelSelector` at `path`.
pub(crate) fn decode_selector(v: &Value, path: &str, errs: &mut Errors) -> LabelSelector {
    let mut sel = LabelSelector::default();
    let Some(obj) = as_obj(v, path, errs) else {
        return sel;
    };
    if let Some(ml) = opt_string_map(obj, "matchLabels", path, errs) {
        validate_labels(&ml, &child(path, "matchLabels"), errs);
        sel.match_labels = ml;
    }
    let exprs_path = child(path, "matchExpressions");
    for (i, e) in opt_arr(obj, "matchExpressions", path, errs)
        .iter()
        .enumerate()
    {
        let ep = index(&exprs_path, i);
        let Some(e) = as_obj(e, &ep, errs) else {
            continue;
        };
        if let Some(req) = decode_requirement(e, &ep, errs) {
            sel.match_expressions.push(req);
        }
    }
    sel
}

/// `ValidateLabelSelectorRequirement`.
fn decode_requirement(e: &Obj, path: &str, errs: &mut Errors) -> Option<Requirement> {
    let key = opt_str(e, "key", path, errs).unwrap_or("");
    let op_str = opt_str(e, "operator", path, errs).unwrap_or("");
    let values_path = child(path, "values");
    let values: Vec<(usize, &str)> = match field(e, "values") {
        None => Vec::new(),
        Some(Value::Array(a)) => str_items(a, &values_path, errs),
        Some(other) => {
            errs.wrong_type(values_path.clone(), "array", other);
            Vec::new()
        }
    };
    let op = Operator::parse(op_str);
    match op {
        Some(Operator::In | Operator::NotIn) if values.is_empty() => errs.required(
            values_path.clone(),
            "must be specified when `operator` is 'In' or 'NotIn'",
        ),
        Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => errs.forbidden(
            values_path.clone(),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ),
        Some(_) => {}
        None => errs.invalid_str(
            child(path, "operator"),
            op_str,
            "not a valid selector operator",
        ),
    }
    for msg in validate::qualified_name(key) {
        errs.invalid_str(child(path, "key"), key, &msg);
    }
    for (i, v) in &values {
        for msg in validate::label_value(v) {
            errs.invalid_str(index(&values_path, *i), v, &msg);
        }
    }
    Some(Requirement {
        key: key.to_string(),
        operator: op?,
        values: values
            .into_iter()
            .map(|(_, v)| v.to_string())
            .collect::<BTreeSet<_>>(),
    })
}
