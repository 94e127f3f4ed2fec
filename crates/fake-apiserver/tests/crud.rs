//! CRUD, lists, selectors, pagination, revisions, auth and injected failures through kube-rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{api_err, client, raw, raw_typed};
use furynet_fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, VersionMatch,
};
use serde_json::json;

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    p
}

#[tokio::test]
async fn create_get_replace_patch_delete() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");

    let created = pods
        .create(&PostParams::default(), &pod("a", &[("app", "web")]))
        .await
        .unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert_eq!(rv1, server.current_revision().to_string());
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let e = api_err(pods.create(&PostParams::default(), &pod("a", &[])).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    let e = api_err(pods.get("nope").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "pods \"nope\" not found");
    let e = api_err(
        pods.create(&PostParams::default(), &pod("Bad_Name", &[]))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let other: Api<Pod> = Api::namespaced(c.clone(), "no-such-ns");
    let e = api_err(other.create(&PostParams::default(), &pod("x", &[])).await);
    assert_eq!(e.code, 404);

    // Replace with the current resourceVersion succeeds and bumps generation on spec change.
    let mut p = pods.get("a").await.unwrap();
    p.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
    let replaced = pods.replace("a", &PostParams::default(), &p).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // A stale resourceVersion is a Conflict with kube's message.
    let e = api_err(pods.replace("a", &PostParams::default(), &p).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on pods \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Merge patch; a resourceVersion in the patch is a precondition.
    let patched = pods
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"k": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["k"], "v");
    let stale = json!({"metadata": {"resourceVersion": rv1, "annotations": {"k": "w"}}});
    let e = api_err(
        pods.patch("a", &PatchParams::default(), &Patch::Merge(stale))
            .await,
    );
    assert_eq!(e.code, 409);

    // Delete with a wrong precondition → 409; right one → 200 with the object at the delete revision.
    let cur = pods.get("a").await.unwrap();
    let bad = DeleteParams::default().preconditions(Preconditions {
        resource_version: Some("1".into()),
        uid: None,
    });
    let e = api_err(pods.delete("a", &bad).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let good = DeleteParams::default().preconditions(Preconditions {
        resource_version: cur.metadata.resource_version.clone(),
        uid: cur.metadata.uid.clone(),
    });
    let gone = pods
        .delete("a", &good)
        .await
        .unwrap()
        .left()
        .expect("deleted object");
    assert_eq!(
        gone.metadata.resource_version.unwrap(),
        server.current_revision().to_string()
    );
    assert_eq!(api_err(pods.get("a").await).code, 404);
    assert_eq!(
        api_err(pods.delete("a", &DeleteParams::default()).await).code,
        404
    );
}

#[tokio::test]
async fn json_patch_and_raw_shapes() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let ops = r#"[{"op": "test", "path": "/data/a", "value": "1"}, {"op": "replace", "path": "/data/a", "value": "2"}]"#;
    let got = raw_typed(
        &c,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/cm",
        "application/json-patch+json",
        ops,
    )
    .await;
    assert_eq!(got["data"]["a"], "2");
    assert_eq!(got["kind"], "ConfigMap");
    assert_eq!(cms.get("cm").await.unwrap().data.unwrap()["a"], "2");

    // List shape: kind, apiVersion, metadata.resourceVersion; items without kind/apiVersion.
    let list = raw(&c, "GET", "/api/v1/namespaces/default/configmaps", "").await;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        server.current_revision().to_string()
    );
    assert!(list["items"][0].get("kind").is_none());
    assert_eq!(list["items"][0]["metadata"]["name"], "cm");
    // generateName gets a random suffix; dryRun is refused rather than written.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let mut gp = pod("", &[]);
    gp.metadata.name = None;
    gp.metadata.generate_name = Some("web-".into());
    let made = pods.create(&PostParams::default(), &gp).await.unwrap();
    let made_name = made.metadata.name.unwrap();
    assert!(
        made_name.starts_with("web-") && made_name.len() == 9,
        "{made_name}"
    );
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(api_err(pods.create(&dry, &pod("dry", &[])).await).code, 400);
    assert_eq!(api_err(pods.get("dry").await).code, 404);
    // Pre-created namespaces.
    let nss: Api<Namespace> = Api::all(c.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    // Discovery and version.
    assert_eq!(raw(&c, "GET", "/version", "").await["major"], "1");
    assert!(raw(&c, "GET", "/apis", "").await["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "coordination.k8s.io"));
}

#[tokio::test]
async fn selectors_pages_and_revisions() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let ks: Api<Pod> = Api::namespaced(c.clone(), "kube-system");
    for i in 0..5 {
        let tier = if i % 2 == 0 { "fe" } else { "be" };
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), &[("tier", tier), ("n", &i.to_string())]),
        )
        .await
        .unwrap();
    }
    ks.create(&PostParams::default(), &pod("sys", &[("tier", "fe")]))
        .await
        .unwrap();
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    };

    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("tier=fe"))
                .await
                .unwrap()
        ),
        ["p0", "p2", "p4"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("tier!=fe"))
                .await
                .unwrap()
        ),
        ["p1", "p3"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("n in (1,4),tier"))
                .await
                .unwrap()
        ),
        ["p1", "p4"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("n notin (0,1,2)"))
                .await
                .unwrap()
        ),
        ["p3", "p4"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("!n"))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("metadata.name=p3"))
                .await
                .unwrap()
        ),
        ["p3"]
    );
    let all: Api<Pod> = Api::all(c.clone());
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("tier=fe"))
                .await
                .unwrap()
        ),
        ["p0", "p2", "p4", "sys"]
    );

    // Pages of one consistent snapshot, even when objects change between pages.
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(first.clone()), ["p0", "p1"]);
    let snap_rv = first.metadata.resource_version.clone().unwrap();
    pods.delete("p2", &DeleteParams::default()).await.unwrap();
    let tok = first.metadata.continue_.clone().unwrap();
    let second = pods
        .list(&ListParams::default().limit(2).continue_token(&tok))
        .await
        .unwrap();
    assert_eq!(names(second.clone()), ["p2", "p3"]);
    assert_eq!(second.metadata.resource_version.unwrap(), snap_rv);
    let third = pods
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(&second.metadata.continue_.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(third.clone()), ["p4"]);
    assert!(third.metadata.continue_.is_none_or(|c| c.is_empty()));

    // Exact list at an old revision shows the state as of then; NotOlderThan in the future → 504.
    let exact = pods
        .list(
            &ListParams::default()
                .at(&snap_rv)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(names(exact), ["p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(
        names(pods.list(&ListParams::default()).await.unwrap()),
        ["p0", "p1", "p3", "p4"]
    );
    let future = (server.current_revision() + 10).to_string();
    // (kube retries 504 for minutes by default; a client without retries sees it at once.)
    let no_retry: Api<Pod> = Api::namespaced(common::client_no_retry(&server).await, "default");
    let e = api_err(
        no_retry
            .list(
                &ListParams::default()
                    .at(&future)
                    .matching(VersionMatch::NotOlderThan),
            )
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"));

    // After compaction the old revision is gone: 410 Expired.
    server.compact(server.current_revision());
    let e = api_err(
        pods.list(
            &ListParams::default()
                .at(&snap_rv)
                .matching(VersionMatch::Exact),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    assert_eq!(
        e.message,
        "The resourceVersion for the provided list is too old."
    );

    // deletecollection with a label selector returns the deleted objects.
    let deleted = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=be"),
        )
        .await
        .unwrap();
    let deleted = deleted.left().expect("a list of deleted objects");
    assert_eq!(names(deleted), ["p1", "p3"]);
    assert_eq!(
        names(pods.list(&ListParams::default()).await.unwrap()),
        ["p0", "p4"]
    );
}

#[tokio::test]
async fn unauthorized_without_token() {
    let server = FakeApiServer::start().unwrap();
    let cfg = kube::Config::new(server.url().parse().unwrap());
    let c = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let e = api_err(pods.list(&ListParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    assert_eq!(server.requests().last().unwrap().status, 401);
}

#[tokio::test]
async fn injected_429_is_retried_by_kube() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(c, "default");
    server.fail_next("/namespaces/default/pods", 429, 1);
    let t0 = std::time::Instant::now();
    let p = pods
        .create(&PostParams::default(), &pod("r", &[]))
        .await
        .unwrap();
    assert_eq!(p.metadata.name.as_deref(), Some("r"));
    let statuses: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/pods"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 201]);
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    // 500 is not retried and surfaces as an InternalError Status.
    server.fail_next("/pods/r", 500, 1);
    let e = api_err(pods.get("r").await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert!(pods.get("r").await.is_ok());
}
