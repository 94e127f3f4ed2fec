//! IPAM allocations per second on a real datastore: the embedded SQLite store (default) or etcd
//! (`FURYNET_ETCD_ENDPOINTS=http://127.0.0.1:23790`, e.g. under `scripts/with-etcd.sh`).
//!
//!   cargo run --release -p furynet-datastore --example ipam_rate -- [ALLOCATIONS] [THREADS]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use furynet_datastore::ipam_store::IpamStore;
use furynet_datastore::{open_with_root, DatastoreConfig};
use furynet_ipam::{AllocRequest, Ipam, PoolConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, backend) = match std::env::var("FURYNET_ETCD_ENDPOINTS") {
        Ok(e) => (
            DatastoreConfig::Etcd {
                endpoints: e.split(',').map(String::from).collect(),
            },
            "etcd",
        ),
        Err(_) => (
            DatastoreConfig::Embedded {
                path: dir.path().to_path_buf(),
            },
            "embedded",
        ),
    };
    let root = format!("/furynet-bench-{}/", std::process::id());
    let ds = open_with_root(&cfg, &root).unwrap();
    let ipam = Ipam::new(IpamStore(ds));
    let pools = [PoolConfig::new("10.0.0.0/12".parse().unwrap())];
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (ipam, pools, next) = (&ipam, &pools, &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let node = format!("node-{}", t % 4);
                let req =
                    AllocRequest::for_container(&format!("c{i}"), "eth0", &node, pools).unwrap();
                ipam.allocate(&req).unwrap();
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..n {
        let req = AllocRequest::for_container(&format!("c{i}"), "eth0", "node-0", &pools).unwrap();
        ipam.release(&req.handle).unwrap();
    }
    let rel = start.elapsed().as_secs_f64();
    println!(
        "{{\"backend\":\"{backend}\",\"allocations\":{n},\"threads\":{threads},\"alloc_per_s\":{:.0},\"release_per_s\":{:.0}}}",
        n as f64 / secs,
        n as f64 / rel
    );
}
