//! Block IPAM for furynet: IP pools carved into per-node blocks, allocation handles keyed by
//! (container ID, interface name), idempotent release, borrowing, garbage collection and a
//! consistency check — all as compare-and-swap over a small [`Store`] trait, with no global lock.
//!
//! Pure: no I/O of its own, no async runtime; time and retry pacing come from an injected
//! [`Clock`]. The data model, write order and invariants are in `docs/ipam.md`.
//!
//! ```
//! use furynet_ipam::{AllocRequest, Ipam, MemStore, PoolConfig};
//! let ipam = Ipam::new(MemStore::new());
//! let pools = [PoolConfig::new("10.244.0.0/16".parse()?), PoolConfig::new("fd00::/64".parse()?)];
//! let req = AllocRequest::for_container("3f2a9c", "eth0", "node-1", &pools)?
//!     .with_pod("default", "web-0");
//! let got = ipam.allocate(&req)?; // one IPv4 + one IPv6 address
//! assert_eq!(got.len(), 2);
//! assert_eq!(ipam.allocate(&req)?, got); // idempotent per handle
//! assert_eq!(ipam.release(&req.handle)?.len(), 2);
//! assert!(ipam.release(&req.handle)?.is_empty()); // idempotent
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod alloc;
mod check;
pub mod clock;
mod error;
mod fault;
mod gc;
pub mod records;
mod release;
mod store;
mod tx;
mod types;

use std::sync::Arc;
use std::time::Duration;

pub use check::{
    AffinityIssue, AffinityIssueKind, BlockUsage, CheckReport, CorruptRecord, DoubleAllocation,
    LeakedAllocation, PoolUsage, StaleHandleEntry,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::IpamError;
pub use fault::{Faults, FaultyStore};
pub use gc::{GcCandidate, GcOptions, GcReason, GcReleased, GcReport};
pub use release::{NodeReleaseReport, ReleasedIp};
pub use store::{MemStore, Store, StoreError, Versioned};
pub use types::{
    AllocRequest, Allocation, Family, HandleAttrs, HandleId, PoolConfig, DEFAULT_BLOCK_PREFIX_V4,
    DEFAULT_BLOCK_PREFIX_V6,
};

use clock::{fnv1a, Backoff};
use tx::Tx;

/// Where a node starts looking for a new block in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimOrder {
    /// At an offset hashed from the node name, wrapping around: nodes claiming at the same time
    /// rarely race for the same block.
    #[default]
    Hashed,
    /// From the start of the pool (predictable; handy in tests and tiny clusters).
    Sequential,
}

/// Tuning knobs. The defaults suit a CNI plugin on a real datastore.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// Lost CAS races tolerated per operation before giving up with [`IpamError::Contention`].
    pub max_attempts: u32,
    /// Backoff after the first lost race; doubles per race up to `backoff_cap` (full jitter).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// An allocation that has not written its handle record by then gives up (and undoes what
    /// it wrote). The GC grace period must exceed this plus clock skew between nodes.
    pub max_alloc_duration: Duration,
    /// Delete a block (and its affinity) when its last address is released even if it is affine
    /// to a node. Non-affine empty blocks are always deleted.
    pub release_empty_affine_blocks: bool,
    pub claim_order: ClaimOrder,
    /// Mixed into the jitter seed (which also hashes the operation, so concurrent processes
    /// back off differently).
    pub seed: u64,
}

impl Default for IpamOptions {
    fn default() -> Self {
        Self {
            max_attempts: 20,
            backoff_base: Duration::from_millis(1),
            backoff_cap: Duration::from_millis(50),
            max_alloc_duration: Duration::from_secs(60),
            release_empty_affine_blocks: true,
            claim_order: ClaimOrder::Hashed,
            seed: 0,
        }
    }
}

/// The IPAM engine over a store. Cheap to create per operation (a CNI invocation) or to share
/// between threads.
#[derive(Debug)]
pub struct Ipam<S> {
    store: S,
    clock: Arc<dyn Clock>,
    opts: IpamOptions,
}

impl<S: Store> Ipam<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            opts: IpamOptions::default(),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_options(mut self, opts: IpamOptions) -> Self {
        self.opts = opts;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn options(&self) -> &IpamOptions {
        &self.opts
    }

    pub(crate) fn tx<'a>(&'a self, ctx: &'a str) -> Tx<'a> {
        Tx::new(&self.store, ctx)
    }

    pub(crate) fn backoff(&self, ctx: &str) -> Backoff<'_> {
        let seed = self.opts.seed ^ fnv1a(ctx.as_bytes()) ^ (self.clock.now_ms() as u64);
        Backoff::new(
            &*self.clock,
            seed,
            self.opts.backoff_base,
            self.opts.backoff_cap,
            self.opts.max_attempts.max(1),
        )
    }
}
