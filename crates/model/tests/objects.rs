//! The network fields of Pods, Nodes and Services.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::*;
use furynet_model::{ContainerPort, PortSpec, Protocol, ServicePort};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn pods_decode_every_network_field() {
    let l = load(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: fe}
spec:
  nodeName: node-1
  initContainers:
  - name: setup
    ports: [{containerPort: 9999}]
  - name: proxy
    restartPolicy: Always
    ports: [{name: admin, containerPort: 15000}]
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 53, protocol: UDP}
  - name: metrics
    ports: [{name: metrics, containerPort: 9090, protocol: SCTP}]
status:
  phase: Running
  podIP: 10.0.0.9
  podIPs: [{ip: 10.0.0.9}, {ip: "fd00::9"}]
"#,
    );
    assert_clean(&l);
    let p = pod(&l, "shop", "web");
    assert_eq!(p.labels.len(), 2);
    assert_eq!(p.node_name.as_deref(), Some("node-1"));
    assert!(!p.host_network);
    assert_eq!(p.ips, vec![ip("10.0.0.9"), ip("fd00::9")]);
    let cp = |name: Option<&str>, port, protocol| ContainerPort {
        name: name.map(String::from),
        port,
        protocol,
    };
    assert_eq!(
        p.ports,
        vec![
            cp(Some("http"), 8080, Protocol::Tcp),
            cp(None, 53, Protocol::Udp),
            cp(Some("metrics"), 9090, Protocol::Sctp),
            // The sidecar's port; the ordinary init container's 9999 is not served.
            cp(Some("admin"), 15000, Protocol::Tcp),
        ]
    );
}

#[test]
fn pod_ip_fallback_and_host_network() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: kube-system}\nspec: {hostNetwork: true}\nstatus: {podIP: 192.168.1.10}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: pending}\nstatus: {phase: Pending}\n");
    assert_clean(&l);
    let a = pod(&l, "kube-system", "a");
    assert!(a.host_network);
    assert_eq!(a.ips, vec![ip("192.168.1.10")]);
    assert!(pod(&l, "default", "pending").ips.is_empty());
}

#[test]
fn finished_pods_are_skipped_with_a_note() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nstatus: {phase: Succeeded, podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: crashed}\nstatus: {phase: Failed}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: running}\nstatus: {phase: Running}\n");
    assert_clean(&l);
    assert_eq!(pod_names(&l), vec!["default/running"]);
    let n = notes(&l);
    assert_eq!(n.len(), 2);
    assert_eq!(
        n[0].message,
        "skipped: pod phase is Succeeded, so it has no network"
    );
    assert_eq!(n[1].name.as_deref(), Some("crashed"));
}

#[test]
fn nodes() {
    let l = load(
        r#"
apiVersion: v1
kind: Node
metadata:
  name: worker-1
  namespace: ignored-for-cluster-scoped
  labels: {kubernetes.io/hostname: worker-1, topology.kubernetes.io/zone: a}
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.7/24, "fd00:1::/64"]
status:
  addresses:
  - {type: InternalIP, address: 172.18.0.3}
  - {type: ExternalIP, address: "2001:db8::3"}
  - {type: Hostname, address: worker-1}
---
apiVersion: v1
kind: Node
metadata: {name: worker-2}
spec: {podCIDR: 10.244.2.0/24}
"#,
    );
    assert_clean(&l);
    let n = &l.cluster.nodes[0];
    assert_eq!(n.name, "worker-1");
    assert_eq!(n.labels.len(), 2);
    assert_eq!(n.addresses, vec![ip("172.18.0.3"), ip("2001:db8::3")]);
    let cidrs: Vec<String> = n.pod_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(cidrs, vec!["10.244.1.0/24", "fd00:1::/64"]);
    assert_eq!(l.cluster.nodes[1].pod_cidrs[0].to_string(), "10.244.2.0/24");
}

#[test]
fn services() {
    let l = load(
        r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::a"]
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
  - {name: plain, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: shop}
spec:
  ports: [{port: 443}]
"#,
    );
    assert_clean(&l);
    let web = &l.cluster.services[0];
    assert_eq!(
        web.selector.as_ref().map(|s| s["app"].as_str()),
        Some("web")
    );
    assert_eq!(web.cluster_ips, vec![ip("10.96.0.10"), ip("fd00:96::a")]);
    assert_eq!(
        web.ports,
        vec![
            ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Protocol::Tcp,
                target_port: Some(PortSpec::Name("http".into())),
            },
            ServicePort {
                name: Some("dns".into()),
                port: 53,
                protocol: Protocol::Udp,
                target_port: Some(PortSpec::Number(5353)),
            },
            ServicePort {
                name: Some("plain".into()),
                port: 8080,
                protocol: Protocol::Tcp,
                // Defaulted to `port`, as the API server does.
                target_port: Some(PortSpec::Number(8080)),
            },
        ]
    );
    let db = &l.cluster.services[1];
    assert!(db.cluster_ips.is_empty(), "headless");
    assert_eq!(db.ports[0].name, None);
    assert_eq!(l.cluster.services[2].selector, None);
}
