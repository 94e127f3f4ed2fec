//! Cluster + compiled policy -> the desired nftables state of one node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use furynet_model::{Direction, Pod, Protocol};
use furynet_policy::ir::{Peers, PortMatch, Ports, Rule};
use furynet_policy::{Engine, PodId};
use sha2::{Digest, Sha256};

use crate::intervals::Ranges;

/// What a named set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Peer addresses and ranges (`flags interval`): `ipv4_addr` or `ipv6_addr`.
    Addr { v6: bool },
    /// `addr . port` pairs for egress named ports, resolved on each destination pod.
    AddrPort { v6: bool },
}

impl SetKind {
    /// The nft `type` clause.
    pub fn nft_type(self) -> &'static str {
        match self {
            SetKind::Addr { v6: false } => "ipv4_addr",
            SetKind::Addr { v6: true } => "ipv6_addr",
            SetKind::AddrPort { v6: false } => "ipv4_addr . inet_service",
            SetKind::AddrPort { v6: true } => "ipv6_addr . inet_service",
        }
    }

    /// Whether the set needs `flags interval`.
    pub fn interval(self) -> bool {
        matches!(self, SetKind::Addr { .. })
    }

    fn prefix(self) -> &'static str {
        match self {
            SetKind::Addr { v6: false } => "p4",
            SetKind::Addr { v6: true } => "p6",
            SetKind::AddrPort { v6: false } => "n4",
            SetKind::AddrPort { v6: true } => "n6",
        }
    }
}

/// A named set: its name is a hash of this content, so equal peer groups share one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub kind: SetKind,
    /// Sorted nft element expressions.
    pub elements: Vec<String>,
}

/// The two policy chains of one local pod and the host interface that dispatches to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodChains {
    /// `namespace/name`.
    pub pod: String,
    /// Host-side veth (`fny...`).
    pub iface: String,
    /// Rules of `pod-<hash>-ingress` (empty: not isolated, the chain returns).
    pub ingress: Vec<String>,
    /// Rules of `pod-<hash>-egress`.
    pub egress: Vec<String>,
}

/// Desired content of table `inet furynet` on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftState {
    /// Set name -> definition.
    pub sets: BTreeMap<String, SetDef>,
    /// Chain base name (`pod-<hash>`) -> the pod's chains.
    pub pods: BTreeMap<String, PodChains>,
}

impl NftState {
    /// Every regular chain name with its rules, sorted by name.
    pub fn chains(&self) -> BTreeMap<String, &[String]> {
        let mut out = BTreeMap::new();
        for (base, p) in &self.pods {
            out.insert(format!("{base}-egress"), p.egress.as_slice());
            out.insert(format!("{base}-ingress"), p.ingress.as_slice());
        }
        out
    }

    /// Verdict map `from_pod` (interface -> egress chain) or `to_pod` (-> ingress chain).
    pub fn vmap(&self, egress: bool) -> BTreeMap<String, String> {
        let suffix = if egress { "egress" } else { "ingress" };
        self.pods
            .iter()
            .map(|(base, p)| (p.iface.clone(), format!("{base}-{suffix}")))
            .collect()
    }
}

fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut s = String::with_capacity(12);
    for b in digest.iter().take(6) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Chain base name of a pod: `pod-` + 12 hex characters of the SHA-256 of `namespace/name`.
pub(crate) fn pod_chain_base(key: &str) -> String {
    format!("pod-{}", short_hash(key))
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Rule comments stay under nft's 128-byte limit and never contain a quote.
fn comment(text: &str) -> String {
    let clean: String = text.chars().filter(|c| *c != '"').take(120).collect();
    format!("comment \"{clean}\"")
}

struct Ctx<'a> {
    engine: &'a Engine,
    /// Identity -> pods of that identity.
    members: Vec<Vec<PodId>>,
    sets: BTreeMap<String, SetDef>,
}

impl Ctx<'_> {
    fn intern(&mut self, kind: SetKind, elements: Vec<String>) -> String {
        let mut text = String::from(kind.nft_type());
        for e in &elements {
            text.push('\n');
            text.push_str(e);
        }
        let name = format!("{}-{}", kind.prefix(), short_hash(&text));
        self.sets
            .entry(name.clone())
            .or_insert(SetDef { kind, elements });
        name
    }

    /// Peer match expressions for one family each (`ip saddr @p4-...`); `None` = any peer.
    fn peer_matches(&mut self, peers: &Peers, dir: Direction) -> Vec<Option<String>> {
        let Peers::Match { identities, blocks } = peers else {
            return vec![None];
        };
        let side = if dir == Direction::Ingress {
            "saddr"
        } else {
            "daddr"
        };
        let mut out = Vec::new();
        for v6 in [false, true] {
            let mut ranges = Ranges::new(v6);
            for ident in identities.ones() {
                for &pid in self.members.get(ident).map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(pod) = self.engine.pod(pid) {
                        pod.ips.iter().for_each(|ip| ranges.add_ip(*ip));
                    }
                }
            }
            blocks.iter().for_each(|b| ranges.add_block(b));
            ranges.normalize();
            if ranges.is_empty() {
                continue;
            }
            let name = self.intern(SetKind::Addr { v6 }, ranges.elements());
            let fam = if v6 { "ip6" } else { "ip" };
            out.push(Some(format!("{fam} {side} @{name}")));
        }
        out
    }

    /// Egress named ports: one `addr . port` set per family and protocol over the destination
    /// pods the peers admit, each with the port the name resolves to on that pod.
    fn egress_named(&mut self, peers: &Peers, protocol: Protocol, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let mut elems = BTreeSet::new();
            for (pid, pod) in self.engine.pods().iter().enumerate() {
                let Some(ident) = self.engine.identity_of(pid) else {
                    continue;
                };
                if !peers.admits(ident, pod) {
                    continue;
                }
                let Some(port) = pod.named_port(name, protocol) else {
                    continue;
                };
                for ip in pod.ips.iter().filter(|ip| ip.is_ipv6() == v6) {
                    elems.insert(format!("{ip} . {port}"));
                }
            }
            if elems.is_empty() {
                continue;
            }
            let set = self.intern(SetKind::AddrPort { v6 }, elems.into_iter().collect());
            let fam = if v6 { "ip6" } else { "ip" };
            out.push(format!(
                "{fam} daddr . {} dport @{set}",
                proto_name(protocol)
            ));
        }
        out
    }

    /// The rules one IR rule becomes in `local`'s chain for `dir`.
    fn rule_lines(&mut self, rule: &Rule, local: &Pod, dir: Direction, tag: &str) -> Vec<String> {
        let verdict = if dir == Direction::Ingress {
            "accept"
        } else {
            "return"
        };
        let mut port_exprs: Vec<Option<String>> = Vec::new();
        let mut named_lines = Vec::new();
        match &rule.ports {
            Ports::Any => port_exprs.push(None),
            Ports::Some(list) => {
                let mut by_proto: BTreeMap<Protocol, (bool, BTreeSet<(u16, u16)>)> =
                    BTreeMap::new();
                for m in list {
                    let entry = by_proto.entry(m.protocol()).or_default();
                    match m {
                        PortMatch::AllOf(_) => entry.0 = true,
                        PortMatch::Range { first, last, .. } => {
                            entry.1.insert((*first, *last));
                        }
                        PortMatch::Named { protocol, name } => {
                            if dir == Direction::Ingress {
                                if let Some(p) = local.named_port(name, *protocol) {
                                    entry.1.insert((p, p));
                                }
                            } else {
                                named_lines.extend(self.egress_named(&rule.peers, *protocol, name));
                            }
                        }
                    }
                }
                for (proto, (all, ports)) in by_proto {
                    let pn = proto_name(proto);
                    if all {
                        port_exprs.push(Some(format!("meta l4proto {pn}")));
                    } else if !ports.is_empty() {
                        let items: Vec<String> = merge_ports(&ports)
                            .into_iter()
                            .map(|(a, b)| {
                                if a == b {
                                    a.to_string()
                                } else {
                                    format!("{a}-{b}")
                                }
                            })
                            .collect();
                        let body = if items.len() == 1 {
                            items.join("")
                        } else {
                            format!("{{ {} }}", items.join(", "))
                        };
                        port_exprs.push(Some(format!("{pn} dport {body}")));
                    }
                }
            }
        }
        // Peer sets only when some port can match, so no set is created that no rule uses.
        let peers = if port_exprs.is_empty() {
            Vec::new()
        } else {
            self.peer_matches(&rule.peers, dir)
        };
        let c = comment(tag);
        let mut out = Vec::new();
        for peer in &peers {
            for port in &port_exprs {
                let parts: Vec<&str> = [peer.as_deref(), port.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let mut line = parts.join(" ");
                if !line.is_empty() {
                    line.push(' ');
                }
                let _ = write!(line, "{verdict} {c}");
                out.push(line);
            }
        }
        for n in named_lines {
            out.push(format!("{n} {verdict} {c}"));
        }
        out
    }

    fn side(&mut self, pid: PodId, pod: &Pod, iface: &str, dir: Direction) -> Vec<String> {
        if self.engine.isolating_policies(pid, dir).is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        // A pod may always talk to itself.
        out.push(match dir {
            Direction::Ingress => format!("iifname \"{iface}\" accept"),
            Direction::Egress => format!("oifname \"{iface}\" return"),
        });
        let engine = self.engine;
        for &rid in engine.rules_for(pid, dir) {
            let Some(rule) = engine.rules().get(rid) else {
                continue;
            };
            let policy = engine
                .policies()
                .get(rule.policy)
                .map(|p| p.key.as_str())
                .unwrap_or("?");
            let tag = format!("{policy} {}[{}]", dir.as_str(), rule.index);
            out.extend(self.rule_lines(rule, pod, dir, &tag));
        }
        let policies: Vec<&str> = engine
            .isolating_policies(pid, dir)
            .iter()
            .filter_map(|p| engine.policies().get(*p).map(|p| p.key.as_str()))
            .collect();
        out.push(format!(
            "drop {}",
            comment(&format!("isolated by {}", policies.join(",")))
        ));
        out
    }
}

fn merge_ports(ports: &BTreeSet<(u16, u16)>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &(a, b) in ports {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Computes the desired nftables state of node `node`.
///
/// Local pods are the engine's pods with `node_name == node` that are not host-network and
/// have an entry in `ifaces` (`namespace/name` -> host interface); a pod not yet wired has no
/// interface and so no chains. Peers are resolved over every pod of the cluster.
pub fn compute(engine: &Engine, node: &str, ifaces: &HashMap<String, String>) -> NftState {
    let mut members: Vec<Vec<PodId>> = vec![Vec::new(); engine.identities().len()];
    for pid in 0..engine.pods().len() {
        if let Some(m) = engine.identity_of(pid).and_then(|i| members.get_mut(i)) {
            m.push(pid);
        }
    }
    let mut ctx = Ctx {
        engine,
        members,
        sets: BTreeMap::new(),
    };
    let mut pods = BTreeMap::new();
    for (pid, pod) in engine.pods().iter().enumerate() {
        if pod.host_network || pod.node_name.as_deref() != Some(node) {
            continue;
        }
        let key = pod.key();
        let Some(iface) = ifaces.get(&key) else {
            continue;
        };
        let ingress = ctx.side(pid, pod, iface, Direction::Ingress);
        let egress = ctx.side(pid, pod, iface, Direction::Egress);
        pods.insert(
            pod_chain_base(&key),
            PodChains {
                pod: key,
                iface: iface.clone(),
                ingress,
                egress,
            },
        );
    }
    NftState {
        sets: ctx.sets,
        pods,
    }
}
