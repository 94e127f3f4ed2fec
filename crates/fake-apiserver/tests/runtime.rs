//! kube-runtime's watcher (list + watch, pagination, bookmarks, 410 → re-list) against the fake,
//! and a watcher that does not read being cut off instead of growing the server's memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use common::client;
use furynet_fake_apiserver::FakeApiServer;
use futures_util::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

fn cm(name: &str, payload: usize) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"x": "y".repeat(payload)}}))
        .unwrap()
}

#[tokio::test]
async fn runtime_watcher_converges_and_relists_after_compaction() {
    let server = FakeApiServer::start().unwrap();
    // No bookmarks during this test: the watch position stays at its last event.
    server.set_bookmark_interval(Duration::from_secs(600));
    let c = client(&server).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..1200 {
        cms.create(&PostParams::default(), &cm(&format!("cm-{i:04}"), 10))
            .await
            .unwrap();
    }
    let cfg = watcher::Config::default().page_size(500).timeout(2);
    let mut stream = Box::pin(watcher::watcher(cms.clone(), cfg));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut init: BTreeSet<String> = BTreeSet::new();
    let mut inits = 0;
    let relisted_after_compaction;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut phase = 0;
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("watcher in time");
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("watcher stream ended"),
            // The 410 surfaces once as an error; the watcher then re-lists.
            Err(e) => {
                assert!(
                    format!("{e:?}").contains("410") || format!("{e:?}").contains("Expired"),
                    "{e:?}"
                );
                continue;
            }
        };
        match ev {
            Event::Init => init.clear(),
            Event::InitApply(o) => {
                init.insert(o.metadata.name.unwrap());
            }
            Event::InitDone => {
                inits += 1;
                seen = std::mem::take(&mut init);
                if phase == 0 {
                    assert_eq!(seen.len(), 1200);
                    // Changes while watching arrive as Apply/Delete.
                    cms.delete("cm-0000", &DeleteParams::default())
                        .await
                        .unwrap();
                    cms.create(&PostParams::default(), &cm("late", 1))
                        .await
                        .unwrap();
                    phase = 1;
                } else {
                    relisted_after_compaction = seen.contains("after-compaction");
                    break;
                }
            }
            Event::Apply(o) => {
                seen.insert(o.metadata.name.unwrap());
            }
            Event::Delete(o) => {
                seen.remove(&o.metadata.name.unwrap());
            }
        }
        if phase == 1 && seen.contains("late") && !seen.contains("cm-0000") {
            // Compact past the watch position and make the watch restart: it must get 410 and re-list.
            cms.create(&PostParams::default(), &cm("after-compaction", 1))
                .await
                .unwrap();
            let l: Lease = serde_json::from_value(json!({"metadata": {"name": "bump"}})).unwrap();
            leases.create(&PostParams::default(), &l).await.unwrap();
            server.compact(server.current_revision());
            phase = 2;
        }
    }
    assert!(inits >= 2);
    assert!(relisted_after_compaction);
    assert_eq!(seen.len(), 1201);
    let paged = server
        .requests()
        .iter()
        .filter(|r| r.query.contains("continue="))
        .count();
    assert!(paged >= 2, "the initial list was paged");
}

#[tokio::test]
async fn slow_watcher_is_cut_off() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    let req = format!(
        "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.current_revision(),
        server.token()
    );
    sock.write_all(req.as_bytes()).unwrap();
    // Never read while writing far more than the socket buffers and the watcher queue hold.
    let n = 3000;
    for i in 0..n {
        cms.create(&PostParams::default(), &cm(&format!("big-{i}"), 8 * 1024))
            .await
            .unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                // The chunked body's last chunk: the server ended the stream.
                if buf.ends_with(b"\r\n0\r\n\r\n") {
                    break;
                }
            }
            Err(e) => panic!("the server did not end the slow watcher's stream: {e}"),
        }
    }
    let events = buf.windows(9).filter(|w| w == b"{\"object\"").count();
    assert!(events > 0, "some events were delivered");
    assert!(
        events < n,
        "the watcher was cut off before all {n} events: {events}"
    );
}

#[tokio::test]
async fn lease_put_creates() {
    let server = FakeApiServer::start().unwrap();
    let c = client(&server).await;
    let leases: Api<Lease> = Api::namespaced(c, "kube-system");
    let l: Lease = serde_json::from_value(
        json!({"metadata": {"name": "l1"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let got = leases
        .replace("l1", &PostParams::default(), &l)
        .await
        .unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("a"));
    assert_eq!(server.requests().last().unwrap().status, 201);
}
