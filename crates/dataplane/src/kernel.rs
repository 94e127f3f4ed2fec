//! The kernel seam: the few operations pod wiring needs, as values in and values out.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::Result;

/// An Ethernet hardware address.
pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`, the way CNI results and `ip link` print MACs.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Which network namespace an operation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netns<'a> {
    /// The namespace the calling thread is in (for the CNI plugin: the host's).
    Current,
    /// The namespace behind a path such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(&'a Path),
}

impl fmt::Display for Netns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Current => f.write_str("current netns"),
            Netns::Path(p) => write!(f, "netns {}", p.display()),
        }
    }
}

/// What a namespace path refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsState {
    /// Nothing at that path.
    Missing,
    /// Something that is not a network namespace (a regular file, a directory, ...).
    NotNetns,
    /// The caller's own network namespace.
    Current,
    /// Another network namespace.
    Other,
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A veth pair to create: `host_name` in the current namespace, `peer_name` directly inside
/// `peer_netns` (one atomic netlink request, so a failure leaves nothing behind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    pub host_name: String,
    pub host_mac: Option<Mac>,
    pub peer_name: String,
    pub peer_netns: PathBuf,
    pub mtu: u32,
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `veth`, `dummy`, ... (`None` for devices without link info, such as `lo`).
    pub kind: Option<String>,
    /// For a veth: the peer's interface index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// Interface group (`IFLA_GROUP`; 0 is the kernel's default group).
    pub group: u32,
}

/// Route scope (the subset furynet uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteScope {
    Universe,
    Link,
    Host,
    Other(u8),
}

/// A unicast route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface name.
    pub dev: String,
    pub scope: RouteScope,
    /// `onlink`: the gateway is reachable on `dev` even without a covering subnet route.
    pub onlink: bool,
    /// Route protocol (`RTPROT_*`; furynet's own is [`crate::RTPROT_FURYNET`]).
    pub protocol: u8,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.scope == RouteScope::Link {
            f.write_str(" scope link")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// The kernel operations pod wiring needs. Implemented by [`crate::LinuxKernel`] and, for
/// tests, by [`crate::fake::FakeKernel`].
///
/// Conventions: lookups return `Ok(None)` / `Ok(false)` for absent objects rather than an error;
/// creation fails with [`crate::Error::Exists`] when the object exists.
pub trait Kernel {
    /// What `path` refers to.
    fn check_netns(&self, path: &Path) -> Result<NetnsState>;
    /// Creates a veth pair (see [`VethSpec`]).
    fn create_veth(&self, spec: &VethSpec) -> Result<()>;
    /// Looks an interface up by name.
    fn link(&self, ns: Netns<'_>, name: &str) -> Result<Option<Link>>;
    /// Deletes an interface by name (for a veth, both ends). `Ok(false)` if it did not exist.
    fn delete_link(&self, ns: Netns<'_>, name: &str) -> Result<bool>;
    /// Takes an interface out of service at once, without unregistering it: sets it down (the
    /// kernel drops its routes and neighbours; a veth peer loses its carrier) and moves it to
    /// interface `group`, for a later [`Kernel::delete_group`]. `Ok(false)` if it did not exist.
    fn retire_link(&self, ns: Netns<'_>, name: &str, group: u32) -> Result<bool>;
    /// Deletes every interface of `group` in one request: the kernel unregisters them as one
    /// batch (one RCU wait for all). Nothing in the group is not an error.
    fn delete_group(&self, ns: Netns<'_>, group: u32) -> Result<()>;
    /// Sets an interface administratively up.
    fn set_link_up(&self, ns: Netns<'_>, name: &str) -> Result<()>;
    /// Adds an address (IPv6 addresses skip duplicate address detection).
    fn add_address(&self, ns: Netns<'_>, dev: &str, addr: IpNet) -> Result<()>;
    /// Addresses on an interface.
    fn addresses(&self, ns: Netns<'_>, dev: &str) -> Result<Vec<IpNet>>;
    /// Adds a route to the main table.
    fn add_route(&self, ns: Netns<'_>, route: &Route) -> Result<()>;
    /// Unicast routes of one family in the main table whose output interface is `dev`.
    fn routes(&self, ns: Netns<'_>, family: Family, dev: &str) -> Result<Vec<Route>>;
    /// Writes `/proc/sys/<key>` in the current namespace (`key` like `net/ipv4/conf/X/proxy_arp`).
    fn write_sysctl(&self, key: &str, value: &str) -> Result<()>;
    /// Reads `/proc/sys/<key>` in the current namespace, trimmed.
    fn read_sysctl(&self, key: &str) -> Result<String>;
    /// The MTU of the current namespace's default route (route MTU metric, else its device's
    /// MTU) and that route's family; IPv4 is preferred. `None` without a default route.
    fn default_route_mtu(&self) -> Result<Option<(u32, Family)>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_and_route_display() {
        assert_eq!(format_mac(&[0xee; 6]), "ee:ee:ee:ee:ee:ee");
        assert_eq!(format_mac(&[0, 1, 0x2a, 3, 4, 0xff]), "00:01:2a:03:04:ff");
        let r = Route {
            dst: "10.0.0.1/32".parse().unwrap(),
            gateway: None,
            dev: "fny0".into(),
            scope: RouteScope::Link,
            onlink: false,
            protocol: 154,
        };
        assert_eq!(r.to_string(), "10.0.0.1/32 dev fny0 scope link proto 154");
    }
}
