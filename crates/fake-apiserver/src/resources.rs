//! The resource registry: built-in kinds and the ones CRDs register, plus discovery documents.

use serde_json::{json, Value};

use crate::status::ApiError;

/// One servable resource (group + plural), as discovery would describe it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourceDef {
    pub group: String,
    /// Served versions; the first is the storage version.
    pub versions: Vec<String>,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `status` is a subresource (main-resource writes keep the stored status).
    pub status_sub: bool,
    /// Registered by a CRD (custom resources keep kind/apiVersion on list items).
    pub custom: bool,
}

impl ResourceDef {
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status_sub: bool,
    ) -> Self {
        ResourceDef {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_sub,
            custom: false,
        }
    }

    /// Registry key of the stored objects.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}

pub(crate) const CRD_ID: &str = "apiextensions.k8s.io/customresourcedefinitions";
pub(crate) const NS_ID: &str = "/namespaces";

pub(crate) fn builtins() -> Vec<ResourceDef> {
    vec![
        ResourceDef::builtin("", "v1", "pods", "Pod", true, true),
        ResourceDef::builtin("", "v1", "namespaces", "Namespace", false, true),
        ResourceDef::builtin("", "v1", "nodes", "Node", false, true),
        ResourceDef::builtin("", "v1", "services", "Service", true, true),
        ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true, false),
        ResourceDef::builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            false,
        ),
        ResourceDef::builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            false,
        ),
        ResourceDef::builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false),
        ResourceDef::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
        ),
    ]
}

/// Validate a CRD object and build the resource it defines.
pub(crate) fn from_crd(crd: &Value) -> Result<ResourceDef, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let inv = |field: &str, msg: &str| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            field,
            msg,
        )
    };
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    let scope = s("/spec/scope");
    if group.is_empty() {
        return Err(inv("spec.group", "Required value"));
    }
    if plural.is_empty() {
        return Err(inv("spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(inv("spec.names.kind", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(inv(
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match scope.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        _ => {
            return Err(inv(
                "spec.scope",
                "Unsupported value: must be \"Cluster\" or \"Namespaced\"",
            ))
        }
    };
    let mut versions = Vec::new();
    let mut status_sub = false;
    let mut storage_first = None;
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if vname.is_empty() {
            return Err(inv("spec.versions[].name", "Required value"));
        }
        if v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            if v.get("storage").and_then(Value::as_bool).unwrap_or(false) {
                storage_first = Some(vname.clone());
            }
            versions.push(vname);
        }
        if v.pointer("/subresources/status").is_some() {
            status_sub = true;
        }
    }
    if versions.is_empty() {
        return Err(inv(
            "spec.versions",
            "Invalid value: must have at least one served version",
        ));
    }
    if let Some(st) = storage_first {
        versions.retain(|v| v != &st);
        versions.insert(0, st);
    }
    Ok(ResourceDef {
        group,
        versions,
        plural,
        kind,
        namespaced,
        status_sub,
        custom: true,
    })
}

/// The status kube-apiserver gives an accepted CRD.
pub(crate) fn crd_status(crd: &Value, now: &str) -> Value {
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    let mut accepted = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(o) = accepted.as_object_mut() {
        if !o.contains_key("singular") {
            let kind = o
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            o.insert("singular".into(), Value::String(kind));
        }
        if !o.contains_key("listKind") {
            let kind = o
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            o.insert("listKind".into(), Value::String(format!("{kind}List")));
        }
    }
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

/// `APIResourceList` for one group/version.
pub(crate) fn resource_list(defs: &[ResourceDef], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = defs
        .iter()
        .filter(|d| d.group == group && d.serves(version))
        .flat_map(|d| {
            let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
            let mut v = vec![json!({
                "name": d.plural, "singularName": d.kind.to_lowercase(), "namespaced": d.namespaced,
                "kind": d.kind, "verbs": verbs,
            })];
            if d.status_sub {
                v.push(json!({"name": format!("{}/status", d.plural), "singularName": "",
                    "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}));
            }
            v
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        "resources": resources})
}

/// `APIGroupList` for `/apis`.
pub(crate) fn group_list(defs: &[ResourceDef]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for d in defs.iter().filter(|d| !d.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == d.group) {
            Some((_, vs)) => {
                for v in &d.versions {
                    if !vs.contains(v) {
                        vs.push(v.clone());
                    }
                }
            }
            None => groups.push((d.group.clone(), d.versions.clone())),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            let preferred = versions.first().cloned().unwrap_or(Value::Null);
            json!({"name": g, "versions": versions, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
