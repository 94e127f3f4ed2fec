//! Single-client conformance cases: each takes a fresh, empty store.

use std::time::Duration;

use super::{ensure, ensure_eq, eventually, expect_quiet, next_event, Outcome};
use crate::{Datastore, Error, Event, KeyValue};

fn value_of(ds: &dyn Datastore, key: &str) -> Outcome<Option<Vec<u8>>> {
    Ok(ds.get(key)?.map(|kv| kv.value))
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// create / get / list / update / delete, and argument checks.
pub fn crud(ds: &dyn Datastore) -> Outcome {
    let preexisting: Vec<String> = ds.list("")?.0.into_iter().map(|kv| kv.key).collect();
    ensure!(
        preexisting.iter().all(|k| k.starts_with("cluster/")),
        "a fresh store holds keys other than the cluster's own objects: {preexisting:?}"
    );
    ensure!(ds.get("crud/a")?.is_none(), "empty store has crud/a");
    let r1 = ds.create("crud/a", b"1", None)?;
    ensure!(r1 > 0, "create returned revision {r1}");
    let kv = ds.get("crud/a")?;
    let expected = KeyValue {
        key: "crud/a".into(),
        value: b"1".to_vec(),
        create_revision: r1,
        mod_revision: r1,
        lease: None,
    };
    ensure_eq!(kv, Some(expected), "entry after create");
    ensure!(
        ds.current_revision()? >= r1,
        "current revision behind a write"
    );

    let r2 = ds.update("crud/a", b"2", r1)?;
    ensure!(
        r2 > r1,
        "update revision {r2} not after create revision {r1}"
    );
    let kv = ds.get("crud/a")?;
    ensure_eq!(
        kv.map(|kv| (kv.value, kv.create_revision, kv.mod_revision)),
        Some((b"2".to_vec(), r1, r2)),
        "update keeps create_revision and sets mod_revision"
    );

    ds.create("crud/c", b"c", None)?;
    ds.create("crud/b", b"b", None)?;
    let sibling = ds.create("crudx", b"x", None)?;
    let (kvs, rev) = ds.list("crud/")?;
    ensure_eq!(
        keys(&kvs),
        ["crud/a", "crud/b", "crud/c"],
        "list by prefix, sorted"
    );
    ensure!(
        rev >= sibling,
        "list revision {rev} older than the last write {sibling}"
    );
    let (all, _) = ds.list("")?;
    // A Kubernetes cluster is never empty (its built-in namespaces are keys too): "everything"
    // is what the case wrote plus what the fresh store already held.
    let written: Vec<&str> = keys(&all)
        .into_iter()
        .filter(|k| !preexisting.iter().any(|p| p == k))
        .collect();
    ensure_eq!(
        written,
        ["crud/a", "crud/b", "crud/c", "crudx"],
        "list everything"
    );

    let r3 = ds.delete("crud/a", Some(r2))?;
    ensure!(
        r3 > sibling,
        "delete revision {r3} not after earlier writes"
    );
    ensure!(
        ds.get("crud/a")?.is_none(),
        "crud/a still present after delete"
    );
    ds.delete("crud/b", None)?;
    ensure_eq!(keys(&ds.list("crud/")?.0), ["crud/c"], "list after deletes");

    ensure!(
        matches!(ds.delete("crud/missing", None), Err(Error::NotFound { .. })),
        "delete of a missing key must be NotFound"
    );
    ensure!(
        matches!(
            ds.update("crud/missing", b"v", 5),
            Err(Error::NotFound { .. })
        ),
        "update of a missing key must be NotFound"
    );

    let binary: Vec<u8> = (0..=255u8).collect();
    ds.create("crud/bin", &binary, None)?;
    ds.create("crud/empty", b"", None)?;
    ensure_eq!(
        value_of(ds, "crud/bin")?,
        Some(binary),
        "binary value round trip"
    );
    ensure_eq!(
        value_of(ds, "crud/empty")?,
        Some(Vec::new()),
        "empty value round trip"
    );
    let unicode = "crud/nœud-ü/10.244.0.0-26";
    ds.create(unicode, b"u", None)?;
    ensure!(ds.get(unicode)?.is_some(), "unicode key round trip");

    ensure!(
        matches!(
            ds.create("", b"v", None),
            Err(Error::InvalidArgument { .. })
        ),
        "empty key must be rejected"
    );
    ensure!(
        matches!(
            ds.update("crud/c", b"v", 0),
            Err(Error::InvalidArgument { .. })
        ),
        "expected revision 0 must be rejected"
    );
    Ok(())
}

/// create on an existing key fails with AlreadyExists and changes nothing.
pub fn create_existing_fails(ds: &dyn Datastore) -> Outcome {
    let r = ds.create("ce/k", b"first", None)?;
    // The store revision may move (other clients share it); the key's history must not.
    let mut w = ds.watch("ce/", r + 1)?;
    match ds.create("ce/k", b"second", None) {
        Err(Error::AlreadyExists { key, mod_revision }) => {
            ensure_eq!(key, "ce/k", "AlreadyExists names the key");
            ensure_eq!(
                mod_revision,
                r,
                "AlreadyExists carries the current mod revision"
            );
        }
        other => {
            return Err(super::Failure::new(format!(
                "expected AlreadyExists, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        value_of(ds, "ce/k")?,
        Some(b"first".to_vec()),
        "value after failed create"
    );
    ensure_eq!(
        ds.get("ce/k")?.map(|kv| kv.mod_revision),
        Some(r),
        "a failed create must not write"
    );
    expect_quiet(&mut w, Duration::from_millis(200))?;
    Ok(())
}

/// Stale revisions are rejected and change nothing; create_revision restarts after delete.
pub fn cas_conflicts(ds: &dyn Datastore) -> Outcome {
    let r1 = ds.create("cas/k", b"v1", None)?;
    let r2 = ds.update("cas/k", b"v2", r1)?;
    let mut w = ds.watch("cas/", r2 + 1)?;
    match ds.update("cas/k", b"stale", r1) {
        Err(e) => {
            ensure!(e.is_retryable(), "a conflict is retryable (CAS loops)");
            let Error::Conflict {
                expected, current, ..
            } = e
            else {
                return Err(super::Failure::new(format!("expected Conflict, got {e:?}")));
            };
            ensure_eq!(
                (expected, current),
                (r1, r2),
                "conflict carries expected and current"
            );
        }
        other => {
            return Err(super::Failure::new(format!(
                "expected Conflict, got {other:?}"
            )))
        }
    }
    match ds.delete("cas/k", Some(r1)) {
        Err(Error::Conflict { current, .. }) => ensure_eq!(current, r2, "delete conflict"),
        other => {
            return Err(super::Failure::new(format!(
                "expected Conflict, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        value_of(ds, "cas/k")?,
        Some(b"v2".to_vec()),
        "value after conflicts"
    );
    ensure_eq!(
        ds.get("cas/k")?.map(|kv| kv.mod_revision),
        Some(r2),
        "a failed CAS must not write"
    );
    expect_quiet(&mut w, Duration::from_millis(200))?;

    let r3 = ds.delete("cas/k", Some(r2))?;
    ensure!(
        matches!(ds.update("cas/k", b"v3", r2), Err(Error::NotFound { .. })),
        "update of a deleted key must be NotFound"
    );
    let r4 = ds.create("cas/k", b"again", None)?;
    ensure!(r4 > r3, "re-create revision {r4} not after delete {r3}");
    let kv = ds.get("cas/k")?;
    ensure_eq!(
        kv.map(|kv| (kv.create_revision, kv.mod_revision)),
        Some((r4, r4)),
        "re-created key starts a new life"
    );
    Ok(())
}

/// list returns a consistent, sorted snapshot and the revision it was read at, also when
/// it is larger than one page of a paginating backend (etcd pages at 1000 keys).
pub fn list_is_a_snapshot(ds: &dyn Datastore) -> Outcome {
    const KEYS: usize = 1050;
    let mut last = 0;
    for i in 0..KEYS {
        last = ds.create(&format!("snap/{i:04}"), format!("{i}").as_bytes(), None)?;
    }
    let (kvs, rev) = ds.list("snap/")?;
    ensure_eq!(kvs.len(), KEYS, "all keys listed");
    ensure!(
        rev >= last,
        "list revision {rev} older than last write {last}"
    );
    ensure!(
        kvs.iter().all(|kv| kv.mod_revision <= rev),
        "an entry is newer than the list revision"
    );
    ensure!(
        kvs.windows(2).all(|w| w[0].key < w[1].key),
        "list not sorted by key"
    );
    ensure!(
        kvs.iter()
            .enumerate()
            .all(|(i, kv)| kv.value == i.to_string().into_bytes()),
        "listed values do not match their keys"
    );
    ensure!(
        ds.list("snap/zzz")?.0.is_empty(),
        "prefix with no keys lists nothing"
    );
    Ok(())
}

/// Events arrive in revision order, Put and Delete, only under the prefix.
pub fn watch_ordering(ds: &dyn Datastore) -> Outcome {
    let mut w = ds.watch("wo/", 0)?;
    let ra = ds.create("wo/a", b"a1", None)?;
    let rb = ds.create("wo/b", b"b1", None)?;
    let ra2 = ds.update("wo/a", b"a2", ra)?;
    ds.create("other/x", b"not watched", None)?;
    ds.create("wo", b"not under the prefix either", None)?;
    let rdel = ds.delete("wo/b", Some(rb))?;
    let rc = ds.create("wo/c", b"c1", None)?;

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_event(&mut w)?);
    }
    let summary: Vec<(String, &str, i64)> = got
        .iter()
        .map(|e| match e {
            Event::Put(kv) => (kv.key.clone(), "put", kv.mod_revision),
            Event::Delete { key, mod_revision } => (key.clone(), "delete", *mod_revision),
        })
        .collect();
    let expected = vec![
        ("wo/a".to_owned(), "put", ra),
        ("wo/b".to_owned(), "put", rb),
        ("wo/a".to_owned(), "put", ra2),
        ("wo/b".to_owned(), "delete", rdel),
        ("wo/c".to_owned(), "put", rc),
    ];
    ensure_eq!(summary, expected, "watch events");
    if let Event::Put(kv) = &got[2] {
        ensure_eq!(
            (kv.value.as_slice(), kv.create_revision),
            (&b"a2"[..], ra),
            "update event carries value and create revision"
        );
    }
    expect_quiet(&mut w, Duration::from_millis(300))?;
    Ok(())
}

/// Watching from a revision replays exactly the changes at and after it; list + watch from
/// the list revision + 1 misses nothing.
pub fn watch_resume(ds: &dyn Datastore) -> Outcome {
    let r1 = ds.create("wr/k1", b"1", None)?;
    let r2 = ds.update("wr/k1", b"2", r1)?;
    let r3 = ds.create("wr/k2", b"x", None)?;
    let r4 = ds.delete("wr/k1", None)?;

    let mut w = ds.watch("wr/", r2)?;
    let revs: Vec<i64> = (0..3)
        .map(|_| next_event(&mut w).map(|e| e.revision()))
        .collect::<Outcome<_>>()?;
    ensure_eq!(revs, [r2, r3, r4], "resumed watch replays from r2");
    expect_quiet(&mut w, Duration::from_millis(200))?;

    let mut tail = ds.watch("wr/", r4 + 1)?;
    expect_quiet(&mut tail, Duration::from_millis(200))?;
    let r5 = ds.create("wr/k3", b"3", None)?;
    ensure_eq!(
        next_event(&mut tail)?.revision(),
        r5,
        "watch from the future"
    );
    ensure_eq!(
        next_event(&mut w)?.revision(),
        r5,
        "older watch also sees r5"
    );

    // The list-then-watch pattern every consumer uses.
    let (kvs, rev) = ds.list("wr/")?;
    ensure_eq!(keys(&kvs), ["wr/k2", "wr/k3"], "listed state");
    let r6 = ds.update("wr/k2", b"y", r3)?;
    let mut follow = ds.watch("wr/", rev + 1)?;
    match next_event(&mut follow)? {
        Event::Put(kv) => ensure_eq!((kv.key.as_str(), kv.mod_revision), ("wr/k2", r6), "follow"),
        other => return Err(super::Failure::new(format!("expected Put, got {other:?}"))),
    }
    expect_quiet(&mut follow, Duration::from_millis(200))?;
    Ok(())
}

/// A watch far behind catches up through many revisions, in order, without gaps.
pub fn watch_catch_up_many_revisions(ds: &dyn Datastore) -> Outcome {
    const N: i64 = 700;
    let first = ds.create("many/counter", b"0", None)?;
    let mut rev = first;
    for i in 1..N {
        rev = ds.update("many/counter", i.to_string().as_bytes(), rev)?;
        if i % 10 == 0 {
            ds.create(&format!("elsewhere/{i}"), b"noise", None)?;
        }
    }
    let mut w = ds.watch("many/", first)?;
    let mut previous = 0;
    for i in 0..N {
        let Event::Put(kv) = next_event(&mut w)? else {
            return Err(super::Failure::new("expected only puts"));
        };
        ensure_eq!(
            kv.value,
            i.to_string().into_bytes(),
            "event {i} out of order"
        );
        ensure!(
            kv.mod_revision > previous,
            "revisions not increasing at event {i}"
        );
        previous = kv.mod_revision;
    }
    ensure_eq!(previous, rev, "last event is the last write");
    expect_quiet(&mut w, Duration::from_millis(200))?;
    Ok(())
}

/// Compaction: old watches get the re-list signal, current state and newer history stay.
pub fn compaction(ds: &dyn Datastore) -> Outcome {
    let r1 = ds.create("cmp/k", b"1", None)?;
    let r2 = ds.update("cmp/k", b"2", r1)?;
    let r3 = ds.update("cmp/k", b"3", r2)?;
    let r4 = ds.create("cmp/j", b"j", None)?;
    ds.compact(r3)?;

    let mut old = ds.watch("cmp/", r1)?;
    match old.recv_timeout(super::EVENT_TIMEOUT) {
        Err(e) if e.is_compacted() => {
            ensure!(
                !e.is_retryable(),
                "Compacted is not retryable: the caller must re-list"
            );
            if let Error::Compacted {
                compact_revision, ..
            } = e
            {
                ensure!(
                    compact_revision >= r3,
                    "compact revision {compact_revision} < {r3}"
                );
            }
        }
        other => {
            return Err(super::Failure::new(format!(
                "watch from a compacted revision must yield Compacted, got {other:?}"
            )))
        }
    }
    ensure!(old.is_ended(), "a compacted watch ends");

    let (kvs, _) = ds.list("cmp/")?;
    let values: Vec<(&str, &[u8])> = kvs
        .iter()
        .map(|kv| (kv.key.as_str(), &kv.value[..]))
        .collect();
    ensure_eq!(
        values,
        [("cmp/j", &b"j"[..]), ("cmp/k", &b"3"[..])],
        "state after compaction"
    );

    let mut newer = ds.watch("cmp/", r3 + 1)?;
    ensure_eq!(
        next_event(&mut newer)?.revision(),
        r4,
        "history after the compaction point"
    );

    ds.compact(r2)?; // older than the compaction point: nothing to do
    let current = ds.current_revision()?;
    ensure!(
        matches!(
            ds.compact(current + 1000),
            Err(Error::InvalidArgument { .. })
        ),
        "compacting a future revision is an invalid argument"
    );
    Ok(())
}

/// A lease that is not kept alive ends and deletes its keys (watchers see the deletes).
pub fn lease_expiry(ds: &dyn Datastore) -> Outcome {
    let lease = ds.grant_lease(Duration::from_secs(1))?;
    let mut w = ds.watch("lease/", 0)?;
    let r = ds.create("lease/a", b"a", Some(lease))?;
    ds.create("lease/b", b"b", None)?;
    ensure_eq!(
        ds.get("lease/a")?.and_then(|kv| kv.lease),
        Some(lease),
        "key carries its lease"
    );

    let gone = eventually(Duration::from_secs(20), || Ok(ds.get("lease/a")?.is_none()))?;
    ensure!(gone, "leased key still present 20 s after its 1 s lease");
    ensure!(ds.get("lease/b")?.is_some(), "unleased key was deleted");

    let mut saw_delete = false;
    for _ in 0..3 {
        match next_event(&mut w)? {
            Event::Delete { key, mod_revision } if key == "lease/a" => {
                ensure!(
                    mod_revision > r,
                    "expiry delete revision {mod_revision} <= {r}"
                );
                saw_delete = true;
                break;
            }
            _ => {}
        }
    }
    ensure!(saw_delete, "watch did not see the lease expiry delete");
    ensure!(
        matches!(ds.keep_alive(lease), Err(Error::LeaseNotFound { .. })),
        "keep-alive of an expired lease must be LeaseNotFound"
    );
    ensure!(
        matches!(
            ds.create("lease/c", b"c", Some(lease)),
            Err(Error::LeaseNotFound { .. })
        ),
        "attaching to an expired lease must be LeaseNotFound"
    );
    Ok(())
}

/// Keep-alives keep a lease past its TTL; updates keep the lease; revoke deletes now.
pub fn lease_keep_alive_and_revoke(ds: &dyn Datastore) -> Outcome {
    let lease = ds.grant_lease(Duration::from_secs(3))?;
    let r = ds.create("ka/k", b"1", Some(lease))?;
    ds.update("ka/k", b"2", r)?;
    ensure_eq!(
        ds.get("ka/k")?.and_then(|kv| kv.lease),
        Some(lease),
        "update keeps the lease"
    );
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1000));
        ds.keep_alive(lease)?;
    }
    ensure!(
        ds.get("ka/k")?.is_some(),
        "kept-alive lease ended after ~5 s (TTL 3 s)"
    );
    ds.revoke_lease(lease)?;
    ensure!(
        ds.get("ka/k")?.is_none(),
        "revoke must delete the lease's keys at once"
    );
    ensure!(
        matches!(ds.revoke_lease(lease), Err(Error::LeaseNotFound { .. })),
        "revoking twice must be LeaseNotFound"
    );
    Ok(())
}

/// health answers and revisions only move forward.
pub fn health_and_revisions(ds: &dyn Datastore) -> Outcome {
    ds.health()?;
    let a = ds.current_revision()?;
    let w = ds.create("hr/k", b"v", None)?;
    let b = ds.current_revision()?;
    ensure!(
        a < w && w <= b,
        "revisions not monotonic: {a}, write {w}, then {b}"
    );
    ensure!(!ds.backend().is_empty(), "backend name");
    Ok(())
}
