//! The IPAM error type. Every variant names the operation and object (`ctx`, e.g.
//! `allocate handle 3f2a.eth0 on node n1`) and says what to do.

use crate::store::StoreError;
use crate::types::Family;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid pool {pool}: {reason}")]
    InvalidPool { pool: String, reason: String },

    #[error("{ctx}: invalid request: {reason}")]
    InvalidRequest { ctx: String, reason: String },

    #[error("invalid handle id {id:?}: {reason}")]
    InvalidHandle { id: String, reason: String },

    #[error(
        "{ctx}: no free {family} address in pool(s) {pools}: every block is full; \
         add a pool or free addresses (`furynet ipam gc`)"
    )]
    PoolExhausted {
        ctx: String,
        family: Family,
        pools: String,
    },

    #[error(
        "{ctx}: gave up after {attempts} conflicting writes (last on {key}); the datastore is \
         busy with concurrent allocations, retry"
    )]
    Contention {
        ctx: String,
        key: String,
        attempts: u32,
    },

    #[error("{ctx}: datastore unavailable during {op} {key}: {reason}; retry")]
    Unavailable {
        ctx: String,
        op: &'static str,
        key: String,
        reason: String,
    },

    #[error(
        "{ctx}: took {elapsed_ms} ms, over the {limit_ms} ms allocation deadline; \
         no address was handed out, retry"
    )]
    DeadlineExceeded {
        ctx: String,
        elapsed_ms: i64,
        limit_ms: i64,
    },

    #[error("{ctx}: record {key} is corrupt: {reason}; inspect it with `furynet ipam check`")]
    Corrupt {
        ctx: String,
        key: String,
        reason: String,
    },

    #[error("{ctx}: unexpected datastore answer to {op} {key}: {error}")]
    Store {
        ctx: String,
        op: &'static str,
        key: String,
        error: StoreError,
    },
}

impl IpamError {
    /// Whether repeating the same operation later may succeed (contention, an unreachable
    /// datastore, a missed deadline). Exhaustion and invalid input are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            IpamError::Contention { .. }
                | IpamError::Unavailable { .. }
                | IpamError::DeadlineExceeded { .. }
        )
    }
}
