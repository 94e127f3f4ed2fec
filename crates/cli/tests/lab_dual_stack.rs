//! `furynet lab up --dual-stack`: every pod gets an IPv4 and an IPv6 address, IPv6 crosses
//! nodes over the VXLAN overlay, and `lab probe` / `lab verify` check every connection on both
//! families (TCP, UDP and SCTP), against the engine for each family. Needs root (skips loudly
//! otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{fresh_lab, privileged, run};

use std::net::IpAddr;

fn furynet(args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_furynet"), args)
}

fn ok(args: &[&str]) -> String {
    common::ok(env!("CARGO_BIN_EXE_furynet"), args)
}

fn entry<'a>(m: &'a [serde_json::Value], src: &str, dst: &str, port: u64) -> &'a serde_json::Value {
    m.iter()
        .find(|e| e["src"] == src && e["dst"] == dst && e["port"] == port)
        .unwrap_or_else(|| panic!("no entry {src} -> {dst}:{port} in {m:?}"))
}

#[test]
fn dual_stack_lab_probes_and_verifies_both_families() {
    if !privileged() {
        return;
    }
    let _lab = fresh_lab(env!("CARGO_BIN_EXE_furynet"));

    let (code, _, err) = furynet(&["lab", "up", "--dual-stack", "--encapsulation", "none"]);
    assert_eq!(code, 1, "dual-stack needs the overlay");
    assert!(err.contains("--encapsulation vxlan"), "{err}");

    let data = "crates/cli/tests/data/lab-dual-stack";
    ok(&["lab", "up", "--dual-stack", "--nodes", "2", "-f", data]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["lab", "status", "-o", "json"])).unwrap();
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 4);
    for p in pods {
        let ips: Vec<IpAddr> = p["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            ips.len() == 2 && ips[0].is_ipv4() && ips[1].is_ipv6(),
            "one address per family: {p}"
        );
        let v6: ipnet::Ipv6Net = "fd00:10:244::/56".parse().unwrap();
        assert!(matches!(ips[1], IpAddr::V6(a) if v6.contains(&a)), "{p}");
    }

    // Every connection on both families; the server saw the client's own address each time
    // (verify reports NAT otherwise) and each family agrees with its engine.
    let out = ok(&["lab", "verify"]);
    assert!(out.contains("VERIFIED"), "{out}");

    let m: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["lab", "probe", "-o", "json"])).unwrap();
    for (port, proto) in [(8080, "TCP"), (5353, "UDP"), (9999, "SCTP")] {
        let e = entry(&m, "ds/client", "ds/server", port);
        assert_eq!(e["protocol"], proto);
        assert_eq!(
            e["allowed"], true,
            "client -> server {port}/{proto} on both families: {e}"
        );
        assert_eq!(entry(&m, "ds/other", "ds/server", port)["allowed"], false);
    }
    // web admits the IPv4 pod pool only: IPv4 passes, IPv6 is dropped, so the connection is
    // not allowed on every family (and verify above agreed, family by family).
    assert_eq!(entry(&m, "ds/client", "ds/web", 80)["allowed"], false);
    let (_, predicted, _) = furynet(&["analyze", data, "-o", "json"]);
    let predicted: Vec<serde_json::Value> = serde_json::from_str(&predicted).unwrap();
    assert_eq!(
        m.len(),
        predicted.len(),
        "one entry per connection, as analyze"
    );

    ok(&["lab", "down"]);
    common::no_lab_left();
}
