//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use furynet_ipam::records::{BlockRecord, HandleRecord, BLOCKS_PREFIX, HANDLES_PREFIX};
use furynet_ipam::{
    AllocRequest, ClaimOrder, Ipam, IpamOptions, ManualClock, MemStore, PoolConfig, Store,
    StoreError, Versioned,
};
use ipnet::IpNet;

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn pool(cidr: &str, block_prefix: u8) -> PoolConfig {
    PoolConfig::with_block_prefix(net(cidr), block_prefix)
}

pub const START_MS: i64 = 1_700_000_000_000;

pub fn opts() -> IpamOptions {
    IpamOptions {
        claim_order: ClaimOrder::Sequential,
        ..IpamOptions::default()
    }
}

pub type TestIpam = Ipam<Arc<MemStore>>;

/// IPAM over a fresh MemStore with a manual clock and sequential block claims.
pub fn setup() -> (TestIpam, Arc<MemStore>, Arc<ManualClock>) {
    setup_with(opts())
}

pub fn setup_with(o: IpamOptions) -> (TestIpam, Arc<MemStore>, Arc<ManualClock>) {
    let store = Arc::new(MemStore::new());
    let clock = Arc::new(ManualClock::new(START_MS));
    let ipam = Ipam::new(store.clone())
        .with_clock(clock.clone())
        .with_options(o);
    (ipam, store, clock)
}

pub fn req<'a>(container: &str, node: &'a str, pools: &'a [PoolConfig]) -> AllocRequest<'a> {
    AllocRequest::for_container(container, "eth0", node, pools)
        .unwrap()
        .with_pod("default", container)
}

pub fn ips(allocs: &[furynet_ipam::Allocation]) -> Vec<IpAddr> {
    allocs.iter().map(|a| a.ip).collect()
}

pub fn blocks(store: &MemStore) -> Vec<BlockRecord> {
    store
        .list(BLOCKS_PREFIX)
        .unwrap()
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v.value).unwrap())
        .collect()
}

pub fn handles(store: &MemStore) -> Vec<HandleRecord> {
    store
        .list(HANDLES_PREFIX)
        .unwrap()
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v.value).unwrap())
        .collect()
}

/// Every (address, handle id) held in any block.
pub fn held(store: &MemStore) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    for b in blocks(store) {
        for (&ord, a) in &b.allocations {
            out.push((b.ip_at(ord), a.handle.to_string()));
        }
    }
    out.sort();
    out
}

pub fn grace() -> Duration {
    furynet_ipam::GcOptions::default().grace + Duration::from_secs(1)
}

/// Counts store round trips by kind.
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    pub inner: S,
    pub reads: AtomicUsize,
    pub writes: AtomicUsize,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        }
    }

    pub fn take(&self) -> (usize, usize) {
        (
            self.reads.swap(0, Ordering::SeqCst),
            self.writes.swap(0, Ordering::SeqCst),
        )
    }
}

impl<S: Store> Store for CountingStore<S> {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list_keys(prefix)
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.create(key, value)
    }
    fn update(&self, key: &str, value: &[u8], rev: i64) -> Result<i64, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.update(key, value, rev)
    }
    fn delete(&self, key: &str, rev: i64) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key, rev)
    }
}
