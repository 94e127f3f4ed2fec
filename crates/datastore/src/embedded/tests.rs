//! Embedded-only tests: lease expiry with an injected clock, reopening, the shared file.
//! Behaviour every backend shares is tested by the conformance suite (`tests/embedded.rs`).

use super::*;
use crate::Event;

fn store_with_clock(dir: &Path, clock: Arc<ManualClock>) -> EmbeddedStore {
    let options = EmbeddedOptions {
        clock,
        poll_interval: Duration::from_millis(2),
        ..EmbeddedOptions::default()
    };
    EmbeddedStore::open(dir, "/t/", options).unwrap()
}

#[test]
fn leases_expire_by_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = store_with_clock(dir.path(), clock.clone());
    let lease = store.grant_lease(Duration::from_secs(10)).unwrap();
    store.create("a", b"1", Some(lease)).unwrap();
    store.create("b", b"2", Some(lease)).unwrap();
    store.create("c", b"3", None).unwrap();
    let mut watch = store.watch("", 0).unwrap();

    clock.advance(Duration::from_secs(9));
    store.keep_alive(lease).unwrap();
    clock.advance(Duration::from_secs(9));
    // 18 s after the grant, but only 9 s after the keep-alive: still alive.
    assert!(store.get("a").unwrap().is_some());
    let before = store.current_revision().unwrap();

    clock.advance(Duration::from_secs(2));
    // A read sweeps: both keys go at one new revision; the unleased key stays.
    assert!(store.get("a").unwrap().is_none());
    let (kvs, rev) = store.list("").unwrap();
    assert_eq!(
        kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    assert_eq!(rev, before + 1);
    assert!(matches!(
        store.keep_alive(lease),
        Err(Error::LeaseNotFound { lease: l, .. }) if l == lease
    ));

    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        match watch.recv_timeout(Duration::from_secs(5)).unwrap() {
            Some(Event::Delete { key, mod_revision }) => deleted.push((key, mod_revision)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(deleted, [("a".to_owned(), rev), ("b".to_owned(), rev)]);
}

#[test]
fn watchers_sweep_expired_leases_without_other_activity() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(5_000));
    let store = store_with_clock(dir.path(), clock.clone());
    let lease = store.grant_lease(Duration::from_millis(100)).unwrap();
    store.create("x", b"1", Some(lease)).unwrap();
    let mut watch = store.watch("x", 0).unwrap();
    // Let the watch thread take its first look (it learns the next expiry).
    std::thread::sleep(Duration::from_millis(50));
    clock.advance(Duration::from_millis(150));
    let event = watch.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(event, Some(Event::Delete { ref key, .. }) if key == "x"),
        "{event:?}"
    );
}

#[test]
fn zero_ttl_and_unknown_leases_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_clock(dir.path(), Arc::new(ManualClock::new(0)));
    assert!(matches!(
        store.grant_lease(Duration::ZERO),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.create("k", b"v", Some(12345)),
        Err(Error::LeaseNotFound { lease: 12345, .. })
    ));
    assert!(store.get("k").unwrap().is_none());
    assert!(matches!(
        store.revoke_lease(12345),
        Err(Error::LeaseNotFound { .. })
    ));
}

#[test]
fn state_survives_reopen_and_roots_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let rev = {
        let a = EmbeddedStore::open(dir.path(), "/a/", EmbeddedOptions::default()).unwrap();
        a.create("k", b"from a", None).unwrap()
    };
    let a = EmbeddedStore::open(dir.path(), "/a/", EmbeddedOptions::default()).unwrap();
    let b = EmbeddedStore::open(dir.path(), "b", EmbeddedOptions::default()).unwrap();
    let kv = a.get("k").unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"from a"[..], rev)
    );
    assert!(b.get("k").unwrap().is_none());
    assert!(b.list("").unwrap().0.is_empty());
    // One revision counter for the whole file, as in etcd.
    assert!(b.create("k", b"from b", None).unwrap() > rev);
    assert_eq!(a.get("k").unwrap().unwrap().value, b"from a");
    assert!(dir.path().join(DB_FILE).exists());
}

#[test]
fn open_creates_the_directory_and_reports_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("x/y/z");
    EmbeddedStore::open(&nested, "/furynet/", EmbeddedOptions::default()).unwrap();
    assert!(nested.join(DB_FILE).exists());
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = EmbeddedStore::open(&file, "/furynet/", EmbeddedOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

/// Closing the last connection does not checkpoint (no fsyncs at the end of every CNI call):
/// the WAL stays, and the next process reads everything from it.
#[test]
fn closing_leaves_the_wal_and_reopening_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    {
        let store = EmbeddedStore::open(dir.path(), "/t/", EmbeddedOptions::default()).unwrap();
        store.create("a", b"1", None).unwrap();
    }
    let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(len > 0, "the WAL was checkpointed away on close");
    let store = EmbeddedStore::open(dir.path(), "/t/", EmbeddedOptions::default()).unwrap();
    assert_eq!(
        store.get("a").unwrap().map(|kv| kv.value),
        Some(b"1".to_vec())
    );
}
