//! Desired routing state for one node: pure functions, no kernel calls.
//!
//! Input: this node, every node (name, underlay address), every IPAM block with its affine node,
//! and the encapsulation mode. Output: a [`RoutingPlan`] — the VXLAN device (if any), one FDB and
//! one neighbour entry per remote node, and one route per remote block. The plan depends only on
//! the content of the input, never on its order (everything is sorted and deduplicated).
//!
//! Model (see `docs/dataplane-routing.md`):
//! - Each node has a VTEP MAC derived from its name ([`vtep_mac`]): locally administered,
//!   unicast, stable across restarts, so no state is needed to re-derive it.
//! - Each node has a *tunnel address* per family: the first address of its lowest block of
//!   that family (Calico takes an address from the block too). It is only ever used as an
//!   `onlink` next hop on the VXLAN device plus a permanent neighbour entry; it is never
//!   assigned to an interface, so it does not matter if IPAM also hands it to a pod (the inner
//!   packet is addressed to the pod).
//! - The underlay is IPv4. IPv6 blocks ride the VXLAN overlay; with `Encapsulation::None`
//!   they are not routed (that needs an IPv6 underlay).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::kernel::Mac;

/// Default VXLAN network identifier.
pub const DEFAULT_VNI: u32 = 4096;
/// Default VXLAN UDP port (IANA).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Default VXLAN device name (`fny` prefix = ours; under the 15-byte limit).
pub const DEFAULT_VXLAN_DEVICE: &str = "fny.vxlan";
/// VXLAN overhead over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;

/// How traffic reaches other nodes' pod blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encapsulation {
    /// A VXLAN overlay; forwarding entries are programmed, learning is off.
    Vxlan { vni: u32, port: u16, device: String },
    /// Direct routes via the other node's underlay address (nodes share an L2 link).
    None,
}

impl Default for Encapsulation {
    fn default() -> Self {
        Encapsulation::Vxlan {
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            device: DEFAULT_VXLAN_DEVICE.to_string(),
        }
    }
}

/// A node as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The address other nodes reach this node at (the VXLAN endpoint).
    pub underlay: Ipv4Addr,
}

/// An IPAM block and the node it is affine to (`None`: no affinity, not routed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub cidr: IpNet,
    pub node: Option<String>,
}

/// Everything the plan is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    /// This node's name.
    pub node: String,
    /// This node's underlay address.
    pub underlay: Ipv4Addr,
    /// MTU of this node's underlay interface.
    pub underlay_mtu: u32,
    pub nodes: Vec<NodeInfo>,
    pub blocks: Vec<BlockInfo>,
    pub encapsulation: Encapsulation,
}

/// The VXLAN device to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub mac: Mac,
    pub mtu: u32,
}

/// A permanent FDB entry on the VXLAN device: frames for `mac` go to the VTEP at `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// A permanent neighbour entry on the VXLAN device: next hop `ip` has link address `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighEntry {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A route to a remote block, installed with protocol 154.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockRoute {
    pub dst: IpNet,
    pub via: IpAddr,
    /// `Some(device)` with `onlink` for VXLAN; `None` (kernel picks the device) for direct routes.
    pub dev: Option<String>,
}

/// Desired routing state of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingPlan {
    pub vxlan: Option<VxlanDevice>,
    pub fdb: Vec<FdbEntry>,
    pub neighbours: Vec<NeighEntry>,
    pub routes: Vec<BlockRoute>,
    /// MTU pods on this node should use (underlay MTU minus the encapsulation overhead).
    pub pod_mtu: u32,
}

/// The VTEP MAC of a node: `02` (locally administered, unicast) + 5 bytes of a 64-bit FNV-1a
/// hash of the node name. Deterministic, so every node derives every other node's MAC.
pub fn vtep_mac(node: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// Computes the desired routing state for `input.node`.
pub fn plan(input: &PlanInput) -> RoutingPlan {
    // node -> its blocks (IPv4 then IPv6), sorted; nodes sorted and deduplicated by name
    // (first wins after sorting by (name, underlay), so the result does not depend on order).
    let mut nodes: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    let mut sorted_nodes: Vec<&NodeInfo> = input.nodes.iter().collect();
    sorted_nodes.sort_by(|a, b| (&a.name, a.underlay).cmp(&(&b.name, b.underlay)));
    for n in sorted_nodes {
        nodes.entry(n.name.as_str()).or_insert(n.underlay);
    }
    let mut blocks: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
    for b in &input.blocks {
        if let Some(node) = b.node.as_deref() {
            blocks.entry(node).or_default().insert(b.cidr.trunc());
        }
    }

    let mut out = RoutingPlan {
        pod_mtu: input.underlay_mtu,
        ..RoutingPlan::default()
    };
    if let Encapsulation::Vxlan { vni, port, device } = &input.encapsulation {
        let mtu = input.underlay_mtu.saturating_sub(VXLAN_OVERHEAD_V4);
        out.pod_mtu = mtu;
        out.vxlan = Some(VxlanDevice {
            name: device.clone(),
            vni: *vni,
            port: *port,
            local: input.underlay,
            mac: vtep_mac(&input.node),
            mtu,
        });
    }

    for (name, underlay) in &nodes {
        if *name == input.node {
            continue;
        }
        let Some(node_blocks) = blocks.get(name) else {
            continue; // nothing to route to
        };
        match &input.encapsulation {
            Encapsulation::Vxlan { device, .. } => {
                let mac = vtep_mac(name);
                out.fdb.push(FdbEntry {
                    mac,
                    dst: *underlay,
                });
                // BTreeSet order: IPv4 blocks before IPv6, each ascending, so the first block
                // of a family is its lowest.
                let v4 = node_blocks.iter().find(|b| matches!(b, IpNet::V4(_)));
                let v6 = node_blocks.iter().find(|b| matches!(b, IpNet::V6(_)));
                for first in [v4, v6].into_iter().flatten() {
                    out.neighbours.push(NeighEntry {
                        ip: first.network(),
                        mac,
                    });
                }
                for b in node_blocks {
                    let first = if matches!(b, IpNet::V4(_)) { v4 } else { v6 };
                    if let Some(first) = first {
                        out.routes.push(BlockRoute {
                            dst: *b,
                            via: first.network(),
                            dev: Some(device.clone()),
                        });
                    }
                }
            }
            Encapsulation::None => {
                for b in node_blocks.iter().filter(|b| matches!(b, IpNet::V4(_))) {
                    out.routes.push(BlockRoute {
                        dst: *b,
                        via: IpAddr::V4(*underlay),
                        dev: None,
                    });
                }
            }
        }
    }
    // A block claimed by two nodes (should not happen) would give two routes: keep the first
    // by (dst, via) so the plan stays deterministic and the kernel gets one route per prefix.
    out.fdb.sort();
    out.neighbours.sort();
    out.routes.sort();
    out.routes.dedup_by(|a, b| a.dst == b.dst);
    out
}

/// The IPv4 tunnel address of a node, if it has an IPv4 block (see the module docs).
pub fn tunnel_address(node: &str, blocks: &[BlockInfo]) -> Option<IpAddr> {
    blocks
        .iter()
        .filter(|b| b.node.as_deref() == Some(node))
        .filter_map(|b| match b.cidr {
            IpNet::V4(n) => Some(n.trunc()),
            IpNet::V6(_) => None,
        })
        .min()
        .map(|n| IpAddr::V4(n.network()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            underlay: ip.parse().unwrap(),
        }
    }
    fn block(cidr: &str, node: Option<&str>) -> BlockInfo {
        BlockInfo {
            cidr: cidr.parse().unwrap(),
            node: node.map(str::to_string),
        }
    }
    fn input(enc: Encapsulation) -> PlanInput {
        PlanInput {
            node: "a".into(),
            underlay: "172.31.0.1".parse().unwrap(),
            underlay_mtu: 1500,
            nodes: vec![
                node("a", "172.31.0.1"),
                node("b", "172.31.0.2"),
                node("c", "172.31.0.3"),
            ],
            blocks: vec![
                block("10.244.0.0/26", Some("a")),
                block("10.244.0.128/26", Some("b")),
                block("10.244.0.64/26", Some("b")),
                block("10.244.0.192/26", Some("c")),
                block("10.244.1.0/26", None),
                block("fd00::/122", Some("b")),
            ],
            encapsulation: enc,
        }
    }

    #[test]
    fn vtep_mac_is_local_unicast_and_stable() {
        let m = vtep_mac("node-1");
        assert_eq!(m[0], 0x02);
        assert_eq!(m, vtep_mac("node-1"));
        assert_ne!(m, vtep_mac("node-2"));
    }

    #[test]
    fn vxlan_plan() {
        let p = plan(&input(Encapsulation::default()));
        let dev = p.vxlan.clone().unwrap();
        assert_eq!(dev.name, "fny.vxlan");
        assert_eq!((dev.vni, dev.port, dev.mtu), (4096, 4789, 1450));
        assert_eq!(dev.local, "172.31.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(dev.mac, vtep_mac("a"));
        assert_eq!(p.pod_mtu, 1450);
        let b_tun: IpAddr = "10.244.0.64".parse().unwrap();
        let b_tun6: IpAddr = "fd00::".parse().unwrap();
        let c_tun: IpAddr = "10.244.0.192".parse().unwrap();
        let mut fdb = vec![
            FdbEntry {
                mac: vtep_mac("b"),
                dst: "172.31.0.2".parse().unwrap(),
            },
            FdbEntry {
                mac: vtep_mac("c"),
                dst: "172.31.0.3".parse().unwrap(),
            },
        ];
        fdb.sort();
        assert_eq!(p.fdb, fdb);
        let mut neigh = vec![
            NeighEntry {
                ip: b_tun,
                mac: vtep_mac("b"),
            },
            NeighEntry {
                ip: c_tun,
                mac: vtep_mac("c"),
            },
            NeighEntry {
                ip: b_tun6,
                mac: vtep_mac("b"),
            },
        ];
        neigh.sort();
        assert_eq!(p.neighbours, neigh);
        let routes: Vec<String> = p
            .routes
            .iter()
            .map(|r| format!("{} via {} {:?}", r.dst, r.via, r.dev))
            .collect();
        assert_eq!(
            routes,
            [
                "10.244.0.64/26 via 10.244.0.64 Some(\"fny.vxlan\")",
                "10.244.0.128/26 via 10.244.0.64 Some(\"fny.vxlan\")",
                "10.244.0.192/26 via 10.244.0.192 Some(\"fny.vxlan\")",
                "fd00::/122 via fd00:: Some(\"fny.vxlan\")",
            ]
        );
        assert_eq!(
            tunnel_address("b", &input(Encapsulation::None).blocks),
            Some(b_tun)
        );
    }

    #[test]
    fn none_plan() {
        let p = plan(&input(Encapsulation::None));
        assert!(p.vxlan.is_none() && p.fdb.is_empty() && p.neighbours.is_empty());
        assert_eq!(p.pod_mtu, 1500);
        let routes: Vec<String> = p
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.dst, r.via))
            .collect();
        assert_eq!(
            routes,
            [
                "10.244.0.64/26 via 172.31.0.2",
                "10.244.0.128/26 via 172.31.0.2",
                "10.244.0.192/26 via 172.31.0.3",
            ]
        );
        assert!(p.routes.iter().all(|r| r.dev.is_none()));
    }

    #[test]
    fn order_independent_and_custom_settings() {
        let enc = Encapsulation::Vxlan {
            vni: 7,
            port: 8472,
            device: "fny.vx7".into(),
        };
        let a = input(enc.clone());
        let mut b = a.clone();
        b.nodes.reverse();
        b.blocks.reverse();
        b.blocks.push(block("10.244.0.64/26", Some("b"))); // duplicate
        assert_eq!(plan(&a), plan(&b));
        let dev = plan(&a).vxlan.unwrap();
        assert_eq!((dev.vni, dev.port, dev.name.as_str()), (7, 8472, "fny.vx7"));
    }

    #[test]
    fn nodes_without_blocks_or_unknown_are_skipped() {
        let mut i = input(Encapsulation::default());
        i.blocks.push(block("10.244.2.0/26", Some("ghost"))); // node not known
        i.blocks.retain(|b| b.node.as_deref() != Some("c"));
        let p = plan(&i);
        assert_eq!(p.fdb.len(), 1);
        assert_eq!(p.routes.len(), 3); // node b: two IPv4 blocks and one IPv6 block
                                       // own blocks are never routed
        assert!(p
            .routes
            .iter()
            .all(|r| r.dst.to_string() != "10.244.0.0/26"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_input() -> impl Strategy<Value = PlanInput> {
            let nodes = proptest::collection::vec((0u8..6, 1u8..20), 1..8);
            let blocks = proptest::collection::vec((0u8..64, proptest::option::of(0u8..6)), 0..20);
            (nodes, blocks, any::<bool>()).prop_map(|(nodes, blocks, vx)| PlanInput {
                node: "n0".into(),
                underlay: "172.31.0.1".parse().unwrap(),
                underlay_mtu: 1500,
                nodes: nodes
                    .into_iter()
                    .map(|(n, ip)| NodeInfo {
                        name: format!("n{n}"),
                        underlay: Ipv4Addr::new(172, 31, 0, ip),
                    })
                    .collect(),
                blocks: blocks
                    .into_iter()
                    .map(|(b, n)| BlockInfo {
                        cidr: IpNet::V4(
                            ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, b, 0), 26).unwrap(),
                        ),
                        node: n.map(|n| format!("n{n}")),
                    })
                    .collect(),
                encapsulation: if vx {
                    Encapsulation::default()
                } else {
                    Encapsulation::None
                },
            })
        }

        proptest! {
            /// Shuffled input gives the same plan; one route per prefix; never a route to
            /// one of our own blocks; every VXLAN route's next hop has a neighbour entry.
            #[test]
            fn order_independent_and_consistent(input in arb_input(), seed in any::<u64>()) {
                let mut shuffled = input.clone();
                let n = shuffled.nodes.len();
                shuffled.nodes.rotate_left((seed as usize) % n);
                shuffled.blocks.reverse();
                let p = plan(&input);
                prop_assert_eq!(&p, &plan(&shuffled));
                let mut dsts: Vec<_> = p.routes.iter().map(|r| r.dst).collect();
                dsts.dedup();
                prop_assert_eq!(dsts.len(), p.routes.len());
                for r in &p.routes {
                    let owner = input.blocks.iter().filter(|b| b.cidr == r.dst).any(|b| b.node.as_deref() == Some("n0"));
                    let other = input.blocks.iter().filter(|b| b.cidr == r.dst).any(|b| b.node.as_deref().is_some_and(|x| x != "n0"));
                    prop_assert!(other || !owner);
                    if r.dev.is_some() {
                        prop_assert!(p.neighbours.iter().any(|nb| nb.ip == r.via));
                    }
                }
            }
        }
    }
}
