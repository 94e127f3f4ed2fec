//! The full reachability matrix: every ordered pair of distinct pods, on every `(port,
//! protocol)` the destination declares.
//!
//! Computed with bitsets rather than pair by pair: for each port, sources are grouped by egress
//! identity and destinations by the exact set of ingress rules that apply to them, so the work is
//! a few bitset unions per group instead of a policy scan per pair.

use std::collections::{BTreeSet, HashMap};

use fixedbitset::FixedBitSet;
use furynet_model::{Direction, IpBlock, Protocol};
use serde::Serialize;

use crate::engine::{dir_index, Engine, PodId};
use crate::ir::{Peers, PortMatch, Ports, RuleId};

/// One matrix cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MatrixEntry {
    pub src: PodId,
    pub dst: PodId,
    pub port: u16,
    pub protocol: Protocol,
    pub allowed: bool,
}

/// Verdicts for every ordered pair of distinct pods and every port the destination declares.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Distinct declared `(port, protocol)` keys, sorted.
    pub ports: Vec<(u16, Protocol)>,
    /// `rows[port][src]`: destinations `src` may reach on that port.
    rows: Vec<Vec<FixedBitSet>>,
    /// Per destination pod, indices into `ports` it declares (sorted).
    dst_ports: Vec<Vec<usize>>,
}

impl Matrix {
    /// Verdict for one cell; `port` indexes [`Matrix::ports`]. A pod may always reach itself.
    /// Out-of-range arguments: `false`.
    pub fn allowed(&self, src: PodId, dst: PodId, port: usize) -> bool {
        if src == dst {
            return port < self.ports.len() && src < self.dst_ports.len();
        }
        self.rows
            .get(port)
            .and_then(|r| r.get(src))
            .is_some_and(|row| row.contains(dst))
    }

    /// Every cell, ordered by source, destination, port, protocol (pods in `namespace/name`
    /// order).
    pub fn entries(&self) -> impl Iterator<Item = MatrixEntry> + '_ {
        let n = self.dst_ports.len();
        (0..n).flat_map(move |src| {
            (0..n).filter(move |&dst| dst != src).flat_map(move |dst| {
                self.dst_ports[dst].iter().map(move |&pi| {
                    let (port, protocol) = self.ports[pi];
                    MatrixEntry {
                        src,
                        dst,
                        port,
                        protocol,
                        allowed: self.allowed(src, dst, pi),
                    }
                })
            })
        })
    }

    /// Number of cells (ordered distinct pairs times the destination's declared ports).
    pub fn len(&self) -> usize {
        let n = self.dst_ports.len();
        let per_dst: usize = self.dst_ports.iter().map(Vec::len).sum();
        per_dst * n.saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of allowed cells.
    pub fn allowed_count(&self) -> usize {
        self.rows
            .iter()
            .map(|rows| {
                rows.iter()
                    .enumerate()
                    .map(|(s, r)| r.count_ones(..) - usize::from(r.contains(s)))
                    .sum::<usize>()
            })
            .sum()
    }
}

/// Which destinations a rule's `ports` admit for one port key.
#[derive(Clone, Copy)]
enum PortOk {
    All,
    None,
    /// Index into the per-port list of destination sets (rules with named ports).
    Some(usize),
}

/// `dst |= a & b`, word by word.
fn union_intersection(dst: &mut FixedBitSet, a: &FixedBitSet, b: &FixedBitSet) {
    for (d, (x, y)) in dst
        .as_mut_slice()
        .iter_mut()
        .zip(a.as_slice().iter().zip(b.as_slice()))
    {
        *d |= x & y;
    }
}

impl Engine {
    /// Computes the full matrix.
    ///
    /// Cost, with `N` pods and `R` rules: `O(R·N/64)` to resolve rule peers to
    /// pod sets (each distinct `ipBlock` list is matched against every pod once, not once per
    /// rule), then per port: named ports are resolved once per distinct `(name, protocol)`
    /// (`O(N)` each) and shared by every rule with the same port list, destinations are grouped
    /// by their admitting ingress rules, and each group's members are ORed into its sources'
    /// rows as a sparse list of non-zero words (a deployment's pods are adjacent, so usually one
    /// or two words per source), and finally one egress mask per source identity is applied
    /// (`O(N·N/64)`).
    pub fn matrix(&self) -> Matrix {
        let n = self.pods.len();
        let keys: BTreeSet<(u16, Protocol)> =
            self.pods.iter().flat_map(|p| p.declared_ports()).collect();
        let ports: Vec<(u16, Protocol)> = keys.into_iter().collect();
        let key_index: HashMap<(u16, Protocol), usize> =
            ports.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let dst_ports: Vec<Vec<usize>> = self
            .pods
            .iter()
            .map(|p| {
                p.declared_ports()
                    .iter()
                    .filter_map(|k| key_index.get(k).copied())
                    .collect()
            })
            .collect();

        let mut identity_pods: Vec<Vec<PodId>> = vec![Vec::new(); self.index.len()];
        for (pod, &ident) in self.pod_identity.iter().enumerate() {
            identity_pods[ident].push(pod);
        }
        let mut all = FixedBitSet::with_capacity(n);
        all.insert_range(..);
        // Pods inside each distinct ipBlock list (many rules share the same list).
        let mut block_pods: HashMap<&[IpBlock], FixedBitSet> = HashMap::new();
        // Pods each rule admits as peers (independent of the port).
        let rule_pods: Vec<FixedBitSet> = self
            .rules
            .iter()
            .map(|r| match &r.peers {
                Peers::Any => all.clone(),
                Peers::Match { identities, blocks } => {
                    let mut set = FixedBitSet::with_capacity(n);
                    for ident in identities.ones() {
                        for &p in &identity_pods[ident] {
                            set.insert(p);
                        }
                    }
                    if !blocks.is_empty() {
                        let inside = block_pods.entry(blocks.as_slice()).or_insert_with(|| {
                            let mut inside = FixedBitSet::with_capacity(n);
                            for (p, pod) in self.pods.iter().enumerate() {
                                if blocks
                                    .iter()
                                    .any(|b| pod.ips.iter().any(|ip| b.contains(ip)))
                                {
                                    inside.insert(p);
                                }
                            }
                            inside
                        });
                        set.union_with(inside);
                    }
                    set
                }
            })
            .collect();

        let mut rows = Vec::with_capacity(ports.len());
        for (pi, &(port, protocol)) in ports.iter().enumerate() {
            let mut declared = FixedBitSet::with_capacity(n);
            for (d, dp) in dst_ports.iter().enumerate() {
                if dp.contains(&pi) {
                    declared.insert(d);
                }
            }
            // Declared destinations on which a named port resolves to this port.
            let mut named: HashMap<(&str, Protocol), FixedBitSet> = HashMap::new();
            // Destination sets of rules with named ports, one per distinct port list.
            let mut pod_sets: Vec<FixedBitSet> = Vec::new();
            let mut pod_set_of: HashMap<&[PortMatch], usize> = HashMap::new();
            let any_pod = self.pods.first();
            let port_ok: Vec<PortOk> = self
                .rules
                .iter()
                .map(|r| match &r.ports {
                    Ports::Some(list) if r.ports.depends_on_pod() => {
                        let id = *pod_set_of.entry(list.as_slice()).or_insert_with(|| {
                            // Entries other than named ports do not depend on the pod.
                            let mut set = if any_pod.is_some_and(|p| {
                                list.iter()
                                    .any(|m| !m.is_named() && m.matches(port, protocol, p))
                            }) {
                                declared.clone()
                            } else {
                                FixedBitSet::with_capacity(n)
                            };
                            for m in list {
                                if let PortMatch::Named { protocol: p, name } = m {
                                    if *p != protocol {
                                        continue;
                                    }
                                    let on =
                                        named.entry((name.as_str(), *p)).or_insert_with(|| {
                                            let mut on = FixedBitSet::with_capacity(n);
                                            for d in declared.ones() {
                                                if self.pods[d].named_port(name, protocol)
                                                    == Some(port)
                                                {
                                                    on.insert(d);
                                                }
                                            }
                                            on
                                        });
                                    set.union_with(on);
                                }
                            }
                            pod_sets.push(set);
                            pod_sets.len() - 1
                        });
                        PortOk::Some(id)
                    }
                    _ if any_pod.is_some_and(|p| r.ports.matches(port, protocol, p)) => PortOk::All,
                    _ => PortOk::None,
                })
                .collect();

            // Ingress: group destinations by the exact rules admitting this port on them.
            let mut groups: Vec<(Option<FixedBitSet>, FixedBitSet)> = Vec::new();
            let mut group_of: HashMap<Option<Vec<RuleId>>, usize> = HashMap::new();
            for d in declared.ones() {
                let side = &self.sides[dir_index(Direction::Ingress)][self.pod_identity[d]];
                let key = if side.policies.is_empty() {
                    None
                } else {
                    Some(
                        side.rules
                            .iter()
                            .copied()
                            .filter(|&r| match port_ok[r] {
                                PortOk::All => true,
                                PortOk::None => false,
                                PortOk::Some(set) => pod_sets[set].contains(d),
                            })
                            .collect::<Vec<_>>(),
                    )
                };
                let g = match group_of.get(&key) {
                    Some(&g) => g,
                    None => {
                        let sources = key.as_ref().map(|rules| {
                            let mut s = FixedBitSet::with_capacity(n);
                            for &r in rules {
                                s.union_with(&rule_pods[r]);
                            }
                            s
                        });
                        groups.push((sources, FixedBitSet::with_capacity(n)));
                        group_of.insert(key, groups.len() - 1);
                        groups.len() - 1
                    }
                };
                groups[g].1.insert(d);
            }

            let mut port_rows = vec![FixedBitSet::with_capacity(n); n];
            let mut words: Vec<(usize, usize)> = Vec::new();
            for (sources, members) in &groups {
                let sources = sources.as_ref().unwrap_or(&all);
                words.clear();
                words.extend(
                    members
                        .as_slice()
                        .iter()
                        .enumerate()
                        .filter(|(_, &w)| w != 0)
                        .map(|(i, &w)| (i, w)),
                );
                for s in sources.ones() {
                    let row = port_rows[s].as_mut_slice();
                    for &(i, w) in &words {
                        if let Some(x) = row.get_mut(i) {
                            *x |= w;
                        }
                    }
                }
            }

            // Egress: one row per source identity.
            let mut egress_rows: HashMap<usize, Option<FixedBitSet>> = HashMap::new();
            for (s, row) in port_rows.iter_mut().enumerate() {
                let ident = self.pod_identity[s];
                let egress = egress_rows.entry(ident).or_insert_with(|| {
                    let side = &self.sides[dir_index(Direction::Egress)][ident];
                    if side.policies.is_empty() {
                        return None;
                    }
                    let mut reach = FixedBitSet::with_capacity(n);
                    for &r in &side.rules {
                        match port_ok[r] {
                            PortOk::All => reach.union_with(&rule_pods[r]),
                            PortOk::None => {}
                            PortOk::Some(set) => {
                                union_intersection(&mut reach, &rule_pods[r], &pod_sets[set]);
                            }
                        }
                    }
                    Some(reach)
                });
                if let Some(reach) = egress {
                    row.intersect_with(reach);
                }
            }
            rows.push(port_rows);
        }
        Matrix {
            ports,
            rows,
            dst_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::synth::{self, SynthSpec};
    use crate::Engine;

    /// The bitset matrix agrees with pair-by-pair evaluation on every cell of synthetic clusters
    /// (named ports, ipBlock with except, endPort, pod + namespace selectors, egress isolation).
    #[test]
    fn matrix_agrees_with_allowed_on_synthetic_clusters() {
        let specs = [
            SynthSpec::bench(300),
            SynthSpec {
                pods: 250,
                namespaces: 6,
                policies: 120,
                seed: 1,
            },
            SynthSpec {
                pods: 200,
                namespaces: 3,
                policies: 90,
                seed: 2,
            },
            SynthSpec {
                pods: 150,
                namespaces: 12,
                policies: 150,
                seed: 3,
            },
        ];
        for spec in specs {
            let engine = Engine::new(&synth::cluster(&spec));
            let m = engine.matrix();
            let mut cells = 0;
            let mut allowed = 0;
            for e in m.entries() {
                let want = engine.allowed(e.src, e.dst, e.port, e.protocol);
                assert_eq!(e.allowed, want, "{spec:?}: {e:?}");
                cells += 1;
                allowed += usize::from(want);
            }
            assert_eq!(cells, m.len());
            assert_eq!(allowed, m.allowed_count(), "{spec:?}");
            assert!(
                allowed > 0 && allowed < cells,
                "{spec:?}: {allowed}/{cells}"
            );
        }
    }
}
