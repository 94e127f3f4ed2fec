//! Diagnostics: what was wrong (or skipped) in the input, and exactly where.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object was rejected (as the API server would reject it) and left out.
    Error,
    /// Informational: e.g. an unknown kind that was skipped.
    Note,
}

/// One problem in the input, located by file, document, object and field path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// File path as given (or `<stdin>`).
    pub file: String,
    /// 0-based index of the YAML document in the file (JSON files: 0).
    pub document: usize,
    /// For objects inside a `List`, the 0-based item index.
    pub item: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Field path in the API server's notation, e.g. `spec.ingress[0].ports[1].endPort`.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Note => "note",
        };
        write!(f, "{sev}: {} document {}", self.file, self.document)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, ": {kind}")?;
            match (&self.namespace, &self.name) {
                (Some(ns), Some(n)) => write!(f, " {ns}/{n}")?,
                (None, Some(n)) => write!(f, " {n}")?,
                _ => {}
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
