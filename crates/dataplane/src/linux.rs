//! [`Kernel`] over rtnetlink and `/proc/sys`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope as NlScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::kernel::{Family, Kernel, Link, Netns, NetnsState, Route, RouteScope, VethSpec};
use crate::netlink::NlSocket;
use crate::{Error, Result};

/// The calling thread's own network namespace.
const SELF_NETNS: &str = "/proc/thread-self/ns/net";

/// The real kernel. Netlink sockets are opened lazily, one per namespace, and reused; a socket
/// stays bound to the namespace it was opened in, so after opening it no `setns` is needed.
///
/// Not `Sync`: namespaces are per thread, so a `LinuxKernel` belongs to the thread that made it.
#[derive(Debug, Default)]
pub struct LinuxKernel {
    current: RefCell<Option<Rc<NlSocket>>>,
    others: RefCell<HashMap<PathBuf, Rc<NlSocket>>>,
}

impl LinuxKernel {
    /// A kernel handle for the calling thread's namespace. Opens nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn socket(&self, ns: Netns<'_>) -> Result<Rc<NlSocket>> {
        match ns {
            Netns::Current => {
                let mut slot = self.current.borrow_mut();
                if let Some(s) = slot.as_ref() {
                    return Ok(Rc::clone(s));
                }
                let s = Rc::new(
                    NlSocket::open()
                        .map_err(|e| Error::from_io("open netlink socket", "current netns", e))?,
                );
                *slot = Some(Rc::clone(&s));
                Ok(s)
            }
            Netns::Path(path) => {
                let mut others = self.others.borrow_mut();
                if let Some(s) = others.get(path) {
                    return Ok(Rc::clone(s));
                }
                let s = Rc::new(open_socket_in(path)?);
                others.insert(path.to_path_buf(), Rc::clone(&s));
                Ok(s)
            }
        }
    }

    /// Sends a change; `Ok(false)` when the kernel says its object does not exist.
    fn change_if_present(
        &self,
        ns: Netns<'_>,
        msg: RouteNetlinkMessage,
        op: &'static str,
        object: impl FnOnce() -> String,
    ) -> Result<bool> {
        match self.socket(ns)?.change(msg, 0) {
            Ok(()) => Ok(true),
            Err(e) => match Error::from_io(op, object(), e) {
                e if e.is_not_found() => Ok(false),
                e => Err(e),
            },
        }
    }

    fn link_index(&self, ns: Netns<'_>, name: &str) -> Result<u32> {
        match self.link(ns, name)? {
            Some(l) => Ok(l.index),
            None => Err(Error::NotFound {
                op: "find interface",
                object: format!("{name} in {ns}"),
            }),
        }
    }

    fn link_by_index(&self, ns: Netns<'_>, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let object = || format!("index {index} in {ns}");
        match self.socket(ns)?.get(RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(first_link(replies)),
            Err(e) => match Error::from_io("get link", object(), e) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    fn default_route(&self, family: Family) -> Result<Option<u32>> {
        let routes = self.dump_routes(Netns::Current, family)?;
        let mut best: Option<(u32, u32, Option<u32>)> = None; // (priority, oif, mtu metric)
        for msg in routes {
            if msg.header.destination_prefix_length != 0 || !is_main_unicast(&msg) {
                continue;
            }
            let mut prio = 0;
            let mut oif = None;
            let mut mtu = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Priority(p) => prio = *p,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::MultiPath(hops) => {
                        oif = oif.or(hops.first().map(|h| h.interface_index))
                    }
                    RouteAttribute::Metrics(ms) => {
                        for m in ms {
                            if let RouteMetric::Mtu(v) = m {
                                if *v > 0 {
                                    mtu = Some(*v);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(oif) = oif {
                if best.is_none_or(|(p, _, _)| prio < p) {
                    best = Some((prio, oif, mtu));
                }
            }
        }
        match best {
            None => Ok(None),
            Some((_, _, Some(mtu))) => Ok(Some(mtu)),
            Some((_, oif, None)) => Ok(self.link_by_index(Netns::Current, oif)?.map(|l| l.mtu)),
        }
    }

    fn dump_routes(&self, ns: Netns<'_>, family: Family) -> Result<Vec<RouteMessage>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = af(family);
        let replies = self
            .socket(ns)?
            .dump(RouteNetlinkMessage::GetRoute(msg))
            .map_err(|e| Error::from_io("list routes", ns.to_string(), e))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .collect())
    }
}

impl Kernel for LinuxKernel {
    fn check_netns(&self, path: &Path) -> Result<NetnsState> {
        let object = || path.display().to_string();
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(NetnsState::Missing),
            Err(e) => return Err(Error::from_io("inspect netns", object(), e)),
        };
        let fs = statfs(path).map_err(|e| Error::from_io("statfs", object(), e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Ok(NetnsState::NotNetns);
        }
        let own =
            fs::metadata(SELF_NETNS).map_err(|e| Error::from_io("inspect netns", SELF_NETNS, e))?;
        if own.dev() == meta.dev() && own.ino() == meta.ino() {
            Ok(NetnsState::Current)
        } else {
            Ok(NetnsState::Other)
        }
    }

    fn create_veth(&self, spec: &VethSpec) -> Result<()> {
        let object = || {
            format!(
                "{} (peer {} in netns {})",
                spec.host_name,
                spec.peer_name,
                spec.peer_netns.display()
            )
        };
        let netns = File::open(&spec.peer_netns)
            .map_err(|e| Error::from_io("open netns", spec.peer_netns.display().to_string(), e))?;
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.clone()));
        peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
        peer.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        let mut host = LinkMessage::default();
        host.attributes
            .push(LinkAttribute::IfName(spec.host_name.clone()));
        host.attributes.push(LinkAttribute::Mtu(spec.mtu));
        if let Some(mac) = spec.host_mac {
            host.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        host.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let result = self
            .socket(Netns::Current)?
            .change(
                RouteNetlinkMessage::NewLink(host),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|e| Error::from_io("create veth", object(), e));
        drop(netns); // kept open until the kernel has answered
        result
    }

    fn link(&self, ns: Netns<'_>, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.socket(ns)?.get(RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(first_link(replies)),
            Err(e) => match Error::from_io("get link", format!("{name} in {ns}"), e) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    fn delete_link(&self, ns: Netns<'_>, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.change_if_present(ns, RouteNetlinkMessage::DelLink(msg), "delete link", || {
            format!("{name} in {ns}")
        })
    }

    fn retire_link(&self, ns: Netns<'_>, name: &str, group: u32) -> Result<bool> {
        // By index: a SETLINK naming the device by IFLA_IFNAME is also a rename, which the
        // kernel refuses (EBUSY) while the device is up.
        let Some(link) = self.link(ns, name)? else {
            return Ok(false);
        };
        let mut msg = LinkMessage::default();
        msg.header.index = link.index;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::Group(group));
        self.change_if_present(ns, RouteNetlinkMessage::SetLink(msg), "retire link", || {
            format!("{name} in {ns}")
        })
    }

    fn delete_group(&self, ns: Netns<'_>, group: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        // ENODEV (absent) here means the group is empty.
        self.change_if_present(
            ns,
            RouteNetlinkMessage::DelLink(msg),
            "delete link group",
            || format!("{group} in {ns}"),
        )
        .map(|_| ())
    }

    fn set_link_up(&self, ns: Netns<'_>, name: &str) -> Result<()> {
        let index = self.link_index(ns, name)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.socket(ns)?
            .change(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| Error::from_io("set link up", format!("{name} in {ns}"), e))
    }

    fn add_address(&self, ns: Netns<'_>, dev: &str, addr: IpNet) -> Result<()> {
        let index = self.link_index(ns, dev)?;
        let mut msg = AddressMessage::default();
        msg.header.family = af(Family::of(&addr.addr()));
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        match addr.addr() {
            IpAddr::V4(ip) => {
                msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(ip)));
            }
            IpAddr::V6(ip) => {
                // A pod's /128 is unique by construction (IPAM): skip duplicate address
                // detection so the address is usable the moment ADD returns.
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V6(ip)));
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        self.socket(ns)?
            .change(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|e| Error::from_io("add address", format!("{addr} on {dev} in {ns}"), e))
    }

    fn addresses(&self, ns: Netns<'_>, dev: &str) -> Result<Vec<IpNet>> {
        let index = self.link_index(ns, dev)?;
        let replies = self
            .socket(ns)?
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|e| Error::from_io("list addresses", format!("{dev} in {ns}"), e))?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    fn add_route(&self, ns: Netns<'_>, route: &Route) -> Result<()> {
        let index = self.link_index(ns, &route.dev)?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = af(Family::of(&route.dst.addr()));
        msg.header.destination_prefix_length = route.dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::from(route.protocol);
        msg.header.scope = match route.scope {
            RouteScope::Universe => NlScope::Universe,
            RouteScope::Link => NlScope::Link,
            RouteScope::Host => NlScope::Host,
            RouteScope::Other(v) => NlScope::from(v),
        };
        msg.header.kind = RouteType::Unicast;
        if route.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        if route.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dst.network(),
                )));
        }
        if let Some(gw) = route.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        self.socket(ns)?
            .change(
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|e| Error::from_io("add route", format!("{route} in {ns}"), e))
    }

    fn routes(&self, ns: Netns<'_>, family: Family, dev: &str) -> Result<Vec<Route>> {
        let index = self.link_index(ns, dev)?;
        let mut out = Vec::new();
        for msg in self.dump_routes(ns, family)? {
            if !is_main_unicast(&msg) {
                continue;
            }
            let mut dst = None;
            let mut gateway = None;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(a) => dst = route_ip(a),
                    RouteAttribute::Gateway(a) => gateway = route_ip(a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if oif != Some(index) {
                continue;
            }
            let dst_ip = dst.unwrap_or(match family {
                Family::V4 => IpAddr::from([0u8; 4]),
                Family::V6 => IpAddr::from([0u8; 16]),
            });
            let Ok(dst) = IpNet::new(dst_ip, msg.header.destination_prefix_length) else {
                continue;
            };
            out.push(Route {
                dst,
                gateway,
                dev: dev.to_string(),
                scope: match msg.header.scope {
                    NlScope::Universe => RouteScope::Universe,
                    NlScope::Link => RouteScope::Link,
                    NlScope::Host => RouteScope::Host,
                    other => RouteScope::Other(u8::from(other)),
                },
                onlink: msg.header.flags.contains(RouteFlags::Onlink),
                protocol: u8::from(msg.header.protocol),
            });
        }
        Ok(out)
    }

    fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::from_io("write sysctl", key, e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| Error::from_io("write sysctl", format!("{key}={value}"), e))
    }

    fn read_sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        let mut s = String::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(|e| Error::from_io("read sysctl", key, e))?;
        Ok(s.trim().to_string())
    }

    fn default_route_mtu(&self) -> Result<Option<(u32, Family)>> {
        for family in [Family::V4, Family::V6] {
            if let Some(mtu) = self.default_route(family)? {
                return Ok(Some((mtu, family)));
            }
        }
        Ok(None)
    }
}

/// Opens a netlink socket inside the namespace at `path`: enter it, open, come back. The socket
/// keeps working in that namespace after the thread has returned to its own.
fn open_socket_in(path: &Path) -> Result<NlSocket> {
    let object = || path.display().to_string();
    let target = File::open(path).map_err(|e| Error::from_io("open netns", object(), e))?;
    let home = File::open(SELF_NETNS).map_err(|e| Error::from_io("open netns", SELF_NETNS, e))?;
    setns(&target, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::from_io("enter netns", object(), e.into()))?;
    let socket = NlSocket::open();
    setns(&home, CloneFlags::CLONE_NEWNET).map_err(|e| Error::NamespaceLost(e.into()))?;
    socket.map_err(|e| Error::from_io("open netlink socket in", object(), e))
}

fn sysctl_path(key: &str) -> Result<PathBuf> {
    let rel = Path::new(key);
    if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::Os {
            op: "sysctl",
            object: key.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a relative sysctl key"),
        });
    }
    Ok(Path::new("/proc/sys").join(rel))
}

fn af(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

pub(crate) fn is_main_unicast(msg: &RouteMessage) -> bool {
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN) && msg.header.kind == RouteType::Unicast
}

pub(crate) fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn first_link(replies: Vec<RouteNetlinkMessage>) -> Option<Link> {
    replies.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
        _ => None,
    })
}

pub(crate) fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        peer_index: None,
        group: 0,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(b) => link.mac = b.as_slice().try_into().ok(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Link(i) => link.peer_index = Some(*i),
            LinkAttribute::Group(g) => link.group = *g,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}
