//! A [`Store`] wrapper that injects the failures a real datastore produces, for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::clock::SplitMix64;
use crate::store::{Store, StoreError, Versioned};

/// Probabilities (0.0..=1.0) of each injected fault, per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// `update`/`delete` answer `Conflict` without applying (as if someone wrote first).
    pub conflict: f64,
    /// Any operation answers `Unavailable` without applying.
    pub unavailable: f64,
    /// A write is applied but answers `Unavailable` (a timeout after commit): the caller cannot
    /// know whether it happened.
    pub unavailable_after_write: f64,
}

/// Wraps a store and fails operations at random (seeded, so runs are reproducible).
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<(SplitMix64, Faults)>,
    injected: AtomicU64,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S, faults: Faults, seed: u64) -> Self {
        Self {
            inner,
            state: Mutex::new((SplitMix64::new(seed), faults)),
            injected: AtomicU64::new(0),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Change the fault probabilities (e.g. `Faults::default()` to switch faults off).
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = faults;
    }

    /// How many faults have been injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn roll(&self, pick: impl Fn(&Faults) -> f64) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let p = pick(&g.1);
        let hit = g.0.chance(p);
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn before(&self, write: bool) -> Result<(), StoreError> {
        if self.roll(|f| f.unavailable) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        if write && self.roll(|f| f.conflict) {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    fn after<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_ok() && self.roll(|f| f.unavailable_after_write) {
            return Err(StoreError::Unavailable(
                "injected fault after commit".into(),
            ));
        }
        r
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.before(false)?;
        self.inner.get(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.before(false)?;
        self.inner.list(prefix)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.before(false)?;
        self.inner.list_keys(prefix)
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError> {
        if self.roll(|f| f.unavailable) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.after(self.inner.create(key, value))
    }

    fn update(&self, key: &str, value: &[u8], expected_revision: i64) -> Result<i64, StoreError> {
        self.before(true)?;
        self.after(self.inner.update(key, value, expected_revision))
    }

    fn delete(&self, key: &str, expected_revision: i64) -> Result<(), StoreError> {
        self.before(true)?;
        self.after(self.inner.delete(key, expected_revision))
    }
}
