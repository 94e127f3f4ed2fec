//! One test per IPAM rule, against MemStore with a manual clock.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use furynet_ipam::records::{
    affinity_key, block_key, AFFINITY_PREFIX, BLOCKS_PREFIX, HANDLES_PREFIX,
};
use furynet_ipam::{
    ClaimOrder, Clock, Family, Faults, FaultyStore, GcOptions, HandleId, Ipam, IpamError,
    IpamOptions, MemStore, PoolConfig,
};

#[test]
fn first_allocation_claims_a_block_and_uses_lowest_ordinals() {
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let a = ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].ip, ip("10.0.0.0"));
    assert_eq!(a[0].block, net("10.0.0.0/26"));
    assert_eq!(a[0].pool, net("10.0.0.0/16"));
    assert_eq!(a[0].host_net(), net("10.0.0.0/32"));
    let b = ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    assert_eq!(b[0].ip, ip("10.0.0.1"));
    // Another node claims its own block.
    let c = ipam.allocate(&req("c3", "n2", &pools)).unwrap();
    assert_eq!(c[0].block, net("10.0.0.64/26"));
    assert_eq!(c[0].ip, ip("10.0.0.64"));
    assert_eq!(
        store.keys(AFFINITY_PREFIX),
        [
            affinity_key("n1", &net("10.0.0.0/26")),
            affinity_key("n2", &net("10.0.0.64/26")),
        ]
    );
    let bl = blocks(&store);
    assert_eq!(bl[0].affinity.as_deref(), Some("n1"));
    assert_eq!(bl[0].allocations.len(), 2);
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn hashed_claims_spread_nodes_over_the_pool() {
    let (ipam, _, _) = setup_with(IpamOptions {
        claim_order: ClaimOrder::Hashed,
        ..opts()
    });
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..8 {
        let node = format!("node-{n}");
        let a = ipam
            .allocate(&req(&format!("c{n}"), &node, &pools))
            .unwrap();
        assert!(seen.insert(a[0].block), "blocks must differ");
    }
    // Deterministic: the same node hashes to the same block.
    let (ipam2, _, _) = setup_with(IpamOptions {
        claim_order: ClaimOrder::Hashed,
        ..opts()
    });
    let a = ipam2.allocate(&req("x", "node-0", &pools)).unwrap();
    assert!(seen.contains(&a[0].block));
}

#[test]
fn allocation_is_idempotent_per_handle() {
    let (ipam, store, _) = setup();
    let pools = [
        PoolConfig::new(net("10.0.0.0/16")),
        PoolConfig::new(net("fd00::/64")),
    ];
    let r = req("c1", "n1", &pools);
    let first = ipam.allocate(&r).unwrap();
    let again = ipam.allocate(&r).unwrap();
    assert_eq!(first, again);
    assert_eq!(held(&store).len(), 2);
    assert_eq!(handles(&store).len(), 1);
    // Another interface of the same container is another handle.
    let eth1 = furynet_ipam::AllocRequest::for_container("c1", "eth1", "n1", &pools).unwrap();
    let other = ipam.allocate(&eth1).unwrap();
    assert_ne!(ips(&first), ips(&other));
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn typical_allocation_is_two_reads_and_two_writes() {
    let store = Arc::new(CountingStore::new(MemStore::new()));
    let ipam = Ipam::new(store.clone()).with_options(opts());
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    ipam.allocate(&req("c0", "n1", &pools)).unwrap();
    // Claim: list affinity index + list block keys; create block (holding the address) +
    // create affinity entry + create handle record.
    assert_eq!(store.take(), (2, 3));
    ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    // list affinity index + get block; CAS block + create handle record.
    assert_eq!(store.take(), (2, 2));
    // Release: get handle + get block; CAS block + delete handle.
    ipam.release(&HandleId::for_container("c1", "eth0").unwrap())
        .unwrap();
    assert_eq!(store.take(), (2, 2));
}

#[test]
fn release_is_idempotent_and_unknown_handles_are_fine() {
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r = req("c1", "n1", &pools);
    let a = ipam.allocate(&r).unwrap();
    ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    assert_eq!(ipam.release(&r.handle).unwrap(), ips(&a));
    assert_eq!(
        ipam.release(&r.handle).unwrap(),
        Vec::<std::net::IpAddr>::new()
    );
    assert_eq!(
        ipam.release(&HandleId::parse("nope.eth0").unwrap())
            .unwrap(),
        Vec::<std::net::IpAddr>::new()
    );
    assert_eq!(held(&store).len(), 1);
    // The freed address is the lowest free one again.
    let again = ipam.allocate(&req("c3", "n1", &pools)).unwrap();
    assert_eq!(again[0].ip, a[0].ip);
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn dual_stack_gives_one_address_per_family() {
    let (ipam, store, _) = setup();
    let pools = [
        PoolConfig::new(net("fd00::/64")),
        PoolConfig::new(net("10.0.0.0/16")),
    ];
    let a = ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    assert_eq!(a.len(), 2);
    // Results follow the order families first appear in `pools`.
    assert_eq!(a[0].family(), Family::V6);
    assert_eq!(a[0].block, net("fd00::/122"));
    assert_eq!(a[1].ip, ip("10.0.0.0"));
    let h = handles(&store);
    assert_eq!(h[0].addresses.len(), 2);
    assert_eq!(ipam.release(&h[0].handle).unwrap().len(), 2);
    assert!(store.is_empty());
}

#[test]
fn pools_of_one_family_are_tried_in_order() {
    let (ipam, _, _) = setup();
    let pools = [pool("10.9.9.9/32", 26), pool("10.0.0.0/16", 26)];
    let a = ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    assert_eq!(a[0].ip, ip("10.9.9.9"));
    let b = ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    assert_eq!(b[0].pool, net("10.0.0.0/16"));
}

#[test]
fn a_pool_smaller_than_a_block_is_one_block() {
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.1.0.0/28"))];
    for i in 0..16 {
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        let a = ipam.allocate(&req(&format!("c{i}"), node, &pools)).unwrap();
        assert_eq!(a[0].block, net("10.1.0.0/28"));
    }
    assert_eq!(store.keys(BLOCKS_PREFIX), [block_key(&net("10.1.0.0/28"))]);
    let err = ipam.allocate(&req("c16", "n3", &pools)).unwrap_err();
    assert!(matches!(
        err,
        IpamError::PoolExhausted {
            family: Family::V4,
            ..
        }
    ));
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("10.1.0.0/28"), "{err}");
    assert!(err.to_string().contains("c16.eth0"), "{err}");
}

#[test]
fn nodes_borrow_when_no_block_can_be_claimed() {
    let (ipam, _, _) = setup();
    // Two blocks of two addresses.
    let pools = [pool("10.0.0.0/30", 31)];
    ipam.allocate(&req("a1", "a", &pools)).unwrap();
    ipam.allocate(&req("a2", "a", &pools)).unwrap();
    let b1 = ipam.allocate(&req("b1", "b", &pools)).unwrap();
    assert_eq!(b1[0].block, net("10.0.0.2/31"));
    // a's block is full and no subnet is left: borrow from b's block.
    let a3 = ipam.allocate(&req("a3", "a", &pools)).unwrap();
    assert_eq!(a3[0].ip, ip("10.0.0.3"));
    let usage = ipam.usage().unwrap();
    assert_eq!(usage.len(), 1);
    let bb = &usage[0].blocks[1];
    assert_eq!(
        (bb.node.as_deref(), bb.used, bb.borrowed),
        (Some("b"), 2, 1)
    );
    assert_eq!(usage[0].used(), 4);
    assert_eq!(usage[0].block_capacity(), 4);
    assert!(matches!(
        ipam.allocate(&req("c1", "c", &pools)),
        Err(IpamError::PoolExhausted { .. })
    ));
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn exhaustion_leaves_nothing_behind() {
    let (ipam, store, _) = setup();
    let v6 = pool("fd00::/127", 127);
    let pools = [PoolConfig::new(net("10.0.0.0/24")), v6];
    ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    let before = held(&store);
    let err = ipam.allocate(&req("c3", "n1", &pools)).unwrap_err();
    assert!(matches!(
        err,
        IpamError::PoolExhausted {
            family: Family::V6,
            ..
        }
    ));
    assert_eq!(held(&store), before, "the IPv4 address was given back");
    assert_eq!(handles(&store).len(), 2);
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn repeated_add_on_a_full_pool_still_returns_the_held_addresses() {
    let (ipam, _, _) = setup();
    let pools = [pool("10.0.0.0/31", 31)];
    let r1 = req("c1", "n1", &pools);
    let a = ipam.allocate(&r1).unwrap();
    ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    assert_eq!(ipam.allocate(&r1).unwrap(), a);
}

#[test]
fn empty_blocks_are_released_with_their_affinity() {
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r = req("c1", "n1", &pools);
    ipam.allocate(&r).unwrap();
    ipam.release(&r.handle).unwrap();
    assert!(store.is_empty(), "{:?}", store.keys(""));

    // Kept when configured so (affine blocks only).
    let (ipam, store, _) = setup_with(IpamOptions {
        release_empty_affine_blocks: false,
        ..opts()
    });
    ipam.allocate(&r).unwrap();
    ipam.release(&r.handle).unwrap();
    assert_eq!(store.keys(BLOCKS_PREFIX).len(), 1);
    assert_eq!(store.keys(AFFINITY_PREFIX).len(), 1);
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn release_ip_frees_one_address_and_updates_the_handle() {
    let (ipam, store, _) = setup();
    let pools = [
        PoolConfig::new(net("10.0.0.0/16")),
        PoolConfig::new(net("fd00::/64")),
    ];
    let r = req("c1", "n1", &pools);
    let a = ipam.allocate(&r).unwrap();
    let rel = ipam.release_ip(a[0].ip).unwrap().unwrap();
    assert_eq!(rel.handle, r.handle);
    assert_eq!(rel.block, a[0].block);
    assert_eq!(ipam.release_ip(a[0].ip).unwrap(), None);
    assert_eq!(ipam.release_ip(ip("192.168.0.1")).unwrap(), None);
    assert_eq!(handles(&store)[0].addresses.len(), 1);
    assert!(ipam.check().unwrap().is_clean());
    // A repeated ADD replaces the released family.
    let again = ipam.allocate(&r).unwrap();
    assert_eq!(again[1], a[1]);
    assert_eq!(ipam.release_ip(a[1].ip).unwrap().unwrap().handle, r.handle);
    ipam.release_ip(again[0].ip).unwrap();
    assert!(store.is_empty(), "{:?}", store.keys(""));
}

#[test]
fn lost_node_blocks_become_unaffine_and_are_adopted() {
    let (ipam, store, clock) = setup();
    let pools = [pool("10.0.0.0/30", 30)];
    let dead = ipam.allocate(&req("d1", "dead", &pools)).unwrap();
    let rep = ipam.release_node_affinities("dead").unwrap();
    assert_eq!(rep.unaffined, [net("10.0.0.0/30")]);
    assert_eq!(rep.index_entries_removed, 1);
    assert!(store.keys(AFFINITY_PREFIX).is_empty());
    assert_eq!(blocks(&store)[0].affinity, None);
    assert_eq!(held(&store).len(), 1, "live allocations stay until GC");
    assert!(ipam.check().unwrap().is_clean());
    // Another node adopts the orphaned block.
    let a = ipam.allocate(&req("n1", "new", &pools)).unwrap();
    assert_eq!(a[0].ip, ip("10.0.0.1"));
    assert_eq!(blocks(&store)[0].affinity.as_deref(), Some("new"));
    assert!(ipam.check().unwrap().is_clean());
    // The dead node's pod is collected later.
    clock.advance(grace());
    let live = |c: &furynet_ipam::GcCandidate<'_>| c.node != "dead";
    let g = ipam.gc(&live, &GcOptions::default()).unwrap();
    assert_eq!(g.released.len(), 1);
    assert_eq!(g.released[0].ip, dead[0].ip);
    // Releasing a node without blocks, or an empty block, is fine.
    let (ipam, store, _) = setup_with(IpamOptions {
        release_empty_affine_blocks: false,
        ..opts()
    });
    let r = req("x", "n1", &pools);
    ipam.allocate(&r).unwrap();
    ipam.release(&r.handle).unwrap();
    let rep = ipam.release_node_affinities("n1").unwrap();
    assert_eq!(rep.deleted, [net("10.0.0.0/30")]);
    assert!(store.is_empty());
    assert_eq!(
        ipam.release_node_affinities("n2").unwrap(),
        Default::default()
    );
}

#[test]
fn invalid_requests_are_rejected() {
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let bad_node = req("c1", "bad/node", &pools);
    assert!(matches!(
        ipam.allocate(&bad_node),
        Err(IpamError::InvalidRequest { .. })
    ));
    assert!(matches!(
        ipam.allocate(&req("c1", "n1", &[])),
        Err(IpamError::InvalidRequest { .. })
    ));
    let bad_pool = [pool("10.0.0.1/16", 26)];
    assert!(matches!(
        ipam.allocate(&req("c1", "n1", &bad_pool)),
        Err(IpamError::InvalidPool { .. })
    ));
    assert!(store.is_empty());
}

#[test]
fn corrupt_blocks_are_skipped_by_the_allocator() {
    let (ipam, store, _) = setup();
    let pools = [pool("10.0.0.0/25", 26)];
    store.put(&block_key(&net("10.0.0.0/26")), b"garbage");
    let a = ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    assert_eq!(a[0].block, net("10.0.0.64/26"));
    assert_eq!(ipam.check().unwrap().corrupt.len(), 1);
}

#[test]
fn persistent_conflicts_end_in_a_retryable_contention_error() {
    let store = Arc::new(FaultyStore::new(MemStore::new(), Faults::default(), 1));
    let clock = Arc::new(furynet_ipam::ManualClock::new(START_MS));
    let ipam = Ipam::new(store.clone())
        .with_clock(clock)
        .with_options(opts());
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    ipam.allocate(&req("c1", "n1", &pools)).unwrap();
    store.set_faults(Faults {
        conflict: 1.0,
        ..Faults::default()
    });
    let err = ipam.allocate(&req("c2", "n1", &pools)).unwrap_err();
    assert!(
        matches!(err, IpamError::Contention { attempts: 20, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    store.set_faults(Faults::default());
    assert_eq!(held(store.inner()).len(), 1);

    store.set_faults(Faults {
        unavailable: 1.0,
        ..Faults::default()
    });
    let err = ipam.allocate(&req("c3", "n1", &pools)).unwrap_err();
    assert!(matches!(err, IpamError::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
}

/// A clock that moves forward on every reading.
#[derive(Debug)]
struct TickingClock(AtomicI64);

impl Clock for TickingClock {
    fn now_ms(&self) -> i64 {
        self.0.fetch_add(1_000, Ordering::SeqCst)
    }
    fn sleep(&self, _: Duration) {}
}

#[test]
fn an_allocation_past_its_deadline_gives_up_and_undoes() {
    let store = Arc::new(MemStore::new());
    let ipam = Ipam::new(store.clone())
        .with_clock(Arc::new(TickingClock(AtomicI64::new(START_MS))))
        .with_options(IpamOptions {
            max_alloc_duration: Duration::from_millis(500),
            ..opts()
        });
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let err = ipam.allocate(&req("c1", "n1", &pools)).unwrap_err();
    assert!(matches!(err, IpamError::DeadlineExceeded { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(held(&store).is_empty());
    assert!(store.keys(HANDLES_PREFIX).is_empty());
}

#[test]
fn re_add_that_gets_a_stale_entry_address_again_keeps_it() {
    // Regression (found by the fault proptest): a release that crashed after freeing the block
    // but before deleting the record, then a repeated ADD that happens to get the same address
    // afresh, must not give that address back as an "extra".
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r = req("c1", "n1", &pools);
    let a = ipam.allocate(&r).unwrap();
    store.remove(&block_key(&a[0].block));
    store.remove(&affinity_key("n1", &a[0].block));
    let r2 = req("c1", "n2", &pools);
    let b = ipam.allocate(&r2).unwrap();
    assert_eq!(b, a);
    assert_eq!(held(&store), vec![(a[0].ip, "c1.eth0".to_string())]);
    assert!(ipam.check().unwrap().is_clean());
}
