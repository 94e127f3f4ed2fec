//! The conformance suite on the etcd v3 backend.
//!
//! Each test starts its own etcd (`/usr/bin/etcd` on loopback, temporary data directory)
//! unless FURYNET_ETCD_ENDPOINTS names a running one (then tests share it, each under its
//! own root prefix). Without etcd installed the tests say SKIPPED loudly and pass, except
//! under CI=true, where they fail.

// Test code: helpers outside #[test] functions may unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use furynet_datastore::conformance::Fixture;
use furynet_datastore::{open_with_root, DatastoreConfig};
use support::ENDPOINTS_ENV;

fn unique_root() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "/furynet-test/{}-{}-{nanos}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn fixture() -> Option<Fixture> {
    let (endpoints, server) = match std::env::var(ENDPOINTS_ENV) {
        Ok(list) if !list.trim().is_empty() => {
            (list.split(',').map(|s| s.trim().to_owned()).collect(), None)
        }
        _ => {
            let server = support::start_etcd()?;
            (vec![server.endpoint.clone()], Some(server))
        }
    };
    let config = DatastoreConfig::Etcd { endpoints };
    let root = unique_root();
    let store = open_with_root(&config, &root).unwrap();
    store.health().unwrap();
    Some(Fixture {
        store,
        config,
        root,
        keep: Box::new(server),
    })
}

furynet_datastore::conformance_tests!(fixture);

#[test]
fn unreachable_etcd_is_a_retryable_error() {
    // Nothing listens on port 1 of loopback.
    let config = DatastoreConfig::Etcd {
        endpoints: vec!["http://127.0.0.1:1".into()],
    };
    let store = furynet_datastore::open(&config).unwrap();
    let err = store.get("anything").unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[test]
fn calling_from_async_code_is_refused_not_a_panic() {
    let config = DatastoreConfig::Etcd {
        endpoints: vec!["http://127.0.0.1:1".into()],
    };
    let store = furynet_datastore::open(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = rt.block_on(async { store.get("k") }).unwrap_err();
    assert!(err.to_string().contains("spawn_blocking"), "{err}");
    // Dropping the store (and its runtime) inside async code must not panic either.
    rt.block_on(async move { drop(store) });
}
