//! The plugin's logic end to end against a recording fake kernel and a recording fake
//! allocator: every verb, every error code, rollback after every possible failure.

mod add;
mod verbs;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use furynet_dataplane::fake::FakeKernel;
pub(crate) use furynet_dataplane::Kernel as _;
use serde_json::{json, Value};

use crate::alloc::{AllocAttrs, AllocError, Allocator, Handle};
use crate::config::NetConf;
use crate::plugin::{run, Deps, Outcome};

pub(crate) const NETNS: &str = "/run/netns/pod1";

/// Allocator state shared between the test and every allocator the factory hands out.
#[derive(Debug, Default)]
pub(crate) struct AllocState {
    pub held: BTreeMap<Handle, (Vec<IpAddr>, AllocAttrs)>,
    pub next: u8,
    pub log: Vec<String>,
    /// op -> error for its next call.
    pub fail: HashMap<&'static str, AllocError>,
    pub open_error: Option<AllocError>,
    pub capacity: Option<usize>,
}

#[derive(Debug)]
pub(crate) struct FakeAllocator {
    state: Rc<RefCell<AllocState>>,
    v4: bool,
    v6: bool,
}

impl FakeAllocator {
    fn enter(&self, op: &'static str, arg: String) -> Result<(), AllocError> {
        let mut st = self.state.borrow_mut();
        st.log.push(format!("{op}({arg})"));
        match st.fail.remove(op) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Allocator for FakeAllocator {
    fn allocate(&self, handle: &Handle, attrs: &AllocAttrs) -> Result<Vec<IpAddr>, AllocError> {
        self.enter("allocate", handle.key())?;
        let mut st = self.state.borrow_mut();
        if let Some((ips, _)) = st.held.get(handle) {
            return Ok(ips.clone());
        }
        if st.capacity.is_some_and(|c| st.held.len() >= c) {
            return Err(AllocError::Exhausted("fake pool full".into()));
        }
        st.next += 1;
        let n = st.next;
        let mut ips = Vec::new();
        if self.v4 {
            ips.push(IpAddr::from([10, 244, 0, n]));
        }
        if self.v6 {
            ips.push(IpAddr::from([
                0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n,
            ]));
        }
        st.held.insert(handle.clone(), (ips.clone(), attrs.clone()));
        Ok(ips)
    }

    fn lookup(&self, handle: &Handle) -> Result<Option<Vec<IpAddr>>, AllocError> {
        self.enter("lookup", handle.key())?;
        Ok(self
            .state
            .borrow()
            .held
            .get(handle)
            .map(|(ips, _)| ips.clone()))
    }

    fn release(&self, handle: &Handle) -> Result<bool, AllocError> {
        self.enter("release", handle.key())?;
        Ok(self.state.borrow_mut().held.remove(handle).is_some())
    }

    fn gc(&self, keep: &[Handle]) -> Result<Vec<Handle>, AllocError> {
        self.enter("gc", format!("{}", keep.len()))?;
        let mut st = self.state.borrow_mut();
        let stale: Vec<Handle> = st
            .held
            .keys()
            .filter(|h| !keep.contains(h))
            .cloned()
            .collect();
        for h in &stale {
            st.held.remove(h);
        }
        Ok(stale)
    }

    fn status(&self) -> Result<(), AllocError> {
        self.enter("status", String::new())?;
        let st = self.state.borrow();
        if st.capacity.is_some_and(|c| st.held.len() >= c) {
            return Err(AllocError::Exhausted("fake pool full".into()));
        }
        Ok(())
    }
}

/// A fake world: kernel with the host namespace and one pod namespace, an allocator.
pub(crate) struct World {
    pub kernel: FakeKernel,
    pub alloc: Rc<RefCell<AllocState>>,
    /// How many times the plugin started the reaper (which the test runs itself: [`World::reap`]).
    pub reaper_starts: std::cell::Cell<usize>,
}

impl World {
    pub fn new() -> World {
        let kernel = FakeKernel::new();
        kernel.add_netns(NETNS);
        World {
            kernel,
            alloc: Rc::new(RefCell::new(AllocState::default())),
            reaper_starts: std::cell::Cell::new(0),
        }
    }

    /// Runs the plugin with `env` (as `KEY=VALUE` pairs) and `conf` on stdin.
    pub fn run(&self, env: &[(&str, &str)], stdin: &str) -> Outcome {
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let state = Rc::clone(&self.alloc);
        let factory =
            move |conf: &NetConf, _node: &str| -> Result<Box<dyn Allocator>, AllocError> {
                if let Some(e) = state.borrow_mut().open_error.take() {
                    return Err(e);
                }
                Ok(Box::new(FakeAllocator {
                    state: Rc::clone(&state),
                    v4: conf.pools.iter().any(|p| p.cidr.addr().is_ipv4()),
                    v6: conf.pools.iter().any(|p| p.cidr.addr().is_ipv6()),
                }))
            };
        let hostname = || Some("host-a".to_string());
        let start_reaper = || self.reaper_starts.set(self.reaper_starts.get() + 1);
        let deps = Deps {
            kernel: &self.kernel,
            allocator: &factory,
            hostname: &hostname,
            start_reaper: &start_reaper,
        };
        run(&|k| vars.get(k).cloned(), stdin.as_bytes(), &deps)
    }

    /// What the detached reaper does.
    pub fn reap(&self) {
        crate::wiring::reap(&self.kernel).expect("reap");
    }

    /// The host interfaces DEL retired and the reaper has not deleted yet.
    pub fn retired(&self) -> Vec<String> {
        self.kernel
            .link_names(None)
            .into_iter()
            .filter(|n| {
                self.kernel
                    .link(furynet_dataplane::Netns::Current, n)
                    .ok()
                    .flatten()
                    .is_some_and(|l| l.group == crate::wiring::RETIRED_GROUP && !l.up)
            })
            .collect()
    }

    pub fn add(&self, cid: &str, conf: &Value) -> Outcome {
        self.run(&attach("ADD", cid, Some(NETNS)), &conf.to_string())
    }

    pub fn allocations(&self) -> Vec<Handle> {
        self.alloc.borrow().held.keys().cloned().collect()
    }

    pub fn alloc_log(&self) -> Vec<String> {
        self.alloc.borrow().log.clone()
    }
}

pub(crate) fn attach<'a>(
    cmd: &'a str,
    cid: &'a str,
    netns: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=cid;K8S_POD_UID=uid-1",
        ),
    ];
    if let Some(n) = netns {
        v.push(("CNI_NETNS", n));
    }
    v
}

pub(crate) fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "k8s-pod-network", "type": "furynet-cni",
           "datastore": {"type": "embedded", "path": "/var/lib/furynet"},
           "nodeName": "node-1",
           "ipam": {"pools": ["10.244.0.0/16", "fd00:10:244::/56"], "blockSize": 26},
           "mtu": 1450})
}

pub(crate) fn json_out(o: &Outcome) -> Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", o.stdout))
}

/// Asserts a CNI error with `code`; returns the error object.
pub(crate) fn expect_error(o: &Outcome, code: u64) -> Value {
    assert_eq!(o.exit_code, 1, "expected failure, got {:?}", o.stdout);
    let v = json_out(o);
    assert_eq!(v["code"], code, "{v}");
    assert!(v["msg"].is_string() && v["cniVersion"].is_string(), "{v}");
    assert_eq!(
        o.stdout.trim_end().lines().count(),
        1,
        "one JSON object only"
    );
    v
}

/// Asserts that nothing of an attachment is left: no host veth, only `lo` in the pod, no
/// allocation, no host route.
/// Nothing of any attachment is left: no address held, no route; host interfaces only retired
/// ones (down, for the reaper, which was started) and none once the reaper has run.
pub(crate) fn assert_clean(w: &World) {
    assert!(
        w.kernel.all_routes(None).is_empty(),
        "host routes left behind"
    );
    assert!(w.allocations().is_empty(), "allocations left behind");
    let retired = w.retired();
    let in_service: Vec<String> = w
        .kernel
        .link_names(None)
        .into_iter()
        .filter(|n| n != "lo" && !retired.contains(n))
        .collect();
    assert!(
        in_service.is_empty(),
        "host interfaces left in service: {in_service:?}"
    );
    if !retired.is_empty() {
        assert!(
            w.reaper_starts.get() > 0,
            "retired {retired:?} but no reaper started"
        );
        w.reap();
    }
    assert_eq!(
        w.kernel.link_names(None),
        ["lo"],
        "host interfaces left behind"
    );
    let pod = w.kernel.link_names(Some(NETNS));
    assert!(
        pod.is_empty() || pod == ["lo"],
        "pod interfaces left behind: {pod:?}"
    );
    assert!(
        w.kernel.all_routes(None).is_empty(),
        "host routes left behind"
    );
    assert!(w.allocations().is_empty(), "allocations left behind");
}
