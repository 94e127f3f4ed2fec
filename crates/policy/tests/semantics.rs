//! One test per NetworkPolicy rule. Every verdict is asserted on both the engine
//! (`Engine::allowed`) and the reference implementation, and every `World` also checks all pairs,
//! `Engine::explain` and `Engine::matrix()` against them (see `common::World`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use furynet_model::{Direction, Operator, NAMESPACE_NAME_LABEL};
use furynet_policy::RuleRef;

/// Two namespaces with three pods each, every pod serving 80/TCP, 81/TCP, 53/UDP and 80/SCTP.
fn two_namespaces(policies: Vec<furynet_model::NetworkPolicy>) -> World {
    let mut pods = Vec::new();
    for (n, namespace) in ["x", "y"].iter().enumerate() {
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            pods.push(
                pod(namespace, name, &[("app", name)])
                    .ip(&format!("10.0.{n}.{}", i + 1))
                    .port(80, TCP)
                    .port(81, TCP)
                    .port(53, UDP)
                    .port(80, SCTP),
            );
        }
    }
    World::new(cluster(
        vec![ns("x", &[("team", "blue")]), ns("y", &[("team", "red")])],
        pods,
        policies,
    ))
}

fn everyone() -> Vec<&'static str> {
    vec!["x/a", "x/b", "x/c", "y/a", "y/b", "y/c"]
}

// --- isolation -------------------------------------------------------------------------------

#[test]
fn without_policies_everything_is_allowed() {
    let w = two_namespaces(vec![]);
    for src in everyone() {
        for dst in everyone() {
            for (port, protocol) in PROBE_PORTS {
                w.allow(src, dst, port, protocol);
            }
        }
    }
}

#[test]
fn ingress_isolation_applies_only_to_selected_pods() {
    let w = two_namespaces(vec![
        policy("x", "deny-b", sel(&[("app", "b")])).ingress(vec![])
    ]);
    for src in everyone() {
        if src != "x/b" {
            w.deny(src, "x/b", 80, TCP);
            w.deny(src, "x/b", 53, UDP);
        }
        w.allow(src, "x/a", 80, TCP);
        w.allow(src, "y/b", 80, TCP);
    }
    // x/b is isolated for ingress only: it may still send.
    w.allow("x/b", "x/a", 80, TCP);
    w.allow("x/b", "y/c", 81, TCP);
}

#[test]
fn egress_isolation_applies_only_to_selected_pods() {
    let w = two_namespaces(vec![
        policy("x", "deny-out-a", sel(&[("app", "a")])).egress(vec![])
    ]);
    for dst in everyone() {
        if dst != "x/a" {
            w.deny("x/a", dst, 80, TCP);
            w.deny("x/a", dst, 80, SCTP);
        }
        w.allow("x/b", dst, 80, TCP);
        w.allow("y/a", dst, 80, TCP);
    }
    // x/a is isolated for egress only: it may still receive.
    w.allow("y/c", "x/a", 80, TCP);
}

#[test]
fn egress_only_policy_does_not_isolate_ingress_even_with_ingress_rules() {
    // policyTypes: [Egress] with an ingress list that would deny everything if it counted.
    let mut p = policy("x", "egress-only", all()).egress(vec![any_rule()]);
    p.ingress = vec![rule(vec![pods(sel(&[("app", "nobody")]))], vec![])];
    let w = two_namespaces(vec![p]);
    w.allow("y/a", "x/a", 80, TCP);
    w.allow("x/b", "x/a", 81, TCP);
    w.allow("x/a", "y/a", 53, UDP);
}

#[test]
fn ingress_only_policy_does_not_isolate_egress_even_with_egress_rules() {
    // policyTypes: [Ingress] with an egress list that would deny everything if it counted.
    let mut p = policy("x", "ingress-only", all()).ingress(vec![any_rule()]);
    p.egress = vec![rule(vec![pods(sel(&[("app", "nobody")]))], vec![])];
    let w = two_namespaces(vec![p]);
    w.allow("x/a", "y/a", 80, TCP);
    w.allow("x/a", "x/b", 80, TCP);
}

#[test]
fn policy_types_without_rules_deny_that_direction() {
    // policyTypes: [Ingress, Egress], no rules at all: deny everything in and out of x.
    let w = two_namespaces(vec![policy("x", "deny-all", all()).types(true, true)]);
    w.deny("x/a", "x/b", 80, TCP);
    w.deny("x/a", "y/a", 80, TCP);
    w.deny("y/a", "x/a", 80, TCP);
    w.allow("y/a", "y/b", 80, TCP);
}

#[test]
fn policies_are_a_union() {
    let w = two_namespaces(vec![
        policy("x", "from-b-on-80", sel(&[("app", "a")])).ingress(vec![rule(
            vec![pods(sel(&[("app", "b")]))],
            vec![num(80, TCP)],
        )]),
        policy("x", "from-c-on-81", sel(&[("app", "a")])).ingress(vec![rule(
            vec![pods(sel(&[("app", "c")]))],
            vec![num(81, TCP)],
        )]),
    ]);
    w.allow("x/b", "x/a", 80, TCP);
    w.deny("x/b", "x/a", 81, TCP);
    w.allow("x/c", "x/a", 81, TCP);
    w.deny("x/c", "x/a", 80, TCP);
    w.deny("y/b", "x/a", 80, TCP);
}

#[test]
fn rules_of_one_policy_are_a_union() {
    let w = two_namespaces(vec![policy("x", "two-rules", sel(&[("app", "a")]))
        .ingress(vec![
            rule(vec![pods(sel(&[("app", "b")]))], vec![num(80, TCP)]),
            rule(vec![pods(sel(&[("app", "c")]))], vec![num(81, TCP)]),
        ])]);
    w.allow("x/b", "x/a", 80, TCP);
    w.deny("x/b", "x/a", 81, TCP);
    w.allow("x/c", "x/a", 81, TCP);
    w.deny("x/c", "x/a", 80, TCP);
}

#[test]
fn a_permissive_policy_beside_a_deny_all_wins() {
    let w = two_namespaces(vec![
        policy("x", "deny-all", all()).ingress(vec![]),
        policy("x", "allow-a", sel(&[("app", "a")])).ingress(vec![any_rule()]),
    ]);
    w.allow("y/c", "x/a", 80, TCP);
    w.deny("y/c", "x/b", 80, TCP);
}

#[test]
fn both_egress_of_source_and_ingress_of_destination_are_needed() {
    // x/a may only send to y/a; y/a and y/b accept only from x/b.
    let w = two_namespaces(vec![
        policy("x", "a-to-ya", sel(&[("app", "a")])).egress(vec![rule(
            vec![pods_in(
                sel(&[(NAMESPACE_NAME_LABEL, "y")]),
                sel(&[("app", "a")]),
            )],
            vec![],
        )]),
        policy(
            "y",
            "from-xb",
            exprs(vec![req("app", Operator::In, &["a", "b"])]),
        )
        .ingress(vec![rule(
            vec![pods_in(sel(&[("team", "blue")]), sel(&[("app", "b")]))],
            vec![],
        )]),
    ]);
    w.deny("x/a", "y/a", 80, TCP); // egress yes, ingress no
    w.deny("x/a", "y/c", 80, TCP); // egress no, ingress (not isolated) yes
    w.allow("x/b", "y/a", 80, TCP); // egress not isolated, ingress yes
    w.allow("x/b", "y/b", 80, TCP);
    w.deny("x/c", "y/b", 80, TCP);
    w.allow("x/c", "y/c", 80, TCP);
}

// --- empty peers / ports -----------------------------------------------------------------------

#[test]
fn empty_peers_admit_any_peer() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "a", &[("app", "a")]).port(80, TCP),
            pod("y", "b", &[]).port(80, TCP),
            pod("x", "node-agent", &[]).host_network().ip("172.16.0.1"),
            pod("z", "c", &[]),
        ],
        vec![policy("x", "any-peer-on-80", sel(&[("app", "a")]))
            .ingress(vec![rule(vec![], vec![num(80, TCP)])])],
    ));
    w.allow("y/b", "x/a", 80, TCP);
    w.allow("z/c", "x/a", 80, TCP);
    w.allow("x/node-agent", "x/a", 80, TCP);
    w.deny("y/b", "x/a", 81, TCP);
}

#[test]
fn empty_ports_admit_any_port_and_protocol() {
    let w = two_namespaces(vec![policy("x", "from-b", sel(&[("app", "a")]))
        .ingress(vec![rule(vec![pods(sel(&[("app", "b")]))], vec![])])]);
    for (port, protocol) in PROBE_PORTS {
        w.allow("x/b", "x/a", port, protocol);
        w.deny("x/c", "x/a", port, protocol);
    }
    w.allow("x/b", "x/a", 65535, UDP);
    w.allow("x/b", "x/a", 1, SCTP);
}

#[test]
fn empty_rule_admits_everything_but_empty_rule_list_admits_nothing() {
    let w = two_namespaces(vec![
        policy("x", "allow-all-to-a", sel(&[("app", "a")])).ingress(vec![any_rule()]),
        policy("x", "deny-all-to-b", sel(&[("app", "b")])).ingress(vec![]),
        policy("y", "allow-all-from-a", sel(&[("app", "a")])).egress(vec![any_rule()]),
        policy("y", "deny-all-from-b", sel(&[("app", "b")])).egress(vec![]),
    ]);
    w.allow("y/c", "x/a", 80, TCP);
    w.allow("y/c", "x/a", 9999, SCTP);
    w.deny("y/c", "x/b", 80, TCP);
    w.deny("x/c", "x/b", 53, UDP);
    w.allow("y/a", "x/c", 81, TCP);
    w.deny("y/b", "x/c", 81, TCP);
    w.deny("y/b", "y/c", 81, TCP);
}

// --- peers -------------------------------------------------------------------------------------

#[test]
fn pod_selector_peer_is_scoped_to_the_policy_namespace() {
    let w = two_namespaces(vec![policy("x", "from-b", sel(&[("app", "a")]))
        .ingress(vec![rule(vec![pods(sel(&[("app", "b")]))], vec![])])]);
    w.allow("x/b", "x/a", 80, TCP);
    w.deny("y/b", "x/a", 80, TCP); // same labels, other namespace
}

#[test]
fn empty_pod_selector_peer_means_every_pod_of_the_policy_namespace() {
    let w = two_namespaces(vec![
        policy("x", "same-ns", all()).ingress(vec![rule(vec![pods(all())], vec![])])
    ]);
    w.allow("x/b", "x/a", 80, TCP);
    w.allow("x/a", "x/c", 53, UDP);
    w.deny("y/a", "x/a", 80, TCP);
}

#[test]
fn namespace_selector_peer_means_every_pod_of_matching_namespaces() {
    let w = two_namespaces(vec![policy("x", "from-red", sel(&[("app", "a")])).ingress(
        vec![rule(vec![namespaces(sel(&[("team", "red")]))], vec![])],
    )]);
    for src in ["y/a", "y/b", "y/c"] {
        w.allow(src, "x/a", 80, TCP);
    }
    // The policy's own namespace is not included unless it matches.
    w.deny("x/b", "x/a", 80, TCP);
}

#[test]
fn empty_namespace_selector_means_every_namespace_including_undefined_ones() {
    let w = World::new(cluster(
        vec![ns("x", &[])],
        vec![
            pod("x", "a", &[("app", "a")]).port(80, TCP),
            pod("x", "b", &[]),
            pod("ghost", "c", &[]), // namespace "ghost" is not defined
        ],
        vec![policy("x", "from-all-ns", sel(&[("app", "a")]))
            .ingress(vec![rule(vec![namespaces(all())], vec![])])],
    ));
    w.allow("x/b", "x/a", 80, TCP);
    w.allow("ghost/c", "x/a", 80, TCP);
}

#[test]
fn pod_and_namespace_selector_in_one_peer_are_anded() {
    let w = two_namespaces(vec![policy("x", "and", sel(&[("app", "a")])).ingress(
        vec![rule(
            vec![pods_in(sel(&[("team", "red")]), sel(&[("app", "b")]))],
            vec![],
        )],
    )]);
    w.allow("y/b", "x/a", 80, TCP);
    w.deny("y/c", "x/a", 80, TCP); // namespace matches, pod does not
    w.deny("x/b", "x/a", 80, TCP); // pod matches, namespace does not
}

#[test]
fn separate_pod_and_namespace_peers_are_ored() {
    let w = two_namespaces(vec![policy("x", "or", sel(&[("app", "a")])).ingress(vec![
        rule(
            vec![
                namespaces(sel(&[("team", "red")])),
                pods(sel(&[("app", "b")])),
            ],
            vec![],
        ),
    ])]);
    w.allow("y/b", "x/a", 80, TCP);
    w.allow("y/c", "x/a", 80, TCP);
    w.allow("x/b", "x/a", 80, TCP);
    w.deny("x/c", "x/a", 80, TCP);
}

#[test]
fn match_expressions_in_and_not_in() {
    let pods_ = vec![
        pod("x", "target", &[("role", "db")]).port(80, TCP),
        pod("x", "prod", &[("env", "prod")]),
        pod("x", "dev", &[("env", "dev")]),
        pod("x", "test", &[("env", "test")]),
        pod("x", "none", &[]),
    ];
    let w = World::new(cluster(
        vec![ns("x", &[])],
        pods_.clone(),
        vec![policy("x", "in", sel(&[("role", "db")])).ingress(vec![rule(
            vec![pods(exprs(vec![req(
                "env",
                Operator::In,
                &["prod", "dev"],
            )]))],
            vec![],
        )])],
    ));
    w.allow("x/prod", "x/target", 80, TCP);
    w.allow("x/dev", "x/target", 80, TCP);
    w.deny("x/test", "x/target", 80, TCP);
    w.deny("x/none", "x/target", 80, TCP); // In needs the key

    let w = World::new(cluster(
        vec![ns("x", &[])],
        pods_,
        vec![
            policy("x", "not-in", sel(&[("role", "db")])).ingress(vec![rule(
                vec![pods(exprs(vec![req(
                    "env",
                    Operator::NotIn,
                    &["prod", "dev"],
                )]))],
                vec![],
            )]),
        ],
    ));
    w.deny("x/prod", "x/target", 80, TCP);
    w.deny("x/dev", "x/target", 80, TCP);
    w.allow("x/test", "x/target", 80, TCP);
    w.allow("x/none", "x/target", 80, TCP); // NotIn matches an absent key
}

#[test]
fn match_expressions_exists_and_does_not_exist() {
    let pods_ = vec![
        pod("x", "target", &[("role", "db")]).port(80, TCP),
        pod("x", "tagged", &[("audited", "")]),
        pod("x", "other", &[("audited", "yes")]),
        pod("x", "plain", &[("app", "web")]),
    ];
    let w = World::new(cluster(
        vec![],
        pods_.clone(),
        vec![
            policy("x", "exists", sel(&[("role", "db")])).ingress(vec![rule(
                vec![pods(exprs(vec![req("audited", Operator::Exists, &[])]))],
                vec![],
            )]),
        ],
    ));
    w.allow("x/tagged", "x/target", 80, TCP);
    w.allow("x/other", "x/target", 80, TCP);
    w.deny("x/plain", "x/target", 80, TCP);

    let w = World::new(cluster(
        vec![],
        pods_,
        vec![
            policy("x", "does-not-exist", sel(&[("role", "db")])).ingress(vec![rule(
                vec![pods(exprs(vec![req(
                    "audited",
                    Operator::DoesNotExist,
                    &[],
                )]))],
                vec![],
            )]),
        ],
    ));
    w.deny("x/tagged", "x/target", 80, TCP);
    w.deny("x/other", "x/target", 80, TCP);
    w.allow("x/plain", "x/target", 80, TCP);
}

#[test]
fn match_labels_and_expressions_are_anded_in_policy_pod_selector() {
    let target = furynet_model::LabelSelector {
        match_labels: labels(&[("app", "db")]),
        match_expressions: vec![
            req("env", Operator::NotIn, &["test"]),
            req("legacy", Operator::DoesNotExist, &[]),
        ],
    };
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "db-prod", &[("app", "db"), ("env", "prod")]).port(80, TCP),
            pod("x", "db-nolabel", &[("app", "db")]).port(80, TCP),
            pod("x", "db-test", &[("app", "db"), ("env", "test")]).port(80, TCP),
            pod("x", "db-legacy", &[("app", "db"), ("legacy", "1")]).port(80, TCP),
            pod("x", "client", &[]),
        ],
        vec![policy("x", "isolate", target).ingress(vec![])],
    ));
    w.deny("x/client", "x/db-prod", 80, TCP);
    w.deny("x/client", "x/db-nolabel", 80, TCP);
    w.allow("x/client", "x/db-test", 80, TCP);
    w.allow("x/client", "x/db-legacy", 80, TCP);
}

#[test]
fn namespace_selector_match_expressions() {
    let w = World::new(cluster(
        vec![
            ns("x", &[("env", "prod")]),
            ns("y", &[("env", "dev")]),
            ns("z", &[]),
        ],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            pod("y", "a", &[]),
            pod("z", "a", &[]),
            pod("x", "a", &[]),
        ],
        vec![policy("x", "from-non-prod", all()).ingress(vec![rule(
            vec![namespaces(exprs(vec![req(
                "env",
                Operator::NotIn,
                &["prod"],
            )]))],
            vec![],
        )])],
    ));
    w.allow("y/a", "x/target", 80, TCP);
    w.allow("z/a", "x/target", 80, TCP); // no env label: NotIn matches
    w.deny("x/a", "x/target", 80, TCP);

    let w = World::new(cluster(
        vec![
            ns("x", &[("env", "prod")]),
            ns("y", &[("env", "dev")]),
            ns("z", &[]),
        ],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            pod("y", "a", &[]),
            pod("z", "a", &[]),
        ],
        vec![policy("x", "from-unlabelled", all()).ingress(vec![rule(
            vec![namespaces(exprs(vec![req(
                "env",
                Operator::DoesNotExist,
                &[],
            )]))],
            vec![],
        )])],
    ));
    w.deny("y/a", "x/target", 80, TCP);
    w.allow("z/a", "x/target", 80, TCP);
}

#[test]
fn namespace_name_label_selects_defined_and_undefined_namespaces() {
    // The user tries to spoof the automatic label; Namespace::new overwrites it.
    let w = World::new(cluster(
        vec![ns("x", &[]), ns("y", &[(NAMESPACE_NAME_LABEL, "x")])],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            pod("x", "a", &[]),
            pod("y", "a", &[]),
            pod("undefined", "a", &[]),
        ],
        vec![policy("x", "by-name", all()).ingress(vec![rule(
            vec![namespaces(exprs(vec![req(
                NAMESPACE_NAME_LABEL,
                Operator::In,
                &["undefined", "x"],
            )]))],
            vec![],
        )])],
    ));
    w.allow("x/a", "x/target", 80, TCP);
    w.allow("undefined/a", "x/target", 80, TCP);
    w.deny("y/a", "x/target", 80, TCP);
}

// --- ipBlock ----------------------------------------------------------------------------------

#[test]
fn ip_block_with_except_v4() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            pod("x", "in", &[]).ip("10.1.2.3"),
            pod("x", "excepted", &[]).ip("10.1.9.3"),
            pod("x", "edge-in", &[]).ip("10.1.255.255"),
            pod("x", "edge-except", &[]).ip("10.1.9.0"),
            pod("x", "outside", &[]).ip("10.2.0.1"),
            pod("x", "v6", &[]).ip("fd00::1"),
        ],
        vec![policy("x", "cidr", all()).ingress(vec![rule(
            vec![block("10.1.0.0/16", &["10.1.9.0/24"])],
            vec![],
        )])],
    ));
    w.allow("x/in", "x/target", 80, TCP);
    w.allow("x/edge-in", "x/target", 80, TCP);
    w.deny("x/excepted", "x/target", 80, TCP);
    w.deny("x/edge-except", "x/target", 80, TCP);
    w.deny("x/outside", "x/target", 80, TCP);
    w.deny("x/v6", "x/target", 80, TCP);
}

#[test]
fn ip_block_with_except_v6() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            pod("x", "in", &[]).ip("fd00:1::5"),
            pod("x", "excepted", &[]).ip("fd00:1::1:5"),
            pod("x", "outside", &[]).ip("fd01::1"),
            pod("x", "v4", &[]).ip("10.0.0.1"),
        ],
        vec![policy("x", "cidr", all()).ingress(vec![rule(
            vec![block("fd00::/16", &["fd00:1::1:0/112"])],
            vec![],
        )])],
    ));
    w.allow("x/in", "x/target", 80, TCP);
    w.deny("x/excepted", "x/target", 80, TCP);
    w.deny("x/outside", "x/target", 80, TCP);
    w.deny("x/v4", "x/target", 80, TCP);
}

#[test]
fn ip_block_matches_if_any_ip_of_a_dual_stack_pod_matches() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            // v4 is excepted, v6 is inside: matched through the v6 address.
            pod("x", "dual", &[]).ip("10.0.0.7").ip("fd00::7"),
            // Both addresses excepted or outside.
            pod("x", "dual-out", &[]).ip("10.0.0.8").ip("fd01::8"),
        ],
        vec![policy("x", "cidrs", all()).ingress(vec![rule(
            vec![
                block("10.0.0.0/24", &["10.0.0.0/28"]),
                block("fd00::/64", &[]),
            ],
            vec![],
        )])],
    ));
    w.allow("x/dual", "x/target", 80, TCP);
    w.deny("x/dual-out", "x/target", 80, TCP);
}

#[test]
fn ip_block_in_egress_rules() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "client", &[]).ip("10.0.0.1"),
            pod("y", "in", &[]).ip("192.168.1.10").port(443, TCP),
            pod("y", "out", &[]).ip("192.168.2.10").port(443, TCP),
        ],
        vec![policy("x", "egress-cidr", all()).egress(vec![rule(
            vec![block("192.168.1.0/24", &[])],
            vec![num(443, TCP)],
        )])],
    ));
    w.allow("x/client", "y/in", 443, TCP);
    w.deny("x/client", "y/in", 80, TCP);
    w.deny("x/client", "y/out", 443, TCP);
}

#[test]
fn pods_without_ips_match_no_ip_block() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "target", &[]).port(80, TCP),
            pod("x", "no-ip", &[]),
            pod("x", "has-ip", &[]).ip("10.0.0.1"),
        ],
        vec![policy("x", "everything", all()).ingress(vec![rule(
            vec![block("0.0.0.0/0", &[]), block("::/0", &[])],
            vec![],
        )])],
    ));
    w.deny("x/no-ip", "x/target", 80, TCP);
    w.allow("x/has-ip", "x/target", 80, TCP);
}

// --- ports ------------------------------------------------------------------------------------

#[test]
fn named_port_resolves_on_the_destination_pod() {
    // Two pods name "http" on different numbers.
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "a", &[("app", "web")]).named("http", 8080, TCP),
            pod("x", "b", &[("app", "web")]).named("http", 9090, TCP),
            pod("x", "client", &[]).named("http", 7070, TCP),
        ],
        vec![policy("x", "http-only", sel(&[("app", "web")]))
            .ingress(vec![rule(vec![], vec![name("http", TCP)])])],
    ));
    w.allow("x/client", "x/a", 8080, TCP);
    w.deny("x/client", "x/a", 9090, TCP);
    w.deny("x/client", "x/a", 7070, TCP);
    w.allow("x/client", "x/b", 9090, TCP);
    w.deny("x/client", "x/b", 8080, TCP);
}

#[test]
fn named_port_in_egress_rules_resolves_on_the_destination_not_the_source() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "client", &[("app", "client")]).named("http", 80, TCP),
            pod("x", "server", &[]).named("http", 8080, TCP),
            pod("x", "other", &[]).named("metrics", 8080, TCP),
        ],
        vec![policy("x", "egress-http", sel(&[("app", "client")]))
            .egress(vec![rule(vec![], vec![name("http", TCP)])])],
    ));
    w.allow("x/client", "x/server", 8080, TCP);
    w.deny("x/client", "x/server", 80, TCP);
    // "other" declares no "http": nothing matches, whatever the source declares.
    w.deny("x/client", "x/other", 8080, TCP);
    w.deny("x/client", "x/other", 80, TCP);
}

#[test]
fn named_port_needs_the_same_protocol() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "dns", &[("app", "dns")])
                .named("dns", 53, UDP)
                .named("dns-tcp", 53, TCP),
            pod("x", "client", &[]),
        ],
        vec![
            policy("x", "dns", sel(&[("app", "dns")])).ingress(vec![rule(
                vec![],
                vec![
                    name("dns", TCP),     // "dns" is only declared for UDP: matches nothing
                    name("dns-tcp", UDP), // "dns-tcp" is only declared for TCP: matches nothing
                ],
            )]),
        ],
    ));
    w.deny("x/client", "x/dns", 53, UDP);
    w.deny("x/client", "x/dns", 53, TCP);

    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "dns", &[("app", "dns")])
                .named("dns", 53, UDP)
                .named("dns-tcp", 53, TCP),
            pod("x", "client", &[]),
        ],
        vec![policy("x", "dns", sel(&[("app", "dns")]))
            .ingress(vec![rule(vec![], vec![name("dns", UDP)])])],
    ));
    w.allow("x/client", "x/dns", 53, UDP);
    w.deny("x/client", "x/dns", 53, TCP);
    w.deny("x/client", "x/dns", 53, SCTP);
}

#[test]
fn unresolvable_named_port_matches_nothing() {
    let w =
        two_namespaces(vec![policy("x", "nope", all())
            .ingress(vec![rule(vec![], vec![name("does-not-exist", TCP)])])]);
    for (port, protocol) in PROBE_PORTS {
        w.deny("y/a", "x/a", port, protocol);
    }
}

#[test]
fn end_port_range_is_inclusive_at_both_ends() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "server", &[]).port(8000, TCP),
            pod("x", "client", &[]),
        ],
        vec![policy("x", "range", all()).ingress(vec![rule(
            vec![],
            vec![range(8000, 8010, TCP), range(9000, 9000, UDP)],
        )])],
    ));
    w.deny("x/client", "x/server", 7999, TCP);
    w.allow("x/client", "x/server", 8000, TCP);
    w.allow("x/client", "x/server", 8005, TCP);
    w.allow("x/client", "x/server", 8010, TCP);
    w.deny("x/client", "x/server", 8011, TCP);
    w.deny("x/client", "x/server", 8005, UDP);
    w.deny("x/client", "x/server", 8999, UDP);
    w.allow("x/client", "x/server", 9000, UDP);
    w.deny("x/client", "x/server", 9001, UDP);
}

#[test]
fn end_port_range_up_to_65535_in_egress() {
    let w = World::new(cluster(
        vec![],
        vec![pod("x", "server", &[]), pod("x", "client", &[("app", "c")])],
        vec![policy("x", "high", sel(&[("app", "c")]))
            .egress(vec![rule(vec![], vec![range(32768, 65535, SCTP)])])],
    ));
    w.deny("x/client", "x/server", 32767, SCTP);
    w.allow("x/client", "x/server", 32768, SCTP);
    w.allow("x/client", "x/server", 65535, SCTP);
    w.deny("x/client", "x/server", 65535, TCP);
}

#[test]
fn protocol_must_match() {
    let w = two_namespaces(vec![
        policy("x", "udp-53", all()).ingress(vec![rule(vec![], vec![num(53, UDP)])])
    ]);
    w.allow("y/a", "x/a", 53, UDP);
    w.deny("y/a", "x/a", 53, TCP);
    w.deny("y/a", "x/a", 53, SCTP);
}

#[test]
fn protocol_without_port_admits_every_port_of_that_protocol_only() {
    let w = two_namespaces(vec![
        policy("x", "sctp-any", all()).ingress(vec![rule(vec![], vec![proto(SCTP)])])
    ]);
    w.allow("y/a", "x/a", 80, SCTP);
    w.allow("y/a", "x/a", 9999, SCTP);
    w.deny("y/a", "x/a", 80, TCP);
    w.deny("y/a", "x/a", 53, UDP);
}

#[test]
fn sctp_rule_does_not_admit_tcp_on_the_same_port() {
    let w = two_namespaces(vec![policy("x", "sctp-80", sel(&[("app", "a")]))
        .ingress(vec![rule(vec![], vec![num(80, SCTP)])])]);
    w.allow("y/a", "x/a", 80, SCTP);
    w.deny("y/a", "x/a", 80, TCP);
    w.deny("y/a", "x/a", 81, TCP);
}

// --- self, host network, other namespaces ---------------------------------------------------

#[test]
fn a_pod_may_always_reach_itself() {
    let w = two_namespaces(vec![policy("x", "deny-all", all()).types(true, true)]);
    for (port, protocol) in PROBE_PORTS {
        w.allow("x/a", "x/a", port, protocol);
        w.deny("x/a", "x/b", port, protocol);
    }
    let id = w.id("x/a");
    let why = w.engine.explain(id, id, 80, TCP).unwrap();
    assert!(why.allowed && why.same_pod);
    assert!(!why.ingress.allowed && !why.egress.allowed);
}

#[test]
fn host_network_pods_are_never_selected_as_policy_targets() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "host", &[("app", "agent")])
                .host_network()
                .ip("172.16.0.1")
                .port(9100, TCP),
            pod("x", "a", &[("app", "agent")])
                .ip("10.0.0.1")
                .port(9100, TCP),
            pod("y", "client", &[]).ip("10.0.1.1").port(80, TCP),
        ],
        vec![
            policy("x", "deny-all", all()).types(true, true),
            policy("x", "deny-agents", sel(&[("app", "agent")])).types(true, true),
        ],
    ));
    let host = w.id("x/host");
    assert!(w
        .engine
        .isolating_policies(host, Direction::Ingress)
        .is_empty());
    assert!(w
        .engine
        .isolating_policies(host, Direction::Egress)
        .is_empty());
    w.allow("y/client", "x/host", 9100, TCP);
    w.allow("x/host", "y/client", 80, TCP);
    // The ordinary pod with the same labels is isolated both ways.
    w.deny("x/a", "x/host", 9100, TCP);
    w.deny("x/host", "x/a", 9100, TCP);
    w.deny("y/client", "x/a", 9100, TCP);
}

#[test]
fn host_network_pods_are_not_matched_by_selector_peers_only_by_ip_block() {
    let policies = vec![
        policy("x", "from-everyone-by-selector", sel(&[("app", "db")])).ingress(vec![rule(
            vec![
                pods(all()),
                namespaces(all()),
                pods_in(all(), sel(&[("app", "agent")])),
            ],
            vec![],
        )]),
    ];
    let pods_ = vec![
        pod("x", "db", &[("app", "db")])
            .ip("10.0.0.2")
            .port(5432, TCP),
        pod("x", "host", &[("app", "agent")])
            .host_network()
            .ip("172.16.0.1"),
        pod("x", "a", &[("app", "agent")]).ip("10.0.0.3"),
    ];
    let w = World::new(cluster(vec![], pods_.clone(), policies.clone()));
    w.deny("x/host", "x/db", 5432, TCP);
    w.allow("x/a", "x/db", 5432, TCP);

    let mut with_block = policies;
    with_block[0].ingress[0]
        .peers
        .push(block("172.16.0.0/16", &[]));
    let w = World::new(cluster(vec![], pods_, with_block));
    w.allow("x/host", "x/db", 5432, TCP);
}

#[test]
fn a_policy_in_another_namespace_does_not_affect_pods() {
    // The policy lives in y; its empty podSelector selects pods of y only, even though x's
    // pods carry the same labels.
    let w = two_namespaces(vec![
        policy("y", "deny-all", all()).types(true, true),
        policy("y", "deny-a", sel(&[("app", "a")])).ingress(vec![]),
    ]);
    w.allow("x/b", "x/a", 80, TCP);
    w.allow("x/a", "x/b", 80, TCP);
    w.deny("x/a", "y/a", 80, TCP);
    w.deny("y/b", "x/a", 80, TCP); // y/b's egress is isolated
}

#[test]
fn a_policy_in_an_undefined_namespace_selects_its_pods() {
    let w = World::new(cluster(
        vec![],
        vec![pod("ghost", "a", &[]).port(80, TCP), pod("x", "b", &[])],
        vec![policy("ghost", "deny", all()).ingress(vec![])],
    ));
    w.deny("x/b", "ghost/a", 80, TCP);
}

// --- explain ----------------------------------------------------------------------------------

#[test]
fn explain_names_the_isolating_policies_and_every_admitting_rule() {
    let w = two_namespaces(vec![
        policy("x", "p1", sel(&[("app", "a")])).ingress(vec![
            rule(vec![pods(sel(&[("app", "b")]))], vec![]),
            rule(vec![pods(sel(&[("app", "c")]))], vec![num(80, TCP)]),
            rule(vec![namespaces(all())], vec![num(80, TCP)]),
        ]),
        policy("x", "p2", all()).ingress(vec![rule(vec![pods(sel(&[("app", "b")]))], vec![])]),
        policy("x", "unrelated", sel(&[("app", "b")])).egress(vec![]),
    ]);
    let (b, a) = (w.id("x/b"), w.id("x/a"));

    let why = w.engine.explain(b, a, 80, TCP).unwrap();
    assert!(!why.same_pod);
    assert_eq!((why.src.as_str(), why.dst.as_str()), ("x/b", "x/a"));
    assert_eq!((why.port, why.protocol), (80, TCP));
    assert_eq!(why.ingress.isolated_by, vec!["x/p1", "x/p2"]);
    let rr = |policy: &str, rule: usize| RuleRef {
        policy: policy.to_string(),
        direction: Direction::Ingress,
        rule,
    };
    assert_eq!(
        why.ingress.allowed_by,
        vec![rr("x/p1", 0), rr("x/p1", 2), rr("x/p2", 0)]
    );
    assert!(why.ingress.allowed);
    // x/b is isolated for egress by "unrelated" with no rules.
    assert_eq!(why.egress.isolated_by, vec!["x/unrelated"]);
    assert!(why.egress.allowed_by.is_empty());
    assert!(!why.egress.allowed);
    // Ingress admits it, egress does not: denied overall.
    assert!(!why.allowed);
    assert!(!w.engine.allowed(b, a, 80, TCP));
}

#[test]
fn explain_of_an_allowed_and_a_denied_connection() {
    let w = two_namespaces(vec![policy("x", "p1", sel(&[("app", "a")])).ingress(vec![
        rule(vec![pods(sel(&[("app", "c")]))], vec![num(80, TCP)]),
        rule(vec![namespaces(all())], vec![num(80, TCP)]),
    ])]);
    let (c, a, ya) = (w.id("x/c"), w.id("x/a"), w.id("y/a"));

    let why = w.engine.explain(c, a, 80, TCP).unwrap();
    assert!(why.allowed);
    assert!(why.egress.isolated_by.is_empty() && why.egress.allowed_by.is_empty());
    assert!(why.egress.allowed);
    assert_eq!(
        why.ingress
            .allowed_by
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["x/p1 ingress[0]", "x/p1 ingress[1]"]
    );

    let why = w.engine.explain(ya, a, 81, TCP).unwrap();
    assert!(!why.allowed);
    assert_eq!(why.ingress.isolated_by, vec!["x/p1"]);
    assert!(why.ingress.allowed_by.is_empty() && !why.ingress.allowed);
}

#[test]
fn explain_of_egress_rules_and_unknown_pods() {
    let w = two_namespaces(vec![policy("y", "out", sel(&[("app", "b")])).egress(vec![
        rule(vec![namespaces(sel(&[("team", "blue")]))], vec![proto(UDP)]),
    ])]);
    let (yb, xa) = (w.id("y/b"), w.id("x/a"));
    let why = w.engine.explain(yb, xa, 53, UDP).unwrap();
    assert!(why.allowed);
    assert_eq!(why.egress.isolated_by, vec!["y/out"]);
    assert_eq!(
        why.egress.allowed_by,
        vec![RuleRef {
            policy: "y/out".into(),
            direction: Direction::Egress,
            rule: 0
        }]
    );
    assert!(w.engine.explain(yb, 1000, 53, UDP).is_none());
    assert!(w.engine.explain(1000, xa, 53, UDP).is_none());
    assert!(!w.engine.allowed(1000, xa, 53, UDP));
}

// --- matrix -----------------------------------------------------------------------------------

#[test]
fn matrix_covers_every_declared_port_of_every_destination() {
    let w = World::new(cluster(
        vec![],
        vec![
            pod("x", "a", &[("app", "a")])
                .port(80, TCP)
                .named("dns", 53, UDP),
            pod("x", "b", &[("app", "b")]).port(80, TCP),
            pod("x", "c", &[]),
        ],
        vec![
            policy("x", "a-from-b-dns", sel(&[("app", "a")])).ingress(vec![rule(
                vec![pods(sel(&[("app", "b")]))],
                vec![name("dns", UDP)],
            )]),
        ],
    ));
    let m = w.engine.matrix();
    assert_eq!(m.ports, vec![(53, UDP), (80, TCP)]);
    // a declares 2 ports, b 1, c none; each destination has 2 other pods as sources.
    assert_eq!(m.len(), (2 + 1) * 2);
    let cells: Vec<_> = m.entries().collect();
    assert_eq!(cells.len(), m.len());
    assert_eq!(
        m.allowed_count(),
        cells.iter().filter(|c| c.allowed).count()
    );
    let (a, b, c) = (w.id("x/a"), w.id("x/b"), w.id("x/c"));
    assert!(m.allowed(b, a, 0)); // 53/UDP via the named port
    assert!(!m.allowed(c, a, 0));
    assert!(!m.allowed(b, a, 1)); // 80/TCP is not admitted
    assert!(m.allowed(a, b, 1));
    assert!(m.allowed(a, a, 1), "self is always allowed");
    assert!(!m.allowed(a, b, 7), "out-of-range port index");
}

#[test]
fn matrix_equals_allowed_on_a_mixed_cluster() {
    // World::new compares every matrix cell with Engine::allowed and the reference.
    let w = World::new(cluster(
        vec![ns("x", &[("team", "blue")]), ns("y", &[("team", "red")])],
        vec![
            pod("x", "web", &[("app", "web")])
                .ip("10.0.0.1")
                .ip("fd00::1")
                .named("http", 8080, TCP)
                .port(8443, TCP),
            pod("x", "web2", &[("app", "web")])
                .ip("10.0.0.2")
                .named("http", 80, TCP),
            pod("x", "db", &[("app", "db")])
                .ip("10.0.0.3")
                .port(5432, TCP)
                .named("metrics", 9100, TCP),
            pod("y", "dns", &[("app", "dns")])
                .ip("10.0.1.1")
                .named("dns", 53, UDP)
                .named("dns", 53, TCP),
            pod("y", "node", &[("app", "agent")])
                .host_network()
                .ip("172.16.0.1")
                .port(9100, TCP),
            pod("y", "noip", &[("app", "web")]).port(80, SCTP),
        ],
        vec![
            policy("x", "default-deny", all()).types(true, true),
            policy("x", "web-in", sel(&[("app", "web")])).ingress(vec![rule(
                vec![namespaces(all())],
                vec![name("http", TCP), range(8440, 8450, TCP)],
            )]),
            policy("x", "db-in", sel(&[("app", "db")])).ingress(vec![
                rule(vec![pods(sel(&[("app", "web")]))], vec![num(5432, TCP)]),
                rule(
                    vec![block("172.16.0.0/12", &[])],
                    vec![name("metrics", TCP)],
                ),
            ]),
            policy("x", "egress", all()).egress(vec![
                rule(
                    vec![pods_in(sel(&[("team", "red")]), sel(&[("app", "dns")]))],
                    vec![proto(UDP), num(53, TCP)],
                ),
                rule(vec![pods(all())], vec![]),
                rule(vec![namespaces(sel(&[("team", "red")]))], vec![proto(SCTP)]),
            ]),
            policy("y", "noip", sel(&[("app", "web")])).ingress(vec![rule(
                vec![block("10.0.0.0/24", &["10.0.0.2/32"])],
                vec![],
            )]),
        ],
    ));
    w.allow("x/web", "x/db", 5432, TCP);
    w.deny("x/web", "x/db", 9100, TCP);
    w.allow("y/node", "x/db", 9100, TCP);
    w.allow("x/web", "y/dns", 53, UDP);
    w.allow("x/web", "y/dns", 53, TCP);
    w.deny("x/web", "y/node", 9100, TCP);
    w.allow("x/web", "y/noip", 80, SCTP);
    w.deny("x/web2", "y/noip", 80, SCTP);
    w.allow("y/dns", "x/web", 8080, TCP);
    w.allow("y/dns", "x/web2", 80, TCP);
    w.deny("y/dns", "x/web2", 8080, TCP);
    w.allow("y/dns", "x/web", 8443, TCP);
}
