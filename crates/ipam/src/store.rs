//! The storage seam: a small key-value interface with etcd-style revisions and compare-and-swap.
//!
//! IPAM needs nothing more than this from a datastore. The `datastore` crate adapts its backends
//! to [`Store`]; tests use [`MemStore`] (and [`crate::FaultyStore`] around it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A value with the revision at which it was last modified (etcd's `mod_revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub revision: i64,
}

/// What a [`Store`] operation can answer besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already present.
    #[error("key already exists")]
    AlreadyExists,
    /// `update`/`delete` found a different revision than expected (someone else wrote first).
    #[error("revision conflict")]
    Conflict,
    /// `update`/`delete` found no such key. IPAM treats this like [`StoreError::Conflict`]:
    /// the record changed under it, so it re-reads.
    #[error("key not found")]
    NotFound,
    /// The store could not answer (timeout, connection loss, ...). Retryable. A write that
    /// fails this way may or may not have been applied; IPAM is written to be safe either way.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Key-value storage with revisions and compare-and-swap.
///
/// Semantics every implementation must keep (the datastore conformance suite checks them):
/// - revisions are positive and strictly increase with every successful write across the store;
///   the revision returned by `create`/`update` is the new `Versioned::revision` of the key;
/// - `create` fails with `AlreadyExists` if the key exists;
/// - `update` and `delete` apply only if the key's current revision equals `expected_revision`,
///   else `Conflict` (or `NotFound` if the key is absent);
/// - `list(prefix)` returns every key starting with `prefix` (plain string prefix), sorted by key.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// The keys `list(prefix)` would return, without values. Backends that can skip the values
    /// (etcd `keys_only`, a SQL column) should: IPAM uses it to find free space for a new block
    /// without reading every block.
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list(prefix)?.into_iter().map(|(k, _)| k).collect())
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError>;
    fn update(&self, key: &str, value: &[u8], expected_revision: i64) -> Result<i64, StoreError>;
    fn delete(&self, key: &str, expected_revision: i64) -> Result<(), StoreError>;
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<T: Store + ?Sized> Store for $ty {
            fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
                (**self).get(key)
            }
            fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
                (**self).list(prefix)
            }
            fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
                (**self).list_keys(prefix)
            }
            fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError> {
                (**self).create(key, value)
            }
            fn update(&self, key: &str, value: &[u8], rev: i64) -> Result<i64, StoreError> {
                (**self).update(key, value, rev)
            }
            fn delete(&self, key: &str, rev: i64) -> Result<(), StoreError> {
                (**self).delete(key, rev)
            }
        }
    )*};
}
forward_store!(&T, Arc<T>, Box<T>);

/// In-memory [`Store`]: a `BTreeMap` behind a mutex with one global revision counter.
/// Safe to share between threads; used by tests, examples and benchmarks.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    revision: i64,
    data: BTreeMap<String, Versioned>,
}

impl MemInner {
    /// Writes `key` at the next revision (callers have checked their preconditions).
    fn put(&mut self, key: &str, value: &[u8]) -> i64 {
        self.revision += 1;
        let revision = self.revision;
        let v = Versioned {
            value: value.to_vec(),
            revision,
        };
        self.data.insert(key.to_owned(), v);
        revision
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A panic while holding the lock cannot leave the map half-written (every operation is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All keys under `prefix` (test helper).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let g = self.lock();
        g.data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Number of keys in the store.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current global revision.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// Write a value unconditionally (test helper to inject corrupt or inconsistent records).
    pub fn put(&self, key: &str, value: &[u8]) -> i64 {
        let mut g = self.lock();
        g.revision += 1;
        let revision = g.revision;
        g.data.insert(
            key.to_owned(),
            Versioned {
                value: value.to_vec(),
                revision,
            },
        );
        revision
    }

    /// Remove a key unconditionally (test helper).
    pub fn remove(&self, key: &str) -> bool {
        let mut g = self.lock();
        g.revision += 1;
        g.data.remove(key).is_some()
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().data.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let g = self.lock();
        Ok(g.data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.keys(prefix))
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError> {
        let mut g = self.lock();
        if g.data.contains_key(key) {
            return Err(StoreError::AlreadyExists);
        }
        Ok(g.put(key, value))
    }

    fn update(&self, key: &str, value: &[u8], expected_revision: i64) -> Result<i64, StoreError> {
        let mut g = self.lock();
        match g.data.get(key) {
            None => return Err(StoreError::NotFound),
            Some(v) if v.revision != expected_revision => return Err(StoreError::Conflict),
            Some(_) => {}
        }
        Ok(g.put(key, value))
    }

    fn delete(&self, key: &str, expected_revision: i64) -> Result<(), StoreError> {
        let mut g = self.lock();
        match g.data.get(key) {
            None => return Err(StoreError::NotFound),
            Some(v) if v.revision != expected_revision => return Err(StoreError::Conflict),
            Some(_) => {}
        }
        g.revision += 1;
        g.data.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let s = MemStore::new();
        let r1 = s.create("a/1", b"x").unwrap();
        assert_eq!(s.create("a/1", b"y"), Err(StoreError::AlreadyExists));
        assert_eq!(s.update("a/1", b"y", r1 + 7), Err(StoreError::Conflict));
        let r2 = s.update("a/1", b"y", r1).unwrap();
        assert!(r2 > r1);
        assert_eq!(s.get("a/1").unwrap().unwrap().value, b"y");
        assert_eq!(s.update("a/2", b"y", 1), Err(StoreError::NotFound));
        s.create("a/2", b"z").unwrap();
        s.create("b/1", b"z").unwrap();
        let keys: Vec<_> = s.list("a/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(s.delete("a/1", r1), Err(StoreError::Conflict));
        s.delete("a/1", r2).unwrap();
        assert_eq!(s.get("a/1").unwrap(), None);
        assert_eq!(s.delete("a/1", r2), Err(StoreError::NotFound));
    }
}
