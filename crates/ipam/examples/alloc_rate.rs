//! Allocation and release throughput on the in-memory store, and store round trips per
//! operation. `cargo run --release -p furynet-ipam --example alloc_rate [allocations]`.
//!
//! MemStore has no latency, so this measures IPAM's own cost and its contention behaviour; on a
//! real store the round-trip counts printed here dominate.

// An example's job is to print.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use furynet_ipam::{
    AllocRequest, HandleId, Ipam, IpamError, MemStore, PoolConfig, Store, StoreError, Versioned,
};

/// Counts round trips.
#[derive(Debug, Default)]
struct Counting {
    inner: MemStore,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl Store for Counting {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.list_keys(prefix)
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.create(key, value)
    }
    fn update(&self, key: &str, value: &[u8], rev: i64) -> Result<i64, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.update(key, value, rev)
    }
    fn delete(&self, key: &str, rev: i64) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key, rev)
    }
}

/// `total` dual-stack ADDs by `threads` threads over `nodes` nodes (allocation `i` of thread `t`
/// goes to node `(t + i) % nodes`), then the DELs on one thread.
fn run(label: &str, total: usize, threads: usize, nodes: usize) -> Result<(), IpamError> {
    let store = Arc::new(Counting::default());
    let ipam = Arc::new(Ipam::new(store.clone()));
    let pools = Arc::new([
        PoolConfig::new("10.0.0.0/12".parse().map_err(|_| bad())?),
        PoolConfig::new("fd00::/64".parse().map_err(|_| bad())?),
    ]);
    let per = total / threads;
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (ipam, pools) = (ipam.clone(), pools.clone());
            thread::spawn(move || -> Result<Vec<HandleId>, IpamError> {
                let mut handles = Vec::with_capacity(per);
                for i in 0..per {
                    let node = format!("node-{}", (t + i) % nodes);
                    let req = AllocRequest::for_container(
                        &format!("t{t}c{i}"),
                        "eth0",
                        &node,
                        &pools[..],
                    )?;
                    loop {
                        match ipam.allocate(&req) {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    handles.push(req.handle);
                }
                Ok(handles)
            })
        })
        .collect();
    let mut handles = Vec::new();
    for w in workers {
        handles.extend(w.join().map_err(|_| bad())??);
    }
    let alloc_s = start.elapsed().as_secs_f64();
    let (r, w) = (
        store.reads.swap(0, Ordering::Relaxed),
        store.writes.swap(0, Ordering::Relaxed),
    );
    let n = handles.len();
    let start = Instant::now();
    for h in &handles {
        ipam.release(h)?;
    }
    let release_s = start.elapsed().as_secs_f64();
    let (rr, rw) = (
        store.reads.load(Ordering::Relaxed),
        store.writes.load(Ordering::Relaxed),
    );
    println!(
        "{label:<34} {n:>6} dual-stack ADDs: {:>9.0}/s  ({:.2} reads + {:.2} writes each) | \
         DELs: {:>9.0}/s ({:.2} reads + {:.2} writes each)",
        n as f64 / alloc_s,
        r as f64 / n as f64,
        w as f64 / n as f64,
        n as f64 / release_s,
        rr as f64 / n as f64,
        rw as f64 / n as f64,
    );
    Ok(())
}

fn bad() -> IpamError {
    IpamError::InvalidRequest {
        ctx: "alloc_rate".into(),
        reason: "setup failed".into(),
    }
}

fn main() -> Result<(), IpamError> {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let nodes = (total / 100).max(1);
    run("1 thread, 100 pods/node", total, 1, nodes)?;
    run("8 threads, 100 pods/node", total, 8, nodes)?;
    run("8 threads, all on 2 nodes", total.min(4_000), 8, 2)?;
    run("1 thread, 1 node, 2000 pods", total.min(2_000), 1, 1)?;
    Ok(())
}
