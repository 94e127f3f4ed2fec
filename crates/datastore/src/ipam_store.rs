//! The datastore as IPAM's compare-and-swap storage: `furynet_ipam::Store` over any backend.

use std::sync::Arc;

use furynet_ipam::{Store, StoreError, Versioned};

use crate::{Datastore, Error};

/// Adapts a [`Datastore`] to the small CAS trait the (pure) IPAM crate is written against.
#[derive(Debug, Clone)]
pub struct IpamStore(pub Arc<dyn Datastore>);

fn map(e: Error) -> StoreError {
    match e {
        Error::AlreadyExists { .. } => StoreError::AlreadyExists,
        Error::Conflict { .. } => StoreError::Conflict,
        Error::NotFound { .. } => StoreError::NotFound,
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Store for IpamStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.0.get(key).map_err(map)?.map(|kv| Versioned {
            value: kv.value,
            revision: kv.mod_revision,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let (kvs, _) = self.0.list(prefix).map_err(map)?;
        Ok(kvs
            .into_iter()
            .map(|kv| {
                let v = Versioned {
                    value: kv.value,
                    revision: kv.mod_revision,
                };
                (kv.key, v)
            })
            .collect())
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64, StoreError> {
        self.0.create(key, value, None).map_err(map)
    }

    fn update(&self, key: &str, value: &[u8], expected_revision: i64) -> Result<i64, StoreError> {
        self.0.update(key, value, expected_revision).map_err(map)
    }

    fn delete(&self, key: &str, expected_revision: i64) -> Result<(), StoreError> {
        self.0
            .delete(key, Some(expected_revision))
            .map(|_| ())
            .map_err(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open, DatastoreConfig};
    use furynet_ipam::{AllocRequest, Ipam, PoolConfig};

    /// IPAM end to end on the embedded store: allocate, idempotent re-allocate, check, release.
    #[test]
    fn ipam_runs_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let ds = open(&DatastoreConfig::Embedded {
            path: dir.path().to_path_buf(),
        })
        .unwrap();
        let ipam = Ipam::new(IpamStore(ds));
        let pools = [PoolConfig::new("10.244.0.0/24".parse().unwrap())];
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..20 {
            let req =
                AllocRequest::for_container(&format!("c{i}"), "eth0", "node-1", &pools).unwrap();
            let got = ipam.allocate(&req).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(ipam.allocate(&req).unwrap(), got, "idempotent per handle");
            assert!(seen.insert(got[0].ip), "unique addresses");
        }
        assert!(ipam.check().unwrap().is_clean());
        for i in 0..20 {
            let req =
                AllocRequest::for_container(&format!("c{i}"), "eth0", "node-1", &pools).unwrap();
            assert_eq!(ipam.release(&req.handle).unwrap().len(), 1);
        }
        let usage = ipam.usage().unwrap();
        assert_eq!(usage.iter().map(|p| p.used()).sum::<u64>(), 0);
    }
}
