//! The lab with its agents behind fan-out servers (`lab up --fanout`): the matrix verifies,
//! every agent streams from a fan-out server, and when the server they use dies the agents
//! fail over to the other replica and keep programming changes. Needs root (skips loudly
//! otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{fresh_lab, privileged};

use std::process::Command;
use std::time::{Duration, Instant};

fn ok(args: &[&str]) -> String {
    common::ok(env!("CARGO_BIN_EXE_furynet"), args)
}

fn status() -> serde_json::Value {
    serde_json::from_str(&ok(&["lab", "status", "-o", "json"])).unwrap()
}

/// Connections per fan-out server (by address), as `lab status` reports them.
fn connections(s: &serde_json::Value) -> Vec<(String, bool, f64)> {
    s["fanout"]
        .as_array()
        .unwrap_or_else(|| panic!("no fanout in {s}"))
        .iter()
        .map(|f| {
            (
                f["address"].as_str().unwrap().to_string(),
                f["ready"].as_bool().unwrap(),
                f["connections"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pids of the fan-out server listening on `addr`.
fn fanout_pids(addr: &str) -> Vec<i32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("fanout --datastore .* --listen {addr}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn agents_read_through_fanout_and_fail_over() {
    if !privileged() {
        return;
    }
    let _lab = fresh_lab(env!("CARGO_BIN_EXE_furynet"));
    let data = "crates/cli/tests/data/lab";
    ok(&[
        "lab",
        "up",
        "--nodes",
        "3",
        "--fanout",
        "--fanout-replicas",
        "2",
        "-f",
        &format!("{data}/workloads.yaml"),
        "-f",
        &format!("{data}/policy.yaml"),
    ]);
    let s = status();
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["inSync"], true, "{n}");
    }
    // Agents try the servers in order: all three stream from the first.
    eventually("3 agents on the first fan-out server", || {
        let c = connections(&status());
        c.len() == 2 && c[0].1 && c[1].1 && c[0].2 == 3.0 && c[1].2 == 0.0
    });
    let out = ok(&["lab", "verify"]);
    assert!(out.contains("VERIFIED"), "{out}");

    // Kill the server every agent uses; they fail over and keep up with changes.
    let first = connections(&status())[0].0.clone();
    let pids = fanout_pids(&first);
    assert_eq!(pids.len(), 1, "one fan-out process on {first}: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("3 agents on the second fan-out server", || {
        let c = connections(&status());
        !c[0].1 && c[1].1 && c[1].2 == 3.0
    });
    ok(&["lab", "apply", "-f", &format!("{data}/policy-changed.yaml")]);
    let out = ok(&["lab", "verify"]);
    assert!(out.contains("VERIFIED"), "after failover: {out}");

    let second = connections(&s)[1].0.clone();
    ok(&["lab", "down"]);
    assert!(
        fanout_pids(&second).is_empty(),
        "fan-out server left running"
    );
}
