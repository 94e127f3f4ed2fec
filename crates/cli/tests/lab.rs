//! `furynet lab`: real namespaces, the real `furynet-cni`, VXLAN/direct routes and nftables;
//! the measured matrix must equal `furynet analyze`'s. Needs root (skips loudly otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{ensure_cni_built, fresh_lab, no_lab_left, privileged, root, run, serial};

fn furynet(args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_furynet"), args)
}

use std::process::Command;

fn json(s: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Equal matrices, or a readable list of the differing cells.
fn same(measured: &[serde_json::Value], predicted: &[serde_json::Value], what: &str) {
    let diff: Vec<String> = measured
        .iter()
        .zip(predicted)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("measured {a} / predicted {b}"))
        .take(10)
        .collect();
    assert!(
        diff.is_empty() && measured.len() == predicted.len(),
        "{what}: {} vs {} entries; first differences:\n{}",
        measured.len(),
        predicted.len(),
        diff.join("\n")
    );
}

#[test]
fn demo_measured_matrix_equals_analyze() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    ensure_cni_built(env!("CARGO_BIN_EXE_furynet"));
    let (code, out, err) = furynet(&["lab", "demo", "-o", "json"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (_, predicted, _) = furynet(&["analyze", "examples/demo", "-o", "json"]);
    assert_eq!(
        json(&out),
        json(&predicted),
        "measured matrix differs from analyze"
    );
    assert!(
        json(&out).iter().any(|e| e["protocol"] == "UDP"),
        "UDP is probed too"
    );
    let (code, out, _) = furynet(&["lab", "demo"]);
    assert_eq!(code, 0);
    assert!(out.contains("VERIFIED"), "{out}");
    no_lab_left();
}

#[test]
fn verify_examples_with_direct_routes_and_vxlan() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    ensure_cni_built(env!("CARGO_BIN_EXE_furynet"));
    for (ex, encap) in [
        ("examples/analyze/named-ports.yaml", "none"),
        ("examples/analyze/egress-dns-only.yaml", "vxlan"),
        ("examples/analyze/endport-range.yaml", "vxlan"),
        ("examples/analyze/allow-from-namespace.yaml", "none"),
    ] {
        let (code, out, err) = furynet(&[
            "lab",
            "verify",
            "-f",
            ex,
            "--nodes",
            "2",
            "--encapsulation",
            encap,
            "-o",
            "json",
        ]);
        assert_eq!(code, 0, "{ex}: {out}\n{err}");
        let (_, predicted, _) = furynet(&["analyze", ex, "-o", "json"]);
        same(&json(&out), &json(&predicted), ex);
    }
    no_lab_left();
}

/// Every upstream scenario through one long-lived dual-stack lab (3 nodes, an agent each, every
/// connection probed on IPv4 and IPv6): apply the base
/// (which also restores labels a previous scenario changed) and the scenario, `lab verify`
/// must be clean, the measured matrix must equal `analyze`'s, then delete the scenario.
#[test]
fn upstream_scenarios_through_the_real_dataplane() {
    if !privileged() {
        return;
    }
    let _lab = fresh_lab(env!("CARGO_BIN_EXE_furynet"));
    let base = "crates/policy/tests/data/upstream/base.yaml";
    let dir = root().join("crates/policy/tests/data/upstream");
    let mut scenarios: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("policy.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 60, "{scenarios:?}");
    // Dual-stack: every scenario is probed and verified on IPv4 and on IPv6 (the v4-only
    // path is what the other lab tests run).
    let (code, out, err) = furynet(&["lab", "up", "--dual-stack", "--nodes", "3", "-f", base]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut sctp_seen = false;
    for s in &scenarios {
        let policy = format!("crates/policy/tests/data/upstream/{s}/policy.yaml");
        for f in [base, policy.as_str()] {
            let (code, out, err) = furynet(&["lab", "apply", "-f", f]);
            assert_eq!(code, 0, "{s}: apply {f}: {out}\n{err}");
        }
        let (code, out, err) = furynet(&["lab", "verify", "-o", "json"]);
        assert_eq!(code, 0, "{s}: lab verify: {out}\n{err}");
        assert!(!err.contains("not probed"), "{s}: {err}");
        let measured = json(&out);
        sctp_seen |= measured.iter().any(|e| e["protocol"] == "SCTP");
        // The lab gives pods its own (IPAM) addresses, so ipBlock verdicts are checked by
        // `lab verify` itself (on the lab's objects); everything else must equal the static
        // analysis of the files.
        // Scenarios that update a namespace or pod are an `apply` on top of the base in the
        // lab, while `analyze base policy` keeps the first definition; `lab verify` checked
        // them against the lab's (updated) objects above.
        let text = std::fs::read_to_string(root().join(&policy)).unwrap();
        let updates = text.contains("kind: Namespace") || text.contains("kind: Pod");
        if !text.contains("ipBlock") && !updates {
            let (_, predicted, _) = furynet(&["analyze", base, &policy, "-o", "json"]);
            same(&measured, &json(&predicted), s);
        }
        let (code, out, err) = furynet(&["lab", "delete", "-f", &policy]);
        assert_eq!(code, 0, "{s}: delete: {out}\n{err}");
    }
    assert!(sctp_seen, "SCTP must be probed");
    drop(_lab);
    no_lab_left();
}

#[test]
fn lab_down_removes_leftovers() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let name = format!("fnylab-{}-crashed", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success());
    let dir = std::env::temp_dir().join(format!("fnylab-{}-datastore", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = furynet(&["lab", "down"]);
    assert!(!dir.exists(), "the crashed lab's datastore is removed too");
    assert_eq!(code, 0, "{err}");
    let names = common::netns_names();
    assert!(!names.contains(&name), "{names:?}");
}
