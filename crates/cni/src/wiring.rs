//! The pod wiring model (like Calico's, so the node agent can route to pods):
//!
//! - host side: a veth named [`host_veth_name`] (`fny` + 11 hex characters), MAC
//!   `ee:ee:ee:ee:ee:ee`, no address, `proxy_arp=1`, `neigh/<if>/proxy_delay=0` and
//!   `conf/<if>/forwarding=1` (per interface: Linux answers proxy ARP only on interfaces that
//!   forward), up, and one route per pod address `POD_IP/32 dev fnyX scope link proto 154`
//!   (`/128` for IPv6);
//! - pod side: `CNI_IFNAME` with the pod's `/32` and `/128`, the MTU, up, `lo` up, and default
//!   routes `0.0.0.0/0 via 169.254.1.1 dev IFNAME onlink` and
//!   `::/0 via fe80::ecee:eeff:feee:eeee dev IFNAME` (the host veth's EUI-64 link-local).
//!
//! Only the veth pair is created; everything else hangs off it, so deleting the host veth
//! removes the whole attachment (its peer, addresses and routes). No global sysctl is touched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use furynet_dataplane::{
    Kernel, Mac, Netns, Route, RouteScope, VethSpec, HOST_IFACE_PREFIX, RTPROT_FURYNET,
};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

/// MAC of every host-side veth.
pub const HOST_MAC: Mac = [0xee; 6];
/// The pods' IPv4 next hop: answered by proxy ARP on the host veth, never assigned anywhere.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 next hop: the host veth's link-local address derived from [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// Host veth name for an attachment: `fny` + the first 11 hex characters of
/// SHA-256(`containerID/ifname`). Deterministic, so DEL and GC find it without any state.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_IFACE_PREFIX}{}", &hex[..11])
}

/// The prefix a pod address gets on its interface (and in the result).
pub fn pod_prefix(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v) => IpNet::from(ipnet::Ipv4Net::from(v)),
        IpAddr::V6(v) => IpNet::from(ipnet::Ipv6Net::from(v)),
    }
}

/// Per-interface sysctls on the host veth (paths under `/proc/sys`).
pub fn host_sysctls(host_if: &str, ips: &[IpAddr]) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if ips.iter().any(IpAddr::is_ipv4) {
        out.push((format!("net/ipv4/conf/{host_if}/proxy_arp"), "1"));
        out.push((format!("net/ipv4/neigh/{host_if}/proxy_delay"), "0"));
        // Proxy ARP (arp_process) only answers on an interface that forwards.
        out.push((format!("net/ipv4/conf/{host_if}/forwarding"), "1"));
    }
    if ips.iter().any(IpAddr::is_ipv6) {
        out.push((format!("net/ipv6/conf/{host_if}/disable_ipv6"), "0"));
        // The IPv6 gateway must be the EUI-64 link-local, usable at once: force EUI-64
        // generation on this interface (hosts may default to stable-privacy) and skip DAD.
        out.push((format!("net/ipv6/conf/{host_if}/addr_gen_mode"), "0"));
        out.push((format!("net/ipv6/conf/{host_if}/accept_dad"), "0"));
        // Router behaviour on this interface (the pod's gateway): NAs carry the router flag.
        out.push((format!("net/ipv6/conf/{host_if}/forwarding"), "1"));
    }
    out
}

/// Default routes inside the pod, one per family in use.
pub fn pod_routes(ifname: &str, ips: &[IpAddr]) -> Vec<Route> {
    let mut out = Vec::new();
    if ips.iter().any(IpAddr::is_ipv4) {
        out.push(Route {
            dst: IpNet::from(ipnet::Ipv4Net::default()),
            gateway: Some(IpAddr::V4(GATEWAY_V4)),
            dev: ifname.to_string(),
            scope: RouteScope::Universe,
            onlink: true,
            protocol: RTPROT_FURYNET,
        });
    }
    if ips.iter().any(IpAddr::is_ipv6) {
        out.push(Route {
            dst: IpNet::from(ipnet::Ipv6Net::default()),
            gateway: Some(IpAddr::V6(GATEWAY_V6)),
            dev: ifname.to_string(),
            scope: RouteScope::Universe,
            onlink: false,
            protocol: RTPROT_FURYNET,
        });
    }
    out
}

/// Host routes to the pod, one per address.
pub fn host_routes(host_if: &str, ips: &[IpAddr]) -> Vec<Route> {
    ips.iter()
        .map(|ip| Route {
            dst: pod_prefix(*ip),
            gateway: None,
            dev: host_if.to_string(),
            scope: if ip.is_ipv4() {
                RouteScope::Link
            } else {
                RouteScope::Universe // IPv6 routes have no scope
            },
            onlink: false,
            protocol: RTPROT_FURYNET,
        })
        .collect()
}

/// What to wire.
#[derive(Debug, Clone)]
pub struct PodPlan<'a> {
    pub host_if: &'a str,
    pub ifname: &'a str,
    pub netns: &'a Path,
    pub ips: &'a [IpAddr],
    pub mtu: u32,
}

/// A failed wiring step.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct WireError {
    pub step: &'static str,
    #[source]
    pub source: furynet_dataplane::Error,
}

fn step<T>(step: &'static str, r: furynet_dataplane::Result<T>) -> Result<T, WireError> {
    r.map_err(|source| WireError { step, source })
}

/// Wires the pod and returns the pod interface's MAC. On error the caller rolls back by
/// deleting the host veth (see [`unwire`]); nothing else is left behind.
pub fn wire(k: &dyn Kernel, plan: &PodPlan<'_>) -> Result<Option<Mac>, WireError> {
    let pod = Netns::Path(plan.netns);
    step(
        "create veth",
        k.create_veth(&VethSpec {
            host_name: plan.host_if.to_string(),
            host_mac: Some(HOST_MAC),
            peer_name: plan.ifname.to_string(),
            peer_netns: plan.netns.to_path_buf(),
            mtu: plan.mtu,
        }),
    )?;
    for (key, value) in host_sysctls(plan.host_if, plan.ips) {
        step("host sysctl", k.write_sysctl(&key, value))?;
    }
    step("host veth up", k.set_link_up(Netns::Current, plan.host_if))?;
    step("pod lo up", k.set_link_up(pod, "lo"))?;
    for ip in plan.ips {
        step(
            "pod address",
            k.add_address(pod, plan.ifname, pod_prefix(*ip)),
        )?;
    }
    step("pod interface up", k.set_link_up(pod, plan.ifname))?;
    for r in pod_routes(plan.ifname, plan.ips) {
        step("pod default route", k.add_route(pod, &r))?;
    }
    for r in host_routes(plan.host_if, plan.ips) {
        step("host route", k.add_route(Netns::Current, &r))?;
    }
    let link = step("read pod interface", k.link(pod, plan.ifname))?;
    Ok(link.and_then(|l| l.mac))
}

/// Removes an attachment's kernel state: the host veth (and with it the peer, the addresses
/// and every route through it). `Ok(false)` if it was already gone.
pub fn unwire(k: &dyn Kernel, host_if: &str) -> furynet_dataplane::Result<bool> {
    k.delete_link(Netns::Current, host_if)
}

/// Interface group of host veths that DEL took out of service and that wait for the reaper
/// (`0x66796e00`, "fyn"). No other software is expected to use it; `ip link show group
/// 1719233024` lists them.
pub const RETIRED_GROUP: u32 = 0x6679_6e00;

/// DEL's fast path: takes the host veth out of service at once (down: the kernel drops its
/// routes, the pod side loses its carrier, nothing can pass either way) and marks it for
/// [`reap`]. `Ok(false)` if it was already gone.
pub fn retire(k: &dyn Kernel, host_if: &str) -> furynet_dataplane::Result<bool> {
    k.retire_link(Netns::Current, host_if, RETIRED_GROUP)
}

/// Deletes every retired host veth of this namespace in one batch.
pub fn reap(k: &dyn Kernel) -> furynet_dataplane::Result<()> {
    k.delete_group(Netns::Current, RETIRED_GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use furynet_dataplane::fake::{Failure, FakeKernel};

    const V4: &str = "10.244.0.5";
    const V6: &str = "fd00::5";

    fn ips() -> Vec<IpAddr> {
        vec![V4.parse().unwrap(), V6.parse().unwrap()]
    }

    #[test]
    fn names_are_stable_short_and_distinct() {
        let n = host_veth_name("abc", "eth0");
        assert_eq!(n.len(), 14);
        assert!(n.starts_with("fny"));
        assert_eq!(n, host_veth_name("abc", "eth0"));
        assert_ne!(n, host_veth_name("abc", "eth1"));
        assert_ne!(n, host_veth_name("abce", "th0"));
        assert!(n[3..].chars().all(|c| c.is_ascii_hexdigit()));
        // Pinned so a change of scheme (which would orphan interfaces on upgrade) is deliberate.
        assert_eq!(
            host_veth_name("c1", "eth0"),
            format!(
                "fny{}",
                &Sha256::digest(b"c1/eth0")
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()[..11]
            )
        );
    }

    #[test]
    fn gateway_v6_is_the_eui64_of_the_host_mac() {
        // EUI-64: flip the U/L bit of the first byte (ee -> ec), insert ff:fe in the middle.
        assert_eq!(GATEWAY_V6.to_string(), "fe80::ecee:eeff:feee:eeee");
    }

    #[test]
    fn wires_in_order() {
        let k = FakeKernel::new();
        k.add_netns("/ns/p");
        let ips = ips();
        let plan = PodPlan {
            host_if: "fnyhost",
            ifname: "eth0",
            netns: Path::new("/ns/p"),
            ips: &ips,
            mtu: 1450,
        };
        let mac = wire(&k, &plan).unwrap();
        assert!(mac.is_some());
        assert_eq!(
            k.calls_of(&[
                "create_veth",
                "write_sysctl",
                "set_link_up",
                "add_address",
                "add_route"
            ]),
            vec![
                "create_veth(fnyhost mtu 1450 <-> eth0 in /ns/p)",
                "write_sysctl(net/ipv4/conf/fnyhost/proxy_arp=1)",
                "write_sysctl(net/ipv4/neigh/fnyhost/proxy_delay=0)",
                "write_sysctl(net/ipv4/conf/fnyhost/forwarding=1)",
                "write_sysctl(net/ipv6/conf/fnyhost/disable_ipv6=0)",
                "write_sysctl(net/ipv6/conf/fnyhost/addr_gen_mode=0)",
                "write_sysctl(net/ipv6/conf/fnyhost/accept_dad=0)",
                "write_sysctl(net/ipv6/conf/fnyhost/forwarding=1)",
                "set_link_up(fnyhost in current netns)",
                "set_link_up(lo in netns /ns/p)",
                "add_address(10.244.0.5/32 on eth0 in netns /ns/p)",
                "add_address(fd00::5/128 on eth0 in netns /ns/p)",
                "set_link_up(eth0 in netns /ns/p)",
                "add_route(0.0.0.0/0 via 169.254.1.1 dev eth0 onlink proto 154 in netns /ns/p)",
                "add_route(::/0 via fe80::ecee:eeff:feee:eeee dev eth0 proto 154 in netns /ns/p)",
                "add_route(10.244.0.5/32 dev fnyhost scope link proto 154 in current netns)",
                "add_route(fd00::5/128 dev fnyhost proto 154 in current netns)",
            ]
        );
        assert!(unwire(&k, "fnyhost").unwrap());
        assert_eq!(k.link_names(Some("/ns/p")), ["lo"]);
        assert!(k.all_routes(None).is_empty());
        assert!(!unwire(&k, "fnyhost").unwrap());
    }

    #[test]
    fn ipv4_only_touches_no_ipv6_knob() {
        let k = FakeKernel::new();
        k.add_netns("/ns/p");
        let ips: Vec<IpAddr> = vec![V4.parse().unwrap()];
        wire(
            &k,
            &PodPlan {
                host_if: "fnyhost",
                ifname: "eth0",
                netns: Path::new("/ns/p"),
                ips: &ips,
                mtu: 1450,
            },
        )
        .unwrap();
        assert!(k.calls().iter().all(|c| !c.contains("ipv6")));
        assert_eq!(k.all_routes(Some("/ns/p")).len(), 1);
    }

    #[test]
    fn each_step_reports_its_name() {
        let k = FakeKernel::new();
        k.add_netns("/ns/p");
        k.fail("add_route", 2, Failure::Errno(13));
        let ips = ips();
        let e = wire(
            &k,
            &PodPlan {
                host_if: "fnyhost",
                ifname: "eth0",
                netns: Path::new("/ns/p"),
                ips: &ips,
                mtu: 1450,
            },
        )
        .unwrap_err();
        assert_eq!(e.step, "host route");
    }
}
