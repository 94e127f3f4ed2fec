//! A recording in-memory [`Kernel`] for unit tests (feature `fake`).
//!
//! It models what pod wiring relies on: namespaces with interfaces, veth pairs that die
//! together (also when a namespace is deleted), routes that go with their device, the
//! `EEXIST`/`ENODEV`/`ENETDOWN` answers, and per-interface sysctls. Every call is appended to a
//! log, and any operation can be made to fail on its n-th call.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::kernel::{Family, Kernel, Link, Mac, Netns, NetnsState, Route, VethSpec};
use crate::{Error, Result};

/// Key of the namespace the caller runs in.
const CURRENT: &str = "";

/// How an injected failure fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Exists,
    NotFound,
    /// Any other errno.
    Errno(i32),
}

#[derive(Debug, Clone)]
struct FakeLink {
    index: u32,
    mac: Mac,
    mtu: u32,
    up: bool,
    kind: Option<String>,
    /// (namespace key, name) of a veth peer.
    peer: Option<(String, String)>,
    addrs: Vec<IpNet>,
    group: u32,
}

#[derive(Debug, Clone, Default)]
struct FakeNs {
    links: BTreeMap<String, FakeLink>,
    routes: Vec<Route>,
}

#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<String, FakeNs>,
    /// Paths that are not network namespaces, or that alias the current one.
    special: BTreeMap<String, NetnsState>,
    sysctls: BTreeMap<String, String>,
    default_route: Option<(u32, Family)>,
    next_index: u32,
    /// op -> (calls to let through first, failure), in injection order.
    failures: Vec<(String, usize, Failure)>,
    log: Vec<String>,
}

/// The fake kernel. Starts with the current namespace holding an up `lo`.
#[derive(Debug)]
pub struct FakeKernel {
    state: RefCell<State>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKernel {
    pub fn new() -> Self {
        let fake = FakeKernel {
            state: RefCell::new(State {
                next_index: 1,
                ..State::default()
            }),
        };
        fake.insert_ns(CURRENT, true);
        fake
    }

    fn insert_ns(&self, key: &str, lo_up: bool) {
        let mut st = self.state.borrow_mut();
        let index = st.next_index;
        st.next_index += 1;
        let mut ns = FakeNs::default();
        ns.links.insert(
            "lo".to_string(),
            FakeLink {
                index,
                mac: [0; 6],
                mtu: 65536,
                up: lo_up,
                kind: None,
                peer: None,
                addrs: Vec::new(),
                group: 0,
            },
        );
        st.namespaces.insert(key.to_string(), ns);
    }

    /// Creates a namespace at `path` with a down `lo`.
    pub fn add_netns(&self, path: &str) {
        self.insert_ns(path, false);
    }

    /// Deletes the namespace at `path`; veth peers elsewhere disappear with it.
    pub fn remove_netns(&self, path: &str) {
        let mut st = self.state.borrow_mut();
        if let Some(ns) = st.namespaces.remove(path) {
            for link in ns.links.values() {
                if let Some((pns, pname)) = &link.peer {
                    remove_link(&mut st, pns, pname);
                }
            }
        }
    }

    /// Makes `path` look like the caller's own namespace, or like something that is not one.
    pub fn set_netns_state(&self, path: &str, state: NetnsState) {
        self.state
            .borrow_mut()
            .special
            .insert(path.to_string(), state);
    }

    /// Sets what [`Kernel::default_route_mtu`] answers.
    pub fn set_default_route_mtu(&self, v: Option<(u32, Family)>) {
        self.state.borrow_mut().default_route = v;
    }

    /// Makes the `nth` (0-based, counted from now) call of `op` fail. `op` is the trait method
    /// name, e.g. `"add_route"`.
    pub fn fail(&self, op: &str, nth: usize, failure: Failure) {
        self.state
            .borrow_mut()
            .failures
            .push((op.to_string(), nth, failure));
    }

    /// Every call so far, as `op(args)` strings.
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().log.clone()
    }

    /// Calls whose op is one of `ops` (mutations only, typically).
    pub fn calls_of(&self, ops: &[&str]) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| ops.iter().any(|op| c.starts_with(&format!("{op}("))))
            .collect()
    }

    /// Interface names in a namespace (`None` = current), sorted.
    pub fn link_names(&self, ns: Option<&str>) -> Vec<String> {
        self.state
            .borrow()
            .namespaces
            .get(ns.unwrap_or(CURRENT))
            .map(|n| n.links.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Routes in a namespace (`None` = current).
    pub fn all_routes(&self, ns: Option<&str>) -> Vec<Route> {
        self.state
            .borrow()
            .namespaces
            .get(ns.unwrap_or(CURRENT))
            .map(|n| n.routes.clone())
            .unwrap_or_default()
    }

    /// Removes an address behind the plugin's back (as `ip addr del` would).
    pub fn remove_address(&self, ns: Option<&str>, dev: &str, addr: IpNet) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(link) = st
            .namespaces
            .get_mut(ns.unwrap_or(CURRENT))
            .and_then(|n| n.links.get_mut(dev))
        else {
            return false;
        };
        let before = link.addrs.len();
        link.addrs.retain(|a| *a != addr);
        before != link.addrs.len()
    }

    /// A sysctl value written so far.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.state.borrow().sysctls.get(key).cloned()
    }

    /// Logs the call and returns the injected failure, if this call is the chosen one.
    fn enter(&self, op: &'static str, args: String) -> Result<()> {
        let mut st = self.state.borrow_mut();
        st.log.push(format!("{op}({args})"));
        let mut hit = None;
        for (i, (fop, n, failure)) in st.failures.iter_mut().enumerate() {
            if fop == op {
                if *n == 0 {
                    hit = Some((i, *failure));
                    break;
                }
                *n -= 1;
            }
        }
        let Some((i, failure)) = hit else {
            return Ok(());
        };
        st.failures.remove(i);
        Err(match failure {
            Failure::Exists => Error::Exists { op, object: args },
            Failure::NotFound => Error::NotFound { op, object: args },
            Failure::Errno(e) => Error::Os {
                op,
                object: args,
                source: io::Error::from_raw_os_error(e),
            },
        })
    }
}

fn ns_key(ns: Netns<'_>) -> String {
    match ns {
        Netns::Current => CURRENT.to_string(),
        Netns::Path(p) => p.display().to_string(),
    }
}

fn remove_link(st: &mut State, ns: &str, name: &str) -> Option<FakeLink> {
    let n = st.namespaces.get_mut(ns)?;
    let link = n.links.remove(name)?;
    n.routes.retain(|r| r.dev != name);
    Some(link)
}

fn not_found(op: &'static str, object: String) -> Error {
    Error::NotFound { op, object }
}

fn errno(op: &'static str, object: String, e: i32) -> Error {
    Error::Os {
        op,
        object,
        source: io::Error::from_raw_os_error(e),
    }
}

/// `ENETDOWN`, `ENETUNREACH`, `EINVAL`.
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;
const EINVAL: i32 = 22;

impl Kernel for FakeKernel {
    fn check_netns(&self, path: &Path) -> Result<NetnsState> {
        let key = path.display().to_string();
        self.enter("check_netns", key.clone())?;
        let st = self.state.borrow();
        if let Some(s) = st.special.get(&key) {
            return Ok(*s);
        }
        Ok(if st.namespaces.contains_key(&key) {
            NetnsState::Other
        } else {
            NetnsState::Missing
        })
    }

    fn create_veth(&self, spec: &VethSpec) -> Result<()> {
        let peer_ns = spec.peer_netns.display().to_string();
        let args = format!(
            "{} mtu {} <-> {} in {}",
            spec.host_name, spec.mtu, spec.peer_name, peer_ns
        );
        self.enter("create_veth", args.clone())?;
        let mut st = self.state.borrow_mut();
        if !st.namespaces.contains_key(&peer_ns) {
            return Err(not_found("open netns", peer_ns));
        }
        if spec.host_name.len() > 15 || spec.peer_name.len() > 15 {
            return Err(errno("create veth", args, EINVAL));
        }
        let host_taken = st
            .namespaces
            .get(CURRENT)
            .is_some_and(|n| n.links.contains_key(&spec.host_name));
        let peer_taken = st
            .namespaces
            .get(&peer_ns)
            .is_some_and(|n| n.links.contains_key(&spec.peer_name));
        if host_taken || peer_taken {
            return Err(Error::Exists {
                op: "create veth",
                object: args,
            });
        }
        let (hi, pi) = (st.next_index, st.next_index + 1);
        st.next_index += 2;
        let host = FakeLink {
            index: hi,
            mac: spec.host_mac.unwrap_or([2, 0, 0, 0, 0, hi as u8]),
            mtu: spec.mtu,
            up: false,
            kind: Some("veth".into()),
            peer: Some((peer_ns.clone(), spec.peer_name.clone())),
            addrs: Vec::new(),
            group: 0,
        };
        let peer = FakeLink {
            index: pi,
            mac: [2, 0, 0, 0, 1, pi as u8],
            mtu: spec.mtu,
            up: false,
            kind: Some("veth".into()),
            peer: Some((CURRENT.to_string(), spec.host_name.clone())),
            addrs: Vec::new(),
            group: 0,
        };
        if let Some(n) = st.namespaces.get_mut(CURRENT) {
            n.links.insert(spec.host_name.clone(), host);
        }
        if let Some(n) = st.namespaces.get_mut(&peer_ns) {
            n.links.insert(spec.peer_name.clone(), peer);
        }
        Ok(())
    }

    fn link(&self, ns: Netns<'_>, name: &str) -> Result<Option<Link>> {
        let key = ns_key(ns);
        self.enter("link", format!("{name} in {ns}"))?;
        let st = self.state.borrow();
        let Some(n) = st.namespaces.get(&key) else {
            return Err(not_found("open netns", key));
        };
        Ok(n.links.get(name).map(|l| Link {
            index: l.index,
            name: name.to_string(),
            mac: Some(l.mac),
            mtu: l.mtu,
            up: l.up,
            kind: l.kind.clone(),
            group: l.group,
            peer_index: l.peer.as_ref().and_then(|(pns, pname)| {
                st.namespaces
                    .get(pns)
                    .and_then(|n| n.links.get(pname))
                    .map(|p| p.index)
            }),
        }))
    }

    fn delete_link(&self, ns: Netns<'_>, name: &str) -> Result<bool> {
        let key = ns_key(ns);
        self.enter("delete_link", format!("{name} in {ns}"))?;
        let mut st = self.state.borrow_mut();
        if !st.namespaces.contains_key(&key) {
            return Err(not_found("open netns", key));
        }
        let Some(link) = remove_link(&mut st, &key, name) else {
            return Ok(false);
        };
        if let Some((pns, pname)) = link.peer {
            remove_link(&mut st, &pns, &pname);
        }
        Ok(true)
    }

    fn retire_link(&self, ns: Netns<'_>, name: &str, group: u32) -> Result<bool> {
        let key = ns_key(ns);
        self.enter("retire_link", format!("{name} in {ns}"))?;
        let mut st = self.state.borrow_mut();
        let Some(n) = st.namespaces.get_mut(&key) else {
            return Err(not_found("open netns", key));
        };
        let Some(l) = n.links.get_mut(name) else {
            return Ok(false);
        };
        l.up = false;
        l.group = group;
        // Like the kernel: routes through a device that goes down go with it.
        n.routes.retain(|r| r.dev != name);
        Ok(true)
    }

    fn delete_group(&self, ns: Netns<'_>, group: u32) -> Result<()> {
        let key = ns_key(ns);
        self.enter("delete_group", format!("{group} in {ns}"))?;
        let mut st = self.state.borrow_mut();
        let Some(n) = st.namespaces.get(&key) else {
            return Err(not_found("open netns", key));
        };
        let doomed: Vec<String> = n
            .links
            .iter()
            .filter(|(_, l)| l.group == group)
            .map(|(name, _)| name.clone())
            .collect();
        for name in doomed {
            if let Some(Some((pns, pname))) = remove_link(&mut st, &key, &name).map(|l| l.peer) {
                remove_link(&mut st, &pns, &pname);
            }
        }
        Ok(())
    }

    fn set_link_up(&self, ns: Netns<'_>, name: &str) -> Result<()> {
        let key = ns_key(ns);
        let object = format!("{name} in {ns}");
        self.enter("set_link_up", object.clone())?;
        let mut st = self.state.borrow_mut();
        match st
            .namespaces
            .get_mut(&key)
            .and_then(|n| n.links.get_mut(name))
        {
            Some(l) => {
                l.up = true;
                Ok(())
            }
            None => Err(not_found("set link up", object)),
        }
    }

    fn add_address(&self, ns: Netns<'_>, dev: &str, addr: IpNet) -> Result<()> {
        let key = ns_key(ns);
        let object = format!("{addr} on {dev} in {ns}");
        self.enter("add_address", object.clone())?;
        let mut st = self.state.borrow_mut();
        let Some(l) = st
            .namespaces
            .get_mut(&key)
            .and_then(|n| n.links.get_mut(dev))
        else {
            return Err(not_found("add address", object));
        };
        if l.addrs.contains(&addr) {
            return Err(Error::Exists {
                op: "add address",
                object,
            });
        }
        l.addrs.push(addr);
        Ok(())
    }

    fn addresses(&self, ns: Netns<'_>, dev: &str) -> Result<Vec<IpNet>> {
        let key = ns_key(ns);
        let object = format!("{dev} in {ns}");
        self.enter("addresses", object.clone())?;
        let st = self.state.borrow();
        st.namespaces
            .get(&key)
            .and_then(|n| n.links.get(dev))
            .map(|l| l.addrs.clone())
            .ok_or_else(|| not_found("find interface", object))
    }

    fn add_route(&self, ns: Netns<'_>, route: &Route) -> Result<()> {
        let key = ns_key(ns);
        let object = format!("{route} in {ns}");
        self.enter("add_route", object.clone())?;
        let mut st = self.state.borrow_mut();
        let Some(n) = st.namespaces.get_mut(&key) else {
            return Err(not_found("open netns", key));
        };
        let Some(dev) = n.links.get(&route.dev) else {
            return Err(not_found("find interface", object));
        };
        if !dev.up {
            return Err(errno("add route", object, ENETDOWN));
        }
        if let Some(IpAddr::V4(gw)) = route.gateway {
            let connected = dev.addrs.iter().any(|a| a.contains(&IpAddr::V4(gw)));
            if !route.onlink && !connected {
                return Err(errno("add route", object, ENETUNREACH));
            }
        }
        if n.routes.iter().any(|r| r.dst == route.dst) {
            return Err(Error::Exists {
                op: "add route",
                object,
            });
        }
        n.routes.push(route.clone());
        Ok(())
    }

    fn routes(&self, ns: Netns<'_>, family: Family, dev: &str) -> Result<Vec<Route>> {
        let key = ns_key(ns);
        let object = format!("{dev} in {ns}");
        self.enter("routes", object.clone())?;
        let st = self.state.borrow();
        let Some(n) = st.namespaces.get(&key) else {
            return Err(not_found("open netns", key));
        };
        if !n.links.contains_key(dev) {
            return Err(not_found("find interface", object));
        }
        Ok(n.routes
            .iter()
            .filter(|r| r.dev == dev && Family::of(&r.dst.addr()) == family)
            .cloned()
            .collect())
    }

    fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.enter("write_sysctl", format!("{key}={value}"))?;
        let mut st = self.state.borrow_mut();
        // Per-interface keys only exist while the interface does.
        let parts: Vec<&str> = key.split('/').collect();
        if let ["net", _, "conf" | "neigh", dev, _] = parts.as_slice() {
            let exists = st
                .namespaces
                .get(CURRENT)
                .is_some_and(|n| n.links.contains_key(*dev));
            if !exists {
                return Err(not_found("write sysctl", key.to_string()));
            }
        }
        st.sysctls.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn read_sysctl(&self, key: &str) -> Result<String> {
        self.enter("read_sysctl", key.to_string())?;
        let st = self.state.borrow();
        let parts: Vec<&str> = key.split('/').collect();
        if let ["net", _, "conf" | "neigh", dev, _] = parts.as_slice() {
            let exists = st
                .namespaces
                .get(CURRENT)
                .is_some_and(|n| n.links.contains_key(*dev));
            if !exists {
                return Err(not_found("read sysctl", key.to_string()));
            }
        }
        Ok(st.sysctls.get(key).cloned().unwrap_or_else(|| "0".into()))
    }

    fn default_route_mtu(&self) -> Result<Option<(u32, Family)>> {
        self.enter("default_route_mtu", String::new())?;
        Ok(self.state.borrow().default_route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RouteScope;
    use std::path::PathBuf;

    fn veth(fake: &FakeKernel) {
        fake.create_veth(&VethSpec {
            host_name: "fnyabc".into(),
            host_mac: Some([0xee; 6]),
            peer_name: "eth0".into(),
            peer_netns: PathBuf::from("/ns/p"),
            mtu: 1450,
        })
        .unwrap();
    }

    #[test]
    fn veth_pairs_die_together() {
        let fake = FakeKernel::new();
        fake.add_netns("/ns/p");
        veth(&fake);
        assert_eq!(fake.link_names(None), ["fnyabc", "lo"]);
        assert_eq!(fake.link_names(Some("/ns/p")), ["eth0", "lo"]);
        let err = fake
            .create_veth(&VethSpec {
                host_name: "fnyother".into(),
                host_mac: None,
                peer_name: "eth0".into(),
                peer_netns: PathBuf::from("/ns/p"),
                mtu: 1450,
            })
            .unwrap_err();
        assert!(err.is_exists());
        assert!(fake.delete_link(Netns::Current, "fnyabc").unwrap());
        assert_eq!(fake.link_names(Some("/ns/p")), ["lo"]);
        assert!(!fake.delete_link(Netns::Current, "fnyabc").unwrap());

        veth(&fake);
        fake.remove_netns("/ns/p");
        assert_eq!(fake.link_names(None), ["lo"]);
    }

    #[test]
    fn routes_need_an_up_device_and_go_with_it() {
        let fake = FakeKernel::new();
        fake.add_netns("/ns/p");
        veth(&fake);
        let r = Route {
            dst: "10.0.0.1/32".parse().unwrap(),
            gateway: None,
            dev: "fnyabc".into(),
            scope: RouteScope::Link,
            onlink: false,
            protocol: 154,
        };
        assert!(fake.add_route(Netns::Current, &r).is_err());
        fake.set_link_up(Netns::Current, "fnyabc").unwrap();
        fake.add_route(Netns::Current, &r).unwrap();
        assert!(fake.add_route(Netns::Current, &r).unwrap_err().is_exists());
        fake.delete_link(Netns::Current, "fnyabc").unwrap();
        assert!(fake.all_routes(None).is_empty());
    }

    #[test]
    fn injected_failures_hit_the_nth_call() {
        let fake = FakeKernel::new();
        fake.fail("set_link_up", 1, Failure::Errno(1));
        fake.set_link_up(Netns::Current, "lo").unwrap();
        assert!(fake.set_link_up(Netns::Current, "lo").is_err());
        fake.set_link_up(Netns::Current, "lo").unwrap();
        assert_eq!(fake.calls_of(&["set_link_up"]).len(), 3);
    }
}
