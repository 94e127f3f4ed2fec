//! A realistic `kubectl get pods,namespaces,networkpolicies -A -o yaml` dump, alone and together
//! with the manifests it was created from.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use common::*;
use furynet_model::{load_paths, Peer, PolicyTypes, PortSpec, Protocol, NAMESPACE_NAME_LABEL};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn kubectl_dump_loads() {
    let l = load_paths(&[data("kubectl-get-pods-ns-netpol.yaml")]);
    assert_clean(&l);

    // Every pod but the Succeeded job pod.
    assert_eq!(
        pod_names(&l),
        vec![
            "default/db-0",
            "default/web-7c5ddbdf54-8xk2p",
            "default/web-7c5ddbdf54-qz9wn",
            "kube-system/coredns-5d78c9869d-2dxjv",
            "kube-system/etcd-kind-control-plane",
            "kube-system/kube-proxy-9xkfd",
        ]
    );
    let n = notes(&l);
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0].name.as_deref(), Some("pi-8r2kq"));
    assert_eq!(n[0].item, Some(1));

    let web = pod(&l, "default", "web-7c5ddbdf54-8xk2p");
    assert_eq!(web.ips, vec![ip("10.244.1.5"), ip("fd00:10:244:1::5")]);
    assert_eq!(web.labels["pod-template-hash"], "7c5ddbdf54");
    assert_eq!(web.named_port("http", Protocol::Tcp), Some(80));
    assert_eq!(web.node_name.as_deref(), Some("kind-worker"));
    assert!(!web.host_network);

    let dns = pod(&l, "kube-system", "coredns-5d78c9869d-2dxjv");
    assert_eq!(
        dns.declared_ports(),
        vec![
            (53, Protocol::Tcp),
            (53, Protocol::Udp),
            (9153, Protocol::Tcp)
        ]
    );
    for name in ["etcd-kind-control-plane", "kube-proxy-9xkfd"] {
        let p = pod(&l, "kube-system", name);
        assert!(p.host_network, "{name}");
        assert_eq!(p.ips, vec![ip("172.18.0.2")]);
    }

    // Namespaces, with their labels (the automatic one included).
    let names: Vec<&str> = l
        .cluster
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "default",
            "kube-node-lease",
            "kube-public",
            "kube-system",
            "monitoring"
        ]
    );
    let mon = l.cluster.namespace("monitoring").unwrap();
    assert_eq!(mon.labels["purpose"], "monitoring");
    assert_eq!(mon.labels[NAMESPACE_NAME_LABEL], "monitoring");

    // Policies.
    assert_eq!(l.cluster.policies.len(), 3);
    let allow = &l.cluster.policies[0];
    assert_eq!(allow.key(), "default/allow-web");
    assert_eq!(
        allow.policy_types,
        PolicyTypes {
            ingress: true,
            egress: false
        }
    );
    assert_eq!(allow.ingress[0].peers.len(), 2);
    assert_eq!(
        allow.ingress[0].ports[0].port,
        Some(PortSpec::Name("http".into()))
    );
    let db = &l.cluster.policies[1];
    assert_eq!(
        db.policy_types,
        PolicyTypes {
            ingress: true,
            egress: true
        }
    );
    assert_eq!(db.egress.len(), 2);
    match &db.egress[0].peers[0] {
        Peer::Selector {
            pod_selector: Some(p),
            namespace_selector: Some(ns),
        } => {
            assert_eq!(p.match_labels["k8s-app"], "kube-dns");
            assert_eq!(ns.match_labels[NAMESPACE_NAME_LABEL], "kube-system");
        }
        other => panic!("{other:?}"),
    }
    match &db.egress[1].peers[0] {
        Peer::IpBlock(b) => {
            assert!(b.contains(&ip("10.1.2.3")));
            assert!(!b.contains(&ip("10.244.1.5")));
        }
        other => panic!("{other:?}"),
    }
    let deny = &l.cluster.policies[2];
    assert_eq!(
        deny.policy_types,
        PolicyTypes {
            ingress: true,
            egress: true
        }
    );
    assert!(deny.ingress.is_empty() && deny.egress.is_empty());
}

#[test]
fn dump_plus_manifests_does_not_double_count_in_any_order() {
    let dump = data("kubectl-get-pods-ns-netpol.yaml");
    let manifests = data("app-manifests.yaml");
    let a = load_paths(&[dump.clone(), manifests.clone()]);
    let b = load_paths(&[manifests, dump]);
    assert_clean(&a);
    assert_clean(&b);
    let mut pa = pod_names(&a);
    let mut pb = pod_names(&b);
    pa.sort();
    pb.sort();
    assert_eq!(pa, pb);
    assert_eq!(pa.len(), 6, "only the real pods: {pa:#?}");
    // web, db, pi, kube-proxy, coredns: each "not expanded".
    for l in [&a, &b] {
        let not_expanded: Vec<&str> = notes(l)
            .iter()
            .filter(|d| d.message.starts_with("not expanded"))
            .filter_map(|d| d.name.as_deref())
            .collect();
        assert_eq!(
            not_expanded,
            vec!["web", "db", "pi", "kube-proxy", "coredns"]
        );
    }
}

#[test]
fn manifests_alone_are_expanded() {
    let l = load_paths(&[data("app-manifests.yaml")]);
    assert_clean(&l);
    let names = pod_names(&l);
    // web x2, db-0, pi x1, kube-proxy x1 (no Nodes in the input), coredns x2.
    assert_eq!(names.len(), 7, "{names:#?}");
    assert!(names.contains(&"default/db-0".to_string()));
    let proxy: Vec<_> = l
        .cluster
        .pods
        .iter()
        .filter(|p| p.name.starts_with("kube-proxy-"))
        .collect();
    assert_eq!(proxy.len(), 1);
    assert!(proxy[0].host_network);
    assert!(l.cluster.namespace("kube-system").is_some());
}
