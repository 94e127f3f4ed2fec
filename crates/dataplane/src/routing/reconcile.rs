//! Reconcile the kernel with a [`RoutingPlan`]: read what we own, diff (pure), apply the
//! minimal changes. Only objects carrying our markers are ever read as "ours" or removed:
//! VXLAN links whose name starts with [`crate::HOST_IFACE_PREFIX`], FDB and permanent neighbour
//! entries on those links, and IPv4/IPv6 routes with protocol [`crate::RTPROT_FURYNET`] that have a
//! gateway. Pod routes (`POD/32 dev fny… scope link proto 154`, no gateway) belong to the CNI
//! plugin and are never listed, so never deleted.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::plan::{BlockRoute, FdbEntry, NeighEntry, RoutingPlan, VxlanDevice};
use crate::kernel::Mac;
use crate::Result;

/// A VXLAN link of ours as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Option<Ipv4Addr>,
    pub learning: bool,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
}

/// A route of ours (protocol 154 with a gateway) as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedRoute {
    pub dst: IpNet,
    pub via: IpAddr,
    pub dev: String,
    pub onlink: bool,
}

/// What the kernel has of ours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    pub vxlan_links: Vec<VxlanLink>,
    /// FDB entries on the planned VXLAN device (empty when it does not exist).
    pub fdb: Vec<FdbEntry>,
    /// Permanent neighbour entries on the planned VXLAN device.
    pub neighbours: Vec<NeighEntry>,
    pub routes: Vec<OwnedRoute>,
}

/// One kernel change. Applying a list of them in order moves the kernel to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    RouteDel(OwnedRoute),
    /// Delete one of our links (a VXLAN device that is no longer wanted or has to be recreated).
    LinkDel(String),
    /// Create the VXLAN device (learning off) and set it up.
    VxlanCreate(VxlanDevice),
    /// Fix MTU / up state (and the MAC when `set_mac`) of the existing VXLAN device in place.
    /// Changing the MAC makes the kernel flush the device's neighbour entries, so [`diff`]
    /// then re-adds all of them.
    VxlanUpdate {
        device: VxlanDevice,
        set_mac: bool,
    },
    FdbReplace {
        dev: String,
        entry: FdbEntry,
    },
    NeighReplace {
        dev: String,
        entry: NeighEntry,
    },
    RouteReplace(BlockRoute),
    NeighDel {
        dev: String,
        entry: NeighEntry,
    },
    FdbDel {
        dev: String,
        entry: FdbEntry,
    },
}

/// The kernel operations routing needs. Reads return only objects we own (see module docs).
pub trait RoutingKernel {
    /// VXLAN links whose name starts with `fny`.
    fn vxlan_links(&self) -> Result<Vec<VxlanLink>>;
    /// Unicast FDB entries with a remote destination on `dev`.
    fn fdb(&self, dev: &str) -> Result<Vec<FdbEntry>>;
    /// Permanent IPv4 and IPv6 neighbour entries on `dev`.
    fn neighbours(&self, dev: &str) -> Result<Vec<NeighEntry>>;
    /// IPv4 and IPv6 main-table routes with protocol 154 and a gateway.
    fn owned_routes(&self) -> Result<Vec<OwnedRoute>>;
    /// Applies one change.
    fn apply(&self, change: &Change) -> Result<()>;
}

/// Reads what we own from the kernel (FDB and neighbours of the planned device only).
pub fn read_current(k: &dyn RoutingKernel, plan: &RoutingPlan) -> Result<Current> {
    let vxlan_links = k.vxlan_links()?;
    let (mut fdb, mut neighbours) = (Vec::new(), Vec::new());
    if let Some(dev) = &plan.vxlan {
        if vxlan_links.iter().any(|l| l.name == dev.name) {
            fdb = k.fdb(&dev.name)?;
            neighbours = k.neighbours(&dev.name)?;
        }
    }
    Ok(Current {
        vxlan_links,
        fdb,
        neighbours,
        routes: k.owned_routes()?,
    })
}

fn route_matches(want: &BlockRoute, have: &OwnedRoute) -> bool {
    want.dst == have.dst
        && want.via == have.via
        && match &want.dev {
            Some(dev) => *dev == have.dev && have.onlink,
            None => true,
        }
}

/// The minimal changes that turn `current` into `plan` (pure). Order: routes to prefixes no
/// longer wanted go first,
/// then the device, forwarding and neighbour entries, the wanted routes, and last the stale
/// neighbour/FDB entries and links — so a route never points at a missing next hop.
pub fn diff(plan: &RoutingPlan, current: &Current) -> Vec<Change> {
    let mut out = Vec::new();
    for have in &current.routes {
        // A route to a prefix we still want is replaced in place below (no gap in traffic).
        if !plan.routes.iter().any(|w| w.dst == have.dst) {
            out.push(Change::RouteDel(have.clone()));
        }
    }

    let mut recreated = false;
    let mut neigh_flushed = false;
    let mut stale_links = Vec::new();
    for l in &current.vxlan_links {
        match &plan.vxlan {
            Some(d) if d.name == l.name => {
                let same_identity =
                    l.vni == d.vni && l.port == d.port && l.local == Some(d.local) && !l.learning;
                if !same_identity {
                    out.push(Change::LinkDel(l.name.clone()));
                    recreated = true;
                } else if l.mtu != d.mtu || l.mac != Some(d.mac) || !l.up {
                    let set_mac = l.mac != Some(d.mac);
                    neigh_flushed = set_mac;
                    out.push(Change::VxlanUpdate {
                        device: d.clone(),
                        set_mac,
                    });
                }
            }
            _ => stale_links.push(l.name.clone()),
        }
    }
    if let Some(d) = &plan.vxlan {
        let exists = current.vxlan_links.iter().any(|l| l.name == d.name);
        if recreated || !exists {
            out.push(Change::VxlanCreate(d.clone()));
        }
        let (fdb, neigh): (&[FdbEntry], &[NeighEntry]) = if recreated {
            (&[], &[])
        } else {
            (&current.fdb, &current.neighbours)
        };
        for e in &plan.fdb {
            if !fdb.contains(e) {
                out.push(Change::FdbReplace {
                    dev: d.name.clone(),
                    entry: *e,
                });
            }
        }
        let neigh: &[NeighEntry] = if neigh_flushed { &[] } else { neigh };
        for e in &plan.neighbours {
            if !neigh.contains(e) {
                out.push(Change::NeighReplace {
                    dev: d.name.clone(),
                    entry: *e,
                });
            }
        }
    }
    for w in &plan.routes {
        if !current.routes.iter().any(|h| route_matches(w, h)) {
            out.push(Change::RouteReplace(w.clone()));
        }
    }
    if let (Some(d), false) = (&plan.vxlan, recreated) {
        for e in &current.neighbours {
            if !neigh_flushed && !plan.neighbours.contains(e) {
                out.push(Change::NeighDel {
                    dev: d.name.clone(),
                    entry: *e,
                });
            }
        }
        for e in &current.fdb {
            if !plan.fdb.contains(e) {
                out.push(Change::FdbDel {
                    dev: d.name.clone(),
                    entry: *e,
                });
            }
        }
    }
    out.extend(stale_links.into_iter().map(Change::LinkDel));
    out
}

impl Change {
    fn is_delete(&self) -> bool {
        matches!(
            self,
            Change::RouteDel(_)
                | Change::LinkDel(_)
                | Change::NeighDel { .. }
                | Change::FdbDel { .. }
        )
    }
}

/// Reads, diffs and applies; returns the changes applied. A delete of something already gone
/// counts as done. Stops at the first other failing change (the next resync retries from what
/// the kernel then has).
pub fn reconcile(k: &dyn RoutingKernel, plan: &RoutingPlan) -> Result<Vec<Change>> {
    let current = read_current(k, plan)?;
    let changes = diff(plan, &current);
    for c in &changes {
        tracing::debug!(change = ?c, "routing change");
        match k.apply(c) {
            Ok(()) => {}
            Err(e) if c.is_delete() && e.is_not_found() => {
                tracing::debug!(change = ?c, "already gone");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{plan, BlockInfo, Encapsulation, NodeInfo, PlanInput};
    use super::*;

    fn input(enc: Encapsulation) -> PlanInput {
        PlanInput {
            node: "a".into(),
            underlay: "172.31.0.1".parse().unwrap(),
            underlay_mtu: 1500,
            nodes: vec![
                NodeInfo {
                    name: "a".into(),
                    underlay: "172.31.0.1".parse().unwrap(),
                },
                NodeInfo {
                    name: "b".into(),
                    underlay: "172.31.0.2".parse().unwrap(),
                },
            ],
            blocks: vec![
                BlockInfo {
                    cidr: "10.244.0.0/26".parse().unwrap(),
                    node: Some("a".into()),
                },
                BlockInfo {
                    cidr: "10.244.0.64/26".parse().unwrap(),
                    node: Some("b".into()),
                },
            ],
            encapsulation: enc,
        }
    }

    /// What the kernel would hold after applying `p` to an empty node.
    fn applied(p: &RoutingPlan) -> Current {
        let d = p.vxlan.clone();
        Current {
            vxlan_links: d
                .iter()
                .map(|d| VxlanLink {
                    name: d.name.clone(),
                    vni: d.vni,
                    port: d.port,
                    local: Some(d.local),
                    learning: false,
                    mac: Some(d.mac),
                    mtu: d.mtu,
                    up: true,
                })
                .collect(),
            fdb: p.fdb.clone(),
            neighbours: p.neighbours.clone(),
            routes: p
                .routes
                .iter()
                .map(|r| OwnedRoute {
                    dst: r.dst,
                    via: r.via,
                    dev: r.dev.clone().unwrap_or_else(|| "u0".into()),
                    onlink: r.dev.is_some(),
                })
                .collect(),
        }
    }

    #[test]
    fn empty_node_gets_everything_in_order() {
        let p = plan(&input(Encapsulation::default()));
        let c = diff(&p, &Current::default());
        assert!(matches!(c[0], Change::VxlanCreate(_)));
        assert!(matches!(c[1], Change::FdbReplace { .. }));
        assert!(matches!(c[2], Change::NeighReplace { .. }));
        assert!(matches!(c[3], Change::RouteReplace(_)));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn in_sync_means_no_change() {
        for enc in [Encapsulation::default(), Encapsulation::None] {
            let p = plan(&input(enc));
            assert_eq!(diff(&p, &applied(&p)), vec![]);
        }
    }

    #[test]
    fn stale_objects_are_removed_and_mtu_fixed_in_place() {
        let p = plan(&input(Encapsulation::default()));
        let mut cur = applied(&p);
        cur.vxlan_links[0].mtu = 1400;
        cur.routes.push(OwnedRoute {
            dst: "10.244.9.0/26".parse().unwrap(),
            via: "10.244.9.0".parse().unwrap(),
            dev: "fny.vxlan".into(),
            onlink: true,
        });
        let gone = NeighEntry {
            ip: "10.244.9.0".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 9],
        };
        cur.neighbours.push(gone);
        let c = diff(&p, &cur);
        assert!(matches!(&c[0], Change::RouteDel(r) if r.dst.to_string() == "10.244.9.0/26"));
        assert!(
            matches!(&c[1], Change::VxlanUpdate { device, set_mac: false } if device.mtu == 1450)
        );
        assert!(matches!(&c[2], Change::NeighDel { entry, .. } if *entry == gone));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn changed_mac_re_adds_neighbours() {
        let p = plan(&input(Encapsulation::default()));
        let mut cur = applied(&p);
        cur.vxlan_links[0].mac = Some([2, 0, 0, 0, 0, 1]);
        cur.neighbours.push(NeighEntry {
            ip: "10.244.9.0".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 9],
        });
        let c = diff(&p, &cur);
        assert!(matches!(&c[0], Change::VxlanUpdate { set_mac: true, .. }));
        assert!(matches!(&c[1], Change::NeighReplace { .. }));
        assert_eq!(c.len(), 2, "{c:?}");
    }

    #[test]
    fn changed_vni_recreates_device_and_switch_to_none_removes_it() {
        let p = plan(&input(Encapsulation::default()));
        let mut cur = applied(&p);
        cur.vxlan_links[0].vni = 1;
        let c = diff(&p, &cur);
        assert_eq!(c[0], Change::LinkDel("fny.vxlan".into()));
        assert!(matches!(c[1], Change::VxlanCreate(_)));
        assert!(c.iter().any(|c| matches!(c, Change::FdbReplace { .. })));

        let none = plan(&input(Encapsulation::None));
        let c = diff(&none, &applied(&p));
        // the route is replaced in place, then the device goes
        assert!(matches!(&c[0], Change::RouteReplace(r) if r.via.to_string() == "172.31.0.2"));
        assert_eq!(c[1], Change::LinkDel("fny.vxlan".into()));
        assert_eq!(c.len(), 2);
    }

    type FailFn = Box<dyn Fn(&Change) -> Option<crate::Error>>;

    /// A kernel that holds `current`, records applied changes and fails chosen ones.
    struct Recording {
        current: Current,
        applied: std::cell::RefCell<Vec<Change>>,
        fail: FailFn,
    }

    impl RoutingKernel for Recording {
        fn vxlan_links(&self) -> Result<Vec<VxlanLink>> {
            Ok(self.current.vxlan_links.clone())
        }
        fn fdb(&self, _: &str) -> Result<Vec<FdbEntry>> {
            Ok(self.current.fdb.clone())
        }
        fn neighbours(&self, _: &str) -> Result<Vec<NeighEntry>> {
            Ok(self.current.neighbours.clone())
        }
        fn owned_routes(&self) -> Result<Vec<OwnedRoute>> {
            Ok(self.current.routes.clone())
        }
        fn apply(&self, c: &Change) -> Result<()> {
            if let Some(e) = (self.fail)(c) {
                return Err(e);
            }
            self.applied.borrow_mut().push(c.clone());
            Ok(())
        }
    }

    #[test]
    fn reconcile_tolerates_vanished_deletes_and_stops_on_other_errors() {
        let p = plan(&input(Encapsulation::default()));
        let mut cur = applied(&p);
        cur.routes.push(OwnedRoute {
            dst: "10.244.9.0/26".parse().unwrap(),
            via: "10.244.9.0".parse().unwrap(),
            dev: "fny.vxlan".into(),
            onlink: true,
        });
        cur.fdb.clear();
        let k = Recording {
            current: cur.clone(),
            applied: Default::default(),
            fail: Box::new(|c| {
                matches!(c, Change::RouteDel(_)).then(|| crate::Error::NotFound {
                    op: "delete route",
                    object: "x".into(),
                })
            }),
        };
        let done = reconcile(&k, &p).unwrap();
        assert_eq!(done.len(), 2); // the vanished route delete + the missing FDB entry
        assert_eq!(k.applied.borrow().len(), 1);

        let k = Recording {
            current: cur,
            applied: Default::default(),
            fail: Box::new(|c| {
                matches!(c, Change::RouteDel(_)).then(|| crate::Error::Protocol {
                    op: "delete route",
                    object: "x".into(),
                    detail: "boom".into(),
                })
            }),
        };
        assert!(reconcile(&k, &p).is_err());
        assert!(k.applied.borrow().is_empty(), "nothing after the failure");
    }
}
