//! Where things live in the datastore (keys relative to the store root, values JSON).
//!
//! - `cluster/<kind>/[<namespace>/]<name>`: the Kubernetes objects the agent needs, as
//!   `furynet_model` types (already validated and defaulted). Written by whatever feeds the
//!   cluster state (today `furynet lab`; the Kubernetes backend maps API objects onto them).
//! - `nodes/<name>`: a node's registration ([`NodeRecord`]), written by its agent at start.
//! - `agents/<name>`: the agent's status ([`AgentStatus`]), attached to a lease so it vanishes
//!   when the agent dies.
//! - `ipam/blocks/...`: IPAM's blocks (see `furynet_ipam::records`); the agent routes them.

use std::net::Ipv4Addr;

use furynet_model::{Cluster, Namespace, NetworkPolicy, Pod, Service};
use serde::{Deserialize, Serialize};

pub const CLUSTER_PREFIX: &str = "cluster/";
pub const NODES_PREFIX: &str = "nodes/";
/// EndpointSlices, as the kubernetes datastore summarises them (not used by the dataplane yet).
pub const ENDPOINT_SLICES_PREFIX: &str = "cluster/endpointslices/";
pub const AGENTS_PREFIX: &str = "agents/";

pub fn namespace_key(name: &str) -> String {
    format!("{CLUSTER_PREFIX}namespaces/{name}")
}

pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{CLUSTER_PREFIX}pods/{namespace}/{name}")
}

pub fn policy_key(namespace: &str, name: &str) -> String {
    format!("{CLUSTER_PREFIX}networkpolicies/{namespace}/{name}")
}

pub fn service_key(namespace: &str, name: &str) -> String {
    format!("{CLUSTER_PREFIX}services/{namespace}/{name}")
}

pub fn node_key(name: &str) -> String {
    format!("{NODES_PREFIX}{name}")
}

pub fn agent_key(node: &str) -> String {
    format!("{AGENTS_PREFIX}{node}")
}

/// One cluster object, tagged by kind (the stored JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    Service(Service),
}

impl Object {
    /// The datastore key of this object.
    pub fn key(&self) -> String {
        match self {
            Object::Namespace(n) => namespace_key(&n.name),
            Object::Pod(p) => pod_key(&p.namespace, &p.name),
            Object::NetworkPolicy(p) => policy_key(&p.namespace, &p.name),
            Object::Service(s) => service_key(&s.namespace, &s.name),
        }
    }

    /// `Kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        match self {
            Object::Namespace(n) => format!("Namespace {}", n.name),
            Object::Pod(p) => format!("Pod {}", p.key()),
            Object::NetworkPolicy(p) => format!("NetworkPolicy {}", p.key()),
            Object::Service(s) => format!("Service {}/{}", s.namespace, s.name),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain data types cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Every object of `cluster`, in a stable order (namespaces, policies, services, pods).
pub fn objects(cluster: &Cluster) -> Vec<Object> {
    let mut out: Vec<Object> = cluster
        .namespaces
        .iter()
        .cloned()
        .map(Object::Namespace)
        .collect();
    out.extend(cluster.policies.iter().cloned().map(Object::NetworkPolicy));
    out.extend(cluster.services.iter().cloned().map(Object::Service));
    out.extend(cluster.pods.iter().cloned().map(Object::Pod));
    out
}

/// A node's registration: what other nodes need to reach its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The underlay address (VXLAN endpoint / next hop for direct routes).
    pub underlay: Ipv4Addr,
}

/// What an agent reports after each programming pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node: String,
    /// Every datastore change up to this revision is programmed (when `in_sync`).
    pub revision: i64,
    /// The kernel matches the desired state computed from `revision`.
    pub in_sync: bool,
    /// Why not in sync (the last error), if so.
    #[serde(default)]
    pub error: Option<String>,
    pub pid: u32,
    /// Local endpoints (pods with an interface on this node) programmed.
    pub endpoints: usize,
    /// NetworkPolicies isolating at least one local endpoint.
    pub policies: usize,
    /// Milliseconds since the Unix epoch of this report.
    pub updated_ms: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_and_round_trip() {
        let pod = Pod {
            namespace: "shop".into(),
            name: "web-0".into(),
            labels: Default::default(),
            ips: vec!["10.244.0.5".parse().unwrap()],
            ports: vec![],
            node_name: Some("node-1".into()),
            host_network: false,
        };
        let o = Object::Pod(pod);
        assert_eq!(o.key(), "cluster/pods/shop/web-0");
        assert_eq!(o.describe(), "Pod shop/web-0");
        let back: Object = serde_json::from_slice(&o.encode()).unwrap();
        assert_eq!(back, o);
        assert_eq!(agent_key("n"), "agents/n");
        assert_eq!(node_key("n"), "nodes/n");
    }
}
