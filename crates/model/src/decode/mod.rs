//! Decoding Kubernetes YAML/JSON into the model (multi-document files, `List` objects,
//! directories). Unknown kinds are skipped with a note; invalid objects are reported with their
//! location and field path and left out, so the rest of the input is still usable.
//!
//! Everything is read first and resolved at the end (duplicates, workload expansion and its
//! de-duplication against real pods), so the order of documents does not matter beyond "the
//! first of two duplicates wins".

pub(crate) mod core;
pub(crate) mod meta;
mod policy;
mod resolve;
mod source;
pub(crate) mod value;

use std::path::Path;

use serde_json::Value;

use crate::diag::{Diagnostic, Severity};
use crate::objects::{Cluster, Namespace, NetworkPolicy, Node, Pod, Service};
use crate::workload::{decode_workload, Workload, WorkloadKind};
use meta::{decode_meta, NameRule, OwnerRef};
use value::{as_obj, field, Errors};

/// The result of loading input: every valid object, plus every diagnostic.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub cluster: Cluster,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The error diagnostics only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

/// Loads files and directories (recursively: `*.yaml`, `*.yml`, `*.json`). `-` reads stdin.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Loaded {
    let mut loader = Loader::default();
    for input in source::read_inputs(paths) {
        match input {
            source::Input::Text { file, text } => loader.add_text(&file, &text),
            source::Input::Unreadable { file, message } => {
                let origin = Origin {
                    file,
                    document: 0,
                    item: None,
                };
                loader.diag(Severity::Error, &origin, &Subject::default(), None, message);
            }
        }
    }
    loader.finish()
}

/// Loads one file's content; `file` names it in diagnostics.
pub fn load_str(file: &str, text: &str) -> Loaded {
    let mut loader = Loader::default();
    loader.add_text(file, text);
    loader.finish()
}

/// Loads one already-parsed object (or `List`), e.g. from the Kubernetes API; `file` names it
/// in diagnostics. The same decoding as [`load_str`] without a text round trip.
pub fn load_value(file: &str, value: &Value) -> Loaded {
    let mut loader = Loader::default();
    let origin = Origin {
        file: file.to_string(),
        document: 0,
        item: None,
    };
    loader.add_document(&origin, value);
    loader.finish()
}

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub file: String,
    pub document: usize,
    pub item: Option<usize>,
}

/// What an object is, as far as known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subject {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// An accepted object with its origin.
#[derive(Debug, Clone)]
pub(crate) struct Staged<T> {
    pub origin: Origin,
    pub value: T,
}

/// An ownership link read from `metadata.ownerReferences` of a Pod or ReplicaSet.
#[derive(Debug, Clone)]
pub(crate) struct Owned {
    /// `Pod` or `ReplicaSet`.
    pub kind: &'static str,
    pub namespace: String,
    pub owner: OwnerRef,
    /// The `pod-template-hash` label of a pod (ties a pod to its Deployment when the
    /// ReplicaSet in between is not in the input).
    pub template_hash: Option<String>,
}

/// Everything read so far, before resolution.
#[derive(Debug, Default)]
pub(crate) struct Loader {
    pub diagnostics: Vec<Diagnostic>,
    pub namespaces: Vec<Staged<Namespace>>,
    pub pods: Vec<Staged<Pod>>,
    pub policies: Vec<Staged<NetworkPolicy>>,
    pub services: Vec<Staged<Service>>,
    pub nodes: Vec<Staged<Node>>,
    pub workloads: Vec<Staged<Workload>>,
    pub owned: Vec<Owned>,
}

/// The kinds decoded directly (workloads are handled by [`WorkloadKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoreKind {
    Namespace,
    Pod,
    Node,
    Service,
    NetworkPolicy,
}

impl CoreKind {
    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "Namespace" => Some(Self::Namespace),
            "Pod" => Some(Self::Pod),
            "Node" => Some(Self::Node),
            "Service" => Some(Self::Service),
            "NetworkPolicy" => Some(Self::NetworkPolicy),
            _ => None,
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Self::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }
}

impl Loader {
    pub(crate) fn diag(
        &mut self,
        severity: Severity,
        origin: &Origin,
        subject: &Subject,
        field: Option<String>,
        message: String,
    ) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: origin.file.clone(),
            document: origin.document,
            item: origin.item,
            kind: subject.kind.clone(),
            namespace: subject.namespace.clone(),
            name: subject.name.clone(),
            field,
            message,
        });
    }

    /// Parses one file's text and decodes every document in it.
    pub(crate) fn add_text(&mut self, file: &str, text: &str) {
        for (document, parsed) in source::parse_documents(file, text) {
            let origin = Origin {
                file: file.to_string(),
                document,
                item: None,
            };
            match parsed {
                Ok(v) => self.add_document(&origin, &v),
                Err(message) => {
                    self.diag(Severity::Error, &origin, &Subject::default(), None, message)
                }
            }
        }
    }

    /// One document: nothing (empty), a `List`, or an object.
    fn add_document(&mut self, origin: &Origin, v: &Value) {
        if v.is_null() {
            return;
        }
        let kind = match v {
            Value::Object(m) => field(m, "kind").and_then(Value::as_str),
            _ => None,
        };
        let Some(kind) = kind.filter(|k| k.ends_with("List")) else {
            self.add_object(origin, v);
            return;
        };
        let mut errs = Errors::default();
        let items = match v {
            Value::Object(m) => value::opt_arr(m, "items", "", &mut errs),
            _ => &[],
        };
        let subject = Subject {
            kind: Some(kind.to_string()),
            ..Subject::default()
        };
        self.report(origin, &subject, errs);
        // Typed lists as the API server returns them (`PodList`, ...) omit `kind` and
        // `apiVersion` on their items: take them from the list.
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        let list_version = match v {
            Value::Object(m) => field(m, "apiVersion").cloned(),
            _ => None,
        };
        for (i, item) in items.iter().enumerate() {
            let origin = Origin {
                item: Some(i),
                ..origin.clone()
            };
            match (item, item_kind) {
                (Value::Null, _) => {}
                (Value::Object(m), Some(k)) if !m.contains_key("kind") => {
                    let mut filled = m.clone();
                    filled.insert("kind".into(), Value::String(k.to_string()));
                    if let Some(av) = list_version
                        .clone()
                        .filter(|_| !m.contains_key("apiVersion"))
                    {
                        filled.insert("apiVersion".into(), av);
                    }
                    self.add_object(&origin, &Value::Object(filled));
                }
                _ => self.add_object(&origin, item),
            }
        }
    }

    /// Reports every field error as an Error diagnostic; true when there were none.
    fn report(&mut self, origin: &Origin, subject: &Subject, errs: Errors) -> bool {
        let ok = errs.is_empty();
        for e in errs.list {
            self.diag(Severity::Error, origin, subject, Some(e.field), e.message);
        }
        ok
    }

    fn note(&mut self, origin: &Origin, subject: &Subject, message: String) {
        self.diag(Severity::Note, origin, subject, None, message);
    }

    /// One object: checks kind and apiVersion, decodes, validates, stages.
    fn add_object(&mut self, origin: &Origin, v: &Value) {
        let mut errs = Errors::default();
        let Some(obj) = as_obj(v, "", &mut errs) else {
            let msg = format!(
                "expected a Kubernetes object (a mapping with `kind`), got {}",
                value::describe(v)
            );
            self.diag(Severity::Error, origin, &Subject::default(), None, msg);
            return;
        };
        let kind = value::opt_str(obj, "kind", "", &mut errs).filter(|k| !k.is_empty());
        let api_version = value::opt_str(obj, "apiVersion", "", &mut errs);
        let mut subject = Subject {
            kind: kind.map(str::to_string),
            ..Subject::default()
        };
        // Best-effort name for notes and errors before full decoding.
        if let Some(md) = field(obj, "metadata").and_then(Value::as_object) {
            subject.name = field(md, "name")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        let Some(kind) = kind else {
            if errs.is_empty() {
                errs.required("kind".to_string(), "Object 'Kind' is missing");
            }
            self.report(origin, &subject, errs);
            return;
        };
        if !errs.is_empty() {
            self.report(origin, &subject, errs);
            return;
        }
        if kind.ends_with("List") {
            self.note(origin, &subject, format!("skipped nested {kind}"));
            return;
        }
        let core = CoreKind::parse(kind);
        let workload = WorkloadKind::parse(kind);
        let expected = match (core, workload) {
            (Some(c), _) => c.api_version(),
            (None, Some(w)) => w.api_version(),
            (None, None) => {
                self.note(origin, &subject, format!("skipped unknown kind {kind}"));
                return;
            }
        };
        if let Some(av) = api_version.filter(|av| *av != expected) {
            self.note(
                origin,
                &subject,
                format!(
                    "skipped {kind} with apiVersion {av}: furynet reads {kind} from {expected}"
                ),
            );
            return;
        }

        let namespaced = !matches!(core, Some(CoreKind::Namespace | CoreKind::Node));
        let rule = match core {
            Some(CoreKind::Namespace) => NameRule::Dns1123Label,
            Some(CoreKind::Service) => NameRule::Dns1035Label,
            _ => NameRule::Dns1123Subdomain,
        };
        let seed = format!("{}/{}/{:?}", origin.file, origin.document, origin.item);
        let meta = decode_meta(obj, namespaced, rule, &seed, &mut errs);
        subject.name = meta.name.clone().or(subject.name);
        subject.namespace = meta.namespace.clone();

        match (core, workload) {
            (Some(CoreKind::Namespace), _) => {
                let ns = Namespace::new(meta.name.clone().unwrap_or_default(), meta.labels.clone());
                if self.report(origin, &subject, errs) {
                    self.namespaces.push(staged(origin, ns));
                }
            }
            (Some(CoreKind::Pod), _) => {
                let (pod, phase) = core::decode_pod(obj, &meta, &mut errs);
                if let Some(phase @ ("Succeeded" | "Failed")) = phase.as_deref() {
                    self.record_owners("Pod", &meta, &pod.labels);
                    self.note(
                        origin,
                        &subject,
                        format!("skipped: pod phase is {phase}, so it has no network"),
                    );
                    return;
                }
                if self.report(origin, &subject, errs) {
                    self.record_owners("Pod", &meta, &pod.labels);
                    self.pods.push(staged(origin, pod));
                }
            }
            (Some(CoreKind::Node), _) => {
                let node = core::decode_node(obj, &meta, &mut errs);
                if self.report(origin, &subject, errs) {
                    self.nodes.push(staged(origin, node));
                }
            }
            (Some(CoreKind::Service), _) => {
                let svc = core::decode_service(obj, &meta, &mut errs);
                if self.report(origin, &subject, errs) {
                    self.services.push(staged(origin, svc));
                }
            }
            (Some(CoreKind::NetworkPolicy), _) => {
                let np = policy::decode_network_policy(obj, &meta, &mut errs);
                if self.report(origin, &subject, errs) {
                    self.policies.push(staged(origin, np));
                }
            }
            (None, Some(kind)) => {
                let w = decode_workload(kind, obj, &meta, &mut errs);
                if self.report(origin, &subject, errs) {
                    if kind == WorkloadKind::ReplicaSet {
                        self.record_owners("ReplicaSet", &meta, &w.template_labels);
                    }
                    self.workloads.push(staged(origin, w));
                }
            }
            (None, None) => {}
        }
    }

    fn record_owners(&mut self, kind: &'static str, meta: &meta::Meta, labels: &crate::Labels) {
        for owner in &meta.owners {
            self.owned.push(Owned {
                kind,
                namespace: meta.namespace.clone().unwrap_or_default(),
                owner: owner.clone(),
                template_hash: labels
                    .get(crate::workload::POD_TEMPLATE_HASH_LABEL)
                    .cloned(),
            });
        }
    }

    /// Resolves duplicates and workloads and builds the cluster.
    pub(crate) fn finish(self) -> Loaded {
        resolve::finish(self)
    }
}

fn staged<T>(origin: &Origin, value: T) -> Staged<T> {
    Staged {
        origin: origin.clone(),
        value,
    }
}
