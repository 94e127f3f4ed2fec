//! The compiled rule IR: what a NetworkPolicy means once its selectors are resolved against the
//! cluster. Dataplanes render this (peers become IP sets, port matches become set/range matches),
//! and the engine evaluates it.

use fixedbitset::FixedBitSet;
use furynet_model::{Direction, IpBlock, Labels, Pod, PolicyTypes, Protocol};

/// Index of an identity in [`crate::Engine::identities`].
pub type IdentityId = usize;
/// Index of a rule in [`crate::Engine::rules`].
pub type RuleId = usize;
/// Index of a policy in [`crate::Engine::policies`].
pub type PolicyId = usize;

/// Pods that policy cannot tell apart: same namespace, same labels, same host-network flag.
/// (Cilium's security identity.) Policy verdicts between identities are the same for all their
/// pods except where `ipBlock` peers (per-pod IPs) or named ports (per-pod ports) are involved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub namespace: usize,
    pub labels: Labels,
    /// Host-network pods are never selected by pod/namespace selectors (neither as the target
    /// of a policy nor as a peer): like Calico host endpoints and Cilium's `host` identity, they
    /// are only matched by `ipBlock` on their (node) addresses.
    pub host_network: bool,
}

/// One compiled policy.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub types: PolicyTypes,
    /// Identities this policy selects (its `podSelector` within its namespace).
    pub selected: FixedBitSet,
    pub ingress: Vec<RuleId>,
    pub egress: Vec<RuleId>,
}

/// One ingress or egress rule with its peers resolved.
#[derive(Debug, Clone)]
pub struct Rule {
    pub policy: PolicyId,
    pub direction: Direction,
    /// Position of the rule in the policy's `ingress` / `egress` list.
    pub index: usize,
    pub peers: Peers,
    pub ports: Ports,
}

/// Who a rule admits on the other side of the connection.
#[derive(Debug, Clone)]
pub enum Peers {
    /// `from` / `to` missing or empty: every peer, inside or outside the cluster.
    Any,
    /// Union of selector peers (resolved to identities) and `ipBlock`s.
    Match {
        identities: FixedBitSet,
        blocks: Vec<IpBlock>,
    },
}

impl Peers {
    /// Does this peer set admit `pod` (whose identity is `identity`)?
    pub fn admits(&self, identity: IdentityId, pod: &Pod) -> bool {
        match self {
            Peers::Any => true,
            Peers::Match { identities, blocks } => {
                identities.contains(identity)
                    || blocks
                        .iter()
                        .any(|b| pod.ips.iter().any(|ip| b.contains(ip)))
            }
        }
    }
}

/// Which ports a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// `ports` missing or empty: every port of every protocol.
    Any,
    Some(Vec<PortMatch>),
}

/// One `ports` entry, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// Protocol given, `port` omitted: every port of the protocol.
    AllOf(Protocol),
    /// `port` (and optional `endPort`), inclusive.
    Range {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
    /// A named port, resolved on the destination pod's container ports of this protocol.
    Named { protocol: Protocol, name: String },
}

impl PortMatch {
    pub fn protocol(&self) -> Protocol {
        match self {
            PortMatch::AllOf(p) => *p,
            PortMatch::Range { protocol, .. } | PortMatch::Named { protocol, .. } => *protocol,
        }
    }

    /// Does this entry admit `(port, protocol)` on the destination pod `dst`?
    pub fn matches(&self, port: u16, protocol: Protocol, dst: &Pod) -> bool {
        match self {
            PortMatch::AllOf(p) => *p == protocol,
            PortMatch::Range {
                protocol: p,
                first,
                last,
            } => *p == protocol && *first <= port && port <= *last,
            PortMatch::Named { protocol: p, name } => {
                *p == protocol && dst.named_port(name, protocol) == Some(port)
            }
        }
    }

    pub fn is_named(&self) -> bool {
        matches!(self, PortMatch::Named { .. })
    }
}

impl std::fmt::Display for PortMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortMatch::AllOf(p) => write!(f, "*/{p}"),
            PortMatch::Range {
                protocol,
                first,
                last,
            } if first == last => {
                write!(f, "{first}/{protocol}")
            }
            PortMatch::Range {
                protocol,
                first,
                last,
            } => write!(f, "{first}-{last}/{protocol}"),
            PortMatch::Named { protocol, name } => write!(f, "{name}/{protocol}"),
        }
    }
}

impl Ports {
    pub fn matches(&self, port: u16, protocol: Protocol, dst: &Pod) -> bool {
        match self {
            Ports::Any => true,
            Ports::Some(list) => list.iter().any(|m| m.matches(port, protocol, dst)),
        }
    }

    /// Whether the verdict can depend on the destination pod (named ports).
    pub fn depends_on_pod(&self) -> bool {
        match self {
            Ports::Any => false,
            Ports::Some(list) => list.iter().any(PortMatch::is_named),
        }
    }
}
