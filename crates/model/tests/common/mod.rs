//! Helpers shared by the integration tests.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use furynet_model::{load_str, Diagnostic, Loaded, Pod, Severity};

/// Loads YAML text as `test.yaml`.
pub fn load(text: &str) -> Loaded {
    load_str("test.yaml", text)
}

pub fn errors(l: &Loaded) -> Vec<&Diagnostic> {
    l.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

pub fn notes(l: &Loaded) -> Vec<&Diagnostic> {
    l.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .collect()
}

/// The field paths of every error, in order.
pub fn error_fields(l: &Loaded) -> Vec<String> {
    errors(l)
        .iter()
        .map(|d| d.field.clone().unwrap_or_default())
        .collect()
}

/// The single error at `field` (fails if there is not exactly one).
pub fn error_at<'a>(l: &'a Loaded, field: &str) -> &'a Diagnostic {
    let found: Vec<&Diagnostic> = errors(l)
        .into_iter()
        .filter(|d| d.field.as_deref() == Some(field))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one error at {field}, diagnostics: {:#?}",
        l.diagnostics
    );
    found[0]
}

pub fn assert_clean(l: &Loaded) {
    assert!(
        errors(l).is_empty(),
        "unexpected errors: {:#?}",
        l.diagnostics
    );
}

pub fn pod<'a>(l: &'a Loaded, namespace: &str, name: &str) -> &'a Pod {
    l.cluster
        .pod(namespace, name)
        .unwrap_or_else(|| panic!("pod {namespace}/{name} missing: {:#?}", l.cluster.pods))
}

pub fn pod_names(l: &Loaded) -> Vec<String> {
    l.cluster.pods.iter().map(|p| p.key()).collect()
}
