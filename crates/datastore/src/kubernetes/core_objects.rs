//! Core Kubernetes objects as the agent's datastore values.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

/// Annotation on a Node holding the furynet underlay address.
pub const UNDERLAY_ANNOTATION: &str = "furynet.io/underlay";

/// The `nodes/<name>` value of a Node: the agent's `NodeRecord` JSON
/// (`{"name": ..., "underlay": ...}`). The underlay is the `furynet.io/underlay` annotation,
/// or else the first IPv4 InternalIP. `None` (skip the node) when the Node has no name or no
/// usable underlay address.
pub fn node_record(node: &Node) -> Option<serde_json::Value> {
    let name = node.metadata.name.as_deref()?;
    let annotated = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(UNDERLAY_ANNOTATION))
        .and_then(|v| v.parse::<Ipv4Addr>().ok());
    let underlay = annotated.or_else(|| {
        node.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
    })?;
    Some(serde_json::json!({ "name": name, "underlay": underlay.to_string() }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn node(annotation: Option<&str>, addresses: &[(&str, &str)]) -> Node {
        let mut v = serde_json::json!({"metadata": {"name": "n1"}, "status": {"addresses": []}});
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = serde_json::json!({ UNDERLAY_ANNOTATION: a });
        }
        for (t, a) in addresses {
            v["status"]["addresses"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": t, "address": a}));
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn underlay_from_annotation_then_internal_ipv4() {
        let n = node(Some("192.0.2.9"), &[("InternalIP", "10.0.0.1")]);
        assert_eq!(
            node_record(&n).unwrap(),
            serde_json::json!({"name": "n1", "underlay": "192.0.2.9"})
        );
        let n = node(
            None,
            &[
                ("ExternalIP", "203.0.113.1"),
                ("InternalIP", "fd00::1"),
                ("InternalIP", "10.0.0.1"),
            ],
        );
        assert_eq!(node_record(&n).unwrap()["underlay"], "10.0.0.1");
        assert!(node_record(&node(None, &[("InternalIP", "fd00::1")])).is_none());
    }
}
