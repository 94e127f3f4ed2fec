//! The agent loop over a real embedded datastore and a recording fake dataplane: nothing is
//! programmed before the first list, changes become deltas, failures are reported and retried,
//! the status record follows, and stopping withdraws it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use furynet_agent::keys::Object;
use furynet_datastore::{open, DatastoreConfig};
use furynet_model::{NetworkPolicy, Pod};
use support::{status, wait, Fake};

fn pod(name: &str, ip: &str) -> Object {
    Object::Pod(Pod {
        namespace: "shop".into(),
        name: name.into(),
        labels: [("app".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        ips: vec![ip.parse().unwrap()],
        ports: vec![],
        node_name: Some("node-a".into()),
        host_network: false,
    })
}

fn deny_all() -> Object {
    let docs = furynet_model::load_str(
        "t",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    );
    let p: NetworkPolicy = docs.cluster.policies[0].clone();
    Object::NetworkPolicy(p)
}

#[test]
fn loop_programs_deltas_reports_failures_and_withdraws_status() {
    let dir = tempfile::tempdir().unwrap();
    let ds = open(&DatastoreConfig::Embedded {
        path: dir.path().to_path_buf(),
    })
    .unwrap();
    let p1 = pod("web", "10.244.0.2");
    ds.create(&p1.key(), &p1.encode(), None).unwrap();
    let fake = Arc::new(Fake::default());
    fake.local
        .lock()
        .unwrap()
        .insert("10.244.0.2".parse().unwrap(), "fnyaaaaaaaaaaa".into());
    let support::Running {
        handle,
        stop,
        health,
        registry,
        metrics,
    } = support::start(ds.clone(), fake.clone(), Duration::from_secs(2));

    // First pass: a full rebuild, node registered, status in sync at the list revision.
    wait("first sync", || {
        status(ds.as_ref()).is_some_and(|s| s.in_sync)
    });
    assert!(ds.get("nodes/node-a").unwrap().is_some());
    let first = fake.syncs.lock().unwrap().clone();
    assert_eq!(first.len(), 1);
    assert!(first[0].1, "the first pass rebuilds");
    assert_eq!(status(ds.as_ref()).unwrap().endpoints, 1);
    assert!(health.in_sync());

    // A policy: one delta, status at its revision.
    let rev = ds
        .create(&deny_all().key(), &deny_all().encode(), None)
        .unwrap();
    wait("policy programmed", || {
        status(ds.as_ref()).is_some_and(|s| s.in_sync && s.revision >= rev)
    });
    let syncs = fake.syncs.lock().unwrap().clone();
    assert_eq!(syncs.len(), 2);
    assert!(
        !syncs[1].1 && syncs[1].0.contains("add rule"),
        "a delta: {:?}",
        syncs[1].0
    );

    // nftables fails: status says why, readiness drops; recovery is automatic.
    fake.fail_nft.store(true, Ordering::SeqCst);
    let p2 = pod("db", "10.244.0.3");
    fake.local
        .lock()
        .unwrap()
        .insert("10.244.0.3".parse().unwrap(), "fnybbbbbbbbbbb".into());
    let rev = ds.create(&p2.key(), &p2.encode(), None).unwrap();
    wait("failure reported", || {
        status(ds.as_ref()).is_some_and(|s| {
            !s.in_sync && s.error.as_deref().is_some_and(|e| e.contains("injected"))
        })
    });
    assert!(!health.in_sync());
    assert!(
        metrics
            .failures
            .get_or_create(&furynet_agent::metrics::Metrics::subsystem("nftables"))
            .get()
            >= 1
    );
    fake.fail_nft.store(false, Ordering::SeqCst);
    wait("recovered", || {
        status(ds.as_ref()).is_some_and(|s| s.in_sync && s.revision >= rev && s.endpoints == 2)
    });
    // The failure is in the metrics, under our names and Felix's (the failed delta and the
    // failed rebuild after it: two transactions).
    let text = furynet_agent::metrics::encode(&registry);
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    assert!(value("furynet_dataplane_failures_total{subsystem=\"nftables\"}") >= 2.0);
    assert_eq!(
        value("felix_iptables_restore_errors"),
        value("furynet_dataplane_failures_total{subsystem=\"nftables\"}")
    );
    assert!(value("felix_int_dataplane_failures") >= 2.0);
    assert_eq!(value("felix_iptables_save_errors"), 0.0);
    assert_eq!(
        value("furynet_dataplane_resyncs_total{reason=\"startup\"}"),
        1.0
    );
    assert!(value("furynet_dataplane_resyncs_total{reason=\"drift\"}") >= 1.0);
    assert_eq!(value("furynet_agent_in_sync"), 1.0);
    assert!(value("furynet_datastore_watch_events_total") >= 3.0);
    assert!(value("furynet_policy_programming_seconds_count") >= 2.0);
    assert_eq!(value("furynet_endpoints_active"), 2.0);
    // After a failure the kernel state is unknown: the recovery pass rebuilds.
    assert!(fake.syncs.lock().unwrap().last().unwrap().1);

    // A local pod without its interface keeps the agent out of sync, naming the pod.
    let p3 = pod("cache", "10.244.0.4");
    ds.create(&p3.key(), &p3.encode(), None).unwrap();
    wait("missing interface reported", || {
        status(ds.as_ref()).is_some_and(|s| {
            !s.in_sync && s.error.as_deref().is_some_and(|e| e.contains("shop/cache"))
        })
    });
    fake.local
        .lock()
        .unwrap()
        .insert("10.244.0.4".parse().unwrap(), "fnycccccccccccc".into());
    wait("interface found", || {
        status(ds.as_ref()).is_some_and(|s| s.in_sync && s.endpoints == 3)
    });

    // Stop: the status is withdrawn (lease revoked); the kernel is left alone.
    let calls = fake.syncs.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
    assert!(status(ds.as_ref()).is_none());
    assert_eq!(fake.syncs.lock().unwrap().len(), calls);
}
