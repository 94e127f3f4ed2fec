//! GC and consistency-check rules: leaks, stale records, double allocations, index repair.

mod common;

use common::*;
use furynet_ipam::records::{
    affinity_key, block_key, handle_key, BlockRecord, HandleRecord, HANDLES_PREFIX,
};
use furynet_ipam::{AffinityIssueKind, GcOptions, GcReason, HandleId, PoolConfig, Store};

#[test]
fn gc_releases_dead_pods_after_the_grace_period() {
    let (ipam, store, clock) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    for c in ["live", "dead1", "dead2"] {
        ipam.allocate(&req(c, "n1", &pools)).unwrap();
    }
    let is_live = |c: &furynet_ipam::GcCandidate<'_>| c.attrs.pod.as_deref() == Some("live");
    let r = ipam.gc(&is_live, &GcOptions::default()).unwrap();
    assert!(r.released.is_empty());
    assert_eq!(r.young_skipped, 3);
    clock.advance(grace());
    let r = ipam.gc(&is_live, &GcOptions::default()).unwrap();
    assert_eq!(r.released.len(), 2, "{r:?}");
    assert!(r.released.iter().all(|x| x.reason == GcReason::NotLive));
    assert!(r.errors.is_empty());
    assert_eq!(held(&store).len(), 1);
    assert_eq!(handles(&store).len(), 1);
    assert!(ipam.check().unwrap().is_clean());
    // Nothing more to do.
    let r = ipam.gc(&is_live, &GcOptions::default()).unwrap();
    assert!(r.released.is_empty() && r.handle_records_deleted == 0);
}

#[test]
fn crash_before_the_handle_record_is_a_leak_the_gc_repairs() {
    let (ipam, store, clock) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r = req("c1", "n1", &pools);
    let a = ipam.allocate(&r).unwrap();
    ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    // Simulate a crash between the block write and the handle record write.
    assert!(store.remove(&handle_key(&r.handle)));
    let report = ipam.check().unwrap();
    assert_eq!(report.leaked_allocations.len(), 1);
    assert_eq!(report.leaked_allocations[0].ip, a[0].ip);
    assert!(!report.leaked_allocations[0].handle_record_exists);
    // A DEL finds no record: nothing to do, the GC handles it.
    assert_eq!(
        ipam.release(&r.handle).unwrap(),
        Vec::<std::net::IpAddr>::new()
    );
    let all_live = |_: &furynet_ipam::GcCandidate<'_>| true;
    assert!(ipam
        .gc(&all_live, &GcOptions::default())
        .unwrap()
        .released
        .is_empty());
    clock.advance(grace());
    let g = ipam.gc(&all_live, &GcOptions::default()).unwrap();
    assert_eq!(g.released.len(), 1);
    assert_eq!(g.released[0].reason, GcReason::Unindexed);
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn stale_handle_record_is_not_trusted() {
    let (ipam, store, _) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r = req("c1", "n1", &pools);
    let a = ipam.allocate(&r).unwrap();
    // Someone else now holds the address; c1's record still lists it (crash mid-release).
    let key = block_key(&a[0].block);
    let mut b: BlockRecord =
        serde_json::from_slice(&store.get(&key).unwrap().unwrap().value).unwrap();
    let mut other = b.allocations[&0].clone();
    other.handle = HandleId::parse("other.eth0").unwrap();
    b.allocations.insert(0, other);
    store.put(&key, &serde_json::to_vec(&b).unwrap());
    let report = ipam.check().unwrap();
    assert_eq!(report.stale_handle_entries.len(), 1);
    assert_eq!(
        report.leaked_allocations.len(),
        1,
        "other.eth0 has no record"
    );
    // A repeated ADD for c1 must not hand out the address other.eth0 holds.
    let again = ipam.allocate(&r).unwrap();
    assert_ne!(again[0].ip, a[0].ip);
    let rec: HandleRecord =
        serde_json::from_slice(&store.get(&handle_key(&r.handle)).unwrap().unwrap().value).unwrap();
    assert_eq!(rec.addresses.len(), 1);
    assert_eq!(rec.addresses[0].ip, again[0].ip);
    // And releasing c1 leaves other.eth0's address alone.
    assert_eq!(ipam.release(&r.handle).unwrap(), ips(&again));
    assert_eq!(held(&store), vec![(a[0].ip, "other.eth0".to_string())]);
}

#[test]
fn check_finds_double_allocations_overlaps_and_affinity_issues() {
    let (ipam, store, clock) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r1 = req("c1", "n1", &pools);
    let a1 = ipam.allocate(&r1).unwrap();
    ipam.allocate(&req("c2", "n1", &pools)).unwrap();
    assert!(ipam.check().unwrap().is_clean());

    // A second handle record claiming c1's address.
    let fake = HandleRecord {
        handle: HandleId::parse("fake.eth0").unwrap(),
        node: "n9".into(),
        attrs: Default::default(),
        addresses: vec![a1[0].into()],
    };
    store.put(
        &handle_key(&fake.handle),
        &serde_json::to_vec(&fake).unwrap(),
    );
    // An overlapping block of another size, holding c1's address for someone else.
    let mut overlap = BlockRecord::new(net("10.0.0.0/28"), net("10.0.0.0/16"), None);
    let mut alloc = blocks(&store)[0].allocations[&0].clone();
    alloc.handle = fake.handle.clone();
    overlap.allocations.insert(0, alloc);
    store.put(
        &block_key(&overlap.cidr),
        &serde_json::to_vec(&overlap).unwrap(),
    );
    // A missing and a stale affinity index entry.
    store.remove(&affinity_key("n1", &net("10.0.0.0/26")));
    store.put(&affinity_key("n7", &net("10.0.9.0/26")), b"{}");
    // A corrupt block.
    store.put("ipam/blocks/10.0.5.0-26", b"not json");

    let r = ipam.check().unwrap();
    assert!(!r.is_clean());
    assert_eq!(r.double_allocations.len(), 1, "{r:#?}");
    let d = &r.double_allocations[0];
    assert_eq!(d.ip, a1[0].ip);
    assert_eq!(d.in_blocks.len(), 2);
    assert_eq!(d.listed_by.len(), 2);
    assert_eq!(
        r.overlapping_blocks,
        [(net("10.0.0.0/26"), net("10.0.0.0/28"))]
    );
    let kinds: Vec<_> = r
        .affinity_issues
        .iter()
        .map(|i| (i.node.as_str(), i.kind))
        .collect();
    assert!(kinds.contains(&("n1", AffinityIssueKind::MissingIndexEntry)));
    assert!(kinds.contains(&("n7", AffinityIssueKind::StaleIndexEntry)));
    assert_eq!(r.corrupt.len(), 1);

    // The GC repairs the index and, after the grace period, the fake handle's leftovers.
    store.remove("ipam/blocks/10.0.5.0-26");
    clock.advance(grace());
    let live = |c: &furynet_ipam::GcCandidate<'_>| c.handle.as_str() != "fake.eth0";
    let g = ipam.gc(&live, &GcOptions::default()).unwrap();
    assert!(g.errors.is_empty(), "{g:?}");
    assert_eq!(g.affinity_entries_created, 1);
    assert_eq!(g.affinity_entries_removed, 1);
    let r = ipam.check().unwrap();
    assert!(r.double_allocations.is_empty(), "{r:#?}");
    assert!(r.affinity_issues.is_empty(), "{r:#?}");
    // The overlapping block is a configuration error the GC does not guess about.
    assert_eq!(r.overlapping_blocks.len(), 0, "the emptied /28 was deleted");
    assert!(r.is_clean(), "{r:#?}");
}

#[test]
fn corrupt_handle_record_does_not_block_release() {
    let (ipam, store, clock) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    let r = req("c1", "n1", &pools);
    ipam.allocate(&r).unwrap();
    store.put(&handle_key(&r.handle), b"{broken");
    assert_eq!(
        ipam.release(&r.handle).unwrap(),
        Vec::<std::net::IpAddr>::new()
    );
    assert!(store.keys(HANDLES_PREFIX).is_empty());
    clock.advance(grace());
    let g = ipam.gc(&|_| true, &GcOptions::default()).unwrap();
    assert_eq!(g.released.len(), 1);
    assert!(store.is_empty());
}

#[test]
fn corrupt_records_never_wedge_add_or_del() {
    let (ipam, store, clock) = setup();
    let pools = [PoolConfig::new(net("10.0.0.0/16"))];
    // A corrupt handle record is overwritten by the next ADD.
    let r = req("c1", "n1", &pools);
    store.put(&handle_key(&r.handle), b"{broken");
    let a = ipam.allocate(&r).unwrap();
    let rec: HandleRecord =
        serde_json::from_slice(&store.get(&handle_key(&r.handle)).unwrap().unwrap().value).unwrap();
    assert_eq!(rec.addresses.len(), 1);
    assert_eq!(rec.addresses[0].ip, a[0].ip);
    // A DEL whose block turned corrupt still completes.
    store.put(&block_key(&a[0].block), b"garbage");
    assert!(ipam.release(&r.handle).unwrap().is_empty());
    assert!(store.keys(HANDLES_PREFIX).is_empty());
    let report = ipam.check().unwrap();
    assert_eq!(report.corrupt.len(), 1);
    clock.advance(grace());
    let g = ipam.gc(&|_| true, &GcOptions::default()).unwrap();
    assert!(g.errors.is_empty(), "{g:?}");
}
