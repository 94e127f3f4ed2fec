#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The kubernetes backend's CRDs against the fake API server: the generated CRDs install
//! through the API, and custom resources named by `names::object_name` round-trip.
//!
//! The `KubeStore` itself is not written yet, so the conformance suite does not run here yet.

use furynet_datastore::kubernetes::crds::{self, DatastoreEntry, DatastoreEntrySpec};
use furynet_datastore::kubernetes::names::{object_name, Resource};
use furynet_fake_apiserver::FakeApiServer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

async fn client(server: &FakeApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_crds_install_and_entries_round_trip() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let crd_api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for (file, yaml) in crds::crds().unwrap() {
        if file == "kustomization.yaml" {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&yaml).unwrap();
        crd_api.create(&PostParams::default(), &crd).await.unwrap();
    }
    assert_eq!(
        crd_api.list(&Default::default()).await.unwrap().items.len(),
        5
    );

    let entries: Api<DatastoreEntry> = Api::all(c);
    for key in ["agents/node-1", "Weird Key/with.dots", "x"] {
        let name = object_name(Resource::of_key(key), key);
        let obj = DatastoreEntry::new(
            &name,
            DatastoreEntrySpec {
                key: key.to_string(),
                value: serde_json::json!({"k": key}),
            },
        );
        entries.create(&PostParams::default(), &obj).await.unwrap();
        let back = entries.get(&name).await.unwrap();
        assert_eq!(back.spec.key, key);
        assert_eq!(back.spec.value, serde_json::json!({"k": key}));
        let rv: i64 = back.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > 0 && rv <= server.current_revision());
    }
}
