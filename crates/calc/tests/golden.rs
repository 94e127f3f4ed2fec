//! Golden files for rendered rulesets and deltas, from the `examples/analyze` YAML.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p furynet-calc --test golden`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use furynet_calc::{compute, render_delta, render_full, NftState};
use furynet_model::{load_paths, Cluster};
use furynet_policy::Engine;

const NODE: &str = "node-1";

fn example(name: &str) -> Cluster {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/analyze")
        .join(format!("{name}.yaml"));
    let loaded = load_paths(&[path]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let mut cluster = loaded.cluster;
    // The examples are for `analyze`: give pods a node and (where the file has none) addresses.
    let assign = name != "ipblock-except";
    cluster
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for (i, pod) in cluster.pods.iter_mut().enumerate() {
        pod.node_name = Some(NODE.to_string());
        if assign && pod.ips.is_empty() {
            pod.ips = vec![
                format!("10.244.0.{}", 10 + i).parse::<IpAddr>().unwrap(),
                format!("fd00:244::{:x}", 10 + i).parse::<IpAddr>().unwrap(),
            ];
        }
    }
    cluster
}

fn ifaces(cluster: &Cluster) -> HashMap<String, String> {
    let mut keys: Vec<String> = cluster.pods.iter().map(|p| p.key()).collect();
    keys.sort();
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| (k, format!("fny{:011x}", 0xa0 + i)))
        .collect()
}

fn state(cluster: &Cluster) -> NftState {
    let engine = Engine::new(cluster);
    compute(&engine, NODE, &ifaces(cluster))
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        expected, actual,
        "{name} differs from golden (UPDATE_GOLDEN=1 to accept)"
    );
}

#[test]
fn full_rulesets() {
    for name in [
        "default-deny",
        "allow-from-namespace",
        "named-ports",
        "endport-range",
        "ipblock-except",
        "egress-dns-only",
    ] {
        let s = state(&example(name));
        check(&format!("{name}.nft"), &render_full(&s));
    }
}

#[test]
fn output_is_independent_of_input_order() {
    for name in ["allow-from-namespace", "egress-dns-only", "named-ports"] {
        let c = example(name);
        let mut r = c.clone();
        r.pods.reverse();
        r.policies.reverse();
        r.namespaces.reverse();
        assert_eq!(render_full(&state(&c)), render_full(&state(&r)), "{name}");
    }
}

#[test]
fn only_local_wired_pods_get_chains() {
    let mut c = example("default-deny");
    c.pods[0].node_name = Some("node-2".into());
    let mut ifs = ifaces(&c);
    ifs.remove(&c.pods[1].key());
    let s = compute(&Engine::new(&c), NODE, &ifs);
    assert_eq!(s.pods.len(), c.pods.len() - 2);
}

#[test]
fn delta_to_itself_is_empty() {
    let s = state(&example("allow-from-namespace"));
    assert_eq!(render_delta(&s, &s), "");
}

#[test]
fn deltas() {
    // 1. The policy goes away: chains emptied, peer set deleted after its rules.
    let before = example("allow-from-namespace");
    let mut after = before.clone();
    after.policies.clear();
    check(
        "delta-remove-policy.nft",
        &render_delta(&state(&before), &state(&after)),
    );

    // 2. A new backend pod appears: a new peer set replaces the old one.
    let mut grown = before.clone();
    let mut extra = grown.pods.iter().find(|p| p.name == "api").unwrap().clone();
    extra.name = "api-2".into();
    extra.ips = vec!["10.244.1.2".parse().unwrap()];
    grown.pods.push(extra);
    let mut ifs = ifaces(&before);
    ifs.insert("backend/api-2".into(), "fny0000000000ff".into());
    let s_before = compute(&Engine::new(&before), NODE, &ifaces(&before));
    let s_grown = compute(&Engine::new(&grown), NODE, &ifs);
    check("delta-add-peer-pod.nft", &render_delta(&s_before, &s_grown));

    // 3. A pod is deleted and another restarts on a new interface.
    let mut shrunk = before.clone();
    shrunk.pods.retain(|p| p.name != "web");
    let mut ifs = ifaces(&before);
    ifs.insert("data/admin".into(), "fny0000000000ee".into());
    let s_shrunk = compute(&Engine::new(&shrunk), NODE, &ifs);
    check(
        "delta-pod-gone-and-restarted.nft",
        &render_delta(&s_before, &s_shrunk),
    );

    // 4. From nothing to default deny.
    let dd = state(&example("default-deny"));
    check(
        "delta-from-empty.nft",
        &render_delta(&NftState::default(), &dd),
    );
}
