//! Compilation of a cluster's policies into the rule IR, and single-pair evaluation.

use std::collections::HashMap;

use fixedbitset::FixedBitSet;
use furynet_model::{
    Cluster, Direction, LabelSelector, Namespace, NetworkPolicy, Peer, Pod, PolicyPort, PortSpec,
    Protocol,
};

use crate::index::{IdentityIndex, IdentityInterner};
use crate::ir::{CompiledPolicy, Identity, IdentityId, PolicyId, PortMatch, Ports, Rule, RuleId};

/// Index of a pod in [`Engine::pods`] (pods are sorted by `namespace/name`).
pub type PodId = usize;

/// Per identity and direction: the policies that isolate it and their rules, concatenated.
#[derive(Debug, Default, Clone)]
pub(crate) struct Side {
    pub policies: Vec<PolicyId>,
    pub rules: Vec<RuleId>,
}

/// The compiled policy engine for one cluster snapshot.
#[derive(Debug)]
pub struct Engine {
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) pods: Vec<Pod>,
    pub(crate) pod_identity: Vec<IdentityId>,
    pub(crate) index: IdentityIndex,
    pub(crate) policies: Vec<CompiledPolicy>,
    pub(crate) rules: Vec<Rule>,
    /// `[direction][identity]`, direction 0 = ingress, 1 = egress.
    pub(crate) sides: [Vec<Side>; 2],
    by_key: HashMap<(String, String), PodId>,
}

pub(crate) fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Engine {
    /// Compiles `cluster`. Namespaces that pods or policies use but the cluster does not define
    /// are assumed to exist with only their automatic `kubernetes.io/metadata.name` label.
    pub fn new(cluster: &Cluster) -> Self {
        let mut cluster = cluster.clone();
        cluster.ensure_namespaces();
        let namespaces = cluster.namespaces;
        // The first definition of a namespace wins, as in `Cluster::namespace` (the decoder
        // rejects duplicates; this keeps hand-built clusters consistent too).
        let mut ns_index: HashMap<&str, usize> = HashMap::new();
        for (i, n) in namespaces.iter().enumerate() {
            ns_index.entry(n.name.as_str()).or_insert(i);
        }

        let mut pods = cluster.pods;
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut interner = IdentityInterner::default();
        let pod_identity: Vec<IdentityId> = pods
            .iter()
            .map(|p| {
                let ns = ns_index
                    .get(p.namespace.as_str())
                    .copied()
                    .unwrap_or(usize::MAX);
                interner.intern(ns, &p.labels, p.host_network)
            })
            .collect();
        let index = IdentityIndex::new(interner.identities, namespaces.len());
        let by_key = pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.clone(), p.name.clone()), i))
            .collect();

        let mut compiler = Compiler {
            index: &index,
            namespaces: &namespaces,
            ns_index: &ns_index,
            ns_cache: HashMap::new(),
            rules: Vec::new(),
        };
        let mut policies = Vec::with_capacity(cluster.policies.len());
        for policy in &cluster.policies {
            let id = policies.len();
            policies.push(compiler.compile_policy(id, policy));
        }
        let rules = compiler.rules;

        let mut sides = [
            vec![Side::default(); index.len()],
            vec![Side::default(); index.len()],
        ];
        for (pid, pol) in policies.iter().enumerate() {
            for (dir, rule_ids) in [
                (Direction::Ingress, &pol.ingress),
                (Direction::Egress, &pol.egress),
            ] {
                if !pol.types.includes(dir) {
                    continue;
                }
                for ident in pol.selected.ones() {
                    let side = &mut sides[dir_index(dir)][ident];
                    side.policies.push(pid);
                    side.rules.extend_from_slice(rule_ids);
                }
            }
        }

        Engine {
            namespaces,
            pods,
            pod_identity,
            index,
            policies,
            rules,
            sides,
            by_key,
        }
    }

    /// Pods, sorted by `namespace/name`; a [`PodId`] indexes this slice.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn pod(&self, id: PodId) -> Option<&Pod> {
        self.pods.get(id)
    }

    /// Finds a pod by namespace and name.
    pub fn find(&self, namespace: &str, name: &str) -> Option<PodId> {
        self.by_key
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    pub fn identities(&self) -> &[Identity] {
        &self.index.identities
    }

    /// The identity of a pod.
    pub fn identity_of(&self, pod: PodId) -> Option<IdentityId> {
        self.pod_identity.get(pod).copied()
    }

    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Policies isolating `pod` in `direction` (empty: not isolated, everything allowed).
    pub fn isolating_policies(&self, pod: PodId, direction: Direction) -> &[PolicyId] {
        match self.pod_identity.get(pod) {
            Some(&ident) => &self.sides[dir_index(direction)][ident].policies,
            None => &[],
        }
    }

    /// Rules that apply to `pod` in `direction` (from every isolating policy).
    pub fn rules_for(&self, pod: PodId, direction: Direction) -> &[RuleId] {
        match self.pod_identity.get(pod) {
            Some(&ident) => &self.sides[dir_index(direction)][ident].rules,
            None => &[],
        }
    }

    /// Is a connection from `src` to `dst` on `port`/`protocol` allowed? Needs `src`'s egress
    /// and `dst`'s ingress; a pod may always talk to itself. Unknown pod ids are never allowed.
    pub fn allowed(&self, src: PodId, dst: PodId, port: u16, protocol: Protocol) -> bool {
        if src >= self.pods.len() || dst >= self.pods.len() {
            return false;
        }
        src == dst
            || (self.side_allows(Direction::Egress, src, dst, port, protocol)
                && self.side_allows(Direction::Ingress, src, dst, port, protocol))
    }

    /// One direction's verdict: egress is judged on `src`, ingress on `dst`.
    pub(crate) fn side_allows(
        &self,
        direction: Direction,
        src: PodId,
        dst: PodId,
        port: u16,
        protocol: Protocol,
    ) -> bool {
        let (subject, peer) = match direction {
            Direction::Egress => (src, dst),
            Direction::Ingress => (dst, src),
        };
        let side = &self.sides[dir_index(direction)][self.pod_identity[subject]];
        side.policies.is_empty()
            || side
                .rules
                .iter()
                .any(|&r| self.rule_admits(r, dst, peer, port, protocol))
    }

    pub(crate) fn rule_admits(
        &self,
        rule: RuleId,
        dst: PodId,
        peer: PodId,
        port: u16,
        protocol: Protocol,
    ) -> bool {
        let r = &self.rules[rule];
        r.ports.matches(port, protocol, &self.pods[dst])
            && r.peers.admits(self.pod_identity[peer], &self.pods[peer])
    }
}

/// Turns model policies into IR, caching namespace selector results.
struct Compiler<'a> {
    index: &'a IdentityIndex,
    namespaces: &'a [Namespace],
    ns_index: &'a HashMap<&'a str, usize>,
    ns_cache: HashMap<LabelSelector, FixedBitSet>,
    rules: Vec<Rule>,
}

impl Compiler<'_> {
    fn compile_policy(&mut self, id: PolicyId, p: &NetworkPolicy) -> CompiledPolicy {
        let ns = self
            .ns_index
            .get(p.namespace.as_str())
            .copied()
            .unwrap_or(usize::MAX);
        let selected = self.index.select_in_namespace(ns, &p.pod_selector);
        let mut compiled = CompiledPolicy {
            key: p.key(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            types: p.policy_types,
            selected,
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        for dir in [Direction::Ingress, Direction::Egress] {
            for (i, rule) in p.rules(dir).iter().enumerate() {
                let rid = self.rules.len();
                let peers = self.compile_peers(ns, &rule.peers);
                self.rules.push(Rule {
                    policy: id,
                    direction: dir,
                    index: i,
                    peers,
                    ports: compile_ports(&rule.ports),
                });
                match dir {
                    Direction::Ingress => compiled.ingress.push(rid),
                    Direction::Egress => compiled.egress.push(rid),
                }
            }
        }
        compiled
    }

    fn namespaces_matching(&mut self, sel: &LabelSelector) -> FixedBitSet {
        if let Some(set) = self.ns_cache.get(sel) {
            return set.clone();
        }
        let mut set = FixedBitSet::with_capacity(self.namespaces.len());
        for (i, ns) in self.namespaces.iter().enumerate() {
            if sel.matches(&ns.labels) {
                set.insert(i);
            }
        }
        self.ns_cache.insert(sel.clone(), set.clone());
        set
    }

    fn compile_peers(&mut self, policy_ns: usize, peers: &[Peer]) -> crate::ir::Peers {
        if peers.is_empty() {
            return crate::ir::Peers::Any;
        }
        let mut identities = FixedBitSet::with_capacity(self.index.len());
        let mut blocks = Vec::new();
        for peer in peers {
            match peer {
                Peer::IpBlock(b) => blocks.push(b.clone()),
                Peer::Selector {
                    pod_selector,
                    namespace_selector: None,
                } => {
                    let all = LabelSelector::everything();
                    let sel = pod_selector.as_ref().unwrap_or(&all);
                    identities.union_with(&self.index.select_in_namespace(policy_ns, sel));
                }
                Peer::Selector {
                    pod_selector,
                    namespace_selector: Some(nss),
                } => {
                    let namespaces = self.namespaces_matching(nss);
                    identities.union_with(
                        &self
                            .index
                            .select_in_namespaces(&namespaces, pod_selector.as_ref()),
                    );
                }
            }
        }
        crate::ir::Peers::Match { identities, blocks }
    }
}

fn compile_ports(ports: &[PolicyPort]) -> Ports {
    if ports.is_empty() {
        return Ports::Any;
    }
    Ports::Some(
        ports
            .iter()
            .map(|p| match &p.port {
                None => PortMatch::AllOf(p.protocol),
                Some(PortSpec::Number(n)) => PortMatch::Range {
                    protocol: p.protocol,
                    first: *n,
                    last: p.end_port.unwrap_or(*n).max(*n),
                },
                Some(PortSpec::Name(name)) => PortMatch::Named {
                    protocol: p.protocol,
                    name: name.clone(),
                },
            })
            .collect(),
    )
}
