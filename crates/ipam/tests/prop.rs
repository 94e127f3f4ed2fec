//! Property tests: random interleavings of allocate / repeated allocate / release / release_ip /
//! node loss / GC / time passing over several nodes and two small pools (16 IPv4 + 16 IPv6
//! addresses in blocks of 4, so claiming, borrowing, adoption and exhaustion all happen),
//! against MemStore directly and through a fault-injecting store.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use furynet_ipam::records::{HandleRecord, HANDLES_PREFIX};
use furynet_ipam::{
    AllocRequest, ClaimOrder, Family, Faults, FaultyStore, GcCandidate, GcOptions, HandleId, Ipam,
    IpamError, IpamOptions, ManualClock, MemStore, PoolConfig, Store,
};
use proptest::prelude::*;

const PODS: u8 = 24;
const NODES: u8 = 3;
const CAPACITY: usize = 16;

#[derive(Debug, Clone)]
enum Op {
    /// ADD (a repeated ADD when the pod is live: same node, must return the same addresses).
    Alloc {
        node: u8,
        pod: u8,
    },
    Release {
        pod: u8,
    },
    ReleaseIp {
        pod: u8,
        v6: bool,
    },
    NodeLoss {
        node: u8,
    },
    Gc {
        advance: bool,
    },
    Tick {
        secs: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..NODES, 0..PODS).prop_map(|(node, pod)| Op::Alloc { node, pod }),
        4 => (0..PODS).prop_map(|pod| Op::Release { pod }),
        1 => (0..PODS, any::<bool>()).prop_map(|(pod, v6)| Op::ReleaseIp { pod, v6 }),
        1 => (0..NODES).prop_map(|node| Op::NodeLoss { node }),
        1 => any::<bool>().prop_map(|advance| Op::Gc { advance }),
        1 => (0..900u16).prop_map(|secs| Op::Tick { secs }),
    ]
}

fn handle(pod: u8) -> HandleId {
    HandleId::for_container(&format!("c{pod}"), "eth0").unwrap()
}

fn pod_of(h: &str) -> u8 {
    h.trim_start_matches('c')
        .trim_end_matches(".eth0")
        .parse()
        .unwrap()
}

#[derive(Debug, Default)]
struct Model {
    /// Pods whose last operation succeeded: node and the addresses the handle holds.
    live: BTreeMap<u8, (String, Vec<IpAddr>)>,
    /// Pods an operation failed for (faults): their store state is unknown until a GC.
    uncertain: BTreeSet<u8>,
    /// Pods that may hold unindexed leftovers: a successful repeated ADD under faults may fail
    /// to give back the address it allocated before finding the handle's record (best effort;
    /// the GC frees it).
    leftovers: BTreeSet<u8>,
}

struct World {
    mem: Arc<MemStore>,
    faulty: Arc<FaultyStore<Arc<MemStore>>>,
    clock: Arc<ManualClock>,
    ipam: Ipam<Arc<FaultyStore<Arc<MemStore>>>>,
    /// Reads the store without faults.
    checker: Ipam<Arc<MemStore>>,
    dual: Vec<PoolConfig>,
    v4: Vec<PoolConfig>,
    faults: bool,
    model: Model,
}

impl World {
    fn new(faults: Option<(Faults, u64)>, hashed: bool, release_empty: bool) -> Self {
        let mem = Arc::new(MemStore::new());
        let (f, seed) = faults.unwrap_or_default();
        let faulty = Arc::new(FaultyStore::new(mem.clone(), f, seed));
        let clock = Arc::new(ManualClock::new(START_MS));
        let o = IpamOptions {
            claim_order: if hashed {
                ClaimOrder::Hashed
            } else {
                ClaimOrder::Sequential
            },
            release_empty_affine_blocks: release_empty,
            seed,
            ..IpamOptions::default()
        };
        let v4 = pool("10.0.0.0/28", 30);
        let v6 = pool("fd00::/124", 126);
        Self {
            ipam: Ipam::new(faulty.clone())
                .with_clock(clock.clone())
                .with_options(o.clone()),
            checker: Ipam::new(mem.clone())
                .with_clock(clock.clone())
                .with_options(o),
            mem,
            faulty,
            clock,
            dual: vec![v4, v6],
            v4: vec![v4],
            faults: faults.is_some(),
            model: Model::default(),
        }
    }

    fn pools(&self, pod: u8) -> &[PoolConfig] {
        if pod.is_multiple_of(2) {
            &self.dual
        } else {
            &self.v4
        }
    }

    fn allocated_of(&self, family: Family) -> usize {
        held(&self.mem)
            .iter()
            .filter(|(ip, _)| Family::of_addr(ip) == family)
            .count()
    }

    fn fail(&mut self, e: &IpamError, pod: u8) {
        assert!(self.faults, "unexpected error without faults: {e}");
        assert!(e.is_retryable(), "fault surfaced as non-retryable: {e}");
        self.model.uncertain.insert(pod);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Alloc { node, pod } => {
                let node = match self.model.live.get(&pod) {
                    Some((n, _)) => n.clone(),
                    None => format!("n{node}"),
                };
                let pools = self.pools(pod).to_vec();
                let req =
                    AllocRequest::for_container(&format!("c{pod}"), "eth0", &node, &pools).unwrap();
                if self.faults {
                    // Whatever the outcome, giving back addresses it no longer needs is best
                    // effort under faults.
                    self.model.leftovers.insert(pod);
                }
                match self.ipam.allocate(&req) {
                    Ok(got) => {
                        assert_eq!(got.len(), pools.len(), "one address per family");
                        let got = ips(&got);
                        if let Some((_, prev)) = self.model.live.get(&pod) {
                            for p in prev {
                                assert!(got.contains(p), "repeated ADD changed {p}: {got:?}");
                            }
                        }
                        self.model.live.insert(pod, (node, got));
                    }
                    Err(IpamError::PoolExhausted { family, .. }) => {
                        assert_eq!(
                            self.allocated_of(family),
                            CAPACITY,
                            "exhausted while {family} addresses are free"
                        );
                    }
                    Err(e) => self.fail(&e, pod),
                }
            }
            Op::Release { pod } => match self.ipam.release(&handle(pod)) {
                Ok(released) => {
                    if !self.faults && !self.model.uncertain.contains(&pod) {
                        let expect: BTreeSet<IpAddr> = self
                            .model
                            .live
                            .get(&pod)
                            .map(|(_, a)| a.iter().copied().collect())
                            .unwrap_or_default();
                        assert_eq!(released.into_iter().collect::<BTreeSet<_>>(), expect);
                    }
                    self.model.live.remove(&pod);
                }
                Err(e) => {
                    self.model.live.remove(&pod);
                    self.fail(&e, pod);
                }
            },
            Op::ReleaseIp { pod, v6 } => {
                let fam = if v6 { Family::V6 } else { Family::V4 };
                let Some(addr) = self
                    .model
                    .live
                    .get(&pod)
                    .and_then(|(_, a)| a.iter().copied().find(|ip| Family::of_addr(ip) == fam))
                else {
                    return;
                };
                match self.ipam.release_ip(addr) {
                    Ok(Some(r)) => {
                        assert_eq!(r.handle, handle(pod));
                        if let Some((_, a)) = self.model.live.get_mut(&pod) {
                            a.retain(|ip| *ip != addr);
                            if a.is_empty() {
                                // The emptied handle record is gone with its last address.
                                self.model.live.remove(&pod);
                            }
                        }
                    }
                    Ok(None) => panic!("{addr} of live pod c{pod} was not allocated"),
                    Err(e) => {
                        self.model.live.remove(&pod);
                        self.fail(&e, pod);
                    }
                }
            }
            Op::NodeLoss { node } => {
                if let Err(e) = self.ipam.release_node_affinities(&format!("n{node}")) {
                    assert!(self.faults && e.is_retryable(), "{e}");
                }
            }
            Op::Gc { advance } => {
                if advance {
                    self.clock.advance(grace());
                }
                let live: BTreeSet<u8> = self.model.live.keys().copied().collect();
                let is_live = |c: &GcCandidate<'_>| live.contains(&pod_of(c.handle.as_str()));
                match self.ipam.gc(&is_live, &GcOptions::default()) {
                    Ok(r) => {
                        for x in &r.released {
                            let p = pod_of(x.handle.as_str());
                            let listed = self
                                .model
                                .live
                                .get(&p)
                                .is_some_and(|(_, a)| a.contains(&x.ip));
                            assert!(!listed, "GC released {} of live pod c{p}", x.ip);
                        }
                        if !self.faults {
                            assert!(r.released.is_empty(), "nothing to collect: {r:?}");
                            assert!(r.errors.is_empty(), "{r:?}");
                        }
                    }
                    Err(e) => assert!(self.faults && e.is_retryable(), "{e}"),
                }
            }
            Op::Tick { secs } => self.clock.advance(Duration::from_secs(u64::from(secs))),
        }
    }

    fn invariants(&self) {
        let held = held(&self.mem);
        // No address held twice.
        let mut seen = BTreeSet::new();
        for (ip, _) in &held {
            assert!(seen.insert(*ip), "{ip} held twice: {held:?}");
        }
        let holder: BTreeMap<IpAddr, &str> = held.iter().map(|(i, h)| (*i, h.as_str())).collect();
        // Every live pod holds exactly the addresses it was given, and its record says so.
        for (pod, (_, addrs)) in &self.model.live {
            let h = handle(*pod);
            for ip in addrs {
                assert_eq!(holder.get(ip), Some(&h.as_str()), "c{pod} lost {ip}");
            }
            let rec = self
                .mem
                .get(&format!("{HANDLES_PREFIX}{h}"))
                .unwrap()
                .unwrap_or_else(|| panic!("c{pod} has no handle record"));
            let rec: HandleRecord = serde_json::from_slice(&rec.value).unwrap();
            let listed: BTreeSet<IpAddr> = rec.addresses.iter().map(|a| a.ip).collect();
            let given: BTreeSet<IpAddr> = addrs.iter().copied().collect();
            assert!(given.is_subset(&listed), "c{pod}: {given:?} vs {listed:?}");
            if !self.model.uncertain.contains(pod) {
                assert_eq!(given, listed, "record of c{pod}");
            }
        }
        // Nothing is held for pods the model does not know.
        let known = |p: u8| {
            self.model.live.contains_key(&p)
                || self.model.uncertain.contains(&p)
                || self.model.leftovers.contains(&p)
        };
        for (_, h) in &held {
            assert!(
                known(pod_of(h)),
                "{h} holds an address but is neither live nor failed"
            );
        }
        for r in handles(&self.mem) {
            assert!(
                known(pod_of(r.handle.as_str())),
                "stray record {}",
                r.handle
            );
        }
        if !self.faults {
            let report = self.checker.check().unwrap();
            assert!(report.is_clean(), "{report:#?}");
            let model: BTreeSet<IpAddr> = self
                .model
                .live
                .values()
                .flat_map(|(_, a)| a.iter().copied())
                .collect();
            assert_eq!(seen, model, "store holds exactly the live pods' addresses");
        }
    }

    /// Faults off, a GC past the grace period, then everything must be exactly the model.
    fn settle(&mut self) {
        self.faulty.set_faults(Faults::default());
        self.faults = false;
        self.clock.advance(grace());
        let live: BTreeSet<u8> = self.model.live.keys().copied().collect();
        let is_live = |c: &GcCandidate<'_>| live.contains(&pod_of(c.handle.as_str()));
        let r = self.ipam.gc(&is_live, &GcOptions::default()).unwrap();
        assert!(r.errors.is_empty(), "{r:?}");
        // A live pod whose repeated ADD failed may hold more than the model knows (the record
        // write landed but answered "unavailable"): what its record lists is what it holds.
        for pod in std::mem::take(&mut self.model.uncertain) {
            let Some((_, addrs)) = self.model.live.get_mut(&pod) else {
                continue;
            };
            let key = format!("{HANDLES_PREFIX}{}", handle(pod));
            let rec: HandleRecord =
                serde_json::from_slice(&self.mem.get(&key).unwrap().unwrap().value).unwrap();
            let listed: Vec<IpAddr> = rec.addresses.iter().map(|a| a.ip).collect();
            assert!(
                addrs.iter().all(|a| listed.contains(a)),
                "{addrs:?} vs {listed:?}"
            );
            *addrs = listed;
        }
        self.model.leftovers.clear();
        // Uncertain pods' records may still list addresses another pod got since (stale entries
        // pruned by the GC above); live pods' records may carry stale entries too.
        self.invariants();
        // Repeated ADDs return the same addresses; then release everything.
        let pods: Vec<(u8, String, Vec<IpAddr>)> = self
            .model
            .live
            .iter()
            .map(|(p, (n, a))| (*p, n.clone(), a.clone()))
            .collect();
        for (pod, node, addrs) in &pods {
            let pools = self.pools(*pod).to_vec();
            let req =
                AllocRequest::for_container(&format!("c{pod}"), "eth0", node, &pools).unwrap();
            if addrs.len() == pools.len() {
                let got = ips(&self.ipam.allocate(&req).unwrap());
                assert_eq!(
                    got.iter().collect::<BTreeSet<_>>(),
                    addrs.iter().collect::<BTreeSet<_>>()
                );
            }
            self.ipam.release(&req.handle).unwrap();
            self.model.live.remove(pod);
        }
        self.invariants();
        assert!(held(&self.mem).is_empty());
        assert!(self.mem.keys(HANDLES_PREFIX).is_empty());
        if self.ipam.options().release_empty_affine_blocks {
            assert!(self.mem.is_empty(), "{:?}", self.mem.keys(""));
        }
    }
}

proptest! {
    // 64 cases by default; `PROPTEST_CASES=5000` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn interleavings_keep_every_invariant(
        ops in prop::collection::vec(op(), 1..80),
        hashed in any::<bool>(),
        release_empty in any::<bool>(),
    ) {
        let mut w = World::new(None, hashed, release_empty);
        for op in &ops {
            w.apply(op);
            w.invariants();
        }
        w.settle();
    }

    #[test]
    fn interleavings_under_store_faults_never_double_allocate(
        ops in prop::collection::vec(op(), 1..80),
        seed in any::<u64>(),
        hashed in any::<bool>(),
    ) {
        let faults = Faults { conflict: 0.15, unavailable: 0.04, unavailable_after_write: 0.04 };
        let mut w = World::new(Some((faults, seed)), hashed, true);
        for op in &ops {
            w.apply(op);
            w.invariants();
        }
        w.settle();
    }
}
