#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The kubernetes backend against the fake API server (`furynet-fake-apiserver`: a real HTTP
//! server speaking the Kubernetes REST API with etcd-style resourceVersions, real Status errors
//! and real watch framing — no live cluster can run here).
//!
//! - The datastore conformance suite, each case on a fresh fake server with the generated CRDs
//!   installed through the API (compaction is exercised separately: Kubernetes has no
//!   compaction API, the fake's `compact()` plays the API server's own compaction).
//! - Core objects created through the API appear as the agent's values; writes to them are
//!   refused; Nodes carry the underlay; 410 → Compacted; transient errors are retried; missing
//!   CRDs are a clear error.

use std::path::PathBuf;
use std::time::Duration;

use furynet_datastore::conformance::Fixture;
use furynet_datastore::kubernetes::crds::{self, DatastoreEntry, DatastoreEntrySpec};
use furynet_datastore::kubernetes::names::{object_name, Resource};
use furynet_datastore::kubernetes::{KubeOptions, KubeStore};
use furynet_datastore::{Datastore, DatastoreConfig, Error, Event, DEFAULT_ROOT};
use furynet_fake_apiserver::FakeApiServer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;

async fn client(server: &FakeApiServer) -> Client {
    server.client().await.unwrap()
}

async fn install_crds(c: &Client) {
    crds::install(c).await.unwrap();
}

/// Creates a Node without addresses (as the kubelet does before it reports them); the Nodes API.
async fn create_node(client: Client, name: &str) -> Api<k8s_openapi::api::core::v1::Node> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let node = serde_json::json!({"metadata": {"name": name}});
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await
        .unwrap();
    nodes
}

/// Run `f` with a client of `server` on a throwaway runtime (the store API blocks, so tests
/// are plain threads; only direct API calls need async).
fn with_client<T>(server: &FakeApiServer, f: impl AsyncFnOnce(Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client(server).await;
        f(c).await
    })
}

/// A fake API server with the CRDs installed, its kubeconfig, and a store on it.
struct Cluster {
    server: FakeApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn cluster(crds: bool) -> Cluster {
    let server = FakeApiServer::start().unwrap();
    if crds {
        with_client(&server, async |c| install_crds(&c).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        server,
        _dir: dir,
        kubeconfig,
    }
}

fn store(c: &Cluster) -> KubeStore {
    KubeStore::connect(
        DEFAULT_ROOT,
        KubeOptions {
            kubeconfig: Some(c.kubeconfig.clone()),
            sweep_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            // The suite writes thousands of revisions as fast as it can; the default client
            // rate limit (50/s) would only make it slow (the limiter is unit-tested).
            qps: 5000.0,
            burst: 5000,
            ..KubeOptions::default()
        },
    )
    .unwrap()
}

fn fixture() -> Option<Fixture> {
    let c = cluster(true);
    let s = store(&c);
    s.health().unwrap();
    Some(Fixture {
        store: std::sync::Arc::new(s),
        config: DatastoreConfig::Kubernetes {
            kubeconfig: Some(c.kubeconfig.clone()),
            lease_namespace: None,
        },
        root: DEFAULT_ROOT.into(),
        keep: Box::new(c),
    })
}

furynet_datastore::conformance_tests!(
    fixture,
    skip_compaction = "Kubernetes has no compaction API; `watch_from_a_compacted_revision_is_compacted` compacts the fake API server instead"
);

#[test]
fn generated_crds_install_and_entries_round_trip() {
    let c = cluster(true);
    with_client(&c.server, async |client| {
        let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
        assert_eq!(
            crd_api.list(&Default::default()).await.unwrap().items.len(),
            5
        );
        let entries: Api<DatastoreEntry> = Api::all(client);
        for key in ["agents/node-1", "Weird Key/with.dots", "x"] {
            let name = object_name(Resource::of_key(key), key);
            let obj = DatastoreEntry::new(
                &name,
                DatastoreEntrySpec {
                    key: key.to_string(),
                    value: Some(serde_json::json!(key)),
                    data: None,
                },
            );
            entries.create(&PostParams::default(), &obj).await.unwrap();
            let back = entries.get(&name).await.unwrap();
            assert_eq!(back.spec.key, key);
            let rv: i64 = back.metadata.resource_version.unwrap().parse().unwrap();
            assert!(rv > 0 && rv <= c.server.current_revision());
        }
    });
    // What kubectl wrote is what the store reads.
    let s = store(&c);
    assert_eq!(
        s.get("agents/node-1").unwrap().unwrap().value,
        b"agents/node-1"
    );
    assert_eq!(
        s.list("").unwrap().0.len(),
        3 + 4,
        "3 entries + 4 built-in namespaces"
    );
}

#[test]
fn watch_from_a_compacted_revision_is_compacted() {
    let c = cluster(true);
    let s = store(&c);
    let r1 = s.create("cmp/a", b"1", None).unwrap();
    let r2 = s.update("cmp/a", b"2", r1).unwrap();
    s.create("cmp/b", b"x", None).unwrap();
    c.server.compact(r2);
    let mut w = s.watch("cmp/", r1).unwrap();
    let err = w.recv_timeout(Duration::from_secs(10)).unwrap_err();
    match err {
        Error::Compacted {
            requested,
            compact_revision,
        } => {
            assert_eq!(requested, r1);
            assert_eq!(compact_revision, r2);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // Re-list and follow from there, as the signal says.
    let (kvs, rev) = s.list("cmp/").unwrap();
    assert_eq!(kvs.len(), 2);
    let mut w = s.watch("cmp/", rev + 1).unwrap();
    let r = s.delete("cmp/b", None).unwrap();
    match w.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(Event::Delete { key, mod_revision }) => {
            assert_eq!((key.as_str(), mod_revision), ("cmp/b", r))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn core_objects_are_the_agents_values_and_read_only() {
    let c = cluster(true);
    let s = store(&c);
    let mut w = s.watch("cluster/", 0).unwrap();
    with_client(&c.server, async |client| {
        let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "shop", "labels": {"team": "a"}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "shop");
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-0", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                    "ports": [{"containerPort": 8080, "name": "http"}]}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        // The pod gets its IP later, through the status subresource (as the kubelet does).
        pods.patch_status(
            "web-0",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}})),
        )
        .await
        .unwrap();
        let np: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
            Api::namespaced(client.clone(), "shop");
        np.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        let nodes = create_node(client, "n1").await;
        // The kubelet reports the addresses through the status subresource.
        nodes
            .patch_status(
                "n1",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}})),
            )
            .await
            .unwrap();
    });

    let (kvs, _) = s.list("cluster/").unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert!(keys.contains(&"cluster/namespaces/shop"), "{keys:?}");
    assert!(
        keys.contains(&"cluster/networkpolicies/shop/deny"),
        "{keys:?}"
    );
    let pod = s.get("cluster/pods/shop/web-0").unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&pod.value).unwrap();
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["ips"], serde_json::json!(["10.244.1.5"]));
    assert_eq!(v["labels"]["app"], "web");

    // The watch saw the pod created without an IP, then given one.
    let mut pod_ips = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pod_ips.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Event::Put(kv)) = w.recv_timeout(Duration::from_millis(200)).unwrap() {
            if kv.key == "cluster/pods/shop/web-0" {
                let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
                pod_ips.push(v["ips"].clone());
            }
        }
    }
    assert_eq!(
        pod_ips,
        [serde_json::json!([]), serde_json::json!(["10.244.1.5"])]
    );

    // Writes to core objects are refused with the key named.
    let e = s.create("cluster/pods/shop/x", b"{}", None).unwrap_err();
    assert!(
        e.to_string().contains("cluster/pods/shop/x") && e.to_string().contains("kubectl"),
        "{e}"
    );
    assert!(s.delete("cluster/namespaces/shop", None).is_err());

    // nodes/<name> is the Node; the agent's registration sets the underlay annotation.
    let node = s.get("nodes/n1").unwrap().unwrap();
    assert_eq!(node.value, br#"{"name":"n1","underlay":"192.0.2.1"}"#);
    furynet_datastore::put(
        &s,
        "nodes/n1",
        br#"{"name":"n1","underlay":"198.51.100.7"}"#,
        None,
    )
    .unwrap();
    assert_eq!(
        s.get("nodes/n1").unwrap().unwrap().value,
        br#"{"name":"n1","underlay":"198.51.100.7"}"#
    );
    with_client(&c.server, async |client| {
        let nodes: Api<DynamicObject> = Api::all_with(
            client,
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
        );
        let n = nodes.get("n1").await.unwrap();
        assert_eq!(
            n.metadata.annotations.unwrap()["furynet.io/underlay"],
            "198.51.100.7"
        );
    });
    assert!(matches!(
        s.create("nodes/n2", br#"{"name":"n2","underlay":"192.0.2.2"}"#, None),
        Err(Error::InvalidArgument { .. })
    ));

    // A Node without any address yet stands for no key; the agent's registration creates it
    // (as the annotation), and a second create is AlreadyExists.
    with_client(&c.server, async |client| {
        create_node(client, "n3").await;
    });
    assert!(s.get("nodes/n3").unwrap().is_none());
    let rec = br#"{"name":"n3","underlay":"192.0.2.3"}"#;
    furynet_datastore::put(&s, "nodes/n3", rec, None).unwrap();
    assert_eq!(s.get("nodes/n3").unwrap().unwrap().value, rec);
    assert!(matches!(
        s.create("nodes/n3", rec, None),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn transient_errors_are_retried_and_missing_crds_are_named() {
    let c = cluster(true);
    let s = store(&c);
    s.create("retry/a", b"1", None).unwrap();
    c.server.fail_next("datastoreentries", 503, 2);
    assert_eq!(s.get("retry/a").unwrap().unwrap().value, b"1");
    // 500 on a create is not retried (it may have been applied): a retryable error instead.
    c.server.fail_next("datastoreentries", 500, 1);
    let e = s.create("retry/b", b"1", None).unwrap_err();
    assert!(e.is_retryable(), "{e:?}");

    let bare = cluster(false);
    let s = store(&bare);
    let e = s.create("agents/n1", b"x", None).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(e.to_string().contains("deploy/crds"), "{e}");
}

#[test]
fn ipam_state_lives_in_typed_custom_resources() {
    let c = cluster(true);
    let s = store(&c);
    let block = br#"{"cidr":"10.244.0.0/26","affinity":"n1"}"#;
    let r = s.create("ipam/blocks/10.244.0.0-26", block, None).unwrap();
    s.update(
        "ipam/blocks/10.244.0.0-26",
        br#"{"affinity":"n2","cidr":"10.244.0.0/26"}"#,
        r,
    )
    .unwrap();
    with_client(&c.server, async |client| {
        let blocks: Api<crds::IPAMBlock> = Api::all(client);
        let list = blocks.list(&Default::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].spec.key, "ipam/blocks/10.244.0.0-26");
        assert_eq!(list.items[0].spec.record["affinity"], "n2");
    });
    let e = s.create("ipam/handles/h1", b"not json", None).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
}

/// IPAM end to end on the Kubernetes API: blocks, affinities and handles are custom resources;
/// two nodes allocate concurrently without a double allocation; release frees everything.
#[test]
fn ipam_runs_on_the_kubernetes_store() {
    use furynet_datastore::ipam_store::IpamStore;
    use furynet_ipam::{AllocRequest, Ipam, PoolConfig};
    let c = cluster(true);
    let ds: std::sync::Arc<dyn Datastore> = std::sync::Arc::new(store(&c));
    let pools = [PoolConfig::with_block_prefix(
        "10.244.0.0/24".parse().unwrap(),
        28,
    )];
    let handles: Vec<_> = ["node-1", "node-2"]
        .into_iter()
        .map(|node| {
            let ds = ds.clone();
            std::thread::spawn(move || {
                let ipam = Ipam::new(IpamStore(ds));
                (0..12)
                    .map(|i| {
                        let req = AllocRequest::for_container(
                            &format!("{node}-c{i}"),
                            "eth0",
                            node,
                            &pools,
                        )
                        .unwrap();
                        ipam.allocate(&req).unwrap()[0].ip
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for h in handles {
        for ip in h.join().unwrap() {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 24);
    let ipam = Ipam::new(IpamStore(ds.clone()));
    assert!(ipam.check().unwrap().is_clean());
    with_client(&c.server, async |client| {
        let blocks: Api<crds::IPAMBlock> = Api::all(client.clone());
        assert!(blocks.list(&Default::default()).await.unwrap().items.len() >= 2);
        let aff: Api<crds::BlockAffinity> = Api::all(client.clone());
        assert!(aff.list(&Default::default()).await.unwrap().items.len() >= 2);
        let h: Api<crds::IPAMHandle> = Api::all(client);
        assert_eq!(h.list(&Default::default()).await.unwrap().items.len(), 24);
    });
    for node in ["node-1", "node-2"] {
        for i in 0..12 {
            let req =
                AllocRequest::for_container(&format!("{node}-c{i}"), "eth0", node, &pools).unwrap();
            assert_eq!(ipam.release(&req.handle).unwrap().len(), 1);
        }
    }
    assert_eq!(
        ipam.usage().unwrap().iter().map(|p| p.used()).sum::<u64>(),
        0
    );
}

/// A watch keeps working after the store that opened it is dropped (it holds the client's
/// runtime), and dropping it then ends everything without a panic.
#[test]
fn a_watch_outlives_its_store() {
    let c = cluster(true);
    let first = store(&c);
    let mut w = first.watch("outlive/", 0).unwrap();
    drop(first);
    let second = store(&c);
    let r = second.create("outlive/k", b"v", None).unwrap();
    match w.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(Event::Put(kv)) => assert_eq!((kv.key.as_str(), kv.mod_revision), ("outlive/k", r)),
        other => panic!("{other:?}"),
    }
    drop(w);
}

/// A watch whose API server goes away ends with a retryable error after its bounded retries,
/// instead of going silent.
#[test]
fn a_watch_ends_when_the_api_server_stays_away() {
    let c = cluster(true);
    let s = store(&c);
    let mut w = s.watch("gone/", 0).unwrap();
    let Cluster { server, _dir, .. } = c;
    drop(server);
    let started = std::time::Instant::now();
    let err = loop {
        match w.recv_timeout(Duration::from_secs(1)) {
            Ok(None) if started.elapsed() < Duration::from_secs(30) => continue,
            Ok(other) => panic!("expected the watch to end, got {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("datastoreentries"), "{err}");
}

/// A watch over every resource (11 Kubernetes watches merged) delivers changes of different
/// resources in revision order, each exactly once.
#[test]
fn a_watch_over_all_resources_is_in_revision_order() {
    let c = cluster(true);
    let s = store(&c);
    let mut w = s.watch("", 0).unwrap();
    let mut expected = Vec::new();
    for i in 0..10 {
        expected.push(s.create(&format!("order/e{i}"), b"v", None).unwrap());
        let rev = with_client(&c.server, async |client| {
            let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
            let created = ns
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(
                        serde_json::json!({"metadata": {"name": format!("ns-{i}")}}),
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
            created
                .metadata
                .resource_version
                .unwrap()
                .parse::<i64>()
                .unwrap()
        });
        expected.push(rev);
        expected.push(
            s.create(&format!("ipam/handles/h{i}"), br#"{"ips":[]}"#, None)
                .unwrap(),
        );
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match w.recv_timeout(Duration::from_secs(10)).unwrap() {
            Some(ev) => got.push(ev.revision()),
            None => panic!("only {} of {} events: {got:?}", got.len(), expected.len()),
        }
    }
    assert_eq!(got, expected);
}
