//! The conformance suite on the embedded (SQLite) backend, plus multi-process checks that
//! only make sense for a local file.

// Test code: helpers outside #[test] functions may unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use furynet_datastore::conformance::concurrency::{counter_value, run_increment_children};
use furynet_datastore::conformance::Fixture;
use furynet_datastore::{open_with_root, DatastoreConfig};

const ROOT: &str = "/furynet/";

fn fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let config = DatastoreConfig::Embedded {
        path: dir.path().join("state"),
    };
    let store = open_with_root(&config, ROOT).unwrap();
    Some(Fixture {
        store,
        config,
        root: ROOT.to_owned(),
        keep: Box::new(dir),
    })
}

furynet_datastore::conformance_tests!(fixture);

/// Processes that find no database yet all create it at once (schema, WAL switch) and
/// then contend on one counter.
#[test]
fn processes_racing_to_create_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = DatastoreConfig::Embedded {
        path: dir.path().join("fresh/dir"),
    };
    run_increment_children(&config, ROOT, "race/counter", 4, 25).unwrap();
    let store = open_with_root(&config, ROOT).unwrap();
    assert_eq!(counter_value(&*store, "race/counter").unwrap(), 100);
}

/// The default configuration and `open` agree with the CNI config format.
#[test]
fn open_from_cni_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = format!(
        r#"{{"type":"embedded","path":{}}}"#,
        serde_json::to_string(&dir.path().join("db")).unwrap()
    );
    let config: DatastoreConfig = serde_json::from_str(&json).unwrap();
    let store = furynet_datastore::open(&config).unwrap();
    store
        .create("ipam/blocks/10.244.0.0-26", b"{}", None)
        .unwrap();
    assert_eq!(store.backend(), "embedded");
    assert!(store.get("ipam/blocks/10.244.0.0-26").unwrap().is_some());
}
