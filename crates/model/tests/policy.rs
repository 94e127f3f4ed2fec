//! NetworkPolicy decoding: the API server's `policyTypes` defaulting, peers, ports.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use furynet_model::{
    IpBlock, LabelSelector, NetworkPolicy, Operator, Peer, PolicyPort, PolicyTypes, PortSpec,
    Protocol,
};

fn decode(spec: &str) -> NetworkPolicy {
    let l = load(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}\n"
    ));
    assert_clean(&l);
    assert_eq!(l.cluster.policies.len(), 1);
    l.cluster.policies[0].clone()
}

fn types(ingress: bool, egress: bool) -> PolicyTypes {
    PolicyTypes { ingress, egress }
}

#[test]
fn policy_types_default_like_the_api_server() {
    // Absent, with egress rules: both.
    let p = decode("  podSelector: {}\n  egress: [{}]");
    assert_eq!(p.policy_types, types(true, true));
    // Absent with `egress: []`: Ingress only.
    let p = decode("  podSelector: {}\n  egress: []");
    assert_eq!(p.policy_types, types(true, false));
    // Absent, nothing at all: Ingress only (default deny ingress).
    let p = decode("  podSelector: {}");
    assert_eq!(p.policy_types, types(true, false));
    // Empty list counts as absent.
    let p = decode("  podSelector: {}\n  policyTypes: []\n  egress: [{to: [{podSelector: {}}]}]");
    assert_eq!(p.policy_types, types(true, true));
    // Explicit types are taken as given.
    let p = decode("  podSelector: {}\n  policyTypes: [Egress]");
    assert_eq!(p.policy_types, types(false, true));
    let p = decode("  podSelector: {}\n  policyTypes: [Ingress]\n  egress: [{}]");
    assert_eq!(p.policy_types, types(true, false));
    assert_eq!(
        p.egress.len(),
        1,
        "rules are kept even when their type is off"
    );
    let p = decode("  podSelector: {}\n  policyTypes: [Egress, Ingress]");
    assert_eq!(p.policy_types, types(true, true));
}

#[test]
fn missing_pod_selector_selects_everything() {
    let p = decode("  ingress: []");
    assert_eq!(p.pod_selector, LabelSelector::everything());
    assert!(p.ingress.is_empty());
    let p = decode("  podSelector:\n    matchLabels: {app: web}\n    matchExpressions:\n    - {key: env, operator: NotIn, values: [test, dev, test]}");
    assert_eq!(p.pod_selector.match_labels["app"], "web");
    let r = &p.pod_selector.match_expressions[0];
    assert_eq!(r.operator, Operator::NotIn);
    assert_eq!(r.values.len(), 2);
}

#[test]
fn missing_and_empty_peers_and_ports_mean_all() {
    let p = decode(
        "  ingress:\n  - {}\n  - from: []\n    ports: []\n  - from: null\n  egress:\n  - {}\n  - to: []",
    );
    assert_eq!(p.ingress.len(), 3);
    assert!(p
        .ingress
        .iter()
        .all(|r| r.peers.is_empty() && r.ports.is_empty()));
    assert_eq!(p.egress.len(), 2);
    assert!(p.egress.iter().all(|r| r.peers.is_empty()));
}

#[test]
fn peers() {
    let p = decode(
        r#"  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {matchLabels: {team: a}}
    - namespaceSelector: {}
      podSelector: {matchLabels: {role: client}}
    - ipBlock: {cidr: 10.1.2.3/16, except: [10.1.200.7/24]}
    - ipBlock: {cidr: "fd00::/48"}"#,
    );
    let peers = &p.ingress[0].peers;
    assert_eq!(peers.len(), 5);
    let client = LabelSelector {
        match_labels: [("role".to_string(), "client".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(
        peers[0],
        Peer::Selector {
            pod_selector: Some(client.clone()),
            namespace_selector: None
        }
    );
    match &peers[1] {
        Peer::Selector {
            pod_selector: None,
            namespace_selector: Some(ns),
        } => assert_eq!(ns.match_labels["team"], "a"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        peers[2],
        Peer::Selector {
            pod_selector: Some(client),
            namespace_selector: Some(LabelSelector::everything())
        }
    );
    assert_eq!(
        peers[3],
        Peer::IpBlock(IpBlock {
            cidr: "10.1.0.0/16".parse().unwrap(),
            except: vec!["10.1.200.0/24".parse().unwrap()],
        })
    );
    match &peers[4] {
        Peer::IpBlock(b) => assert_eq!(b.cidr.to_string(), "fd00::/48"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ports() {
    let p = decode(
        r#"  egress:
  - ports:
    - port: 53
      protocol: UDP
    - port: dns-tcp
    - protocol: SCTP
    - port: 32000
      endPort: 32768
    - {}"#,
    );
    let port = |protocol, port: Option<PortSpec>, end_port| PolicyPort {
        protocol,
        port,
        end_port,
    };
    assert_eq!(
        p.egress[0].ports,
        vec![
            port(Protocol::Udp, Some(PortSpec::Number(53)), None),
            port(Protocol::Tcp, Some(PortSpec::Name("dns-tcp".into())), None),
            port(Protocol::Sctp, None, None),
            port(Protocol::Tcp, Some(PortSpec::Number(32000)), Some(32768)),
            port(Protocol::Tcp, None, None),
        ]
    );
    assert_eq!(
        p.policy_types,
        PolicyTypes {
            ingress: true,
            egress: true
        }
    );
}

#[test]
fn kubectl_style_json_policy() {
    let l = furynet_model::load_str(
        "np.json",
        r#"{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "NetworkPolicy",
  "metadata": {"name": "db", "namespace": "prod", "uid": "0b6c...", "resourceVersion": "42"},
  "spec": {
    "podSelector": {"matchLabels": {"app": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                 "ports": [{"protocol": "TCP", "port": 5432}]}],
    "egress": []
  }
}"#,
    );
    assert_clean(&l);
    let p = &l.cluster.policies[0];
    assert_eq!(p.key(), "prod/db");
    assert_eq!(
        p.policy_types,
        PolicyTypes {
            ingress: true,
            egress: true
        }
    );
    assert!(
        p.egress.is_empty(),
        "egress isolated with no rule: deny all"
    );
}
