//! [`RoutingKernel`] by running iproute2's `ip` and `bridge` with JSON output.
//!
//! FALLBACK: this is the brief-sanctioned stand-in for rtnetlink while the netlink encoding of
//! VXLAN link info, `AF_BRIDGE` FDB entries (`RTM_NEWNEIGH` with `NTF_SELF`) and neighbours is
//! not written yet. It sits behind the same trait, so swapping in a netlink implementation
//! changes nothing above it. Needs iproute2 ≥ 5.x (`-j`, `-n`).

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

use serde_json::Value;

use super::plan::{FdbEntry, NeighEntry};
use super::reconcile::{Change, OwnedRoute, RoutingKernel, VxlanLink};
use crate::kernel::{format_mac, Mac};
use crate::{Error, Result, HOST_IFACE_PREFIX, RTPROT_FURYNET};

/// Runs `ip`/`bridge` in the current namespace or, with `netns`, in the named one
/// (`/run/netns/<name>`, as `ip -n` does).
#[derive(Debug, Clone, Default)]
pub struct IpCommand {
    netns: Option<String>,
}

impl IpCommand {
    /// In the calling process's namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// In the named network namespace (`ip -n <name>`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        IpCommand {
            netns: Some(name.into()),
        }
    }

    fn run(&self, op: &'static str, tool: &str, args: &[String]) -> Result<String> {
        let mut cmd = Command::new(tool);
        if let Some(ns) = &self.netns {
            cmd.args(["-n", ns]);
        }
        cmd.args(args);
        let object = || format!("{tool} {}", args.join(" "));
        let out = cmd.output().map_err(|e| Error::from_io(op, object(), e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // iproute2 prints strerror(ENOENT/ESRCH/ENODEV) or its own wording for these.
            if [
                "No such file or directory",
                "No such process",
                "Cannot find device",
            ]
            .iter()
            .any(|m| stderr.contains(m))
            {
                return Err(Error::NotFound {
                    op,
                    object: object(),
                });
            }
            return Err(Error::Os {
                op,
                object: object(),
                source: io::Error::other(stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, op: &'static str, tool: &str, args: &[&str]) -> Result<Vec<Value>> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let text = self.run(op, tool, &args)?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(v)) => Ok(v),
            Ok(_) | Err(_) => Err(Error::Protocol {
                op,
                object: format!("{tool} {}", args.join(" ")),
                detail: format!("not a JSON array: {}", text.trim()),
            }),
        }
    }

    fn change(&self, op: &'static str, tool: &str, args: Vec<String>) -> Result<()> {
        self.run(op, tool, &args).map(|_| ())
    }
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn has_flag(v: &Value, key: &str, flag: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|f| f.as_str() == Some(flag)))
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

impl RoutingKernel for IpCommand {
    fn vxlan_links(&self) -> Result<Vec<VxlanLink>> {
        let links = self.json(
            "list vxlan links",
            "ip",
            &["-d", "-j", "link", "show", "type", "vxlan"],
        )?;
        Ok(links
            .iter()
            .filter_map(|l| {
                let name = str_of(l, "ifname")?;
                if !name.starts_with(HOST_IFACE_PREFIX) {
                    return None; // not ours
                }
                let data = l.get("linkinfo")?.get("info_data")?;
                Some(VxlanLink {
                    name: name.to_string(),
                    vni: u32::try_from(data.get("id")?.as_u64()?).ok()?,
                    port: data
                        .get("port")
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(0),
                    local: str_of(data, "local").and_then(|a| a.parse().ok()),
                    learning: data
                        .get("learning")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    mac: str_of(l, "address").and_then(parse_mac),
                    mtu: l
                        .get("mtu")
                        .and_then(Value::as_u64)
                        .and_then(|m| u32::try_from(m).ok())
                        .unwrap_or(0),
                    up: has_flag(l, "flags", "UP"),
                })
            })
            .collect())
    }

    fn fdb(&self, dev: &str) -> Result<Vec<FdbEntry>> {
        let entries = self.json("list fdb", "bridge", &["-j", "fdb", "show", "dev", dev])?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                Some(FdbEntry {
                    mac: parse_mac(str_of(e, "mac")?)?,
                    dst: str_of(e, "dst")?.parse::<Ipv4Addr>().ok()?,
                })
            })
            .filter(|e| e.mac != [0; 6])
            .collect())
    }

    fn neighbours(&self, dev: &str) -> Result<Vec<NeighEntry>> {
        let entries = self.json(
            "list neighbours",
            "ip",
            &["-j", "neigh", "show", "dev", dev],
        )?;
        Ok(entries
            .iter()
            .filter(|e| has_flag(e, "state", "PERMANENT"))
            .filter_map(|e| {
                Some(NeighEntry {
                    ip: str_of(e, "dst")?.parse().ok()?,
                    mac: parse_mac(str_of(e, "lladdr")?)?,
                })
            })
            .collect())
    }

    fn owned_routes(&self) -> Result<Vec<OwnedRoute>> {
        let proto = RTPROT_FURYNET.to_string();
        let mut routes = Vec::new();
        for (family, host) in [("-4", "32"), ("-6", "128")] {
            let args = [
                family, "-j", "route", "show", "table", "main", "proto", &proto,
            ];
            for r in self.json("list routes", "ip", &args)? {
                routes.push((r, host));
            }
        }
        Ok(routes
            .iter()
            .filter_map(|(r, host)| {
                // No gateway: a CNI pod route (`POD dev fny… scope link`) — not ours to manage.
                let via = str_of(r, "gateway")?.parse().ok()?;
                let dst = str_of(r, "dst")?;
                let dst = if dst.contains('/') {
                    dst.parse().ok()?
                } else {
                    format!("{dst}/{host}").parse().ok()?
                };
                Some(OwnedRoute {
                    dst,
                    via,
                    dev: str_of(r, "dev").unwrap_or_default().to_string(),
                    onlink: has_flag(r, "flags", "onlink"),
                })
            })
            .collect())
    }

    fn apply(&self, change: &Change) -> Result<()> {
        let proto = RTPROT_FURYNET.to_string();
        match change {
            Change::RouteDel(r) => self.change(
                "delete route",
                "ip",
                vec![
                    s("route"),
                    s("del"),
                    s(r.dst),
                    s("via"),
                    s(r.via),
                    s("dev"),
                    s(&r.dev),
                    s("proto"),
                    proto,
                ],
            ),
            Change::LinkDel(name) => {
                self.change("delete link", "ip", vec![s("link"), s("del"), s(name)])
            }
            Change::VxlanCreate(d) => {
                self.change(
                    "create vxlan",
                    "ip",
                    vec![
                        s("link"),
                        s("add"),
                        s(&d.name),
                        s("address"),
                        format_mac(&d.mac),
                        s("mtu"),
                        s(d.mtu),
                        s("type"),
                        s("vxlan"),
                        s("id"),
                        s(d.vni),
                        s("local"),
                        s(d.local),
                        s("dstport"),
                        s(d.port),
                        s("nolearning"),
                    ],
                )?;
                self.change(
                    "set link up",
                    "ip",
                    vec![s("link"), s("set"), s(&d.name), s("up")],
                )
            }
            Change::VxlanUpdate { device: d, set_mac } => {
                let mut args = vec![s("link"), s("set"), s(&d.name), s("mtu"), s(d.mtu), s("up")];
                if *set_mac {
                    args.extend([s("address"), format_mac(&d.mac)]);
                }
                self.change("update vxlan", "ip", args)
            }
            Change::FdbReplace { dev, entry } => self.change(
                "replace fdb entry",
                "bridge",
                vec![
                    s("fdb"),
                    s("replace"),
                    format_mac(&entry.mac),
                    s("dev"),
                    s(dev),
                    s("dst"),
                    s(entry.dst),
                    s("self"),
                    s("permanent"),
                ],
            ),
            Change::FdbDel { dev, entry } => self.change(
                "delete fdb entry",
                "bridge",
                vec![
                    s("fdb"),
                    s("del"),
                    format_mac(&entry.mac),
                    s("dev"),
                    s(dev),
                    s("dst"),
                    s(entry.dst),
                    s("self"),
                ],
            ),
            Change::NeighReplace { dev, entry } => self.change(
                "replace neighbour",
                "ip",
                vec![
                    s("neigh"),
                    s("replace"),
                    s(entry.ip),
                    s("lladdr"),
                    format_mac(&entry.mac),
                    s("dev"),
                    s(dev),
                    s("nud"),
                    s("permanent"),
                ],
            ),
            Change::NeighDel { dev, entry } => self.change(
                "delete neighbour",
                "ip",
                vec![s("neigh"), s("del"), s(entry.ip), s("dev"), s(dev)],
            ),
            Change::RouteReplace(r) => {
                let mut args = vec![s("route"), s("replace"), s(r.dst), s("via"), s(r.via)];
                if let Some(dev) = &r.dev {
                    args.extend([s("dev"), s(dev), s("onlink")]);
                }
                args.extend([s("proto"), proto]);
                self.change("replace route", "ip", args)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:aa:00:01:ff:10"),
            Some([2, 0xaa, 0, 1, 0xff, 0x10])
        );
        assert_eq!(parse_mac("02:aa"), None);
        assert_eq!(parse_mac("02:aa:00:01:ff:10:11"), None);
        assert_eq!(parse_mac("zz:aa:00:01:ff:10"), None);
    }
}
