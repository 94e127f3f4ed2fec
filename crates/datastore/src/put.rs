//! Create-or-overwrite on top of compare-and-swap, for callers that own a key outright (a
//! node's registration, an agent's status, the objects `furynet lab` feeds in).

use crate::{Datastore, Error, Result};

/// Makes `key` hold `value` (attached to `lease`), whatever it held before: reads it, then
/// updates it with the read revision, creates it, or — when it sits on another lease —
/// deletes and recreates it; retries when another writer got in between. Returns the new
/// revision, or `None` when the key already held exactly this value on this lease (nothing
/// written, no event).
pub fn put(ds: &dyn Datastore, key: &str, value: &[u8], lease: Option<i64>) -> Result<Option<i64>> {
    for _ in 0..10 {
        let r = match ds.get(key)? {
            Some(kv) if kv.value == value && kv.lease == lease => return Ok(None),
            Some(kv) if kv.lease == lease => ds.update(key, value, kv.mod_revision),
            Some(kv) => ds
                .delete(key, Some(kv.mod_revision))
                .and_then(|_| ds.create(key, value, lease)),
            None => ds.create(key, value, lease),
        };
        match r {
            Ok(rev) => return Ok(Some(rev)),
            Err(Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }) => {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Unavailable {
        backend: ds.backend(),
        op: "put",
        reason: format!("{key}: too many concurrent writers"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::embedded::{EmbeddedOptions, EmbeddedStore};

    #[test]
    fn put_creates_overwrites_skips_and_moves_leases() {
        let dir = tempfile::tempdir().unwrap();
        let ds = EmbeddedStore::open(dir.path(), "/t/", EmbeddedOptions::default()).unwrap();
        let r1 = put(&ds, "k", b"a", None).unwrap().unwrap();
        assert_eq!(
            put(&ds, "k", b"a", None).unwrap(),
            None,
            "same value: no write"
        );
        let r2 = put(&ds, "k", b"b", None).unwrap().unwrap();
        assert!(r2 > r1);
        let lease = ds.grant_lease(std::time::Duration::from_secs(30)).unwrap();
        put(&ds, "k", b"b", Some(lease)).unwrap().unwrap();
        let kv = ds.get("k").unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.lease),
            (b"b".as_slice(), Some(lease))
        );
        ds.revoke_lease(lease).unwrap();
        assert!(
            ds.get("k").unwrap().is_none(),
            "the key followed its new lease"
        );
    }
}
