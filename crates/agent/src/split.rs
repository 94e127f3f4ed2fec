//! An agent behind a fan-out server reads cluster state from the fan-out (one shared watch for
//! thousands of agents) but still writes its own records — its node registration and its
//! status on a lease — straight to the datastore, as Felix does behind Typha.
//!
//! [`SplitStore`] is that seam: `list`, `watch` and `current_revision` go to the reader (a
//! fan-out client); `get` and every write go to the writer (the datastore), so a
//! compare-and-swap always reads the revision it will be compared against.

use std::sync::Arc;
use std::time::Duration;

use furynet_datastore::{Datastore, KeyValue, Result, Watch};

/// Reads the cluster from `reads`, writes (and point-reads) through `writes`.
#[derive(Debug, Clone)]
pub struct SplitStore {
    reads: Arc<dyn Datastore>,
    writes: Arc<dyn Datastore>,
}

impl SplitStore {
    pub fn new(reads: Arc<dyn Datastore>, writes: Arc<dyn Datastore>) -> Self {
        SplitStore { reads, writes }
    }
}

impl Datastore for SplitStore {
    fn backend(&self) -> &'static str {
        self.reads.backend()
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.writes.get(key)
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.reads.list(prefix)
    }

    fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64> {
        self.writes.create(key, value, lease)
    }

    fn update(&self, key: &str, value: &[u8], expected_mod_revision: i64) -> Result<i64> {
        self.writes.update(key, value, expected_mod_revision)
    }

    fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<i64> {
        self.writes.delete(key, expected_mod_revision)
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Watch> {
        self.reads.watch(prefix, from_revision)
    }

    fn compact(&self, revision: i64) -> Result<()> {
        self.writes.compact(revision)
    }

    fn grant_lease(&self, ttl: Duration) -> Result<i64> {
        self.writes.grant_lease(ttl)
    }

    fn keep_alive(&self, lease: i64) -> Result<()> {
        self.writes.keep_alive(lease)
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        self.writes.revoke_lease(lease)
    }

    fn current_revision(&self) -> Result<i64> {
        self.reads.current_revision()
    }

    fn health(&self) -> Result<()> {
        self.reads.health()?;
        self.writes.health()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use furynet_datastore::{open_with_root, DatastoreConfig, Event};

    fn store(dir: &std::path::Path) -> Arc<dyn Datastore> {
        open_with_root(
            &DatastoreConfig::Embedded {
                path: dir.to_path_buf(),
            },
            "/furynet/",
        )
        .unwrap()
    }

    /// Writes land in the writer only; list and watch see the reader only.
    #[test]
    fn routes_reads_and_writes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (reads, writes) = (store(a.path()), store(b.path()));
        reads.create("cluster/x", b"r", None).unwrap();
        let split = SplitStore::new(reads.clone(), writes.clone());
        let (kvs, rev) = split.list("").unwrap();
        assert_eq!(kvs.len(), 1);
        let mut w = split.watch("", rev + 1).unwrap();
        split.create("nodes/n1", b"w", None).unwrap();
        assert!(reads.get("nodes/n1").unwrap().is_none());
        assert_eq!(split.get("nodes/n1").unwrap().unwrap().value, b"w");
        furynet_datastore::put(&split, "nodes/n1", b"w2", None).unwrap();
        assert_eq!(writes.get("nodes/n1").unwrap().unwrap().value, b"w2");
        let lease = split.grant_lease(Duration::from_secs(5)).unwrap();
        split.keep_alive(lease).unwrap();
        split.revoke_lease(lease).unwrap();
        reads.create("cluster/y", b"r2", None).unwrap();
        match w.recv_timeout(Duration::from_secs(2)).unwrap() {
            Some(Event::Put(kv)) => assert_eq!(kv.key, "cluster/y"),
            other => panic!("expected the reader's put, got {other:?}"),
        }
        split.health().unwrap();
    }
}
