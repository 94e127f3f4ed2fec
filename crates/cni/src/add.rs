//! ADD: allocate, wire, print the result; roll everything back if any step fails.
//!
//! Order: validate the namespace, remove this very attachment's host veth if a DEL retired it
//! and the reaper has not deleted it yet, validate the interface name (nothing to undo yet),
//! remove a stale host veth of this attachment (an interrupted earlier ADD), allocate, wire. On failure
//! after allocation: delete the host veth (which takes the peer, addresses and routes with it),
//! then release the addresses (only if this ADD allocated them), and report any rollback
//! failure in the error's details too.

use std::net::IpAddr;
use std::path::Path;

use furynet_dataplane::{format_mac, Family, Kernel, Netns, NetnsState};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::alloc::{AllocAttrs, Handle};
use crate::config::NetConf;
use crate::env::AttachEnv;
use crate::error::{code, CniError};
use crate::plugin::{alloc_error, kernel_error, Deps};
use crate::result::{CniResult, Interface, IpConfig, RouteEntry};
use crate::wiring::{self, host_veth_name, pod_prefix, PodPlan, HOST_MAC, RETIRED_GROUP};

/// VXLAN encapsulation overhead over an IPv4 underlay (outer IP 20 + UDP 8 + VXLAN 8 + Ethernet 14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// ... and over an IPv6 underlay (outer IP 40).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// MTU when the config has none and there is no default route to learn it from.
pub const FALLBACK_MTU: u32 = 1500 - VXLAN_OVERHEAD_V4;

pub(crate) fn add(
    conf: &NetConf,
    node: &str,
    env: &AttachEnv,
    deps: &Deps<'_>,
) -> Result<Value, CniError> {
    let k = deps.kernel;
    let netns = require_netns(k, env)?;
    let pod = Netns::Path(netns);
    let host_if = host_veth_name(&env.container_id, &env.ifname);
    let existing = k
        .link(Netns::Current, &host_if)
        .map_err(|e| kernel_error("cannot inspect the host network namespace", e))?;
    let retired = existing.as_ref().is_some_and(|l| l.group == RETIRED_GROUP);
    if retired {
        // A DEL of this very attachment retired it and the reaper has not deleted it yet (its
        // pod side may still hold CNI_IFNAME): delete it now.
        wiring::unwire(k, &host_if)
            .map_err(|e| kernel_error("cannot remove the retired host interface", e))?;
        info!(host_if = %host_if, "removed the retired interface of an earlier DEL");
    }
    // Any other host veth of this attachment is left by an interrupted ADD.
    let stale = existing.is_some() && !retired;
    if k.link(pod, &env.ifname)
        .map_err(|e| kernel_error("cannot inspect the container's network namespace", e))?
        .is_some()
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            "interface already exists",
            format!(
                "{} already exists in {}; CNI_IFNAME must name a new interface",
                env.ifname,
                netns.display()
            ),
        ));
    }
    let prev = match &conf.prev_result {
        Some(v) => Some(CniResult::parse(v).map_err(|e| {
            CniError::new(code::INVALID_CONFIG, "invalid network configuration", e)
        })?),
        None => None,
    };
    let mtu = resolve_mtu(conf, k)?;
    if stale
        && wiring::unwire(k, &host_if)
            .map_err(|e| kernel_error("cannot remove a stale host interface", e))?
    {
        warn!(host_if = %host_if, "removed a stale host interface left by an interrupted ADD");
    }

    let alloc = (deps.allocator)(conf, node).map_err(alloc_error)?;
    let handle = Handle::new(&conf.name, &env.container_id, &env.ifname);
    let attrs = AllocAttrs {
        node: node.to_string(),
        pod_namespace: env.args.pod_namespace.clone(),
        pod_name: env.args.pod_name.clone(),
        pod_uid: env.args.pod_uid.clone(),
        pod_infra_container_id: env.args.pod_infra_container_id.clone(),
    };
    let held_before = alloc.lookup(&handle).map_err(alloc_error)?.is_some();
    let ips = match alloc.allocate(&handle, &attrs) {
        Ok(ips) => ips,
        Err(e) => {
            // An allocator that failed half-way must not keep a partial allocation.
            if !held_before {
                if let Err(re) = alloc.release(&handle) {
                    warn!(error = %re, "releasing after a failed allocation also failed");
                }
            }
            return Err(alloc_error(e));
        }
    };
    info!(ips = ?ips, host_if = %host_if, mtu, "allocated; wiring the pod");

    let plan = PodPlan {
        host_if: &host_if,
        ifname: &env.ifname,
        netns,
        ips: &ips,
        mtu,
    };
    let pod_mac = match wiring::wire(k, &plan) {
        Ok(mac) => mac,
        Err(e) => {
            let mut err = if e.step == "create veth" && e.source.is_exists() {
                CniError::new(
                    code::INTERFACE_EXISTS,
                    "interface already exists",
                    format!("{e} ({} in {})", env.ifname, netns.display()),
                )
            } else {
                kernel_error("wiring the pod failed", &e)
            };
            let mut rollback = Vec::new();
            if let Err(re) = wiring::unwire(k, &host_if) {
                rollback.push(format!("removing {host_if}: {re}"));
            }
            if !held_before {
                if let Err(re) = alloc.release(&handle) {
                    rollback.push(format!("releasing {handle}: {re}"));
                }
            }
            if rollback.is_empty() {
                info!("rolled back: host interface removed, addresses released");
            } else {
                err.details
                    .push_str(&format!("; rollback also failed: {}", rollback.join("; ")));
            }
            return Err(err);
        }
    };

    let ours = build_result(&host_if, &env.ifname, netns, pod_mac, &ips, mtu, conf);
    let result = match prev {
        Some(mut p) => {
            p.extend(ours);
            p
        }
        None => ours,
    };
    Ok(result.render(conf.cni_version))
}

/// `CNI_NETNS` must be another network namespace (error 4 otherwise).
pub(crate) fn require_netns<'e>(k: &dyn Kernel, env: &'e AttachEnv) -> Result<&'e Path, CniError> {
    let Some(netns) = env.netns.as_deref() else {
        return Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment variables: CNI_NETNS",
            "CNI_NETNS is not set",
        ));
    };
    let problem = match k
        .check_netns(netns)
        .map_err(|e| kernel_error("cannot inspect CNI_NETNS", e))?
    {
        NetnsState::Other => return Ok(netns),
        NetnsState::Missing => "does not exist",
        NetnsState::NotNetns => "is not a network namespace",
        NetnsState::Current => "is the plugin's own network namespace",
    };
    Err(CniError::new(
        code::INVALID_ENV,
        "invalid environment variables: CNI_NETNS",
        format!("CNI_NETNS={} {problem}", netns.display()),
    ))
}

/// The configured MTU, or the default route's minus the VXLAN overhead of its family.
pub(crate) fn resolve_mtu(conf: &NetConf, k: &dyn Kernel) -> Result<u32, CniError> {
    if let Some(m) = conf.mtu {
        return Ok(m);
    }
    let derived = match k
        .default_route_mtu()
        .map_err(|e| kernel_error("cannot read the default route's MTU", e))?
    {
        Some((m, Family::V4)) => m.saturating_sub(VXLAN_OVERHEAD_V4),
        Some((m, Family::V6)) => m.saturating_sub(VXLAN_OVERHEAD_V6),
        None => {
            warn!(
                mtu = FALLBACK_MTU,
                "no default route to learn the MTU from; set \"mtu\""
            );
            FALLBACK_MTU
        }
    };
    let floor = if conf.has_v6() { 1280 } else { 68 };
    if derived < floor {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            format!(
                "the MTU derived from the default route ({derived}) is below {floor}; set \"mtu\""
            ),
        ));
    }
    Ok(derived)
}

fn build_result(
    host_if: &str,
    ifname: &str,
    netns: &Path,
    pod_mac: Option<furynet_dataplane::Mac>,
    ips: &[IpAddr],
    mtu: u32,
    conf: &NetConf,
) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: host_if.to_string(),
                mac: Some(format_mac(&HOST_MAC)),
                mtu: Some(mtu),
                sandbox: None,
                extra: Map::new(),
            },
            Interface {
                name: ifname.to_string(),
                mac: pod_mac.as_ref().map(format_mac),
                mtu: Some(mtu),
                sandbox: Some(netns.display().to_string()),
                extra: Map::new(),
            },
        ],
        ips: ips
            .iter()
            .map(|ip| IpConfig {
                address: pod_prefix(*ip),
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        routes: wiring::pod_routes(ifname, ips)
            .into_iter()
            .map(|r| RouteEntry {
                dst: r.dst,
                gw: r.gateway,
                extra: Map::new(),
            })
            .collect(),
        dns: conf.dns.clone(),
    }
}
