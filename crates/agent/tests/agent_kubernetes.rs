//! The agent loop on the kubernetes datastore (the fake API server: a real HTTP server speaking
//! the Kubernetes API — no live cluster can run here), with a recording fake dataplane: the
//! agent reads Pods and NetworkPolicies created through the API, registers its underlay on its
//! Node, reports its status in a custom resource on a Lease, programs a policy created later
//! as one delta, and withdraws its status when stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use furynet_agent::keys::agent_key;
use furynet_datastore::kubernetes::{crds, KubeOptions, KubeStore};
use furynet_datastore::{Datastore, DEFAULT_ROOT};
use furynet_fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use support::{status, wait, Fake};

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[test]
fn agent_runs_on_the_kubernetes_api() {
    let api = FakeApiServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let c = api.client().await.unwrap();
        crds::install(&c).await.unwrap();
        let pp = PostParams::default();
        Api::<Namespace>::all(c.clone())
            .create(&pp, &obj(serde_json::json!({"metadata": {"name": "shop"}})))
            .await
            .unwrap();
        let nodes = Api::<Node>::all(c.clone());
        nodes
            .create(&pp, &obj(serde_json::json!({"metadata": {"name": "node-a"}})))
            .await
            .unwrap();
        nodes
            .patch_status(
                "node-a",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"addresses": [
                    {"type": "InternalIP", "address": "192.0.2.10"}]}})),
            )
            .await
            .unwrap();
        let pods = Api::<Pod>::namespaced(c.clone(), "shop");
        pods.create(
            &pp,
            &obj(serde_json::json!({"metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]}})),
        )
        .await
        .unwrap();
        pods.patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"podIP": "10.244.0.2", "podIPs": [{"ip": "10.244.0.2"}]}})),
        )
        .await
        .unwrap();
        c
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let ds: Arc<dyn Datastore> = Arc::new(
        KubeStore::connect(
            DEFAULT_ROOT,
            KubeOptions {
                lease_namespace: "kube-node-lease".into(),
                ..KubeOptions::with_kubeconfig(kubeconfig)
            },
        )
        .unwrap(),
    );

    let fake = Arc::new(Fake::default());
    fake.local
        .lock()
        .unwrap()
        .insert("10.244.0.2".parse().unwrap(), "fnyaaaaaaaaaaa".into());
    let support::Running { handle, stop, .. } =
        support::start(ds.clone(), fake.clone(), Duration::from_secs(5));

    wait("first sync", || {
        status(ds.as_ref()).is_some_and(|s| s.in_sync)
    });
    assert_eq!(
        status(ds.as_ref()).unwrap().endpoints,
        1,
        "the pod from the API is local"
    );
    // The registration went onto the Node as its underlay annotation.
    let node = ds.get("nodes/node-a").unwrap().unwrap();
    assert_eq!(node.value, br#"{"name":"node-a","underlay":"172.31.0.1"}"#);
    assert!(status(ds.as_ref()).is_some());
    let leased = ds.get(&agent_key("node-a")).unwrap().unwrap().lease;
    assert!(leased.is_some(), "the status sits on a lease");

    // A NetworkPolicy created with the API: programmed as one delta.
    let before = fake.syncs.lock().unwrap().len();
    rt.block_on(async {
        Api::<NetworkPolicy>::namespaced(client.clone(), "shop")
            .create(
                &PostParams::default(),
                &obj(serde_json::json!({"metadata": {"name": "deny"},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})),
            )
            .await
            .unwrap();
    });
    wait("policy programmed", || {
        status(ds.as_ref()).is_some_and(|s| s.in_sync && s.policies == 1)
    });
    let syncs = fake.syncs.lock().unwrap().clone();
    assert!(syncs.len() > before);
    assert!(
        syncs[before..]
            .iter()
            .any(|(d, full)| !full && d.contains("add rule")),
        "a delta with the policy's rules: {:?}",
        &syncs[before..]
    );

    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
    assert!(status(ds.as_ref()).is_none(), "status withdrawn on stop");
}
