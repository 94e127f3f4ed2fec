//! The API server's validation rules: every failure is an Error with the exact field path, the
//! object is left out, all of its errors are reported, and the rest of the input still loads.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// A NetworkPolicy in namespace `x` with the given `spec` (YAML flow or block, indented 2).
fn policy(spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}\n")
}

/// Loads a policy and returns the single error's message at `field`, checking the policy was
/// left out.
fn policy_error(spec: &str, field: &str) -> String {
    let l = load(&policy(spec));
    assert!(l.cluster.policies.is_empty(), "policy should be rejected");
    let e = error_at(&l, field);
    assert_eq!(e.kind.as_deref(), Some("NetworkPolicy"));
    assert_eq!(e.namespace.as_deref(), Some("x"));
    assert_eq!(e.name.as_deref(), Some("p"));
    e.message.clone()
}

fn policy_ok(spec: &str) {
    let l = load(&policy(spec));
    assert_clean(&l);
    assert_eq!(l.cluster.policies.len(), 1);
}

// ---- names -----------------------------------------------------------------------------

#[test]
fn name_is_required() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n");
    assert_eq!(
        error_at(&l, "metadata.name").message,
        "Required value: name or generateName is required"
    );
    let l = load("apiVersion: v1\nkind: Pod\n");
    assert_eq!(error_fields(&l), vec!["metadata.name"]);
}

#[test]
fn namespace_names_are_dns_labels() {
    let l = load("apiVersion: v1\nkind: Namespace\nmetadata: {name: my.ns}\n");
    let m = &error_at(&l, "metadata.name").message;
    assert!(
        m.starts_with("Invalid value: \"my.ns\": a lowercase RFC 1123 label must consist of"),
        "{m}"
    );
    let long = "a".repeat(64);
    let l = load(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {long}}}\n"
    ));
    assert!(error_at(&l, "metadata.name")
        .message
        .ends_with("must be no more than 63 characters"));
    assert!(l.cluster.namespaces.is_empty());
}

#[test]
fn object_names_are_dns_subdomains() {
    // Dots are fine in a pod name, upper case and underscores are not.
    assert_clean(&load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web.v1-0}\n",
    ));
    for bad in ["Web", "web_1", "-web", "web.", "a..b"] {
        let l = load(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: '{bad}'}}\n"
        ));
        let m = &error_at(&l, "metadata.name").message;
        assert!(m.contains("RFC 1123 subdomain"), "{bad}: {m}");
    }
    let l = load(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}}}\n",
        "a".repeat(254)
    ));
    assert_eq!(errors(&l).len(), 1);
}

#[test]
fn service_names_are_dns1035_labels() {
    let l = load("apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\n");
    assert!(error_at(&l, "metadata.name")
        .message
        .contains("DNS-1035 label"));
}

#[test]
fn metadata_namespace_is_a_dns_label() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: Prod}\n");
    assert!(error_at(&l, "metadata.namespace")
        .message
        .starts_with("Invalid value: \"Prod\""));
}

// ---- labels ----------------------------------------------------------------------------

#[test]
fn label_keys_and_values() {
    let ok = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    app.kubernetes.io/name: web\n    Version_2: v1.2-rc_1\n    empty: ''\n";
    assert_clean(&load(ok));
    let cases: &[(&str, &str)] = &[
        (
            "'bad key': x",
            "name part must consist of alphanumeric characters",
        ),
        ("'/x': y", "prefix part must be non-empty"),
        ("'a/b/c': y", "a qualified name must consist of"),
        (
            "'Example.com/x': y",
            "prefix part a lowercase RFC 1123 subdomain",
        ),
        (
            "k: '-v'",
            "a valid label must be an empty string or consist of",
        ),
    ];
    for (entry, want) in cases {
        let l = load(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels: {{{entry}}}\n"
        ));
        let m = &error_at(&l, "metadata.labels").message;
        assert!(m.contains(want), "{entry}: {m}");
    }
    let long_value = "v".repeat(64);
    let l = load(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels: {{k: {long_value}}}\n"
    ));
    assert!(error_at(&l, "metadata.labels")
        .message
        .ends_with("must be no more than 63 characters"));
    let long_key = format!("{}/{}", "p".repeat(10), "n".repeat(64));
    let l = load(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels: {{{long_key}: v}}\n"
    ));
    assert!(error_at(&l, "metadata.labels")
        .message
        .contains("name part must be no more than 63 characters"));
}

// ---- selectors -------------------------------------------------------------------------

#[test]
fn selector_match_labels_are_labels() {
    let m = policy_error(
        "  podSelector: {matchLabels: {'a b': x}}",
        "spec.podSelector.matchLabels",
    );
    assert!(m.starts_with("Invalid value: \"a b\""), "{m}");
}

#[test]
fn selector_operators() {
    let m = policy_error(
        "  podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}",
        "spec.podSelector.matchExpressions[0].operator",
    );
    assert_eq!(
        m,
        "Invalid value: \"Equals\": not a valid selector operator"
    );
    let m = policy_error(
        "  podSelector: {matchExpressions: [{key: app, operator: In}]}",
        "spec.podSelector.matchExpressions[0].values",
    );
    assert_eq!(
        m,
        "Required value: must be specified when `operator` is 'In' or 'NotIn'"
    );
    let m = policy_error(
        "  podSelector: {matchExpressions: [{key: app, operator: NotIn, values: []}]}",
        "spec.podSelector.matchExpressions[0].values",
    );
    assert!(m.starts_with("Required value"));
    let m = policy_error(
        "  podSelector: {matchExpressions: [{key: app, operator: Exists, values: [a]}]}",
        "spec.podSelector.matchExpressions[0].values",
    );
    assert_eq!(
        m,
        "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
    );
    let m = policy_error(
        "  podSelector: {matchExpressions: [{key: 'x y', operator: DoesNotExist}]}",
        "spec.podSelector.matchExpressions[0].key",
    );
    assert!(m.starts_with("Invalid value: \"x y\""));
    let m = policy_error(
        "  podSelector: {matchExpressions: [{key: app, operator: In, values: [ok, 'not ok']}]}",
        "spec.podSelector.matchExpressions[0].values[1]",
    );
    assert!(m.starts_with("Invalid value: \"not ok\""));
    policy_ok("  podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}, {key: b, operator: Exists}]}");
}

// ---- NetworkPolicy ---------------------------------------------------------------------

#[test]
fn policy_types() {
    let m = policy_error(
        "  podSelector: {}\n  policyTypes: [Ingress, Outgoing]",
        "spec.policyTypes[1]",
    );
    assert_eq!(
        m,
        "Unsupported value: \"Outgoing\": supported values: \"Ingress\", \"Egress\""
    );
    let m = policy_error(
        "  podSelector: {}\n  policyTypes: [Ingress, Egress, Ingress]",
        "spec.policyTypes",
    );
    assert!(
        m.ends_with("may not specify more than two policyTypes"),
        "{m}"
    );
    policy_error(
        "  podSelector: {}\n  policyTypes: [ingress]",
        "spec.policyTypes[0]",
    );
}

#[test]
fn policy_port_protocols_and_numbers() {
    let m = policy_error(
        "  ingress: [{ports: [{protocol: tcp, port: 80}]}]",
        "spec.ingress[0].ports[0].protocol",
    );
    assert_eq!(
        m,
        "Unsupported value: \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\""
    );
    for bad in ["0", "65536", "-1"] {
        let m = policy_error(
            &format!("  egress: [{{ports: [{{port: {bad}}}]}}]"),
            "spec.egress[0].ports[0].port",
        );
        assert_eq!(
            m,
            format!("Invalid value: {bad}: must be between 1 and 65535, inclusive")
        );
    }
    policy_ok("  ingress: [{ports: [{port: 1}, {port: 65535, protocol: SCTP}, {protocol: UDP}]}]");
}

#[test]
fn policy_named_ports_are_iana_service_names() {
    // A quoted number is a *name* (intstr by type), and not a valid one.
    let m = policy_error(
        "  ingress: [{ports: [{port: '80'}]}]",
        "spec.ingress[0].ports[0].port",
    );
    assert_eq!(
        m,
        "Invalid value: \"80\": must contain at least one letter (a-z)"
    );
    let l = load(&policy(
        "  ingress: [{ports: [{port: -Bad--name-too-long}]}]",
    ));
    let msgs: Vec<&str> = errors(&l).iter().map(|d| d.message.as_str()).collect();
    assert_eq!(msgs.len(), 4, "all problems reported: {msgs:#?}");
    assert!(msgs
        .iter()
        .all(|m| m.starts_with("Invalid value: \"-Bad--name-too-long\"")));
    policy_ok("  ingress: [{ports: [{port: http}, {port: h2c-8080, protocol: UDP}]}]");
}

#[test]
fn policy_end_port() {
    let m = policy_error(
        "  ingress: [{ports: [{port: http, endPort: 90}]}]",
        "spec.ingress[0].ports[0].endPort",
    );
    assert_eq!(
        m,
        "Invalid value: 90: may not be specified when `port` is non-numeric"
    );
    let m = policy_error(
        "  ingress: [{ports: [{endPort: 90}]}]",
        "spec.ingress[0].ports[0].endPort",
    );
    assert_eq!(
        m,
        "Invalid value: 90: may not be specified when `port` is not specified"
    );
    let m = policy_error(
        "  ingress: [{ports: [{port: 100, endPort: 90}]}]",
        "spec.ingress[0].ports[0].endPort",
    );
    assert_eq!(
        m,
        "Invalid value: 90: must be greater than or equal to `port`"
    );
    let m = policy_error(
        "  ingress: [{ports: [{port: 100, endPort: 70000}]}]",
        "spec.ingress[0].ports[0].endPort",
    );
    assert_eq!(
        m,
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    policy_ok("  ingress: [{ports: [{port: 100, endPort: 100}, {port: 32000, endPort: 32768}]}]");
}

#[test]
fn policy_peers() {
    let m = policy_error(
        "  ingress: [{from: [{podSelector: {}}, {}]}]",
        "spec.ingress[0].from[1]",
    );
    assert_eq!(m, "Required value: must specify a peer");
    let m = policy_error(
        "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
        "spec.egress[0].to[0]",
    );
    assert_eq!(
        m,
        "Forbidden: may not specify both ipBlock and another peer"
    );
    policy_error(
        "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]",
        "spec.egress[0].to[0]",
    );
    policy_ok("  ingress: [{from: [{podSelector: {}, namespaceSelector: {}}, {namespaceSelector: {matchLabels: {a: b}}}]}]");
}

#[test]
fn policy_ip_blocks() {
    let m = policy_error(
        "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    assert!(
        m.starts_with("Invalid value: \"10.0.0.0\": must be a valid CIDR"),
        "{m}"
    );
    let m = policy_error(
        "  ingress: [{from: [{ipBlock: {except: [10.0.0.0/24]}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    assert_eq!(m, "Required value");
    policy_error(
        "  ingress: [{from: [{ipBlock: {cidr: 300.0.0.0/8}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    let m = policy_error(
        "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.1.0.0/24]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[1]",
    );
    assert_eq!(
        m,
        "Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`"
    );
    // Equal is not a strict subset; a shorter prefix is not either; nor another family.
    for (i, ex) in ["10.0.0.0/16", "10.0.0.0/8", "fd00::/64"]
        .iter()
        .enumerate()
    {
        let l = load(&policy(&format!(
            "  ingress: [{{}}, {{from: [{{podSelector: {{}}}}, {{ipBlock: {{cidr: 10.0.0.0/16, except: ['{ex}']}}}}]}}]"
        )));
        let e = error_at(&l, "spec.ingress[1].from[1].ipBlock.except[0]");
        assert!(
            e.message.ends_with("must be a strict subset of `cidr`"),
            "{i}: {}",
            e.message
        );
    }
    policy_error(
        "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [banana]}}]}]",
        "spec.egress[0].to[0].ipBlock.except[0]",
    );
    // Host bits are allowed (and normalised), in cidr and except alike.
    policy_ok("  ingress: [{from: [{ipBlock: {cidr: 10.0.0.7/16, except: [10.0.1.9/24]}}]}]");
}

#[test]
fn every_error_of_an_object_is_reported() {
    let l = load(&policy(
        "  podSelector: {matchExpressions: [{key: a, operator: Bad}]}\n  policyTypes: [Sideways]\n  ingress:\n  - from: [{}]\n    ports: [{protocol: ICMP, port: 0}]\n  egress:\n  - to: [{ipBlock: {cidr: nope}}]",
    ));
    assert_eq!(
        error_fields(&l),
        vec![
            "spec.podSelector.matchExpressions[0].operator",
            "spec.ingress[0].from[0]",
            "spec.ingress[0].ports[0].protocol",
            "spec.ingress[0].ports[0].port",
            "spec.egress[0].to[0].ipBlock.cidr",
            "spec.policyTypes[0]",
        ]
    );
    assert!(errors(&l).iter().all(|d| d.document == 0));
}

#[test]
fn a_bad_object_does_not_stop_the_rest_of_the_file() {
    let text = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: after, namespace: x}}\n",
        policy("  ingress: [{ports: [{port: '80'}]}]"),
        policy("  podSelector: {}").replace("name: p", "name: good")
    );
    let l = load(&text);
    assert_eq!(error_fields(&l), vec!["spec.ingress[0].ports[0].port"]);
    assert_eq!(l.cluster.policies.len(), 1);
    assert_eq!(l.cluster.policies[0].name, "good");
    assert_eq!(pod_names(&l), vec!["x/after"]);
}

// ---- Pods ------------------------------------------------------------------------------

fn pod_ports_error(ports: &str, field: &str) -> String {
    let l = load(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers:\n  - name: c\n    ports: {ports}\n"
    ));
    assert!(l.cluster.pods.is_empty());
    error_at(&l, field).message.clone()
}

#[test]
fn pod_container_ports() {
    assert_eq!(
        pod_ports_error(
            "[{containerPort: 0}]",
            "spec.containers[0].ports[0].containerPort"
        ),
        "Required value"
    );
    assert_eq!(
        pod_ports_error("[{name: x}]", "spec.containers[0].ports[0].containerPort"),
        "Required value"
    );
    assert_eq!(
        pod_ports_error(
            "[{containerPort: 70000}]",
            "spec.containers[0].ports[0].containerPort"
        ),
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    assert_eq!(
        pod_ports_error(
            "[{containerPort: 80, protocol: HTTP}]",
            "spec.containers[0].ports[0].protocol"
        ),
        "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
    );
    assert_eq!(
        pod_ports_error(
            "[{containerPort: 80, name: Web}]",
            "spec.containers[0].ports[0].name"
        ),
        "Invalid value: \"Web\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    );
    assert_eq!(
        pod_ports_error(
            "[{containerPort: 80, name: web}, {containerPort: 81, name: web}]",
            "spec.containers[0].ports[1].name"
        ),
        "Duplicate value: \"web\""
    );
}

#[test]
fn pod_port_names_are_unique_per_container_only() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - {name: a, ports: [{containerPort: 80, name: web}]}\n  - {name: b, ports: [{containerPort: 81, name: web}]}\n");
    assert_clean(&l);
}

#[test]
fn init_container_ports_are_validated_too() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  initContainers:\n  - {name: a, ports: [{containerPort: 0}]}\n");
    assert_eq!(
        error_fields(&l),
        vec!["spec.initContainers[0].ports[0].containerPort"]
    );
}

#[test]
fn pod_ips_must_parse() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: 10.0.0.300}]}\n");
    let m = &error_at(&l, "status.podIPs[1].ip").message;
    assert!(
        m.starts_with("Invalid value: \"10.0.0.300\": must be a valid IP address"),
        "{m}"
    );
    let l =
        load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {podIP: 'fe80::1%eth0'}\n");
    error_at(&l, "status.podIP");
}

// ---- Services and Nodes ----------------------------------------------------------------

#[test]
fn service_ports() {
    let svc = |ports: &str| {
        load(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  ports: {ports}\n"
        ))
    };
    let l = svc("[{port: 0}]");
    assert_eq!(error_at(&l, "spec.ports[0].port").message, "Required value");
    let l = svc("[{port: 80, name: a}, {port: 81}]");
    assert_eq!(error_at(&l, "spec.ports[1].name").message, "Required value");
    let l = svc("[{port: 80, name: a}, {port: 81, name: a}]");
    assert_eq!(
        error_at(&l, "spec.ports[1].name").message,
        "Duplicate value: \"a\""
    );
    let l = svc("[{port: 80, name: Web_1}]");
    error_at(&l, "spec.ports[0].name");
    let l = svc("[{port: 80, protocol: ICMP}]");
    error_at(&l, "spec.ports[0].protocol");
    let l = svc("[{port: 80, targetPort: 70000}]");
    error_at(&l, "spec.ports[0].targetPort");
    let l = svc("[{port: 80, targetPort: '8080'}]");
    error_at(&l, "spec.ports[0].targetPort");
    assert!(l.cluster.services.is_empty());
}

#[test]
fn service_cluster_ips_and_selector() {
    let l = load("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIPs: [10.96.0.1, nope]\n  selector: {'bad key': x}\n");
    assert_eq!(
        error_fields(&l),
        vec!["spec.selector", "spec.clusterIPs[1]"]
    );
}

#[test]
fn node_addresses_and_cidrs() {
    let l = load("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDRs: [10.244.0.0/24, 10.244.1.0]}\nstatus: {addresses: [{type: InternalIP, address: nope}, {type: Hostname, address: n}]}\n");
    assert_eq!(
        error_fields(&l),
        vec!["spec.podCIDRs[1]", "status.addresses[0].address"]
    );
    assert!(l.cluster.nodes.is_empty());
}
