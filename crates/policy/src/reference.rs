//! A deliberately direct implementation of NetworkPolicy semantics, straight from the
//! Kubernetes documentation, with no indexing: the oracle the engine is tested against.
//!
//! Everything here is a plain loop over `cluster.policies` using [`LabelSelector::matches`];
//! nothing is precomputed or cached, so each function can be checked against the rule it cites
//! by reading it. It is slow (a policy scan per question) and meant for tests only.
//!
//! Rules (networking.k8s.io/v1 NetworkPolicy, as furynet reads them):
//!
//! 1. A pod is *isolated* for a direction only when some policy in the pod's own namespace
//!    selects it with its `podSelector` and the policy's effective `policyTypes` include that
//!    direction ([`is_isolated`]).
//! 2. A non-isolated pod allows everything in that direction. An isolated pod allows a
//!    connection iff at least one rule (of that direction) of at least one selecting policy
//!    admits it: policies and rules are additive (a union), never subtractive.
//! 3. A connection `src -> dst` needs the egress side of `src` and the ingress side of `dst`
//!    to allow it. A pod may always talk to itself.
//! 4. A rule with no peers admits any peer; a rule with no ports admits any port.
//! 5. Peers: a `podSelector`-only peer means pods of the *policy's* namespace; a
//!    `namespaceSelector`-only peer means all pods of the matching namespaces; both mean the
//!    matching pods in the matching namespaces. An `ipBlock` matches a pod if any of its IPs is
//!    in `cidr` and in no `except`; pods without IPs match no `ipBlock`.
//! 6. Ports: the protocol must be equal; no `port` means every port of the protocol; a number
//!    with `endPort` is an inclusive range; a name is resolved on the *destination* pod's
//!    container ports of the same protocol (for ingress and egress rules alike), and a name the
//!    destination does not declare matches nothing.
//! 7. Host-network pods are never selected by `podSelector`/`namespaceSelector` (neither as
//!    targets nor as peers); only `ipBlock` can match them.
//! 8. Namespace labels always include `kubernetes.io/metadata.name`; a namespace that pods or
//!    policies use but that the cluster does not define exists with only that label.

use std::net::IpAddr;

use furynet_model::{
    Cluster, Direction, IpBlock, Labels, NetworkPolicy, Peer, Pod, PolicyPort, PolicyRule,
    PortSpec, Protocol, NAMESPACE_NAME_LABEL,
};

/// Is a connection from `src` to `dst` on `port`/`protocol` allowed?
///
/// Rule 3: a pod may always reach itself (same namespace and name); otherwise the egress side
/// of `src` and the ingress side of `dst` must both allow the connection.
pub fn allowed(cluster: &Cluster, src: &Pod, dst: &Pod, port: u16, protocol: Protocol) -> bool {
    if same_pod(src, dst) {
        return true;
    }
    side_allows(cluster, Direction::Egress, src, dst, port, protocol)
        && side_allows(cluster, Direction::Ingress, src, dst, port, protocol)
}

/// Rule 1: is `pod` isolated for `direction`, i.e. selected by some policy of its namespace
/// whose effective `policyTypes` include `direction`?
pub fn is_isolated(cluster: &Cluster, pod: &Pod, direction: Direction) -> bool {
    cluster
        .policies
        .iter()
        .any(|policy| policy.policy_types.includes(direction) && policy_selects(policy, pod))
}

/// Rule 3: the same pod (equal namespace and name).
fn same_pod(a: &Pod, b: &Pod) -> bool {
    a.namespace == b.namespace && a.name == b.name
}

/// Rules 1, 2: the verdict of one side. Egress is judged on `src` (the peer is `dst`), ingress
/// on `dst` (the peer is `src`). Ports are always resolved on `dst` (rule 6).
fn side_allows(
    cluster: &Cluster,
    direction: Direction,
    src: &Pod,
    dst: &Pod,
    port: u16,
    protocol: Protocol,
) -> bool {
    let (subject, peer) = match direction {
        Direction::Egress => (src, dst),
        Direction::Ingress => (dst, src),
    };
    let mut isolated = false;
    for policy in &cluster.policies {
        if !policy.policy_types.includes(direction) || !policy_selects(policy, subject) {
            continue;
        }
        isolated = true;
        for rule in policy.rules(direction) {
            if rule_admits(cluster, policy, rule, peer, dst, port, protocol) {
                return true;
            }
        }
    }
    !isolated
}

/// Rules 1, 7: a policy selects the pods of its own namespace that its `podSelector` matches,
/// never host-network pods.
fn policy_selects(policy: &NetworkPolicy, pod: &Pod) -> bool {
    !pod.host_network
        && policy.namespace == pod.namespace
        && policy.pod_selector.matches(&pod.labels)
}

/// Rule 4: a rule admits a connection when its peers admit `peer` and its ports admit
/// `port`/`protocol` on `dst`; an empty list admits everything.
fn rule_admits(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    rule: &PolicyRule,
    peer: &Pod,
    dst: &Pod,
    port: u16,
    protocol: Protocol,
) -> bool {
    let peer_ok = rule.peers.is_empty()
        || rule
            .peers
            .iter()
            .any(|p| peer_matches(cluster, policy, p, peer));
    let port_ok = rule.ports.is_empty()
        || rule
            .ports
            .iter()
            .any(|p| port_matches(p, port, protocol, dst));
    peer_ok && port_ok
}

/// Rules 5, 7: does one `from`/`to` entry of `policy` match `pod`?
fn peer_matches(cluster: &Cluster, policy: &NetworkPolicy, peer: &Peer, pod: &Pod) -> bool {
    match peer {
        Peer::Selector {
            pod_selector,
            namespace_selector,
        } => {
            if pod.host_network {
                return false;
            }
            let namespace_ok = match namespace_selector {
                // podSelector only: the policy's own namespace.
                None => pod.namespace == policy.namespace,
                Some(sel) => sel.matches(&namespace_labels(cluster, &pod.namespace)),
            };
            // namespaceSelector only: every pod of the matching namespaces.
            let pod_ok = pod_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(&pod.labels));
            namespace_ok && pod_ok
        }
        Peer::IpBlock(block) => pod.ips.iter().any(|ip| ip_in_block(block, ip)),
    }
}

/// Rule 5: `ip` is inside `cidr` and outside every `except`.
fn ip_in_block(block: &IpBlock, ip: &IpAddr) -> bool {
    block.cidr.contains(ip) && !block.except.iter().any(|e| e.contains(ip))
}

/// Rule 6: does one `ports` entry admit `port`/`protocol` towards `dst`?
fn port_matches(p: &PolicyPort, port: u16, protocol: Protocol, dst: &Pod) -> bool {
    if p.protocol != protocol {
        return false;
    }
    match &p.port {
        None => true,
        Some(PortSpec::Number(first)) => match p.end_port {
            Some(last) => *first <= port && port <= last,
            None => port == *first,
        },
        Some(PortSpec::Name(name)) => dst.named_port(name, protocol) == Some(port),
    }
}

/// Rule 8: the labels of namespace `name`; an undefined namespace has only its automatic
/// `kubernetes.io/metadata.name` label.
fn namespace_labels(cluster: &Cluster, name: &str) -> Labels {
    match cluster.namespace(name) {
        Some(ns) => ns.labels.clone(),
        None => Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
    }
}
