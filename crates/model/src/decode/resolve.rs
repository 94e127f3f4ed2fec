//! The last step of loading, once every document is read: duplicates (the first wins, as the
//! API server would refuse to create the second), workload expansion unless the input already
//! holds the workload's pods or ReplicaSets, and the implicit namespaces.

use std::collections::{HashMap, HashSet};

use super::{Loaded, Loader, Origin, Owned, Staged, Subject};
use crate::diag::Severity;
use crate::objects::Cluster;
use crate::workload::{expand, Workload, WorkloadKind};

/// `kubectl`'s resource name for an "already exists" message.
fn resource(kind: &str) -> &'static str {
    match kind {
        "Namespace" => "namespaces",
        "Pod" => "pods",
        "Node" => "nodes",
        "Service" => "services",
        "NetworkPolicy" => "networkpolicies.networking.k8s.io",
        "Deployment" => "deployments.apps",
        "ReplicaSet" => "replicasets.apps",
        "StatefulSet" => "statefulsets.apps",
        "DaemonSet" => "daemonsets.apps",
        "Job" => "jobs.batch",
        _ => "objects",
    }
}

/// Keeps the first object of every (kind, namespace, name); reports the others.
fn dedup<T>(
    l: &mut Loader,
    items: Vec<Staged<T>>,
    kind: &str,
    id: impl Fn(&T) -> (String, Option<String>),
) -> Vec<T> {
    let mut first: HashMap<(String, Option<String>), Origin> = HashMap::new();
    let mut out = Vec::new();
    for s in items {
        let (name, namespace) = id(&s.value);
        let key = (name.clone(), namespace.clone());
        if let Some(prev) = first.get(&key) {
            let subject = Subject {
                kind: Some(kind.to_string()),
                namespace,
                name: Some(name.clone()),
            };
            let msg = format!(
                "{} {:?} already exists (first defined in {} document {}{})",
                resource(kind),
                name,
                prev.file,
                prev.document,
                prev.item.map(|i| format!(" item {i}")).unwrap_or_default()
            );
            l.diag(Severity::Error, &s.origin, &subject, None, msg);
            continue;
        }
        first.insert(key, s.origin);
        out.push(s.value);
    }
    out
}

/// Whether the input already holds what `w` would create (so expanding would double count).
fn already_created(w: &Workload, owned: &[Owned]) -> Option<&'static str> {
    let in_ns = owned.iter().filter(|o| o.namespace == w.namespace);
    match w.kind {
        WorkloadKind::Deployment => {
            let prefix = format!("{}-", w.name);
            in_ns.into_iter().find_map(|o| match o.kind {
                "ReplicaSet" if o.owner.kind == "Deployment" && o.owner.name == w.name => {
                    Some("ReplicaSets")
                }
                // A pod of one of its ReplicaSets (`NAME-<pod-template-hash>`), when the
                // ReplicaSet itself is not part of the input.
                "Pod" if o.owner.kind == "ReplicaSet" => {
                    let suffix = o.owner.name.strip_prefix(&prefix)?;
                    let matches = match &o.template_hash {
                        Some(h) => h == suffix,
                        None => !suffix.is_empty() && !suffix.contains('-'),
                    };
                    matches.then_some("pods")
                }
                _ => None,
            })
        }
        kind => in_ns
            .into_iter()
            .any(|o| o.kind == "Pod" && o.owner.kind == kind.as_str() && o.owner.name == w.name)
            .then_some("pods"),
    }
}

pub(crate) fn finish(mut l: Loader) -> Loaded {
    let namespaces = std::mem::take(&mut l.namespaces);
    let namespaces = dedup(&mut l, namespaces, "Namespace", |n| (n.name.clone(), None));
    let pods = std::mem::take(&mut l.pods);
    let pods = dedup(&mut l, pods, "Pod", |p| {
        (p.name.clone(), Some(p.namespace.clone()))
    });
    let nodes = std::mem::take(&mut l.nodes);
    let nodes = dedup(&mut l, nodes, "Node", |n| (n.name.clone(), None));
    let services = std::mem::take(&mut l.services);
    let services = dedup(&mut l, services, "Service", |s| {
        (s.name.clone(), Some(s.namespace.clone()))
    });
    let policies = std::mem::take(&mut l.policies);
    let policies = dedup(&mut l, policies, "NetworkPolicy", |p| {
        (p.name.clone(), Some(p.namespace.clone()))
    });

    // Workloads: dedup per kind, keeping input order.
    let workloads = std::mem::take(&mut l.workloads);
    let mut first: HashMap<(WorkloadKind, String, String), Origin> = HashMap::new();
    let mut kept: Vec<Staged<Workload>> = Vec::new();
    for s in workloads {
        let key = (
            s.value.kind,
            s.value.namespace.clone(),
            s.value.name.clone(),
        );
        if let Some(prev) = first.get(&key) {
            let kind = s.value.kind.as_str();
            let subject = Subject {
                kind: Some(kind.to_string()),
                namespace: Some(s.value.namespace.clone()),
                name: Some(s.value.name.clone()),
            };
            let msg = format!(
                "{} {:?} already exists (first defined in {} document {})",
                resource(kind),
                s.value.name,
                prev.file,
                prev.document
            );
            l.diag(Severity::Error, &s.origin, &subject, None, msg);
            continue;
        }
        first.insert(key, s.origin.clone());
        kept.push(s);
    }

    let mut taken: HashSet<String> = pods.iter().map(|p| p.key()).collect();
    let mut expanded = Vec::new();
    let owned = std::mem::take(&mut l.owned);
    for s in &kept {
        let w = &s.value;
        let subject = Subject {
            kind: Some(w.kind.as_str().to_string()),
            namespace: Some(w.namespace.clone()),
            name: Some(w.name.clone()),
        };
        if let Some(what) = already_created(w, &owned) {
            let msg = format!("not expanded: the input already holds its {what} (ownerReferences)");
            l.diag(Severity::Note, &s.origin, &subject, None, msg);
            continue;
        }
        let e = expand(w, &nodes, &mut taken);
        for note in e.notes {
            l.diag(Severity::Note, &s.origin, &subject, None, note);
        }
        expanded.extend(e.pods);
    }

    let mut cluster = Cluster {
        namespaces,
        pods,
        policies,
        services,
        nodes,
    };
    cluster.pods.extend(expanded);
    cluster.ensure_namespaces();
    Loaded {
        cluster,
        diagnostics: l.diagnostics,
    }
}
