//! The Kubernetes objects furynet reasons about, in the shape the policy engine needs
//! (already validated and defaulted: an object of these types is semantically valid).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::labels::{LabelSelector, Labels, NAMESPACE_NAME_LABEL};
use crate::net::{IpBlock, PortSpec, Protocol};

/// A namespace. `labels` always holds `kubernetes.io/metadata.name: <name>`, as the API server
/// guarantees (it overwrites any user value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    /// Builds a namespace, setting the automatic `kubernetes.io/metadata.name` label.
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Self { name, labels }
    }
}

/// One declared container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod (from a Pod object, or expanded from a workload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `status.podIPs` (or `status.podIP`); empty when the pod has no address yet.
    pub ips: Vec<IpAddr>,
    /// Every container's declared ports, in declaration order.
    pub ports: Vec<ContainerPort>,
    pub node_name: Option<String>,
    pub host_network: bool,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Resolves a named port on this pod for `protocol` (the first container port with that
    /// name and protocol, as kube-proxy and CNI plugins resolve it).
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }

    /// Distinct `(port, protocol)` pairs this pod declares, sorted.
    pub fn declared_ports(&self) -> Vec<(u16, Protocol)> {
        let mut v: Vec<(u16, Protocol)> = self.ports.iter().map(|p| (p.port, p.protocol)).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Direction of traffic relative to the selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "Ingress",
            Self::Egress => "Egress",
        }
    }
}

/// Effective `policyTypes` after the API server's defaulting: when the field is absent, Ingress is
/// always included and Egress only when the policy has at least one egress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PolicyTypes {
    pub ingress: bool,
    pub egress: bool,
}

impl PolicyTypes {
    pub fn includes(self, d: Direction) -> bool {
        match d {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

/// A peer of a rule (`from` / `to` entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector` (at least one is `Some`). With only
    /// `podSelector`, pods of the policy's own namespace; with only `namespaceSelector`, all
    /// pods of the matching namespaces; with both, matching pods in matching namespaces.
    Selector {
        pod_selector: Option<LabelSelector>,
        namespace_selector: Option<LabelSelector>,
    },
    IpBlock(IpBlock),
}

/// A `NetworkPolicyPort`. `protocol` is defaulted to TCP. `port: None` means every port of
/// the protocol. `end_port` is only set with a numeric `port` (validation enforces this).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyPort {
    pub protocol: Protocol,
    pub port: Option<PortSpec>,
    pub end_port: Option<u16>,
}

/// An ingress or egress rule. Empty `peers` matches every peer (missing and empty `from`/`to`
/// mean the same); empty `ports` matches every port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyRule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PolicyPort>,
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    pub ingress: Vec<PolicyRule>,
    pub egress: Vec<PolicyRule>,
    pub policy_types: PolicyTypes,
}

impl NetworkPolicy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn rules(&self, d: Direction) -> &[PolicyRule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: Option<PortSpec>,
}

/// A Service (kept for later issues: load balancing and flow names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.selector`; `None` for services without a selector.
    pub selector: Option<Labels>,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

/// A Node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
}

/// Everything decoded from the input, ready for the policy engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub policies: Vec<NetworkPolicy>,
    pub services: Vec<Service>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// Adds a namespace (with only its automatic label) for every namespace that pods or
    /// policies live in but that the input did not define, as a real cluster always has them.
    pub fn ensure_namespaces(&mut self) {
        let mut missing: Vec<String> = Vec::new();
        let names = self
            .pods
            .iter()
            .map(|p| &p.namespace)
            .chain(self.policies.iter().map(|p| &p.namespace))
            .chain(self.services.iter().map(|s| &s.namespace));
        for n in names {
            if self.namespace(n).is_none() && !missing.contains(n) {
                missing.push(n.clone());
            }
        }
        for n in missing {
            self.namespaces.push(Namespace::new(n, Labels::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_gets_automatic_label_even_if_user_set_it() {
        let mut l = Labels::new();
        l.insert(NAMESPACE_NAME_LABEL.into(), "spoofed".into());
        let ns = Namespace::new("x", l);
        assert_eq!(
            ns.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn named_port_needs_matching_protocol() {
        let pod = Pod {
            namespace: "x".into(),
            name: "a".into(),
            labels: Labels::new(),
            ips: vec![],
            ports: vec![
                ContainerPort {
                    name: Some("dns".into()),
                    port: 53,
                    protocol: Protocol::Udp,
                },
                ContainerPort {
                    name: Some("dns-tcp".into()),
                    port: 53,
                    protocol: Protocol::Tcp,
                },
            ],
            node_name: None,
            host_network: false,
        };
        assert_eq!(pod.named_port("dns", Protocol::Udp), Some(53));
        assert_eq!(pod.named_port("dns", Protocol::Tcp), None);
        assert_eq!(
            pod.declared_ports(),
            vec![(53, Protocol::Tcp), (53, Protocol::Udp)]
        );
    }

    #[test]
    fn ensure_namespaces_adds_missing_once() {
        let mut c = Cluster::default();
        for name in ["a", "b"] {
            c.pods.push(Pod {
                namespace: "x".into(),
                name: name.into(),
                labels: Labels::new(),
                ips: vec![],
                ports: vec![],
                node_name: None,
                host_network: false,
            });
        }
        c.ensure_namespaces();
        assert_eq!(c.namespaces.len(), 1);
        assert_eq!(
            c.namespaces[0]
                .labels
                .get(NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some("x")
        );
    }
}
