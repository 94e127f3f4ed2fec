//! State-sequence tests: the desired node state depends only on the final content of the
//! store, whatever the order (and interleaving, and transient noise) of the events.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use furynet_dataplane::routing::plan::Encapsulation;
use furynet_datastore::{Event, KeyValue};
use furynet_ipam::records::{block_key, BlockRecord};
use furynet_policy::synth::{cluster, SynthSpec};
use proptest::prelude::*;

use super::*;
use crate::keys::{node_key, objects, NodeRecord};

fn kv(key: &str, value: Vec<u8>, rev: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        create_revision: rev,
        mod_revision: rev,
        lease: None,
    }
}

/// The final content of the store: a synthetic cluster (pods spread over two nodes), two node
/// registrations and one block per node.
fn final_content() -> Vec<(String, Vec<u8>)> {
    let mut c = cluster(&SynthSpec {
        pods: 60,
        namespaces: 4,
        policies: 15,
        seed: 7,
    });
    for (i, p) in c.pods.iter_mut().enumerate() {
        p.node_name = Some(if i % 2 == 0 { "node-a" } else { "node-b" }.into());
    }
    let mut out: Vec<(String, Vec<u8>)> =
        objects(&c).iter().map(|o| (o.key(), o.encode())).collect();
    for (n, ip) in [("node-a", [172, 31, 0, 1]), ("node-b", [172, 31, 0, 2])] {
        let rec = NodeRecord {
            name: n.into(),
            underlay: Ipv4Addr::from(ip),
        };
        out.push((node_key(n), serde_json::to_vec(&rec).unwrap()));
    }
    for (i, n) in ["node-a", "node-b"].iter().enumerate() {
        let cidr: ipnet::IpNet = format!("10.244.{i}.0/26").parse().unwrap();
        let pool = "10.244.0.0/16".parse().unwrap();
        let b = BlockRecord::new(cidr, pool, Some(n.to_string()));
        out.push((block_key(&cidr), serde_json::to_vec(&b).unwrap()));
    }
    out
}

fn setup() -> NodeSetup {
    NodeSetup {
        name: "node-a".into(),
        underlay: Ipv4Addr::new(172, 31, 0, 1),
        underlay_mtu: 1500,
        encapsulation: Encapsulation::default(),
    }
}

/// Local pod routes: every node-a pod's first address on its own interface.
fn local(content: &[(String, Vec<u8>)]) -> HashMap<IpAddr, String> {
    let snap = Snapshot::from_list(
        content.iter().map(|(k, v)| kv(k, v.clone(), 1)).collect(),
        1,
    );
    snap.decode()
        .cluster
        .pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some("node-a"))
        .filter_map(|p| p.ips.first().copied())
        .enumerate()
        .map(|(i, ip)| (ip, format!("fnyif{i:06}")))
        .collect()
}

#[test]
fn list_and_events_agree_and_irrelevant_keys_are_ignored() {
    let content = final_content();
    let listed = Snapshot::from_list(
        content.iter().map(|(k, v)| kv(k, v.clone(), 3)).collect(),
        3,
    );
    let mut watched = Snapshot::default();
    for (i, (k, v)) in content.iter().enumerate() {
        assert!(watched.apply(&Event::Put(kv(k, v.clone(), i as i64 + 1))));
    }
    let before = watched.revision;
    assert!(!watched.apply(&Event::Put(kv("agents/node-a", b"{}".to_vec(), 1000))));
    assert_eq!(
        watched.revision, before,
        "irrelevant events do not advance the revision"
    );
    // Same value again: nothing to do.
    let (k, v) = &content[0];
    assert!(!watched.apply(&Event::Put(kv(k, v.clone(), 1001))));
    watched.revision = 3;
    assert_eq!(watched, listed);
    let d = listed.decode();
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.cluster.pods.len(), 60);
    assert_eq!(d.nodes.len(), 2);
    assert_eq!(d.blocks.len(), 2);
}

#[test]
fn undecodable_values_are_reported_and_skipped() {
    let mut content = final_content();
    content.push(("cluster/pods/x/broken".into(), b"{not json".to_vec()));
    content.push(("nodes/bad".into(), b"[]".to_vec()));
    let s = Snapshot::from_list(
        content.iter().map(|(k, v)| kv(k, v.clone(), 1)).collect(),
        1,
    );
    let d = s.decode();
    assert_eq!(d.errors.len(), 2, "{:?}", d.errors);
    assert!(d.errors[0].starts_with("cluster/pods/x/broken: "));
    assert_eq!(d.cluster.pods.len(), 60);
}

#[test]
fn desired_state_routes_other_blocks_and_knows_missing_endpoints() {
    let content = final_content();
    let s = Snapshot::from_list(
        content.iter().map(|(k, v)| kv(k, v.clone(), 1)).collect(),
        1,
    );
    let d = s.decode();
    let mut loc = local(&content);
    let full = desired(&d, &setup(), &loc);
    assert!(full.missing_endpoints.is_empty());
    assert_eq!(full.endpoints, loc.len());
    assert_eq!(full.nft.pods.len(), loc.len());
    assert_eq!(full.routing.routes.len(), 1, "one remote block");
    assert_eq!(full.routing.pod_mtu, 1450);
    assert!(
        full.policies > 0 && full.policies <= d.cluster.policies.len(),
        "{} of {} policies isolate a local pod",
        full.policies,
        d.cluster.policies.len()
    );
    let none = desired(&d, &setup(), &HashMap::new());
    assert_eq!(
        (none.policies, none.endpoints),
        (0, 0),
        "no local pod, no policy in force"
    );
    // A node-a pod without its interface yet is reported, not silently dropped.
    let gone = *loc.keys().next().unwrap();
    loc.remove(&gone);
    let partial = desired(&d, &setup(), &loc);
    assert_eq!(partial.missing_endpoints.len(), 1);
}

/// One key's history: transient values, then (maybe) the final value; keys not in the final
/// content end deleted.
#[derive(Debug, Clone)]
struct History {
    key: String,
    steps: Vec<Option<Vec<u8>>>,
}

fn histories(noise: &[(usize, bool)]) -> Vec<History> {
    let content = final_content();
    let mut hs: Vec<History> = content
        .iter()
        .map(|(k, v)| History {
            key: k.clone(),
            steps: vec![Some(v.clone())],
        })
        .collect();
    for (i, &(target, delete_first)) in noise.iter().enumerate() {
        let n = hs.len();
        let h = &mut hs[target % n];
        // A stale value before the final one (e.g. an older version of the object).
        let stale = content[(target + 1) % content.len()].1.clone();
        h.steps.insert(0, Some(stale));
        if delete_first {
            h.steps.insert(0, None);
        }
        // A key that comes and goes.
        hs.push(History {
            key: format!("cluster/pods/transient/p{i}"),
            steps: vec![Some(content[target % content.len()].1.clone()), None],
        });
    }
    hs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any interleaving of the keys' histories (each key's own events in order, as a watch
    /// delivers them) ends in the same snapshot and the same desired dataplane as a list.
    #[test]
    fn same_end_state_whatever_the_order(
        noise in prop::collection::vec((0usize..200, any::<bool>()), 0..12),
        order in prop::collection::vec(0usize..10_000, 0..400),
    ) {
        let hs = histories(&noise);
        let mut cursors = vec![0usize; hs.len()];
        let mut snap = Snapshot::default();
        let mut rev = 0;
        let mut deliver = |h: &History, step: usize, snap: &mut Snapshot| {
            rev += 1;
            let ev = match &h.steps[step] {
                Some(v) => Event::Put(kv(&h.key, v.clone(), rev)),
                None => Event::Delete { key: h.key.clone(), mod_revision: rev },
            };
            snap.apply(&ev);
        };
        for pick in order {
            let live: Vec<usize> = (0..hs.len()).filter(|&i| cursors[i] < hs[i].steps.len()).collect();
            if live.is_empty() { break; }
            let i = live[pick % live.len()];
            deliver(&hs[i], cursors[i], &mut snap);
            cursors[i] += 1;
        }
        for i in 0..hs.len() {
            while cursors[i] < hs[i].steps.len() {
                deliver(&hs[i], cursors[i], &mut snap);
                cursors[i] += 1;
            }
        }
        let content = final_content();
        let mut listed = Snapshot::from_list(
            content.iter().map(|(k, v)| kv(k, v.clone(), 1)).collect(), 1);
        listed.revision = snap.revision;
        prop_assert_eq!(&snap, &listed);
        let loc = local(&content);
        let a = desired(&snap.decode(), &setup(), &loc);
        let b = desired(&listed.decode(), &setup(), &loc);
        prop_assert_eq!(furynet_calc::render_full(&a.nft), furynet_calc::render_full(&b.nft));
        prop_assert_eq!(a, b);
    }
}

#[test]
fn endpoint_slices_do_not_shape_the_dataplane() {
    assert!(relevant("cluster/pods/a/b"));
    assert!(relevant("nodes/n1"));
    assert!(!relevant("cluster/endpointslices/shop/web-abc"));
    let mut s = Snapshot::default();
    let ev = Event::Put(KeyValue {
        key: "cluster/endpointslices/shop/web-abc".into(),
        value: br#"{"kind":"EndpointSlice"}"#.to_vec(),
        create_revision: 3,
        mod_revision: 3,
        lease: None,
    });
    assert!(!s.apply(&ev), "an EndpointSlice must not wake the agent");
    assert!(s.decode().errors.is_empty());
}
