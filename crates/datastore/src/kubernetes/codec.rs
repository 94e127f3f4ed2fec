//! Kubernetes objects <-> datastore entries (pure; unit-tested without a server).
//!
//! - Our own state is stored in cluster-scoped custom resources of `crd.furynet.io/v1` (see
//!   [`super::crds`]); the spec keeps the original key. The key's lease is the label
//!   [`LEASE_LABEL`]; its create revision (which Kubernetes does not expose) is kept in the
//!   annotation [`CREATE_REVISION_ANNOTATION`] from the first update on (an object never
//!   updated was created at its current resourceVersion).
//! - Core objects become the values the agent reads: Namespaces, Pods, NetworkPolicies and
//!   Services are decoded by `furynet_model` exactly as `furynet analyze` decodes manifests and
//!   stored as its JSON tagged with `kind`; EndpointSlices become a small summary; a Node
//!   becomes the agent's `NodeRecord` (see [`super::core_objects::node_record`]). An object the
//!   model refuses (e.g. a Pod with an invalid port) is treated as absent.

use base64::Engine as _;
use kube::discovery::ApiResource;
use serde_json::{json, Map, Value};

use super::core_objects::node_record;
use super::names::{object_name, Resource};
use super::status::{parse_revision, BACKEND};
use crate::error::{Error, Result};
use crate::types::KeyValue;

/// API group of our custom resources.
pub const GROUP: &str = "crd.furynet.io";
/// Version of our custom resources.
pub const VERSION: &str = "v1";
/// Label holding the id of the lease a key is attached to.
pub const LEASE_LABEL: &str = "furynet.io/lease";
/// Annotation holding a key's create revision once it has been updated.
pub const CREATE_REVISION_ANNOTATION: &str = "furynet.io/create-revision";

/// Group, version, kind and plural of a resource.
fn gvkp(r: Resource) -> (&'static str, &'static str, &'static str, &'static str) {
    match r {
        Resource::Namespaces => ("", "v1", "Namespace", "namespaces"),
        Resource::Pods => ("", "v1", "Pod", "pods"),
        Resource::NetworkPolicies => (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        Resource::Services => ("", "v1", "Service", "services"),
        Resource::EndpointSlices => ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
        Resource::Nodes => ("", "v1", "Node", "nodes"),
        Resource::IpPools => (GROUP, VERSION, "IPPool", "ippools"),
        Resource::IpamBlocks => (GROUP, VERSION, "IPAMBlock", "ipamblocks"),
        Resource::BlockAffinities => (GROUP, VERSION, "BlockAffinity", "blockaffinities"),
        Resource::IpamHandles => (GROUP, VERSION, "IPAMHandle", "ipamhandles"),
        Resource::Entries => (GROUP, VERSION, "DatastoreEntry", "datastoreentries"),
    }
}

/// The kube-rs description of a resource's API.
pub fn api_resource(r: Resource) -> ApiResource {
    let (group, version, kind, plural) = gvkp(r);
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version(r),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn api_version(r: Resource) -> String {
    let (group, version, _, _) = gvkp(r);
    if group.is_empty() {
        version.into()
    } else {
        format!("{group}/{version}")
    }
}

/// `plural.group` (what `kubectl get` and CRD names use).
pub fn resource_name(r: Resource) -> String {
    let (group, _, _, plural) = gvkp(r);
    if group.is_empty() {
        plural.into()
    } else {
        format!("{plural}.{group}")
    }
}

/// Whether objects of the resource live in namespaces.
pub fn namespaced(r: Resource) -> bool {
    matches!(
        r,
        Resource::Pods | Resource::NetworkPolicies | Resource::Services | Resource::EndpointSlices
    )
}

/// Whether the resource is one of our custom resources.
pub fn is_custom(r: Resource) -> bool {
    gvkp(r).0 == GROUP
}

/// The spec storing `value` at `key` in a custom resource of kind `r`.
pub fn spec_for(r: Resource, key: &str, value: &[u8]) -> Result<Value> {
    match r {
        Resource::IpamBlocks | Resource::BlockAffinities | Resource::IpamHandles => {
            let record = json_object(r, key, value)?;
            Ok(json!({ "key": key, "record": record }))
        }
        Resource::IpPools => {
            let mut spec = json_object(r, key, value)?;
            spec.insert("key".into(), Value::String(key.into()));
            let spec = Value::Object(spec);
            // Validate against the CRD's schema (the API server would not, for the fake).
            serde_json::from_value::<super::crds::IPPoolSpec>(spec.clone()).map_err(|e| {
                Error::InvalidArgument {
                    op: "write",
                    reason: format!("IPPool value for key {key:?} is invalid: {e}"),
                }
            })?;
            Ok(spec)
        }
        Resource::Entries => Ok(match std::str::from_utf8(value) {
            Ok(text) => json!({ "key": key, "value": text }),
            Err(_) => json!({
                "key": key,
                "data": base64::engine::general_purpose::STANDARD.encode(value),
            }),
        }),
        _ => Err(super::status::read_only("write", key)),
    }
}

fn json_object(r: Resource, key: &str, value: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::InvalidArgument {
            op: "write",
            reason: format!(
                "key {key:?} is stored as a {} custom resource and needs a JSON object value",
                gvkp(r).2
            ),
        }),
    }
}

/// A new custom resource object storing `key` = `value`.
pub fn new_object(r: Resource, key: &str, value: &[u8], lease: Option<i64>) -> Result<Value> {
    let mut metadata = json!({ "name": object_name(r, key) });
    if let Some(l) = lease {
        metadata["labels"] = json!({ LEASE_LABEL: l.to_string() });
    }
    Ok(json!({
        "apiVersion": api_version(r),
        "kind": gvkp(r).2,
        "metadata": metadata,
        "spec": spec_for(r, key, value)?,
    }))
}

/// `current` (a stored custom resource) changed to hold `value`, with `resourceVersion` set to
/// `expected` (the compare-and-swap precondition) and the create revision recorded.
pub fn updated_object(
    r: Resource,
    current: &Value,
    key: &str,
    value: &[u8],
    expected: i64,
) -> Result<Value> {
    let create = create_revision(current)?;
    let mut obj = current.clone();
    obj["spec"] = spec_for(r, key, value)?;
    let meta = obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| corrupt("update", format!("object for key {key:?} has no metadata")))?;
    meta.insert(
        "resourceVersion".into(),
        Value::String(expected.to_string()),
    );
    meta.remove("managedFields");
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations[CREATE_REVISION_ANNOTATION] = Value::String(create.to_string());
    Ok(obj)
}

fn corrupt(op: &'static str, detail: String) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        op,
        detail,
    }
}

/// The resourceVersion of an object, as a revision.
pub fn revision_of(obj: &Value) -> Result<i64> {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    parse_revision("read", rv)
}

fn create_revision(obj: &Value) -> Result<i64> {
    match obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(CREATE_REVISION_ANNOTATION))
        .and_then(Value::as_str)
    {
        Some(s) => parse_revision("read", s),
        None => revision_of(obj),
    }
}

fn lease_of(obj: &Value) -> Option<i64> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(LEASE_LABEL))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn str_at<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The key an object of `r` stores, if it is well-formed (custom resources name their key in
/// the spec; core objects are keyed by namespace and name).
pub fn key_of(r: Resource, obj: &Value) -> Option<String> {
    let name = str_at(obj, "/metadata/name");
    let prefix = r.prefix();
    if is_custom(r) {
        let key = obj.pointer("/spec/key")?.as_str()?;
        // The key must route back to this resource and name this object.
        return (Resource::of_key(key) == r && object_name(r, key) == name)
            .then(|| key.to_string());
    }
    if name.is_empty() {
        return None;
    }
    let prefix = prefix?;
    match r {
        Resource::Namespaces | Resource::Nodes => Some(format!("{prefix}{name}")),
        _ => {
            let ns = str_at(obj, "/metadata/namespace");
            (!ns.is_empty()).then(|| format!("{prefix}{ns}/{name}"))
        }
    }
}

/// The datastore entry an object of `r` stands for; `None` when it stands for none (a core
/// object the model refuses, a Node without an address, a foreign custom resource).
pub fn decode(r: Resource, obj: &Value) -> Result<Option<KeyValue>> {
    let Some(key) = key_of(r, obj) else {
        return Ok(None);
    };
    let mod_revision = revision_of(obj)?;
    let (value, create_revision, lease) = if is_custom(r) {
        (
            custom_value(r, obj, &key)?,
            create_revision(obj)?,
            lease_of(obj),
        )
    } else {
        match core_value(r, obj) {
            Some(v) => (v, mod_revision, None),
            None => return Ok(None),
        }
    };
    Ok(Some(KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
        lease,
    }))
}

fn custom_value(r: Resource, obj: &Value, key: &str) -> Result<Vec<u8>> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let bad = |what: &str| corrupt("read", format!("{} for key {key:?}: {what}", gvkp(r).2));
    match r {
        Resource::IpPools => {
            let mut m = spec
                .as_object()
                .cloned()
                .ok_or_else(|| bad("spec is not an object"))?;
            m.remove("key");
            Ok(serde_json::to_vec(&m).unwrap_or_default())
        }
        Resource::Entries => {
            if let Some(data) = spec.get("data").and_then(Value::as_str) {
                return base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| bad(&format!("spec.data is not base64: {e}")));
            }
            match spec.get("value") {
                Some(Value::String(s)) => Ok(s.clone().into_bytes()),
                // Written by hand (kubectl) as structured JSON: store its JSON text.
                Some(v) => Ok(serde_json::to_vec(v).unwrap_or_default()),
                None => Ok(Vec::new()),
            }
        }
        _ => match spec.get("record") {
            Some(v @ Value::Object(_)) => Ok(serde_json::to_vec(v).unwrap_or_default()),
            _ => Err(bad("spec.record is not an object")),
        },
    }
}

/// The agent's value for a core object (`None`: the object stands for no entry).
pub fn core_value(r: Resource, obj: &Value) -> Option<Vec<u8>> {
    match r {
        Resource::Nodes => {
            let node = serde_json::from_value(obj.clone()).ok()?;
            node_record(&node).map(|v| serde_json::to_vec(&v).unwrap_or_default())
        }
        Resource::EndpointSlices => Some(endpoint_slice(obj)),
        Resource::Namespaces | Resource::Pods | Resource::NetworkPolicies | Resource::Services => {
            model_value(r, obj)
        }
        _ => None,
    }
}

/// Decode a core object with `furynet_model` (the `analyze` decoder) and tag it with its kind.
fn model_value(r: Resource, obj: &Value) -> Option<Vec<u8>> {
    let mut full = obj.clone();
    // List items and watch objects of built-in kinds may come without apiVersion/kind.
    full["apiVersion"] = Value::String(api_version(r));
    full["kind"] = Value::String(gvkp(r).2.into());
    if let Some(m) = full.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let loaded = furynet_model::load_value("kubernetes-api", &full);
    let name = str_at(obj, "/metadata/name");
    let ns = str_at(obj, "/metadata/namespace");
    let c = &loaded.cluster;
    let (kind, v) = match r {
        Resource::Namespaces => (
            "Namespace",
            serde_json::to_value(c.namespaces.iter().find(|n| n.name == name)?).ok()?,
        ),
        Resource::Pods => (
            "Pod",
            serde_json::to_value(
                c.pods
                    .iter()
                    .find(|p| p.name == name && p.namespace == ns)?,
            )
            .ok()?,
        ),
        Resource::NetworkPolicies => (
            "NetworkPolicy",
            serde_json::to_value(
                c.policies
                    .iter()
                    .find(|p| p.name == name && p.namespace == ns)?,
            )
            .ok()?,
        ),
        Resource::Services => (
            "Service",
            serde_json::to_value(
                c.services
                    .iter()
                    .find(|s| s.name == name && s.namespace == ns)?,
            )
            .ok()?,
        ),
        _ => return None,
    };
    let mut v = v;
    v.as_object_mut()?
        .insert("kind".into(), Value::String(kind.into()));
    serde_json::to_vec(&v).ok()
}

/// The summary of an EndpointSlice the datastore keeps: its service, address type, ready
/// endpoints' addresses and node, and ports.
fn endpoint_slice(obj: &Value) -> Vec<u8> {
    let service = obj
        .pointer("/metadata/labels")
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .cloned()
        .unwrap_or(Value::Null);
    let endpoints: Vec<Value> = obj
        .get("endpoints")
        .and_then(Value::as_array)
        .map(|eps| {
            eps.iter()
                .map(|e| {
                    json!({
                        "addresses": e.get("addresses").cloned().unwrap_or(json!([])),
                        // Unset `ready` means ready (API semantics).
                        "ready": e.pointer("/conditions/ready").and_then(Value::as_bool).unwrap_or(true),
                        "nodeName": e.get("nodeName").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let v = json!({
        "kind": "EndpointSlice",
        "namespace": str_at(obj, "/metadata/namespace"),
        "name": str_at(obj, "/metadata/name"),
        "service": service,
        "addressType": obj.get("addressType").cloned().unwrap_or(Value::Null),
        "endpoints": endpoints,
        "ports": obj.get("ports").cloned().unwrap_or(json!([])),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The compaction revision in a 410 message (`too old resource version: 5 (10)`), if any.
pub fn compacted_at(message: &str) -> Option<i64> {
    let open = message.rfind('(')?;
    let close = message[open..].find(')')? + open;
    message[open + 1..close].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn stored(mut obj: Value, rv: i64) -> Value {
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        obj
    }

    #[test]
    fn entries_round_trip_text_and_binary_and_keep_lease_and_create_revision() {
        for value in [&b"hello"[..], b"", b"{\"b\":1, \"a\":2}", &[0xff, 0, 0x80]] {
            let obj = stored(
                new_object(Resource::Entries, "agents/n1", value, Some(7)).unwrap(),
                10,
            );
            let kv = decode(Resource::Entries, &obj).unwrap().unwrap();
            assert_eq!(kv.key, "agents/n1");
            assert_eq!(kv.value, value, "bytes are kept exactly");
            assert_eq!(
                (kv.create_revision, kv.mod_revision, kv.lease),
                (10, 10, Some(7))
            );
            let upd = updated_object(Resource::Entries, &obj, "agents/n1", b"x", 10).unwrap();
            assert_eq!(upd["metadata"]["resourceVersion"], "10");
            let kv = decode(Resource::Entries, &stored(upd, 12))
                .unwrap()
                .unwrap();
            assert_eq!(
                (kv.create_revision, kv.mod_revision, kv.lease),
                (10, 12, Some(7))
            );
            assert_eq!(kv.value, b"x");
        }
    }

    #[test]
    fn ipam_kinds_need_json_objects() {
        let obj = new_object(
            Resource::IpamBlocks,
            "ipam/blocks/10.0.0.0-26",
            br#"{"cidr":"10.0.0.0/26"}"#,
            None,
        )
        .unwrap();
        assert_eq!(obj["kind"], "IPAMBlock");
        assert_eq!(obj["spec"]["record"]["cidr"], "10.0.0.0/26");
        let kv = decode(Resource::IpamBlocks, &stored(obj, 3))
            .unwrap()
            .unwrap();
        assert_eq!(kv.value, br#"{"cidr":"10.0.0.0/26"}"#);
        let e = new_object(Resource::IpamHandles, "ipam/handles/h", b"nope", None).unwrap_err();
        assert!(e.to_string().contains("ipam/handles/h"), "{e}");
        let e = new_object(
            Resource::IpPools,
            "ipam/pools/p",
            br#"{"cidr":"10.0.0.0/16"}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("blockSize"), "{e}");
        let p = new_object(
            Resource::IpPools,
            "ipam/pools/p",
            br#"{"cidr":"10.0.0.0/16","blockSize":26}"#,
            None,
        )
        .unwrap();
        let kv = decode(Resource::IpPools, &stored(p, 4)).unwrap().unwrap();
        assert_eq!(kv.value, br#"{"blockSize":26,"cidr":"10.0.0.0/16"}"#);
        assert!(new_object(Resource::Pods, "cluster/pods/a/b", b"{}", None).is_err());
    }

    #[test]
    fn foreign_or_mismatched_custom_resources_are_skipped() {
        let mut obj = stored(
            new_object(Resource::Entries, "agents/n1", b"v", None).unwrap(),
            5,
        );
        obj["metadata"]["name"] = json!("someone-else");
        assert!(decode(Resource::Entries, &obj).unwrap().is_none());
        let mut obj = stored(
            new_object(Resource::Entries, "agents/n1", b"v", None).unwrap(),
            5,
        );
        obj["metadata"]["resourceVersion"] = json!("abc");
        assert!(decode(Resource::Entries, &obj).is_err());
    }

    #[test]
    fn core_objects_become_model_values() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}, "resourceVersion": "42"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
            "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}
        });
        let kv = decode(Resource::Pods, &pod).unwrap().unwrap();
        assert_eq!(kv.key, "cluster/pods/shop/web-0");
        assert_eq!(kv.mod_revision, 42);
        let v: Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["ips"], json!(["10.244.1.5"]));
        assert_eq!(v["node_name"], "n1");
        assert_eq!(v["ports"][0]["port"], 8080);

        let np = json!({
            "metadata": {"name": "deny", "namespace": "shop", "resourceVersion": "43"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        });
        let v: Value = serde_json::from_slice(
            &decode(Resource::NetworkPolicies, &np)
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["name"], "deny");

        let ns = json!({"metadata": {"name": "shop", "resourceVersion": "2"}});
        let v: Value =
            serde_json::from_slice(&decode(Resource::Namespaces, &ns).unwrap().unwrap().value)
                .unwrap();
        assert_eq!(v["labels"]["kubernetes.io/metadata.name"], "shop");

        // An object the model refuses stands for no entry.
        let bad = json!({
            "metadata": {"name": "x", "namespace": "shop", "resourceVersion": "44"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}
        });
        assert!(decode(Resource::Pods, &bad).unwrap().is_none());
    }

    #[test]
    fn nodes_and_endpoint_slices() {
        let node = json!({"metadata": {"name": "n1", "resourceVersion": "9"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}});
        let kv = decode(Resource::Nodes, &node).unwrap().unwrap();
        assert_eq!(kv.key, "nodes/n1");
        assert_eq!(kv.value, br#"{"name":"n1","underlay":"192.0.2.1"}"#);
        let es = json!({"metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "11",
            "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}, {"addresses": ["10.0.0.2"]}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        let kv = decode(Resource::EndpointSlices, &es).unwrap().unwrap();
        assert_eq!(kv.key, "cluster/endpointslices/shop/web-abc");
        let v: Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(v["service"], "web");
        assert_eq!(v["endpoints"][0]["ready"], false);
        assert_eq!(v["endpoints"][1]["ready"], true);
    }

    #[test]
    fn compaction_revision_from_message() {
        assert_eq!(compacted_at("too old resource version: 5 (10)"), Some(10));
        assert_eq!(compacted_at("too old resource version"), None);
    }
}
