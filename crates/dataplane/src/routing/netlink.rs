//! [`RoutingKernel`] over rtnetlink, in [`LinuxKernel`]'s style (synchronous, one socket per
//! namespace): VXLAN links with `IFLA_VXLAN_*` info, FDB entries as `AF_BRIDGE` neighbours with
//! `NTF_SELF`, permanent IPv4/IPv6 neighbours, and proto-154 routes with `NLM_F_REPLACE`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use std::path::PathBuf;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::plan::{FdbEntry, NeighEntry};
use super::reconcile::{Change, OwnedRoute, RoutingKernel, VxlanLink};
use crate::kernel::{Kernel, Netns};
use crate::linux::{is_main_unicast, parse_link, route_ip};
use crate::{Error, LinuxKernel, Result, HOST_IFACE_PREFIX, RTPROT_FURYNET};

struct ProtoRoute {
    dst: IpNet,
    via: Option<IpAddr>,
    dev: String,
    onlink: bool,
}

/// The routing operations on a [`LinuxKernel`], in the current namespace or the one at `netns`.
#[derive(Debug, Default)]
pub struct NetlinkRouting {
    kernel: LinuxKernel,
    netns: Option<PathBuf>,
}

impl NetlinkRouting {
    /// In the calling thread's namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// In the namespace at `path` (e.g. `/run/netns/NAME`).
    pub fn in_netns(path: impl Into<PathBuf>) -> Self {
        NetlinkRouting {
            kernel: LinuxKernel::new(),
            netns: Some(path.into()),
        }
    }

    /// The pod routes furynet-cni installed in this namespace (`POD/32 dev fnyX scope link
    /// proto 154`, no gateway): each local pod address and its host interface. The node agent
    /// learns its local endpoints from these, so it needs no record from the plugin.
    pub fn pod_routes(&self) -> Result<Vec<(IpAddr, String)>> {
        Ok(self
            .proto_routes()?
            .into_iter()
            .filter(|r| {
                r.via.is_none()
                    && r.dev.starts_with(HOST_IFACE_PREFIX)
                    && r.dst.prefix_len() == r.dst.max_prefix_len()
            })
            .map(|r| (r.dst.addr(), r.dev))
            .collect())
    }

    /// Main-table unicast routes with protocol 154, with and without a gateway.
    fn proto_routes(&self) -> Result<Vec<ProtoRoute>> {
        let names: HashMap<u32, String> = self
            .links()?
            .iter()
            .map(|l| {
                let l = parse_link(l);
                (l.index, l.name)
            })
            .collect();
        let mut msgs = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            msgs.extend(self.dump("list routes", RouteNetlinkMessage::GetRoute(req))?);
        }
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if !is_main_unicast(&r) || r.header.protocol != RouteProtocol::from(RTPROT_FURYNET) {
                continue;
            }
            let (mut dst, mut via, mut oif) = (None, None, None);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(x) => dst = route_ip(x),
                    RouteAttribute::Gateway(x) => via = route_ip(x),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let Some(Ok(dst)) = dst.map(|d| IpNet::new(d, r.header.destination_prefix_length))
            else {
                continue;
            };
            out.push(ProtoRoute {
                dst,
                via,
                dev: oif.and_then(|i| names.get(&i).cloned()).unwrap_or_default(),
                onlink: r.header.flags.contains(RouteFlags::Onlink),
            });
        }
        Ok(out)
    }

    fn ns(&self) -> Netns<'_> {
        match &self.netns {
            Some(p) => Netns::Path(p),
            None => Netns::Current,
        }
    }

    fn index(&self, dev: &str) -> Result<u32> {
        match self.kernel.link(self.ns(), dev)? {
            Some(l) => Ok(l.index),
            None => Err(Error::NotFound {
                op: "find interface",
                object: format!("{dev} in {}", self.ns()),
            }),
        }
    }

    fn dump(&self, op: &'static str, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.kernel
            .socket(self.ns())?
            .dump(msg)
            .map_err(|e| Error::from_io(op, self.ns().to_string(), e))
    }

    fn change(
        &self,
        op: &'static str,
        object: String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<()> {
        self.kernel
            .socket(self.ns())?
            .change(msg, flags)
            .map_err(|e| Error::from_io(op, format!("{object} in {}", self.ns()), e))
    }

    fn links(&self) -> Result<Vec<LinkMessage>> {
        Ok(self
            .dump(
                "list links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    fn neighbours_of(&self, family: AddressFamily, dev: &str) -> Result<Vec<NeighbourMessage>> {
        let index = self.index(dev)?;
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        Ok(self
            .dump("list neighbours", RouteNetlinkMessage::GetNeighbour(req))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => Some(n),
                _ => None,
            })
            .collect())
    }

    /// An FDB entry (`bridge`: `AF_BRIDGE`, `NTF_SELF`) or a neighbour (family of `ip`).
    fn neigh_msg(
        &self,
        bridge: bool,
        dev: &str,
        ip: IpAddr,
        mac: &[u8; 6],
    ) -> Result<NeighbourMessage> {
        let dst = match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        };
        let mut msg = NeighbourMessage::default();
        msg.header.family = match (bridge, ip) {
            (true, _) => AddressFamily::Bridge,
            (false, IpAddr::V4(_)) => AddressFamily::Inet,
            (false, IpAddr::V6(_)) => AddressFamily::Inet6,
        };
        msg.header.ifindex = self.index(dev)?;
        msg.header.state = NeighbourState::Permanent;
        if bridge {
            msg.header.flags = NeighbourFlags::Own; // NTF_SELF: the VXLAN device's own FDB
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
            msg.attributes.push(NeighbourAttribute::Destination(dst));
        } else {
            msg.attributes.push(NeighbourAttribute::Destination(dst));
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        Ok(msg)
    }

    fn route_msg(
        &self,
        dst: IpNet,
        via: IpAddr,
        dev: Option<&str>,
        onlink: bool,
    ) -> Result<RouteMessage> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match dst {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::from(RTPROT_FURYNET);
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                dst.network(),
            )));
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(via)));
        if let Some(dev) = dev {
            msg.attributes.push(RouteAttribute::Oif(self.index(dev)?));
        }
        Ok(msg)
    }
}

fn mac_of(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

impl RoutingKernel for NetlinkRouting {
    fn vxlan_links(&self) -> Result<Vec<VxlanLink>> {
        let mut out = Vec::new();
        for msg in self.links()? {
            let link = parse_link(&msg);
            if link.kind.as_deref() != Some("vxlan") || !link.name.starts_with(HOST_IFACE_PREFIX) {
                continue;
            }
            let mut v = VxlanLink {
                name: link.name,
                vni: 0,
                port: 0,
                local: None,
                learning: true,
                mac: link.mac,
                mtu: link.mtu,
                up: link.up,
            };
            for attr in &msg.attributes {
                if let LinkAttribute::LinkInfo(infos) = attr {
                    for info in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(data)) = info {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(id) => v.vni = *id,
                                    InfoVxlan::Port(p) => v.port = *p,
                                    InfoVxlan::Local(ip) => v.local = Some(*ip),
                                    InfoVxlan::Learning(l) => v.learning = *l,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    fn fdb(&self, dev: &str) -> Result<Vec<FdbEntry>> {
        Ok(self
            .neighbours_of(AddressFamily::Bridge, dev)?
            .iter()
            .filter_map(|n| {
                let mut mac = None;
                let mut dst = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                            dst = Some(*ip)
                        }
                        // In an AF_BRIDGE message the crate cannot tell the address family.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                        }
                        _ => {}
                    }
                }
                Some(FdbEntry {
                    mac: mac?,
                    dst: dst?,
                })
            })
            .filter(|e| e.mac != [0; 6])
            .collect())
    }

    fn neighbours(&self, dev: &str) -> Result<Vec<NeighEntry>> {
        let mut msgs = self.neighbours_of(AddressFamily::Inet, dev)?;
        msgs.extend(self.neighbours_of(AddressFamily::Inet6, dev)?);
        Ok(msgs
            .iter()
            .filter(|n| n.header.state == NeighbourState::Permanent)
            .filter_map(|n| {
                let mut mac = None;
                let mut ip = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(x)) => {
                            ip = Some(IpAddr::V4(*x))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(x)) => {
                            ip = Some(IpAddr::V6(*x))
                        }
                        _ => {}
                    }
                }
                Some(NeighEntry { ip: ip?, mac: mac? })
            })
            .collect())
    }

    fn owned_routes(&self) -> Result<Vec<OwnedRoute>> {
        // No gateway: a CNI pod route, not ours to manage here.
        Ok(self
            .proto_routes()?
            .into_iter()
            .filter_map(|r| {
                Some(OwnedRoute {
                    dst: r.dst,
                    via: r.via?,
                    dev: r.dev,
                    onlink: r.onlink,
                })
            })
            .collect())
    }

    fn apply(&self, change: &Change) -> Result<()> {
        match change {
            Change::RouteDel(r) => {
                let msg = self.route_msg(r.dst, r.via, None, false)?;
                self.change(
                    "delete route",
                    r.dst.to_string(),
                    RouteNetlinkMessage::DelRoute(msg),
                    0,
                )
            }
            Change::LinkDel(name) => self.kernel.delete_link(self.ns(), name).map(|_| ()),
            Change::VxlanCreate(d) => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(d.name.clone()));
                msg.attributes.push(LinkAttribute::Address(d.mac.to_vec()));
                msg.attributes.push(LinkAttribute::Mtu(d.mtu));
                msg.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vxlan),
                    LinkInfo::Data(InfoData::Vxlan(vec![
                        InfoVxlan::Id(d.vni),
                        InfoVxlan::Local(d.local),
                        InfoVxlan::Port(d.port),
                        InfoVxlan::Learning(false),
                    ])),
                ]));
                self.change(
                    "create vxlan",
                    d.name.clone(),
                    RouteNetlinkMessage::NewLink(msg),
                    NLM_F_CREATE | NLM_F_EXCL,
                )?;
                self.kernel.set_link_up(self.ns(), &d.name)
            }
            Change::VxlanUpdate { device: d, set_mac } => {
                let mut msg = LinkMessage::default();
                msg.header.index = self.index(&d.name)?;
                msg.header.flags = LinkFlags::Up;
                msg.header.change_mask = LinkFlags::Up;
                if *set_mac {
                    msg.attributes.push(LinkAttribute::Address(d.mac.to_vec()));
                }
                msg.attributes.push(LinkAttribute::Mtu(d.mtu));
                self.change(
                    "update vxlan",
                    d.name.clone(),
                    RouteNetlinkMessage::SetLink(msg),
                    0,
                )
            }
            Change::FdbReplace { dev, entry } => {
                let msg = self.neigh_msg(true, dev, IpAddr::V4(entry.dst), &entry.mac)?;
                self.change(
                    "replace fdb entry",
                    dev.clone(),
                    RouteNetlinkMessage::NewNeighbour(msg),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
            }
            Change::FdbDel { dev, entry } => {
                let msg = self.neigh_msg(true, dev, IpAddr::V4(entry.dst), &entry.mac)?;
                self.change(
                    "delete fdb entry",
                    dev.clone(),
                    RouteNetlinkMessage::DelNeighbour(msg),
                    0,
                )
            }
            Change::NeighReplace { dev, entry } => {
                let msg = self.neigh_msg(false, dev, entry.ip, &entry.mac)?;
                self.change(
                    "replace neighbour",
                    dev.clone(),
                    RouteNetlinkMessage::NewNeighbour(msg),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
            }
            Change::NeighDel { dev, entry } => {
                let msg = self.neigh_msg(false, dev, entry.ip, &entry.mac)?;
                self.change(
                    "delete neighbour",
                    dev.clone(),
                    RouteNetlinkMessage::DelNeighbour(msg),
                    0,
                )
            }
            Change::RouteReplace(r) => {
                let msg = self.route_msg(r.dst, r.via, r.dev.as_deref(), r.dev.is_some())?;
                self.change(
                    "replace route",
                    r.dst.to_string(),
                    RouteNetlinkMessage::NewRoute(msg),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
            }
        }
    }
}
