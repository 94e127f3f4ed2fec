//! The fan-out server on the kubernetes datastore (the fake API server: a real HTTP server
//! speaking the Kubernetes API; no live cluster can run here): it lists and watches the API
//! once, and its clients converge to exactly what the store reads — core objects created
//! with the API (translated to the agent's values), furynet's own custom resources, deletes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use furynet_datastore::kubernetes::{crds, KubeOptions, KubeStore};
use furynet_datastore::{Datastore, DEFAULT_ROOT};
use furynet_fake_apiserver::FakeApiServer;
use furynet_fanout::{ClientConfig, FanoutMetrics, FanoutStore, Server, ServerConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap()
}

/// Create a pod, then give it its IP through the status subresource (as the kubelet does).
async fn create_pod(pods: &Api<Pod>, name: &str, ip: &str) {
    pods.create(&PostParams::default(), &pod(name))
        .await
        .unwrap();
    let status = serde_json::json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn converges(ds: &dyn Datastore, c: &dyn Datastore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (want, rev) = ds.list("").unwrap();
        if let Ok((got, crev)) = c.list("") {
            if got == want && crev >= rev {
                return;
            }
        }
        if Instant::now() > deadline {
            let got = c.list("").map(|(g, r)| {
                let diff: Vec<_> = g
                    .iter()
                    .filter(|kv| !want.contains(kv))
                    .map(|kv| kv.key.clone())
                    .collect();
                (g.len(), r, diff)
            });
            panic!(
                "client never converged: store {} keys at {rev}, client {got:?}",
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fanout_serves_the_kubernetes_api() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let api = FakeApiServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let c = api.client().await.unwrap();
        crds::install(&c).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
        for i in 0..20 {
            create_pod(&pods, &format!("web-{i}"), &format!("10.244.0.{}", i + 2)).await;
        }
        c
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let ds: Arc<dyn Datastore> = Arc::new(
        KubeStore::connect(DEFAULT_ROOT, KubeOptions::with_kubeconfig(kubeconfig)).unwrap(),
    );
    ds.create("agents/n1", b"{\"node\":\"n1\"}", None).unwrap();

    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = FanoutMetrics::register(&mut reg);
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = rt
        .block_on(Server::start(cfg, ds.clone(), metrics))
        .unwrap();
    let addr = server.local_addr().to_string();
    let clients: Vec<_> = (0..5)
        .map(|i| {
            FanoutStore::connect(ClientConfig::new(vec![addr.clone()], format!("n{i}"))).unwrap()
        })
        .collect();
    for c in &clients {
        converges(&*ds, &**c);
    }
    let (kvs, _) = clients[0].list("cluster/pods/").unwrap();
    assert_eq!(kvs.len(), 20, "every pod reaches the agents");

    // Changes made through the API reach every client: a pod deleted, one added, a key
    // written through the store.
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.delete("web-3", &DeleteParams::default())
            .await
            .unwrap();
        create_pod(&pods, "web-new", "10.244.0.99").await;
    });
    furynet_datastore::put(&*ds, "agents/n1", b"{\"node\":\"n1\",\"v\":2}", None).unwrap();
    for c in &clients {
        converges(&*ds, &**c);
    }
    assert!(clients[4]
        .get("cluster/pods/default/web-3")
        .unwrap()
        .is_none());
    let new = clients[4]
        .get("cluster/pods/default/web-new")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&new.value).contains("10.244.0.99"));
    drop(clients);
    drop(server);
}
