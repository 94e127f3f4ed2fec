//! Watches (replay, 410 after compaction, bookmarks, selectors, timeout) and CRDs through kube-rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{api_err, client, raw};

use furynet_fake_apiserver::FakeApiServer;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": {"containers": []}}),
    )
    .unwrap()
}

fn summary(ev: &WatchEvent<Pod>) -> String {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    match ev {
        WatchEvent::Added(p) => format!("ADDED {}", name(p)),
        WatchEvent::Modified(p) => format!("MODIFIED {}", name(p)),
        WatchEvent::Deleted(p) => format!("DELETED {}", name(p)),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {} {}", s.code, s.reason),
    }
}

#[tokio::test]
async fn watch_replays_then_goes_live() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let start = server.current_revision().to_string();
    pods.create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", "db"))
        .await
        .unwrap();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    let del = pods
        .delete("b", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        del.metadata.resource_version.unwrap(),
        server.current_revision().to_string()
    );

    let wp = WatchParams::default().disable_bookmarks().timeout(3);
    let mut s = pods.watch(&wp, &start).await.unwrap().boxed();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(summary(&s.try_next().await.unwrap().unwrap()));
    }
    assert_eq!(got, ["ADDED a", "ADDED b", "MODIFIED a", "DELETED b"]);
    // Live: a write after the watch started arrives, with its revision.
    pods.create(&PostParams::default(), &pod("c", "web"))
        .await
        .unwrap();
    match s.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(p) => {
            assert_eq!(p.metadata.name.as_deref(), Some("c"));
            assert_eq!(
                p.metadata.resource_version.unwrap(),
                server.current_revision().to_string()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // timeoutSeconds ends the stream cleanly.
    let end = tokio::time::timeout(Duration::from_secs(10), s.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none());

    // "0": synthetic ADDED of the current state; label selectors filter, transitions become DELETED.
    let wp = WatchParams::default()
        .disable_bookmarks()
        .labels("app=web")
        .timeout(5);
    let mut s = pods.watch(&wp, "0").await.unwrap().boxed();
    assert_eq!(summary(&s.try_next().await.unwrap().unwrap()), "ADDED a");
    assert_eq!(summary(&s.try_next().await.unwrap().unwrap()), "ADDED c");
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    assert_eq!(summary(&s.try_next().await.unwrap().unwrap()), "DELETED c");
}

#[tokio::test]
async fn watch_from_compacted_revision_gets_410() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let old = server.current_revision();
    pods.create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", "web"))
        .await
        .unwrap();
    server.compact(server.current_revision());
    let mut s = pods
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    match s.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(st) => {
            assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
            assert_eq!(
                st.message,
                format!(
                    "too old resource version: {old} ({})",
                    server.current_revision()
                )
            );
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(
        s.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
    // Watching from the compaction revision itself still works.
    let mut s = pods
        .watch(
            &WatchParams::default().timeout(1),
            &server.current_revision().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(summary(&s.try_next().await.unwrap().unwrap()), "DELETED a");
}

#[tokio::test]
async fn bookmarks_arrive_with_the_latest_revision() {
    let server = FakeApiServer::start().unwrap();
    server.set_bookmark_interval(Duration::from_millis(100));
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let nss: Api<Namespace> = Api::all(c);
    let rv = server.current_revision().to_string();
    let mut s = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    // A write to another resource moves the revision; the bookmark reports it.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let want = server.current_revision().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, s.try_next())
            .await
            .expect("a bookmark in time")
            .unwrap()
            .unwrap();
        if let WatchEvent::Bookmark(b) = ev {
            if b.metadata.resource_version == want {
                assert!(b.metadata.annotations.is_empty());
                break;
            }
        }
    }
    // sendInitialEvents is rejected as on a 1.28 server without the WatchList gate.
    // (kube-rs hands a non-200 watch response to the stream, so check what the server answered.)
    if let Ok(s) = pods.watch(&WatchParams::streaming_lists(), "").await {
        let first = s.boxed().next().await;
        assert!(
            !matches!(first, Some(Ok(WatchEvent::Added(_)))),
            "no events on a rejected watch: {first:?}"
        );
    }
    let last = server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.query.contains("sendInitialEvents"))
        .unwrap();
    assert_eq!(last.status, 422);
}

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "ippools.crd.furynet.io"},
        "spec": {
            "group": "crd.furynet.io",
            "names": {"plural": "ippools", "singular": "ippool", "kind": "IPPool", "listKind": "IPPoolList"},
            "scope": "Cluster",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_registration_then_custom_resource_crud() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let gvk = GroupVersionKind::gvk("crd.furynet.io", "v1", "IPPool");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "ippools");
    let pools: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    // Before the CRD exists the path is unknown.
    assert_eq!(api_err(pools.list(&ListParams::default()).await).code, 404);

    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let created = crds.create(&PostParams::default(), &crd()).await.unwrap();
    let status = created.status.unwrap();
    let conds = status.conditions.unwrap();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t} missing: {conds:?}"
        );
    }
    assert_eq!(status.accepted_names.unwrap().kind, "IPPool");
    let mut bad = crd();
    bad.metadata.name = Some("wrong.crd.furynet.io".into());
    assert_eq!(
        api_err(crds.create(&PostParams::default(), &bad).await).code,
        422
    );

    let mut obj = DynamicObject::new("pool-a", &ar);
    obj.data = json!({"spec": {"cidr": "10.0.0.0/16"}, "status": {"ignored": true}});
    let got = pools.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(got.data["spec"]["cidr"], "10.0.0.0/16");
    assert!(
        got.data.get("status").is_none(),
        "status is a subresource: ignored on create"
    );
    let rv = got.metadata.resource_version.clone().unwrap();
    let patched = pools
        .patch(
            "pool-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cidr": "10.1.0.0/16"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let st = pools
        .patch_status(
            "pool-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"used": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["used"], 3);
    assert_eq!(
        st.metadata.generation,
        Some(2),
        "a status write does not bump generation"
    );
    let mut stale = got.clone();
    stale.metadata.resource_version = Some(rv);
    assert_eq!(
        api_err(
            pools
                .replace("pool-a", &PostParams::default(), &stale)
                .await
        )
        .code,
        409
    );
    // List shape of custom resources keeps kind/apiVersion on items.
    let list = raw(&c, "GET", "/apis/crd.furynet.io/v1/ippools", "").await;
    assert_eq!(list["kind"], "IPPoolList");
    assert_eq!(list["items"][0]["kind"], "IPPool");
    assert_eq!(list["items"][0]["apiVersion"], "crd.furynet.io/v1");
    // Discovery lists the new resource.
    let disc = raw(&c, "GET", "/apis/crd.furynet.io/v1", "").await;
    assert_eq!(disc["resources"][0]["name"], "ippools");

    // Deleting the CRD removes the resource.
    crds.delete("ippools.crd.furynet.io", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(pools.get("pool-a").await).code, 404);
}
