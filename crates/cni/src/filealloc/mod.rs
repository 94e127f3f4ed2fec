//! TEMPORARY STAND-IN for `furynet-ipam`: a file-backed allocator so the plugin works end to
//! end before the real block IPAM (CAS over `furynet-datastore`) is merged. The merge replaces
//! this module with an adapter over `furynet_ipam::Ipam`; nothing else in the plugin changes.
//!
//! State is one JSON file, `<datastore.path>/cni-ipam.json`, read and rewritten (write to a
//! temporary file, fsync, rename) under an exclusive `flock` on `cni-ipam.lock`, so concurrent
//! plugin processes on one machine are serialised. Addresses come from per-node blocks
//! (`blockSize`/`blockSizeV6`) like the real IPAM: first a free address in one of this node's
//! blocks, else a newly claimed block, else (borrowing) any block of the pool. Every address of
//! a block is usable (pods get /32 and /128) except the pool's first address (for IPv6 the
//! subnet-router anycast address) and, for IPv4, its last (broadcast-looking) one, in pools
//! larger than two addresses.
//! Works only for one machine: the `etcd` datastore needs the real IPAM.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::alloc::{AllocAttrs, AllocError, Allocator, Handle};
use crate::config::PoolConf;

/// State file name inside the datastore directory.
pub const STATE_FILE: &str = "cni-ipam.json";
const LOCK_FILE: &str = "cni-ipam.lock";
/// How long to wait for the lock before answering "try again later" (CNI error 11).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Overrides [`DEFAULT_LOCK_TIMEOUT`] (milliseconds); used by tests.
pub const LOCK_TIMEOUT_ENV: &str = "FURYNET_CNI_LOCK_TIMEOUT_MS";

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    blocks: Vec<Block>,
    #[serde(default)]
    allocations: BTreeMap<String, Record>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Block {
    cidr: IpNet,
    node: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(flatten)]
    handle: Handle,
    ips: Vec<IpAddr>,
    #[serde(flatten)]
    attrs: AllocAttrs,
}

/// The temporary file-backed allocator (see the module docs).
#[derive(Debug)]
pub struct FileAllocator {
    dir: PathBuf,
    network: String,
    node: String,
    pools: Vec<PoolConf>,
    lock_timeout: Duration,
}

impl FileAllocator {
    /// Uses (creating if needed, mode 0700) the directory `dir`.
    pub fn open(
        dir: &Path,
        network: &str,
        node: &str,
        pools: &[PoolConf],
        lock_timeout: Duration,
    ) -> Result<Self, AllocError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                AllocError::Failed(format!("datastore directory {}: {e}", dir.display()))
            })?;
        Ok(FileAllocator {
            dir: dir.to_path_buf(),
            network: network.to_string(),
            node: node.to_string(),
            pools: pools.to_vec(),
            lock_timeout,
        })
    }

    fn transact<R>(
        &self,
        write: bool,
        f: impl FnOnce(&mut State) -> Result<R, AllocError>,
    ) -> Result<R, AllocError> {
        let lock = self.lock()?;
        let mut state = self.load()?;
        let out = f(&mut state)?;
        if write {
            self.store(&state)?;
        }
        drop(lock);
        Ok(out)
    }

    fn lock(&self) -> Result<Flock<File>, AllocError> {
        let path = self.dir.join(LOCK_FILE);
        let failed = |e: &dyn std::fmt::Display| {
            AllocError::Failed(format!("lock file {}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| failed(&e))?;
        let start = Instant::now();
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                    if start.elapsed() >= self.lock_timeout {
                        return Err(AllocError::Transient(format!(
                            "{} is locked by another process for more than {:?}",
                            path.display(),
                            self.lock_timeout
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    file = f;
                }
                Err((_, e)) => return Err(failed(&e)),
            }
        }
    }

    fn load(&self) -> Result<State, AllocError> {
        let path = self.dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                AllocError::Failed(format!(
                    "{} is corrupt ({e}); not overwriting it: repair or remove it",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(AllocError::Failed(format!("{}: {e}", path.display()))),
        }
    }

    fn store(&self, state: &State) -> Result<(), AllocError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let failed = |e: io::Error| AllocError::Failed(format!("writing {}: {e}", path.display()));
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| AllocError::Failed(format!("encoding IPAM state: {e}")))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(failed)?;
        f.write_all(&bytes).map_err(failed)?;
        f.sync_all().map_err(failed)?;
        fs::rename(&tmp, &path).map_err(failed)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all(); // best effort: make the rename durable
        }
        Ok(())
    }

    fn families(&self) -> Vec<bool> {
        let mut v: Vec<bool> = self
            .pools
            .iter()
            .map(|p| matches!(p.cidr, IpNet::V6(_)))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Allocator for FileAllocator {
    fn allocate(&self, handle: &Handle, attrs: &AllocAttrs) -> Result<Vec<IpAddr>, AllocError> {
        self.transact(true, |st| {
            if let Some(r) = st.allocations.get(&handle.key()) {
                return Ok(r.ips.clone());
            }
            let mut used: HashSet<IpAddr> = st
                .allocations
                .values()
                .flat_map(|r| r.ips.iter().copied())
                .collect();
            let mut ips = Vec::new();
            for v6 in self.families() {
                let pools: Vec<&PoolConf> = self
                    .pools
                    .iter()
                    .filter(|p| matches!(p.cidr, IpNet::V6(_)) == v6)
                    .collect();
                let ip = pick(&mut st.blocks, &pools, &self.node, &used).ok_or_else(|| {
                    let list: Vec<String> = pools.iter().map(|p| p.cidr.to_string()).collect();
                    AllocError::Exhausted(format!(
                        "every {} address in {} is in use",
                        if v6 { "IPv6" } else { "IPv4" },
                        list.join(", ")
                    ))
                })?;
                used.insert(ip);
                ips.push(ip);
            }
            st.allocations.insert(
                handle.key(),
                Record {
                    handle: handle.clone(),
                    ips: ips.clone(),
                    attrs: attrs.clone(),
                },
            );
            Ok(ips)
        })
    }

    fn lookup(&self, handle: &Handle) -> Result<Option<Vec<IpAddr>>, AllocError> {
        self.transact(false, |st| {
            Ok(st.allocations.get(&handle.key()).map(|r| r.ips.clone()))
        })
    }

    fn release(&self, handle: &Handle) -> Result<bool, AllocError> {
        self.transact(true, |st| {
            Ok(st.allocations.remove(&handle.key()).is_some())
        })
    }

    fn gc(&self, keep: &[Handle]) -> Result<Vec<Handle>, AllocError> {
        let keep: HashSet<String> = keep.iter().map(Handle::key).collect();
        self.transact(true, |st| {
            let stale: Vec<String> = st
                .allocations
                .iter()
                .filter(|(k, r)| r.handle.network == self.network && !keep.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            Ok(stale
                .iter()
                .filter_map(|k| st.allocations.remove(k).map(|r| r.handle))
                .collect())
        })
    }

    fn status(&self) -> Result<(), AllocError> {
        self.transact(false, |st| {
            let used: HashSet<IpAddr> = st
                .allocations
                .values()
                .flat_map(|r| r.ips.iter().copied())
                .collect();
            for v6 in self.families() {
                let pools: Vec<&PoolConf> = self
                    .pools
                    .iter()
                    .filter(|p| matches!(p.cidr, IpNet::V6(_)) == v6)
                    .collect();
                let mut blocks = st.blocks.clone();
                if pick(&mut blocks, &pools, &self.node, &used).is_none() {
                    let list: Vec<String> = pools.iter().map(|p| p.cidr.to_string()).collect();
                    return Err(AllocError::Exhausted(format!(
                        "every address in {} is in use",
                        list.join(", ")
                    )));
                }
            }
            Ok(())
        })
    }
}

/// A free address for `node` from `pools` (all one family), claiming a block if needed.
fn pick(
    blocks: &mut Vec<Block>,
    pools: &[&PoolConf],
    node: &str,
    used: &HashSet<IpAddr>,
) -> Option<IpAddr> {
    // 1. This node's blocks.
    for pool in pools {
        for b in blocks
            .iter()
            .filter(|b| b.node == node && pool.cidr.contains(&b.cidr))
        {
            if let Some(ip) = first_free(&b.cidr, &pool.cidr, used) {
                return Some(ip);
            }
        }
    }
    // 2. A new block.
    for pool in pools {
        if let Some(cidr) = free_block(pool, blocks) {
            blocks.push(Block {
                cidr,
                node: node.to_string(),
            });
            if let Some(ip) = first_free(&cidr, &pool.cidr, used) {
                return Some(ip);
            }
        }
    }
    // 3. Borrow from any block of the pools (other nodes' too).
    for pool in pools {
        for b in blocks.iter().filter(|b| pool.cidr.contains(&b.cidr)) {
            if let Some(ip) = first_free(&b.cidr, &pool.cidr, used) {
                return Some(ip);
            }
        }
    }
    None
}

fn bits(net: &IpNet) -> u32 {
    match net {
        IpNet::V4(_) => 32,
        IpNet::V6(_) => 128,
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v6: bool, n: u128) -> Option<IpAddr> {
    if v6 {
        Some(IpAddr::V6(Ipv6Addr::from(n)))
    } else {
        u32::try_from(n).ok().map(|n| IpAddr::V4(Ipv4Addr::from(n)))
    }
}

/// Number of addresses in `net` minus one (its span), without overflow for ::/0.
fn span(net: &IpNet) -> u128 {
    let host_bits = bits(net) - u32::from(net.prefix_len());
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// Addresses of `pool` never handed out: its first and, for IPv4, its last (pools of more than
/// two addresses only).
fn reserved(pool: &IpNet, ip: IpAddr) -> bool {
    if span(pool) < 2 {
        return false;
    }
    ip == pool.network() || (matches!(pool, IpNet::V4(_)) && ip == pool.broadcast())
}

fn first_free(block: &IpNet, pool: &IpNet, used: &HashSet<IpAddr>) -> Option<IpAddr> {
    let v6 = matches!(block, IpNet::V6(_));
    let start = to_u128(block.network());
    let end = start.checked_add(span(block))?;
    // Terminates within |used|+3 steps: at most that many addresses are taken or reserved.
    let mut n = start;
    loop {
        let ip = from_u128(v6, n)?;
        if !used.contains(&ip) && !reserved(pool, ip) {
            return Some(ip);
        }
        if n == end {
            return None;
        }
        n += 1;
    }
}

/// The lowest block of `pool` (of `pool.block_prefix`) not overlapping an existing block.
fn free_block(pool: &PoolConf, blocks: &[Block]) -> Option<IpNet> {
    let v6 = matches!(pool.cidr, IpNet::V6(_));
    let pool_start = to_u128(pool.cidr.network());
    let pool_end = pool_start.checked_add(span(&pool.cidr))?;
    let size = span(&IpNet::new(pool.cidr.network(), pool.block_prefix).ok()?);
    let mut existing: Vec<(u128, u128)> = blocks
        .iter()
        .filter(|b| matches!(b.cidr, IpNet::V6(_)) == v6)
        .map(|b| {
            let s = to_u128(b.cidr.network());
            (s, s.saturating_add(span(&b.cidr)))
        })
        .collect();
    existing.sort();
    let mut candidate = pool_start;
    loop {
        let cand_end = candidate.checked_add(size)?;
        if cand_end > pool_end {
            return None;
        }
        match existing
            .iter()
            .find(|(s, e)| *s <= cand_end && candidate <= *e)
        {
            None => return IpNet::new(from_u128(v6, candidate)?, pool.block_prefix).ok(),
            Some((_, e)) => {
                // Skip past the overlapping block, staying aligned to the block size.
                let next = e.checked_add(1)?;
                let offset = next - pool_start;
                let aligned = offset.div_ceil(size + 1).checked_mul(size + 1)?;
                candidate = pool_start.checked_add(aligned)?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
