//! Store calls with the operation's context attached, and CAS outcomes as values: callers
//! decide what a lost race means, errors that are not races become [`IpamError`]s.

use crate::error::IpamError;
use crate::store::{Store, StoreError, Versioned};

/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cas {
    Done,
    /// The record changed (or vanished) since it was read: re-read and decide again.
    Lost,
}

/// Outcome of a `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    Done,
    Exists,
}

#[derive(Clone, Copy)]
pub(crate) struct Tx<'a> {
    store: &'a dyn Store,
    pub(crate) ctx: &'a str,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("ctx", &self.ctx).finish()
    }
}

impl<'a> Tx<'a> {
    pub(crate) fn new(store: &'a dyn Store, ctx: &'a str) -> Self {
        Self { store, ctx }
    }

    fn fail(&self, op: &'static str, key: &str, e: StoreError) -> IpamError {
        match e {
            StoreError::Unavailable(reason) => IpamError::Unavailable {
                ctx: self.ctx.into(),
                op,
                key: key.into(),
                reason,
            },
            error => IpamError::Store {
                ctx: self.ctx.into(),
                op,
                key: key.into(),
                error,
            },
        }
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Versioned>, IpamError> {
        self.store.get(key).map_err(|e| self.fail("get", key, e))
    }

    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, IpamError> {
        self.store
            .list(prefix)
            .map_err(|e| self.fail("list", prefix, e))
    }

    pub(crate) fn list_keys(&self, prefix: &str) -> Result<Vec<String>, IpamError> {
        self.store
            .list_keys(prefix)
            .map_err(|e| self.fail("list", prefix, e))
    }

    pub(crate) fn create(&self, key: &str, value: &[u8]) -> Result<Created, IpamError> {
        match self.store.create(key, value) {
            Ok(_) => Ok(Created::Done),
            Err(StoreError::AlreadyExists) | Err(StoreError::Conflict) => Ok(Created::Exists),
            Err(e) => Err(self.fail("create", key, e)),
        }
    }

    pub(crate) fn update(&self, key: &str, value: &[u8], rev: i64) -> Result<Cas, IpamError> {
        match self.store.update(key, value, rev) {
            Ok(_) => Ok(Cas::Done),
            Err(StoreError::Conflict) | Err(StoreError::NotFound) => Ok(Cas::Lost),
            Err(e) => Err(self.fail("update", key, e)),
        }
    }

    pub(crate) fn delete(&self, key: &str, rev: i64) -> Result<Cas, IpamError> {
        match self.store.delete(key, rev) {
            Ok(()) => Ok(Cas::Done),
            Err(StoreError::Conflict) | Err(StoreError::NotFound) => Ok(Cas::Lost),
            Err(e) => Err(self.fail("delete", key, e)),
        }
    }

    pub(crate) fn contention(&self, key: &str, attempts: u32) -> IpamError {
        IpamError::Contention {
            ctx: self.ctx.into(),
            key: key.into(),
            attempts,
        }
    }
}
