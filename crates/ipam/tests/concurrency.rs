//! Many threads allocating and releasing at once against MemStore (real clock, real backoff).
//! Each thread stands for a CNI process; threads on one node contend for the same blocks.

// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use common::*;
use furynet_ipam::records::{AFFINITY_PREFIX, BLOCKS_PREFIX, HANDLES_PREFIX};
use furynet_ipam::{
    AllocRequest, Allocation, Faults, FaultyStore, GcOptions, Ipam, IpamOptions, MemStore,
    PoolConfig, Store,
};

/// What a CNI runtime does with a retryable error: try again.
fn allocate_retrying<S: Store>(ipam: &Ipam<S>, req: &AllocRequest<'_>) -> Vec<Allocation> {
    for _ in 0..50 {
        match ipam.allocate(req) {
            Ok(a) => return a,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("allocation of {} kept failing", req.handle);
}

fn release_retrying<S: Store>(ipam: &Ipam<S>, h: &furynet_ipam::HandleId) -> Vec<IpAddr> {
    let mut released = Vec::new();
    for _ in 0..50 {
        match ipam.release(h) {
            Ok(r) => {
                released.extend(r);
                return released;
            }
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("release of {h} kept failing");
}

fn real_ipam<S: Store>(store: S) -> Ipam<S> {
    Ipam::new(store).with_options(IpamOptions::default())
}

#[test]
fn eight_threads_times_100_allocations_are_unique_and_fully_released() {
    let store = Arc::new(MemStore::new());
    let ipam = Arc::new(real_ipam(store.clone()));
    let pools = Arc::new([
        PoolConfig::new(net("10.0.0.0/16")),
        PoolConfig::new(net("fd00::/64")),
    ]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A GC running alongside must not take anything (everything is live and young).
    let gc = {
        let (ipam, stop) = (ipam.clone(), stop.clone());
        thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = ipam.gc(&|_| true, &GcOptions::default()).unwrap();
                assert!(r.released.is_empty(), "{r:?}");
                runs += 1;
            }
            runs
        })
    };
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (ipam, pools) = (ipam.clone(), pools.clone());
            thread::spawn(move || {
                // Two threads per node: contention inside a node and across nodes.
                let node = format!("node-{}", t % 4);
                let mut got = Vec::new();
                for i in 0..100 {
                    let c = format!("t{t}c{i}");
                    let req = AllocRequest::for_container(&c, "eth0", &node, &pools[..]).unwrap();
                    let a = allocate_retrying(&ipam, &req);
                    assert_eq!(a.len(), 2);
                    got.push((req.handle.clone(), a));
                }
                got
            })
        })
        .collect();
    let all: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(gc.join().unwrap() > 0);

    let addrs: Vec<IpAddr> = all
        .iter()
        .flat_map(|(_, a)| a.iter().map(|x| x.ip))
        .collect();
    let unique: BTreeSet<IpAddr> = addrs.iter().copied().collect();
    assert_eq!(addrs.len(), 1600);
    assert_eq!(unique.len(), 1600, "an address was handed out twice");
    let report = ipam.check().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.allocations, 1600);
    // Blocks stay with their nodes: every address is in a block affine to its allocator.
    for u in ipam.usage().unwrap() {
        for b in u.blocks {
            assert_eq!(b.borrowed, 0, "{b:?}");
        }
    }

    let chunks: Vec<Vec<_>> = all.chunks(200).map(|c| c.to_vec()).collect();
    let releasers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let ipam = ipam.clone();
            thread::spawn(move || {
                for (h, a) in chunk {
                    let mut r = release_retrying(&ipam, &h);
                    r.sort();
                    let mut want: Vec<IpAddr> = a.iter().map(|x| x.ip).collect();
                    want.sort();
                    assert_eq!(r, want);
                }
            })
        })
        .collect();
    for r in releasers {
        r.join().unwrap();
    }
    assert!(store.keys(HANDLES_PREFIX).is_empty());
    assert!(store.keys(BLOCKS_PREFIX).is_empty(), "empty blocks go");
    assert!(store.keys(AFFINITY_PREFIX).is_empty());
}

#[test]
fn churn_with_empty_block_deletion_never_double_allocates() {
    let store = Arc::new(MemStore::new());
    let ipam = Arc::new(real_ipam(store.clone()));
    // Eight blocks of eight: blocks are claimed, emptied and deleted all the time.
    let pools = Arc::new([pool("10.0.0.0/26", 29)]);
    let holding: Arc<Mutex<HashMap<IpAddr, String>>> = Arc::default();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (ipam, pools, holding) = (ipam.clone(), pools.clone(), holding.clone());
            thread::spawn(move || {
                let node = if t < 4 { "busy" } else { "other" };
                for i in 0..150 {
                    let c = format!("t{t}c{i}");
                    let req = AllocRequest::for_container(&c, "eth0", node, &pools[..]).unwrap();
                    let a = allocate_retrying(&ipam, &req);
                    let ip = a[0].ip;
                    if let Some(prev) = holding.lock().unwrap().insert(ip, c.clone()) {
                        panic!("{ip} given to {c} while {prev} holds it");
                    }
                    holding.lock().unwrap().remove(&ip);
                    assert_eq!(release_retrying(&ipam, &req.handle), vec![ip]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = ipam.check().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert!(store.is_empty(), "{:?}", store.keys(""));
}

#[test]
fn concurrent_adds_for_one_handle_agree() {
    let store = Arc::new(MemStore::new());
    let ipam = Arc::new(real_ipam(store.clone()));
    let pools = Arc::new([
        PoolConfig::new(net("10.0.0.0/24")),
        PoolConfig::new(net("fd00::/64")),
    ]);
    for round in 0..30 {
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (ipam, pools, barrier) = (ipam.clone(), pools.clone(), barrier.clone());
                thread::spawn(move || {
                    let c = format!("same{round}");
                    let req = AllocRequest::for_container(&c, "eth0", "n1", &pools[..]).unwrap();
                    barrier.wait();
                    allocate_retrying(&ipam, &req)
                })
            })
            .collect();
        let results: Vec<Vec<Allocation>> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
        let held_by: Vec<_> = held(&store)
            .into_iter()
            .filter(|(_, h)| h == &format!("same{round}.eth0"))
            .collect();
        assert_eq!(held_by.len(), 2, "the losers gave their addresses back");
    }
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn concurrent_allocation_through_injected_conflicts() {
    let mem = Arc::new(MemStore::new());
    let faulty = Arc::new(FaultyStore::new(
        mem.clone(),
        Faults {
            conflict: 0.3,
            ..Faults::default()
        },
        42,
    ));
    let ipam = Arc::new(real_ipam(faulty.clone()));
    let pools = Arc::new([pool("10.0.0.0/22", 27)]);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (ipam, pools) = (ipam.clone(), pools.clone());
            thread::spawn(move || {
                let node = format!("n{}", t % 3);
                let mut kept = Vec::new();
                for i in 0..60 {
                    let c = format!("t{t}c{i}");
                    let req = AllocRequest::for_container(&c, "eth0", &node, &pools[..]).unwrap();
                    let a = allocate_retrying(&ipam, &req);
                    if i % 2 == 0 {
                        release_retrying(&ipam, &req.handle);
                    } else {
                        kept.push((req.handle.clone(), a[0].ip));
                    }
                }
                kept
            })
        })
        .collect();
    let kept: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(faulty.injected() > 0);
    let unique: BTreeSet<IpAddr> = kept.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(unique.len(), kept.len());
    let held: BTreeSet<(IpAddr, String)> = held(&mem).into_iter().collect();
    let want: BTreeSet<(IpAddr, String)> =
        kept.iter().map(|(h, ip)| (*ip, h.to_string())).collect();
    assert_eq!(held, want);
    let report = Ipam::new(mem.clone()).check().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    for (h, _) in &kept {
        release_retrying(&ipam, h);
    }
    assert!(mem.is_empty(), "{:?}", mem.keys(""));
}
