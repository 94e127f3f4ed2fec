//! Workload expansion: Deployments, ReplicaSets, StatefulSets, DaemonSets and Jobs into the
//! pods Kubernetes would create, named and labelled as its controllers name and label them
//! (see [`naming`] for how hashes and random suffixes are made deterministic).

pub mod naming;

use std::collections::HashSet;

use serde_json::Value;

use crate::decode::core::{decode_pod_spec, PodSpecParts};
use crate::decode::meta::{decode_selector, validate_labels, Meta};
use crate::decode::value::{
    field, opt_bool, opt_i32, opt_obj, opt_str, opt_string_map, Errors, Obj,
};
use crate::labels::{LabelSelector, Labels};
use crate::objects::{Node, Pod};

/// Most pods one workload expands into; more is surely a typo and would only exhaust memory.
pub const MAX_PODS_PER_WORKLOAD: u32 = 10_000;

pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";
pub const STATEFULSET_POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const POD_TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const JOB_COMPLETION_INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

/// The workload kinds furynet expands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
}

impl WorkloadKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "Deployment" => Some(Self::Deployment),
            "ReplicaSet" => Some(Self::ReplicaSet),
            "StatefulSet" => Some(Self::StatefulSet),
            "DaemonSet" => Some(Self::DaemonSet),
            "Job" => Some(Self::Job),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
        }
    }

    /// The (only) apiVersion furynet reads this kind from.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Job => "batch/v1",
            _ => "apps/v1",
        }
    }
}

/// A decoded, validated workload, ready to expand.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// Pods to create (`replicas`, or the Job's parallelism capped by completions); unused for
    /// DaemonSets.
    pub replicas: u32,
    /// A Job with `completionMode: Indexed`.
    pub indexed: bool,
    pub template_labels: Labels,
    pub template: PodSpecParts,
    pub template_hash: String,
}

/// A non-negative `int32` count field with a default.
fn count(spec: &Obj, k: &str, default: i32, errs: &mut Errors) -> (u32, bool) {
    let n = opt_i32(spec, k, "spec", errs);
    let present = n.is_some();
    let n = n.unwrap_or(default);
    if n < 0 {
        errs.invalid(format!("spec.{k}"), n, "must be greater than or equal to 0");
    }
    (u32::try_from(n).unwrap_or(0), present)
}

fn render_labels(l: &Labels) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

/// Decodes and validates a workload's spec: selector (required and non-empty for `apps/v1`,
/// auto-generated for Jobs unless `manualSelector`), selector matching the template labels,
/// counts, and the pod template.
pub(crate) fn decode_workload(
    kind: WorkloadKind,
    obj: &Obj,
    meta: &Meta,
    errs: &mut Errors,
) -> Workload {
    let empty = Obj::new();
    let spec = opt_obj(obj, "spec", "", errs).unwrap_or(&empty);
    let null = Value::Null;
    let template_value = field(spec, "template").unwrap_or(&null);
    let template = opt_obj(spec, "template", "spec", errs).unwrap_or(&empty);
    let tmeta = opt_obj(template, "metadata", "spec.template", errs).unwrap_or(&empty);
    let template_labels =
        opt_string_map(tmeta, "labels", "spec.template.metadata", errs).unwrap_or_default();
    validate_labels(&template_labels, "spec.template.metadata.labels", errs);
    let tspec = opt_obj(template, "spec", "spec.template", errs);
    let parts = decode_pod_spec(tspec, "spec.template.spec", errs);

    let selector = selector(kind, spec, errs);
    if let Some(sel) = selector.filter(|s| !s.is_empty()) {
        if !sel.matches(&template_labels) {
            errs.invalid(
                "spec.template.metadata.labels".to_string(),
                render_labels(&template_labels),
                "`selector` does not match template `labels`",
            );
        }
    }

    let mut indexed = false;
    let replicas = match kind {
        WorkloadKind::Deployment | WorkloadKind::ReplicaSet | WorkloadKind::StatefulSet => {
            count(spec, "replicas", 1, errs).0
        }
        WorkloadKind::DaemonSet => 0,
        WorkloadKind::Job => {
            let (parallelism, _) = count(spec, "parallelism", 1, errs);
            let (completions, has_completions) = count(spec, "completions", 1, errs);
            match opt_str(spec, "completionMode", "spec", errs) {
                None | Some("NonIndexed") => {}
                Some("Indexed") => {
                    indexed = true;
                    if !has_completions {
                        errs.required(
                            "spec.completions".to_string(),
                            "when completion mode is Indexed",
                        );
                    }
                }
                Some(other) => errs.not_supported(
                    "spec.completionMode".to_string(),
                    other,
                    &["NonIndexed", "Indexed"],
                ),
            }
            if has_completions {
                parallelism.min(completions)
            } else {
                parallelism
            }
        }
    };

    Workload {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().filter(|u| !u.is_empty()),
        replicas,
        indexed,
        template_labels,
        template: parts,
        template_hash: naming::template_hash(template_value),
    }
}

/// The workload's selector, validated; `None` when there is none to check against.
fn selector(kind: WorkloadKind, spec: &Obj, errs: &mut Errors) -> Option<LabelSelector> {
    let raw = field(spec, "selector");
    if kind == WorkloadKind::Job {
        // The API server generates the selector (on controller-uid) unless manualSelector.
        let manual = opt_bool(spec, "manualSelector", "spec", errs).unwrap_or(false);
        return match (raw, manual) {
            (None, _) => None,
            (Some(v), true) => Some(decode_selector(v, "spec.selector", errs)),
            (Some(v), false) => {
                errs.invalid(
                    "spec.selector".to_string(),
                    serde_json::to_string(v).unwrap_or_default(),
                    "`selector` not auto-generated",
                );
                None
            }
        };
    }
    let Some(v) = raw else {
        errs.required("spec.selector".to_string(), "");
        return None;
    };
    let sel = decode_selector(v, "spec.selector", errs);
    if sel.is_empty() {
        errs.invalid(
            "spec.selector".to_string(),
            serde_json::to_string(v).unwrap_or_default(),
            &format!(
                "empty selector is invalid for {}",
                kind.as_str().to_lowercase()
            ),
        );
    }
    Some(sel)
}

/// The result of expanding one workload.
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    pub pods: Vec<Pod>,
    /// Notes to report (caps, name collisions).
    pub notes: Vec<String>,
}

/// Expands `w` into pods. `nodes` are the Node objects of the input (DaemonSets get one pod per
/// node matching their `nodeSelector`, or a single pod without a node when there are none);
/// `taken` holds `namespace/name` of every pod that exists already and is updated.
pub(crate) fn expand(w: &Workload, nodes: &[Node], taken: &mut HashSet<String>) -> Expansion {
    let mut out = Expansion::default();
    let key = format!("{}/{}/{}", w.kind.as_str(), w.namespace, w.name);
    let mut targets: Vec<Option<&Node>> = match w.kind {
        WorkloadKind::DaemonSet if nodes.is_empty() => vec![None],
        WorkloadKind::DaemonSet => nodes
            .iter()
            .filter(|n| {
                w.template
                    .node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
            })
            .map(Some)
            .collect(),
        _ => (0..w.replicas.min(MAX_PODS_PER_WORKLOAD))
            .map(|_| None)
            .collect(),
    };
    let wanted = match w.kind {
        WorkloadKind::DaemonSet => u32::try_from(targets.len()).unwrap_or(u32::MAX),
        _ => w.replicas,
    };
    if wanted > MAX_PODS_PER_WORKLOAD {
        targets.truncate(MAX_PODS_PER_WORKLOAD as usize);
        out.notes.push(format!(
            "{wanted} pods requested; only the first {MAX_PODS_PER_WORKLOAD} are modelled"
        ));
    }
    let uid = w.uid.clone().unwrap_or_else(|| naming::fake_uid(&key));

    for (i, node) in targets.into_iter().enumerate() {
        let mut labels = w.template_labels.clone();
        let prefix = match w.kind {
            WorkloadKind::Deployment => {
                labels.insert(POD_TEMPLATE_HASH_LABEL.into(), w.template_hash.clone());
                format!("{}-{}-", w.name, w.template_hash)
            }
            WorkloadKind::ReplicaSet | WorkloadKind::DaemonSet => format!("{}-", w.name),
            WorkloadKind::StatefulSet => String::new(),
            WorkloadKind::Job if w.indexed => format!("{}-{i}-", w.name),
            WorkloadKind::Job => format!("{}-", w.name),
        };
        match w.kind {
            WorkloadKind::StatefulSet => {
                labels.insert(
                    CONTROLLER_REVISION_HASH_LABEL.into(),
                    format!("{}-{}", w.name, w.template_hash),
                );
                labels.insert(STATEFULSET_POD_NAME_LABEL.into(), format!("{}-{i}", w.name));
                labels.insert(POD_INDEX_LABEL.into(), i.to_string());
            }
            WorkloadKind::DaemonSet => {
                labels.insert(
                    CONTROLLER_REVISION_HASH_LABEL.into(),
                    w.template_hash.clone(),
                );
                labels.insert(POD_TEMPLATE_GENERATION_LABEL.into(), "1".into());
            }
            WorkloadKind::Job => {
                for k in [CONTROLLER_UID_LABEL, LEGACY_CONTROLLER_UID_LABEL] {
                    labels.insert(k.into(), uid.clone());
                }
                for k in [JOB_NAME_LABEL, LEGACY_JOB_NAME_LABEL] {
                    labels.insert(k.into(), w.name.clone());
                }
                if w.indexed {
                    labels.insert(JOB_COMPLETION_INDEX_LABEL.into(), i.to_string());
                }
            }
            WorkloadKind::Deployment | WorkloadKind::ReplicaSet => {}
        }
        let name = if w.kind == WorkloadKind::StatefulSet {
            let n = format!("{}-{i}", w.name);
            (!taken.contains(&format!("{}/{n}", w.namespace))).then_some(n)
        } else {
            free_generated_name(&prefix, &format!("{key}/{i}"), &w.namespace, taken)
        };
        let Some(name) = name else {
            out.notes.push(format!(
                "pod {} of {} not modelled: its name is taken by another pod",
                i,
                w.kind.as_str()
            ));
            continue;
        };
        taken.insert(format!("{}/{name}", w.namespace));
        out.pods.push(Pod {
            namespace: w.namespace.clone(),
            name,
            labels,
            ips: Vec::new(),
            ports: w.template.ports.clone(),
            node_name: node
                .map(|n| n.name.clone())
                .or_else(|| w.template.node_name.clone()),
            host_network: w.template.host_network,
        });
    }
    out
}

/// A generated name not used by another pod of the namespace (the API server retries
/// `generateName` on conflicts, too).
fn free_generated_name(
    prefix: &str,
    seed: &str,
    namespace: &str,
    taken: &HashSet<String>,
) -> Option<String> {
    (0..64).find_map(|attempt| {
        let seed = if attempt == 0 {
            seed.to_string()
        } else {
            format!("{seed}/{attempt}")
        };
        let name = naming::generate_name(prefix, &seed);
        (!taken.contains(&format!("{namespace}/{name}"))).then_some(name)
    })
}
