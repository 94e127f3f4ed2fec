//! The ADD result (and `prevResult`): one internal shape, rendered per spec version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::version::SpecVersion;

/// An entry of `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for container-side interfaces; `None` for host interfaces.
    pub sandbox: Option<String>,
    /// Fields we do not interpret (`socketPath`, `pciID`, ...), passed through.
    pub extra: Map<String, Value>,
}

/// An entry of `ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// An entry of `routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// `mtu`, `advmss`, `priority`, `table`, `scope`: passed through.
    pub extra: Map<String, Value>,
}

/// A CNI success result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteEntry>,
    pub dns: Option<Value>,
}

impl CniResult {
    /// Appends `other` (a later plugin's additions), re-basing its interface indexes.
    pub fn extend(&mut self, other: CniResult) {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        self.routes.extend(other.routes);
        let empty = self
            .dns
            .as_ref()
            .is_none_or(|d| d.as_object().is_none_or(Map::is_empty));
        if empty {
            self.dns = other.dns;
        }
    }

    /// The JSON a runtime expects for `version`.
    pub fn render(&self, version: SpecVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = i.extra.clone();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                if let (Some(mtu), true) = (i.mtu, version.interfaces_have_mtu()) {
                    o.insert("mtu".into(), json!(mtu));
                }
                if let Some(sb) = &i.sandbox {
                    o.insert("sandbox".into(), json!(sb));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ips_have_version() {
                    let v = match ip.address {
                        IpNet::V4(_) => "4",
                        IpNet::V6(_) => "6",
                    };
                    o.insert("version".into(), json!(v));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = r.extra.clone();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), json!(gw.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": self.dns.clone().unwrap_or_else(|| json!({})),
        })
    }

    /// Reads a result of any supported version (`prevResult`). Unknown fields are kept where
    /// they can be passed on, and ignored elsewhere.
    pub fn parse(v: &Value) -> Result<CniResult, String> {
        let obj = v.as_object().ok_or("prevResult is not an object")?;
        let mut out = CniResult::default();
        for (i, item) in list(obj, "interfaces")?.iter().enumerate() {
            let o = item
                .as_object()
                .ok_or(format!("interfaces[{i}] is not an object"))?;
            let mut extra = o.clone();
            for k in ["name", "mac", "mtu", "sandbox"] {
                extra.remove(k);
            }
            out.interfaces.push(Interface {
                name: str_field(o, "name")
                    .ok_or(format!("interfaces[{i}].name is missing"))?
                    .to_string(),
                mac: str_field(o, "mac").map(str::to_string),
                mtu: o.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: str_field(o, "sandbox")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                extra,
            });
        }
        for (i, item) in list(obj, "ips")?.iter().enumerate() {
            let o = item
                .as_object()
                .ok_or(format!("ips[{i}] is not an object"))?;
            let address = str_field(o, "address").ok_or(format!("ips[{i}].address is missing"))?;
            out.ips.push(IpConfig {
                address: address
                    .parse()
                    .map_err(|_| format!("ips[{i}].address {address:?} is not a CIDR"))?,
                gateway: ip_field(o, "gateway", &format!("ips[{i}]"))?,
                interface: o
                    .get("interface")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
            });
        }
        for (i, item) in list(obj, "routes")?.iter().enumerate() {
            let o = item
                .as_object()
                .ok_or(format!("routes[{i}] is not an object"))?;
            let dst = str_field(o, "dst").ok_or(format!("routes[{i}].dst is missing"))?;
            let mut extra = o.clone();
            extra.remove("dst");
            extra.remove("gw");
            out.routes.push(RouteEntry {
                dst: dst
                    .parse()
                    .map_err(|_| format!("routes[{i}].dst {dst:?} is not a CIDR"))?,
                gw: ip_field(o, "gw", &format!("routes[{i}]"))?,
                extra,
            });
        }
        out.dns = obj.get("dns").filter(|d| d.is_object()).cloned();
        Ok(out)
    }
}

fn list<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{key} is not a list")),
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

fn ip_field(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<Option<IpAddr>, String> {
    match str_field(o, key) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{ctx}.{key} {s:?} is not an IP address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "fny0123456789a".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    mtu: Some(1450),
                    sandbox: None,
                    extra: Map::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1450),
                    sandbox: Some("/run/netns/p".into()),
                    extra: Map::new(),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.0.2/32".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::2/128".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![RouteEntry {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
                extra: Map::new(),
            }],
            dns: None,
        }
    }

    #[test]
    fn v1_1_has_mtu_and_no_ip_version() {
        let v = sample().render(SpecVersion::V1_1_0);
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0",
              "interfaces":[{"name":"fny0123456789a","mac":"ee:ee:ee:ee:ee:ee","mtu":1450},
                            {"name":"eth0","mac":"02:00:00:00:00:01","mtu":1450,"sandbox":"/run/netns/p"}],
              "ips":[{"address":"10.244.0.2/32","interface":1},{"address":"fd00::2/128","interface":1}],
              "routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],
              "dns":{}})
        );
    }

    #[test]
    fn older_versions() {
        let v = sample().render(SpecVersion::V1_0_0);
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["ips"][0].get("version").is_none());
        for ver in [
            SpecVersion::V0_3_0,
            SpecVersion::V0_3_1,
            SpecVersion::V0_4_0,
        ] {
            let v = sample().render(ver);
            assert_eq!(v["cniVersion"], ver.as_str());
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert!(v["interfaces"][1].get("mtu").is_none());
        }
    }

    #[test]
    fn parse_round_trips_every_version() {
        for ver in SpecVersion::ALL {
            let parsed = CniResult::parse(&sample().render(ver)).unwrap();
            let mut expect = sample();
            if !ver.interfaces_have_mtu() {
                for i in &mut expect.interfaces {
                    i.mtu = None;
                }
            }
            expect.dns = Some(json!({}));
            assert_eq!(parsed, expect, "{}", ver.as_str());
        }
    }

    #[test]
    fn parse_rejects_garbage_and_keeps_extras() {
        assert!(CniResult::parse(&json!([])).is_err());
        assert!(CniResult::parse(&json!({"ips":[{"address":"nope"}]})).is_err());
        assert!(CniResult::parse(&json!({"interfaces":[{}]})).is_err());
        let r = CniResult::parse(&json!({"interfaces":[{"name":"x","socketPath":"/s"}],
            "routes":[{"dst":"10.0.0.0/8","priority":5}]}))
        .unwrap();
        let v = r.render(SpecVersion::V1_1_0);
        assert_eq!(v["interfaces"][0]["socketPath"], "/s");
        assert_eq!(v["routes"][0]["priority"], 5);
    }

    #[test]
    fn extend_rebases_interface_indexes() {
        let mut prev = CniResult {
            interfaces: vec![Interface {
                name: "other0".into(),
                ..Interface::default()
            }],
            ips: vec![],
            routes: vec![],
            dns: Some(json!({"nameservers":["10.0.0.10"]})),
        };
        prev.extend(sample());
        assert_eq!(prev.interfaces.len(), 3);
        assert_eq!(prev.ips[0].interface, Some(2));
        assert_eq!(prev.dns, Some(json!({"nameservers":["10.0.0.10"]})));
    }
}
