//! Property test: on random small clusters, the indexed engine (`Engine::allowed` and every
//! `Engine::matrix()` cell) agrees with the direct reference implementation.
//!
//! The generators use small vocabularies (label keys and values, IPs, port names) on purpose, so
//! selectors, ipBlocks and named ports actually hit pods instead of matching nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use furynet_model::{
    Cluster, ContainerPort, Direction, IpBlock, LabelSelector, Labels, Namespace, NetworkPolicy,
    Operator, Peer, Pod, PolicyPort, PolicyRule, PolicyTypes, PortSpec, Protocol, Requirement,
    NAMESPACE_NAME_LABEL,
};
use furynet_policy::{reference, Engine};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::FileFailurePersistence;

const NAMESPACES: [&str; 4] = ["n0", "n1", "n2", "n3"];

/// Pod labels, and the `(key, value)` pool pod selectors draw from (plus a key no pod has).
const POD_LABELS: [(&str, &str); 7] = [
    ("app", "a"),
    ("app", "b"),
    ("app", "c"),
    ("tier", "a"),
    ("tier", "b"),
    ("env", "a"),
    ("env", "b"),
];
const POD_SELECTOR_TERMS: [(&str, &str); 8] = [
    ("app", "a"),
    ("app", "b"),
    ("app", "c"),
    ("tier", "a"),
    ("tier", "b"),
    ("env", "a"),
    ("env", "b"),
    ("missing", "a"),
];

/// Namespace labels (besides the automatic name label), and the namespace selector pool.
const NS_LABELS: [(&str, &str); 4] = [("env", "a"), ("env", "b"), ("team", "a"), ("team", "b")];
const NS_SELECTOR_TERMS: [(&str, &str); 9] = [
    ("env", "a"),
    ("env", "b"),
    ("team", "a"),
    ("team", "b"),
    (NAMESPACE_NAME_LABEL, "n0"),
    (NAMESPACE_NAME_LABEL, "n1"),
    (NAMESPACE_NAME_LABEL, "n2"),
    (NAMESPACE_NAME_LABEL, "n3"),
    ("missing", "a"),
];

const OPERATORS: [Operator; 4] = [
    Operator::In,
    Operator::NotIn,
    Operator::Exists,
    Operator::DoesNotExist,
];
const PORT_NAMES: [Option<&str>; 4] = [None, Some("http"), Some("http"), Some("dns")];
/// TCP is the common case; UDP and SCTP still come up often.
const PROTOCOLS: [Protocol; 4] = [Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
const CONTAINER_PORTS: [u16; 5] = [53, 80, 81, 443, 8080];

/// `(cidr, candidate excepts)`; every except is a strict subset of its cidr, as validation
/// guarantees. Pod IPs are 10.0.{0..3}.{0..7} and fd00::{0..3}:{0..7}.
const BLOCKS: [(&str, &[&str]); 9] = [
    (
        "10.0.0.0/16",
        &["10.0.1.0/24", "10.0.2.0/29", "10.0.0.3/32"],
    ),
    ("10.0.0.0/8", &["10.0.0.0/16", "10.0.3.0/24"]),
    ("0.0.0.0/0", &["10.0.0.0/24", "10.0.2.4/32"]),
    ("10.0.1.0/24", &["10.0.1.4/30"]),
    ("10.0.2.5/32", &[]),
    ("fd00::/16", &["fd00::1:0/112", "fd00::2:3/128"]),
    ("::/0", &["fd00::/112"]),
    ("fd00::3:0/112", &["fd00::3:4/126"]),
    ("192.168.0.0/16", &[]),
];

/// Ports checked for every pair besides the destination's declared ports.
const EXTRA_PORTS: [(u16, Protocol); 5] = [
    (80, Protocol::Tcp),
    (81, Protocol::Udp),
    (53, Protocol::Udp),
    (8081, Protocol::Tcp),
    (9999, Protocol::Sctp),
];

fn to_labels(pairs: Vec<(&str, &str)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn requirement(
    terms: &'static [(&'static str, &'static str)],
) -> impl Strategy<Value = Requirement> {
    (
        select(terms),
        select(terms),
        any::<bool>(),
        select(&OPERATORS[..]),
    )
        .prop_map(|((key, v1), (_, v2), two, operator)| {
            let values = match operator {
                Operator::In | Operator::NotIn => {
                    let mut values = vec![v1.to_string()];
                    if two {
                        values.push(v2.to_string());
                    }
                    values.into_iter().collect()
                }
                Operator::Exists | Operator::DoesNotExist => Default::default(),
            };
            Requirement {
                key: key.to_string(),
                operator,
                values,
            }
        })
}

fn selector(
    terms: &'static [(&'static str, &'static str)],
) -> impl Strategy<Value = LabelSelector> {
    (vec(select(terms), 0..=2), vec(requirement(terms), 0..=2)).prop_map(
        |(labels, match_expressions)| LabelSelector {
            match_labels: to_labels(labels),
            match_expressions,
        },
    )
}

fn ip() -> impl Strategy<Value = Vec<IpAddr>> {
    let v4 = (0u8..4, 0u8..8).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(10, 0, a, b)));
    let v6 = (0u16..4, 0u16..8)
        .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, a, b)));
    prop_oneof![
        1 => Just(Vec::new()),
        3 => v4.clone().prop_map(|a| vec![a]),
        1 => v6.clone().prop_map(|a| vec![a]),
        1 => (v4, v6).prop_map(|(a, b)| vec![a, b]),
    ]
}

fn container_port() -> impl Strategy<Value = ContainerPort> {
    (
        select(&PORT_NAMES[..]),
        select(&CONTAINER_PORTS[..]),
        select(&PROTOCOLS[..]),
    )
        .prop_map(|(name, port, protocol)| ContainerPort {
            name: name.map(str::to_string),
            port,
            protocol,
        })
}

/// A pod without namespace and name (assigned by the cluster strategy).
fn pod() -> impl Strategy<Value = (usize, Pod)> {
    (
        0usize..4,
        vec(select(&POD_LABELS[..]), 0..=3),
        ip(),
        vec(container_port(), 0..=4),
        prop::bool::weighted(0.12),
    )
        .prop_map(|(ns, labels, ips, ports, host_network)| {
            (
                ns,
                Pod {
                    namespace: String::new(),
                    name: String::new(),
                    labels: to_labels(labels),
                    ips,
                    ports,
                    node_name: None,
                    host_network,
                },
            )
        })
}

fn ip_block() -> impl Strategy<Value = IpBlock> {
    select(&BLOCKS[..]).prop_flat_map(|(cidr, excepts)| {
        subsequence(excepts.to_vec(), 0..=excepts.len()).prop_map(move |except| IpBlock {
            cidr: cidr.parse().unwrap(),
            except: except.iter().map(|e| e.parse().unwrap()).collect(),
        })
    })
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        selector(&POD_SELECTOR_TERMS).prop_map(|s| Peer::Selector {
            pod_selector: Some(s),
            namespace_selector: None,
        }),
        selector(&NS_SELECTOR_TERMS).prop_map(|s| Peer::Selector {
            pod_selector: None,
            namespace_selector: Some(s),
        }),
        (selector(&POD_SELECTOR_TERMS), selector(&NS_SELECTOR_TERMS)).prop_map(|(p, n)| {
            Peer::Selector {
                pod_selector: Some(p),
                namespace_selector: Some(n),
            }
        }),
        ip_block().prop_map(Peer::IpBlock),
    ]
}

fn policy_port() -> impl Strategy<Value = PolicyPort> {
    let protocol = || select(&PROTOCOLS[..]);
    prop_oneof![
        1 => protocol().prop_map(|protocol| PolicyPort {
            protocol,
            port: None,
            end_port: None,
        }),
        2 => (protocol(), select(&[53u16, 79, 80, 81, 443, 8080][..])).prop_map(|(protocol, p)| {
            PolicyPort {
                protocol,
                port: Some(PortSpec::Number(p)),
                end_port: None,
            }
        }),
        2 => (
            protocol(),
            select(&[53u16, 79, 80, 443, 8080][..]),
            select(&[0u16, 1, 2, 400][..])
        )
            .prop_map(|(protocol, p, len)| PolicyPort {
                protocol,
                port: Some(PortSpec::Number(p)),
                end_port: Some(p + len),
            }),
        3 => (protocol(), select(&["http", "http", "dns", "nope"][..])).prop_map(|(protocol, name)| {
            PolicyPort {
                protocol,
                port: Some(PortSpec::Name(name.to_string())),
                end_port: None,
            }
        }),
    ]
}

fn policy_rule() -> impl Strategy<Value = PolicyRule> {
    (vec(peer(), 0..=3), vec(policy_port(), 0..=3))
        .prop_map(|(peers, ports)| PolicyRule { peers, ports })
}

fn policy() -> impl Strategy<Value = (usize, NetworkPolicy)> {
    let types = select(
        &[
            PolicyTypes {
                ingress: true,
                egress: false,
            },
            PolicyTypes {
                ingress: false,
                egress: true,
            },
            PolicyTypes {
                ingress: true,
                egress: true,
            },
        ][..],
    );
    (
        0usize..4,
        selector(&POD_SELECTOR_TERMS),
        types,
        vec(policy_rule(), 0..=3),
        vec(policy_rule(), 0..=3),
    )
        .prop_map(|(ns, pod_selector, policy_types, ingress, egress)| {
            (
                ns,
                NetworkPolicy {
                    namespace: String::new(),
                    name: String::new(),
                    pod_selector,
                    ingress,
                    egress,
                    policy_types,
                },
            )
        })
}

fn cluster() -> impl Strategy<Value = Cluster> {
    sized_cluster(2..=10, 0..=6)
}

fn sized_cluster(
    pods: std::ops::RangeInclusive<usize>,
    policies: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Cluster> {
    (
        // Namespaces: labels, and whether the input defines the namespace at all.
        vec(
            (
                vec(select(&NS_LABELS[..]), 0..=2),
                prop::bool::weighted(0.85),
            ),
            2..=4,
        ),
        vec(pod(), pods),
        vec(policy(), policies),
    )
        .prop_map(|(namespaces, pods, policies)| {
            let n = namespaces.len();
            let mut cluster = Cluster::default();
            for (i, (labels, defined)) in namespaces.into_iter().enumerate() {
                if defined {
                    cluster
                        .namespaces
                        .push(Namespace::new(NAMESPACES[i], to_labels(labels)));
                }
            }
            for (i, (ns, mut pod)) in pods.into_iter().enumerate() {
                pod.namespace = NAMESPACES[ns % n].to_string();
                pod.name = format!("p{i}");
                cluster.pods.push(pod);
            }
            for (i, (ns, mut policy)) in policies.into_iter().enumerate() {
                policy.namespace = NAMESPACES[ns % n].to_string();
                policy.name = format!("np{i}");
                cluster.policies.push(policy);
            }
            cluster
        })
}

/// Checks every pair and port of interest, and every matrix cell, against the reference.
fn check(cluster: &Cluster) -> Result<(), TestCaseError> {
    let engine = Engine::new(cluster);
    for src in &cluster.pods {
        let s = engine.find(&src.namespace, &src.name).unwrap();
        for direction in [Direction::Ingress, Direction::Egress] {
            prop_assert_eq!(
                !engine.isolating_policies(s, direction).is_empty(),
                reference::is_isolated(cluster, src, direction),
                "isolation of {} for {:?}",
                src.key(),
                direction
            );
        }
        for dst in &cluster.pods {
            let d = engine.find(&dst.namespace, &dst.name).unwrap();
            let mut ports = dst.declared_ports();
            ports.extend(EXTRA_PORTS);
            for (port, protocol) in ports {
                let expected = reference::allowed(cluster, src, dst, port, protocol);
                prop_assert_eq!(
                    engine.allowed(s, d, port, protocol),
                    expected,
                    "Engine::allowed {} -> {} on {}/{}",
                    src.key(),
                    dst.key(),
                    port,
                    protocol
                );
                let why = engine.explain(s, d, port, protocol).unwrap();
                prop_assert_eq!(why.allowed, expected, "Engine::explain {:?}", why);
            }
        }
    }
    let pods = engine.pods();
    let matrix = engine.matrix();
    for cell in matrix.entries() {
        let (src, dst) = (&pods[cell.src], &pods[cell.dst]);
        prop_assert_eq!(
            cell.allowed,
            reference::allowed(cluster, src, dst, cell.port, cell.protocol),
            "matrix cell {} -> {} on {}/{}",
            src.key(),
            dst.key(),
            cell.port,
            cell.protocol
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest_engine.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_reference(cluster in cluster()) {
        check(&cluster)?;
    }
}

proptest! {
    // Fewer, larger clusters: bitsets spanning several 64-bit words, many pods per identity.
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest_engine.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_reference_on_larger_clusters(cluster in sized_cluster(60..=150, 4..=12)) {
        check(&cluster)?;
    }
}

/// Guards against a vacuous property: over a fixed sample of generated clusters, both verdicts
/// are common and every kind of peer and port actually admits connections.
#[test]
fn generators_exercise_every_feature() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;

    let mut runner = TestRunner::deterministic();
    let strategy = cluster();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..300 {
        let cluster = strategy.new_tree(&mut runner).unwrap().current();
        let engine = Engine::new(&cluster);
        for (s, src) in engine.pods().iter().enumerate() {
            for (d, dst) in engine.pods().iter().enumerate() {
                if s == d {
                    continue;
                }
                let mut ports = dst.declared_ports();
                ports.extend(EXTRA_PORTS);
                for (port, protocol) in ports {
                    let why = engine.explain(s, d, port, protocol).unwrap();
                    *seen
                        .entry(if why.allowed { "allowed" } else { "denied" })
                        .or_default() += 1;
                    if src.host_network || dst.host_network {
                        *seen
                            .entry(if why.allowed {
                                "host allowed"
                            } else {
                                "host denied"
                            })
                            .or_default() += 1;
                    }
                    for side in [&why.ingress, &why.egress] {
                        if !side.isolated_by.is_empty() {
                            *seen
                                .entry(if side.allowed {
                                    "isolated allowed"
                                } else {
                                    "isolated denied"
                                })
                                .or_default() += 1;
                        }
                    }
                    for r in why.ingress.allowed_by.iter().chain(&why.egress.allowed_by) {
                        let policy = cluster
                            .policies
                            .iter()
                            .find(|p| p.key() == r.policy)
                            .unwrap();
                        let rule = &policy.rules(r.direction)[r.rule];
                        let only = |f: &dyn Fn(&Peer) -> bool| {
                            !rule.peers.is_empty() && rule.peers.iter().all(f)
                        };
                        let only_ports = |f: &dyn Fn(&PolicyPort) -> bool| {
                            !rule.ports.is_empty() && rule.ports.iter().all(f)
                        };
                        let mut hit = |k| *seen.entry(k).or_default() += 1;
                        if only(&|p| matches!(p, Peer::IpBlock(b) if !b.except.is_empty())) {
                            hit("ipBlock with except");
                        }
                        if only(&|p| matches!(p, Peer::IpBlock(b) if b.cidr.addr().is_ipv6())) {
                            hit("ipBlock v6");
                        }
                        if only(&|p| {
                            matches!(
                                p,
                                Peer::Selector {
                                    pod_selector: Some(_),
                                    namespace_selector: None
                                }
                            )
                        }) {
                            hit("podSelector peer");
                        }
                        if only(&|p| {
                            matches!(
                                p,
                                Peer::Selector {
                                    pod_selector: None,
                                    namespace_selector: Some(_)
                                }
                            )
                        }) {
                            hit("namespaceSelector peer");
                        }
                        if only(&|p| {
                            matches!(
                                p,
                                Peer::Selector {
                                    pod_selector: Some(_),
                                    namespace_selector: Some(_)
                                }
                            )
                        }) {
                            hit("both selectors peer");
                        }
                        if only_ports(&|p| matches!(p.port, Some(PortSpec::Name(_)))) {
                            hit("named port");
                        }
                        if only_ports(
                            &|p| matches!((&p.port, p.end_port), (Some(PortSpec::Number(a)), Some(b)) if b > *a),
                        ) {
                            hit("endPort range");
                        }
                        if only_ports(&|p| p.port.is_none()) {
                            hit("protocol only");
                        }
                        if rule.peers.is_empty() && rule.ports.is_empty() {
                            hit("empty rule");
                        }
                    }
                }
            }
        }
    }
    println!("{seen:#?}");
    let total = seen["allowed"] + seen["denied"];
    for (what, min) in [
        ("allowed", total / 10),
        ("denied", total / 10),
        ("host allowed", 20),
        ("host denied", 20),
        ("isolated allowed", 100),
        ("isolated denied", 100),
        ("ipBlock with except", 20),
        ("ipBlock v6", 20),
        ("podSelector peer", 20),
        ("namespaceSelector peer", 20),
        ("both selectors peer", 20),
        ("named port", 20),
        ("endPort range", 20),
        ("protocol only", 20),
        ("empty rule", 20),
    ] {
        let got = seen.get(what).copied().unwrap_or(0);
        assert!(
            got >= min,
            "only {got} cases of {what:?} (want {min}): {seen:#?}"
        );
    }
}
