//! Builders for hand-written clusters, and [`World`]: a cluster compiled once, whose every
//! verdict is checked against the reference implementation and the matrix.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use furynet_model::{
    Cluster, ContainerPort, Direction, IpBlock, LabelSelector, Labels, Namespace, NetworkPolicy,
    Operator, Peer, Pod, PolicyPort, PolicyRule, PolicyTypes, PortSpec, Protocol, Requirement,
};
use furynet_policy::{reference, Engine, PodId};

pub use furynet_model::Protocol::{Sctp as SCTP, Tcp as TCP, Udp as UDP};

// ---------------------------------------------------------------------------------------------
// Labels and selectors

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `matchLabels` only.
pub fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

/// The empty selector (`{}`): matches everything.
pub fn all() -> LabelSelector {
    LabelSelector::everything()
}

pub fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.to_string(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

/// `matchExpressions` only.
pub fn exprs(reqs: Vec<Requirement>) -> LabelSelector {
    LabelSelector {
        match_labels: Labels::new(),
        match_expressions: reqs,
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces and pods

pub fn ns(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    Namespace::new(name, labels(pairs))
}

/// A pod with labels and nothing else (no IPs, no ports, not host-network).
pub fn pod(namespace: &str, name: &str, pairs: &[(&str, &str)]) -> Pod {
    Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels: labels(pairs),
        ips: Vec::new(),
        ports: Vec::new(),
        node_name: None,
        host_network: false,
    }
}

pub trait PodExt: Sized {
    fn ip(self, ip: &str) -> Self;
    fn port(self, port: u16, protocol: Protocol) -> Self;
    fn named(self, name: &str, port: u16, protocol: Protocol) -> Self;
    fn host_network(self) -> Self;
}

impl PodExt for Pod {
    fn ip(mut self, ip: &str) -> Self {
        self.ips.push(ip.parse::<IpAddr>().unwrap());
        self
    }
    fn port(mut self, port: u16, protocol: Protocol) -> Self {
        self.ports.push(ContainerPort {
            name: None,
            port,
            protocol,
        });
        self
    }
    fn named(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
        self.ports.push(ContainerPort {
            name: Some(name.to_string()),
            port,
            protocol,
        });
        self
    }
    fn host_network(mut self) -> Self {
        self.host_network = true;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Policies, rules, peers, ports

/// A policy with no rules and no policy types yet (add them with [`PolicyExt`]).
pub fn policy(namespace: &str, name: &str, pod_selector: LabelSelector) -> NetworkPolicy {
    NetworkPolicy {
        namespace: namespace.to_string(),
        name: name.to_string(),
        pod_selector,
        ingress: Vec::new(),
        egress: Vec::new(),
        policy_types: PolicyTypes::default(),
    }
}

pub trait PolicyExt: Sized {
    /// Adds `Ingress` to the policy types and appends the rules (none: deny all ingress).
    fn ingress(self, rules: Vec<PolicyRule>) -> Self;
    /// Adds `Egress` to the policy types and appends the rules (none: deny all egress).
    fn egress(self, rules: Vec<PolicyRule>) -> Self;
    /// Sets the effective policy types explicitly.
    fn types(self, ingress: bool, egress: bool) -> Self;
}

impl PolicyExt for NetworkPolicy {
    fn ingress(mut self, rules: Vec<PolicyRule>) -> Self {
        self.policy_types.ingress = true;
        self.ingress.extend(rules);
        self
    }
    fn egress(mut self, rules: Vec<PolicyRule>) -> Self {
        self.policy_types.egress = true;
        self.egress.extend(rules);
        self
    }
    fn types(mut self, ingress: bool, egress: bool) -> Self {
        self.policy_types = PolicyTypes { ingress, egress };
        self
    }
}

pub fn rule(peers: Vec<Peer>, ports: Vec<PolicyPort>) -> PolicyRule {
    PolicyRule { peers, ports }
}

/// The rule `{}`: any peer, any port.
pub fn any_rule() -> PolicyRule {
    PolicyRule::default()
}

/// `- podSelector: ...` (pods of the policy's namespace).
pub fn pods(selector: LabelSelector) -> Peer {
    Peer::Selector {
        pod_selector: Some(selector),
        namespace_selector: None,
    }
}

/// `- namespaceSelector: ...` (all pods of the matching namespaces).
pub fn namespaces(selector: LabelSelector) -> Peer {
    Peer::Selector {
        pod_selector: None,
        namespace_selector: Some(selector),
    }
}

/// `- namespaceSelector: ...\n  podSelector: ...` (one peer: both must match).
pub fn pods_in(namespace_selector: LabelSelector, pod_selector: LabelSelector) -> Peer {
    Peer::Selector {
        pod_selector: Some(pod_selector),
        namespace_selector: Some(namespace_selector),
    }
}

pub fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::IpBlock(IpBlock {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    })
}

pub fn num(port: u16, protocol: Protocol) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortSpec::Number(port)),
        end_port: None,
    }
}

pub fn range(port: u16, end_port: u16, protocol: Protocol) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortSpec::Number(port)),
        end_port: Some(end_port),
    }
}

pub fn name(port: &str, protocol: Protocol) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortSpec::Name(port.to_string())),
        end_port: None,
    }
}

/// `- protocol: X` without a port: every port of the protocol.
pub fn proto(protocol: Protocol) -> PolicyPort {
    PolicyPort {
        protocol,
        port: None,
        end_port: None,
    }
}

pub fn cluster(
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<NetworkPolicy>,
) -> Cluster {
    Cluster {
        namespaces,
        pods,
        policies,
        ..Cluster::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Checking

/// Ports every pair is checked on in [`World::new`], besides each destination's declared ports.
pub const PROBE_PORTS: [(u16, Protocol); 6] = [
    (80, TCP),
    (81, TCP),
    (80, UDP),
    (53, UDP),
    (80, SCTP),
    (9999, SCTP),
];

/// A cluster compiled once. Construction checks, for every ordered pair of pods, that the
/// engine and the reference agree on every declared and probe port, and that every matrix cell
/// equals `Engine::allowed`.
pub struct World {
    pub cluster: Cluster,
    pub engine: Engine,
}

impl World {
    pub fn new(cluster: Cluster) -> Self {
        let engine = Engine::new(&cluster);
        let world = World { cluster, engine };
        world.check_all();
        world
    }

    pub fn id(&self, key: &str) -> PodId {
        let (ns, name) = key.split_once('/').expect("pod key is ns/name");
        self.engine
            .find(ns, name)
            .unwrap_or_else(|| panic!("engine has no pod {key}"))
    }

    pub fn pod(&self, key: &str) -> &Pod {
        let (ns, name) = key.split_once('/').expect("pod key is ns/name");
        self.cluster
            .pod(ns, name)
            .unwrap_or_else(|| panic!("cluster has no pod {key}"))
    }

    /// The verdict for `src -> dst`, after asserting that engine and reference agree.
    pub fn verdict(&self, src: &str, dst: &str, port: u16, protocol: Protocol) -> bool {
        let engine = self
            .engine
            .allowed(self.id(src), self.id(dst), port, protocol);
        let reference =
            reference::allowed(&self.cluster, self.pod(src), self.pod(dst), port, protocol);
        assert_eq!(
            engine, reference,
            "engine says {engine}, reference says {reference} for {src} -> {dst} on {port}/{protocol}"
        );
        engine
    }

    #[track_caller]
    pub fn allow(&self, src: &str, dst: &str, port: u16, protocol: Protocol) {
        assert!(
            self.verdict(src, dst, port, protocol),
            "expected {src} -> {dst} on {port}/{protocol} to be allowed"
        );
    }

    #[track_caller]
    pub fn deny(&self, src: &str, dst: &str, port: u16, protocol: Protocol) {
        assert!(
            !self.verdict(src, dst, port, protocol),
            "expected {src} -> {dst} on {port}/{protocol} to be denied"
        );
    }

    fn check_all(&self) {
        let pods = self.engine.pods();
        for (id, pod) in pods.iter().enumerate() {
            for direction in [Direction::Ingress, Direction::Egress] {
                assert_eq!(
                    !self.engine.isolating_policies(id, direction).is_empty(),
                    reference::is_isolated(&self.cluster, pod, direction),
                    "isolation of {} for {direction:?}",
                    pod.key()
                );
            }
        }
        for (s, src) in pods.iter().enumerate() {
            for (d, dst) in pods.iter().enumerate() {
                let mut ports: Vec<(u16, Protocol)> = dst.declared_ports();
                ports.extend(PROBE_PORTS);
                for (port, protocol) in ports {
                    let engine = self.engine.allowed(s, d, port, protocol);
                    let reference = reference::allowed(&self.cluster, src, dst, port, protocol);
                    assert_eq!(
                        engine,
                        reference,
                        "engine says {engine}, reference says {reference} for {} -> {} on {port}/{protocol}",
                        src.key(),
                        dst.key()
                    );
                }
            }
        }
        for s in 0..pods.len() {
            for d in 0..pods.len() {
                for (port, protocol) in PROBE_PORTS {
                    let why = self.engine.explain(s, d, port, protocol).unwrap();
                    assert_eq!(
                        why.allowed,
                        self.engine.allowed(s, d, port, protocol),
                        "explain disagrees with allowed: {why:?}"
                    );
                    assert_eq!(why.same_pod, s == d);
                    assert_eq!(
                        why.egress.allowed,
                        why.egress.isolated_by.is_empty() || !why.egress.allowed_by.is_empty()
                    );
                    assert_eq!(
                        why.ingress.allowed,
                        why.ingress.isolated_by.is_empty() || !why.ingress.allowed_by.is_empty()
                    );
                }
            }
        }
        let matrix = self.engine.matrix();
        let mut cells = 0;
        for cell in matrix.entries() {
            cells += 1;
            assert_eq!(
                cell.allowed,
                self.engine
                    .allowed(cell.src, cell.dst, cell.port, cell.protocol),
                "matrix cell {} -> {} on {}/{} differs from Engine::allowed",
                pods[cell.src].key(),
                pods[cell.dst].key(),
                cell.port,
                cell.protocol
            );
        }
        assert_eq!(cells, matrix.len(), "Matrix::len and entries() disagree");
    }
}
