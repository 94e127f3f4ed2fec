//! CHECK: compare the attachment with `prevResult` and report every difference at once.
//!
//! Checked: the pod interface named in `prevResult` (in `CNI_NETNS`) exists, is up, is a veth
//! with the recorded MAC (and MTU when recorded); each of its addresses is present; each route
//! in `prevResult` is present in the pod (later chained plugins may add routes, never remove
//! ours); the host veth exists, is up and is the pod interface's peer, with a furynet route per
//! pod address, proxy ARP and forwarding on; the IP reservation still exists.

use std::net::IpAddr;

use furynet_dataplane::{format_mac, Family, Netns, RTPROT_FURYNET};
use tracing::info;

use crate::add::require_netns;
use crate::alloc::Handle;
use crate::config::NetConf;
use crate::env::AttachEnv;
use crate::error::{code, CniError};
use crate::plugin::{alloc_error, kernel_error, Deps};
use crate::result::CniResult;
use crate::wiring::{host_routes, host_sysctls, host_veth_name};

pub(crate) fn check(
    conf: &NetConf,
    node: &str,
    env: &AttachEnv,
    deps: &Deps<'_>,
) -> Result<(), CniError> {
    let k = deps.kernel;
    let invalid =
        |d: String| CniError::new(code::INVALID_CONFIG, "invalid network configuration", d);
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| invalid("CHECK needs prevResult (the result of the ADD)".into()))?;
    let prev = CniResult::parse(prev).map_err(invalid)?;
    let netns = require_netns(k, env)?;
    let netns_str = netns.display().to_string();
    let kerr = |e: furynet_dataplane::Error| kernel_error("CHECK could not read kernel state", e);

    let mut problems: Vec<String> = Vec::new();
    let Some((index, iface)) =
        prev.interfaces.iter().enumerate().find(|(_, i)| {
            i.name == env.ifname && i.sandbox.as_deref() == Some(netns_str.as_str())
        })
    else {
        return Err(failed(vec![format!(
            "prevResult lists no interface {} in sandbox {netns_str}",
            env.ifname
        )]));
    };
    let want_ips: Vec<ipnet::IpNet> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .map(|ip| ip.address)
        .collect();
    let pod_ips: Vec<IpAddr> = want_ips.iter().map(|n| n.addr()).collect();

    // The pod side.
    let pod = Netns::Path(netns);
    let pod_link = k.link(pod, &env.ifname).map_err(kerr)?;
    match &pod_link {
        None => problems.push(format!("{} is missing from {netns_str}", env.ifname)),
        Some(l) => {
            if !l.up {
                problems.push(format!("{} is down", env.ifname));
            }
            if l.kind.as_deref() != Some("veth") {
                problems.push(format!("{} is not a veth", env.ifname));
            }
            if let (Some(want), Some(have)) = (&iface.mac, l.mac.as_ref().map(format_mac)) {
                if !want.eq_ignore_ascii_case(&have) {
                    problems.push(format!("{} has MAC {have}, expected {want}", env.ifname));
                }
            }
            if let Some(want) = iface.mtu {
                if l.mtu != want {
                    problems.push(format!("{} has MTU {}, expected {want}", env.ifname, l.mtu));
                }
            }
            let have = k.addresses(pod, &env.ifname).map_err(kerr)?;
            for ip in &want_ips {
                if !have.contains(ip) {
                    problems.push(format!("address {ip} is missing from {}", env.ifname));
                }
            }
            for r in &prev.routes {
                let fam = Family::of(&r.dst.addr());
                let have = k.routes(pod, fam, &env.ifname).map_err(kerr)?;
                if !have
                    .iter()
                    .any(|h| h.dst == r.dst && (r.gw.is_none() || h.gateway == r.gw))
                {
                    let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                    problems.push(format!(
                        "route {}{via} dev {} is missing",
                        r.dst, env.ifname
                    ));
                }
            }
        }
    }

    // The host side.
    let host_if = host_veth_name(&env.container_id, &env.ifname);
    match k.link(Netns::Current, &host_if).map_err(kerr)? {
        None => problems.push(format!("host interface {host_if} is missing")),
        Some(h) => {
            if !h.up {
                problems.push(format!("host interface {host_if} is down"));
            }
            if let Some(p) = &pod_link {
                if p.peer_index != Some(h.index) {
                    problems.push(format!(
                        "{} is not the peer of host interface {host_if}",
                        env.ifname
                    ));
                }
            }
            for want in host_routes(&host_if, &pod_ips) {
                let fam = Family::of(&want.dst.addr());
                let have = k.routes(Netns::Current, fam, &host_if).map_err(kerr)?;
                if !have
                    .iter()
                    .any(|h| h.dst == want.dst && h.protocol == RTPROT_FURYNET)
                {
                    problems.push(format!("host route {want} is missing"));
                }
            }
            for (key, value) in host_sysctls(&host_if, &pod_ips) {
                if key.ends_with("/proxy_arp") || key.ends_with("/forwarding") {
                    let have = k.read_sysctl(&key).map_err(kerr)?;
                    if have != value {
                        problems.push(format!("{key} is {have}, expected {value}"));
                    }
                }
            }
        }
    }

    // The reservation.
    let alloc = (deps.allocator)(conf, node).map_err(alloc_error)?;
    let handle = Handle::new(&conf.name, &env.container_id, &env.ifname);
    match alloc.lookup(&handle).map_err(alloc_error)? {
        None => problems.push(format!("no IP reservation for {handle}")),
        Some(held) => {
            for ip in &pod_ips {
                if !held.contains(ip) {
                    problems.push(format!("{ip} is not reserved for {handle}"));
                }
            }
        }
    }

    if problems.is_empty() {
        info!("CHECK passed");
        Ok(())
    } else {
        Err(failed(problems))
    }
}

fn failed(problems: Vec<String>) -> CniError {
    CniError::new(
        code::CHECK_FAILED,
        format!(
            "CHECK failed: {} difference{} from prevResult",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
        problems.join("; "),
    )
}
