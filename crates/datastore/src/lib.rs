//! Cluster state with revisions: one synchronous trait, several backends.
//!
//! [`Datastore`] is etcd's data model: a flat, ordered key space with one cluster-wide,
//! monotonically increasing revision; every write gets a new revision; compare-and-swap on a
//! key's mod revision; watches that replay history from a revision; leases that delete their
//! keys when they end. Backends:
//!
//! - [`embedded`]: a SQLite file (WAL mode) that every process on one machine can use at
//!   once. The default: no server to run.
//! - [`etcd`]: a real etcd v3 cluster.
//! - [`kubernetes`]: the Kubernetes API (core objects read-only, furynet's state in CRDs).
//!
//! Keys are relative to a root prefix chosen at open time (default [`DEFAULT_ROOT`],
//! `/furynet/`), so the key `ipam/blocks/10.244.0.0-26` is stored as
//! `/furynet/ipam/blocks/10.244.0.0-26`. The trait is blocking on purpose: its first user is
//! the CNI plugin, a short-lived synchronous binary. See `docs/datastore.md`.

mod config;
mod error;
mod keys;
mod put;
mod runtime;
mod types;
mod watch;

pub mod ipam_store;

pub mod embedded;
pub mod etcd;
pub mod kubernetes;

#[doc(hidden)]
pub mod conformance;

use std::sync::Arc;
use std::time::Duration;

pub use config::DatastoreConfig;
pub use error::{Error, Result};
pub use keys::DEFAULT_ROOT;
pub use put::put;
pub use types::{Event, KeyValue};
pub use watch::Watch;

/// Cluster state with revisions, compare-and-swap, watch and leases.
///
/// All methods block. From async code, call them inside `tokio::task::spawn_blocking` (the
/// etcd backend refuses calls made on an async runtime thread). Revisions are store-wide:
/// every successful write returns the new store revision, and that revision becomes the
/// written key's `mod_revision`.
pub trait Datastore: Send + Sync + std::fmt::Debug {
    /// Backend name: `embedded`, `etcd`.
    fn backend(&self) -> &'static str;

    /// The entry at `key`, if present.
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every entry whose key starts with `prefix` (`""` lists everything under the root),
    /// sorted by key, read as one consistent snapshot, with the store revision it was read
    /// at. Watch from that revision + 1 to follow changes without missing any.
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)>;

    /// Create `key`; fails with [`Error::AlreadyExists`] if it exists. With a lease, the key
    /// is deleted when the lease ends ([`Error::LeaseNotFound`] if the lease is gone).
    /// Returns the new revision.
    fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64>;

    /// Replace the value of `key` if its mod revision is still `expected_mod_revision`
    /// (compare-and-swap); keeps the key's lease. [`Error::Conflict`] (with the current mod
    /// revision) on mismatch, [`Error::NotFound`] if the key is gone. Returns the new revision.
    fn update(&self, key: &str, value: &[u8], expected_mod_revision: i64) -> Result<i64>;

    /// Delete `key`, if its mod revision is `expected` when given (else
    /// [`Error::Conflict`]). [`Error::NotFound`] if absent. Returns the new revision.
    fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<i64>;

    /// Changes to keys under `prefix` with revision >= `from_revision`, in revision order.
    /// `from_revision <= 0` means "changes after now". If `from_revision` is older than the
    /// retained history the watch yields [`Error::Compacted`] (the "re-list" signal).
    /// History from a revision greater than the compaction revision is always complete.
    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Watch>;

    /// Discard history older than `revision`: later watches from a revision below it get
    /// [`Error::Compacted`]. Current values are untouched. Compacting at or below the current
    /// compaction revision does nothing; beyond the current revision is
    /// [`Error::InvalidArgument`].
    fn compact(&self, revision: i64) -> Result<()>;

    /// Grant a lease that ends `ttl` after the last keep-alive (etcd rounds up to whole
    /// seconds and enforces its minimum TTL). Returns the lease id.
    fn grant_lease(&self, ttl: Duration) -> Result<i64>;

    /// Restart the lease's TTL. [`Error::LeaseNotFound`] if it already ended.
    fn keep_alive(&self, lease: i64) -> Result<()>;

    /// End the lease now, deleting its keys. [`Error::LeaseNotFound`] if it already ended.
    fn revoke_lease(&self, lease: i64) -> Result<()>;

    /// The store's current revision.
    fn current_revision(&self) -> Result<i64>;

    /// Check that the backend answers (a cheap read).
    fn health(&self) -> Result<()>;
}

/// Open the configured datastore with the default root prefix `/furynet/`.
pub fn open(config: &DatastoreConfig) -> Result<Arc<dyn Datastore>> {
    open_with_root(config, DEFAULT_ROOT)
}

/// Open the configured datastore, storing every key under `root` (e.g. a unique prefix per
/// test, so tests can share one etcd server).
pub fn open_with_root(config: &DatastoreConfig, root: &str) -> Result<Arc<dyn Datastore>> {
    Ok(match config {
        DatastoreConfig::Embedded { path } => Arc::new(embedded::EmbeddedStore::open(
            path,
            root,
            embedded::EmbeddedOptions::default(),
        )?),
        DatastoreConfig::Etcd { endpoints } => Arc::new(etcd::EtcdStore::connect(
            endpoints,
            root,
            etcd::EtcdOptions::default(),
        )?),
        DatastoreConfig::Kubernetes {
            kubeconfig,
            lease_namespace,
        } => {
            let mut options = kubernetes::KubeOptions {
                kubeconfig: kubeconfig.clone(),
                ..Default::default()
            };
            if let Some(ns) = lease_namespace {
                options.lease_namespace = ns.clone();
            }
            Arc::new(kubernetes::KubeStore::connect(root, options)?)
        }
    })
}
