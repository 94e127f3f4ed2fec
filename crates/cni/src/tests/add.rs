//! ADD: result per version, kernel state, allocation attributes, rollback after any failure.

use std::collections::BTreeMap;

use furynet_dataplane::fake::Failure;
use furynet_dataplane::{Family, NetnsState, RTPROT_FURYNET};
use serde_json::json;

use super::*;
use crate::wiring::host_veth_name;

#[test]
fn add_prints_the_1_1_0_result_and_wires_both_sides() {
    let w = World::new();
    let o = w.add("c1", &conf("1.1.0"));
    assert_eq!(o.exit_code, 0, "{}", o.stdout);
    let host = host_veth_name("c1", "eth0");
    let v = json_out(&o);
    let pod_mac = v["interfaces"][1]["mac"].as_str().unwrap().to_string();
    assert_eq!(
        v,
        json!({"cniVersion":"1.1.0",
          "interfaces":[{"name": host, "mac":"ee:ee:ee:ee:ee:ee","mtu":1450},
                        {"name":"eth0","mac": pod_mac,"mtu":1450,"sandbox":NETNS}],
          "ips":[{"address":"10.244.0.1/32","interface":1},{"address":"fd00::1/128","interface":1}],
          "routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"}],
          "dns":{}})
    );
    assert_eq!(w.kernel.link_names(None), vec![host.clone(), "lo".into()]);
    assert_eq!(w.kernel.link_names(Some(NETNS)), ["eth0", "lo"]);
    let routes: Vec<String> = w
        .kernel
        .all_routes(None)
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        routes,
        [
            format!("10.244.0.1/32 dev {host} scope link proto 154"),
            format!("fd00::1/128 dev {host} proto 154"),
        ]
    );
    assert!(w
        .kernel
        .all_routes(None)
        .iter()
        .all(|r| r.protocol == RTPROT_FURYNET));
    assert_eq!(
        w.kernel
            .sysctl(&format!("net/ipv4/conf/{host}/proxy_arp"))
            .as_deref(),
        Some("1")
    );
    let st = w.alloc.borrow();
    let (_, attrs) = st.held.values().next().unwrap();
    assert_eq!(attrs.node, "node-1");
    assert_eq!(attrs.pod_namespace.as_deref(), Some("default"));
    assert_eq!(attrs.pod_name.as_deref(), Some("web-0"));
    assert_eq!(attrs.pod_uid.as_deref(), Some("uid-1"));
    assert_eq!(attrs.pod_infra_container_id.as_deref(), Some("cid"));
    let handle = st.held.keys().next().unwrap();
    assert_eq!(handle.key(), "k8s-pod-network/c1/eth0");
}

#[test]
fn results_for_every_version() {
    for (ver, has_ip_version, has_mtu) in [
        ("0.3.0", true, false),
        ("0.3.1", true, false),
        ("0.4.0", true, false),
        ("1.0.0", false, false),
        ("1.1.0", false, true),
    ] {
        let w = World::new();
        let v = json_out(&w.add("c1", &conf(ver)));
        assert_eq!(v["cniVersion"], ver);
        assert_eq!(
            v["ips"][0].get("version").is_some(),
            has_ip_version,
            "{ver}"
        );
        if has_ip_version {
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
        }
        assert_eq!(v["interfaces"][1].get("mtu").is_some(), has_mtu, "{ver}");
        assert_eq!(v["interfaces"][1]["sandbox"], NETNS);
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["ips"][0]["interface"], 1);
    }
}

#[test]
fn ipv4_only_pool_and_dns_passthrough() {
    let w = World::new();
    let mut c = conf("1.1.0");
    c["ipam"] = json!({"pools":["10.244.0.0/16"]});
    c["dns"] = json!({"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]});
    let v = json_out(&w.add("c1", &c));
    assert_eq!(v["ips"].as_array().unwrap().len(), 1);
    assert_eq!(v["routes"], json!([{"dst":"0.0.0.0/0","gw":"169.254.1.1"}]));
    assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
    assert!(w.kernel.calls().iter().all(|c| !c.contains("ipv6")));
}

#[test]
fn add_after_a_chained_plugin_extends_prev_result() {
    let w = World::new();
    let mut c = conf("1.1.0");
    c["prevResult"] = json!({"cniVersion":"1.1.0",
        "interfaces":[{"name":"other0"}],"ips":[{"address":"192.168.9.9/24","interface":0}]});
    let v = json_out(&w.add("c1", &c));
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(v["interfaces"][0]["name"], "other0");
    assert_eq!(v["ips"][0]["interface"], 0);
    assert_eq!(
        v["ips"][1]["interface"], 2,
        "our pod interface index is rebased"
    );
}

#[test]
fn mtu_from_the_default_route_minus_vxlan_overhead() {
    for (route, pools, expect) in [
        (Some((1500, Family::V4)), json!(["10.244.0.0/16"]), Ok(1450)),
        (Some((9000, Family::V4)), json!(["10.244.0.0/16"]), Ok(8950)),
        (Some((1500, Family::V6)), json!(["10.244.0.0/16"]), Ok(1430)),
        (None, json!(["10.244.0.0/16"]), Ok(1450)),
        (Some((1340, Family::V6)), json!(["fd00::/56"]), Err(7)),
    ] {
        let w = World::new();
        w.kernel.set_default_route_mtu(route);
        let mut c = conf("1.1.0");
        c.as_object_mut().unwrap().remove("mtu");
        c["ipam"]["pools"] = pools;
        let o = w.add("c1", &c);
        match expect {
            Ok(mtu) => assert_eq!(json_out(&o)["interfaces"][1]["mtu"], mtu, "{route:?}"),
            Err(code) => {
                expect_error(&o, code);
                assert_clean(&w);
            }
        }
    }
}

#[test]
fn netns_must_be_another_existing_namespace() {
    for (state, needle) in [
        (NetnsState::Missing, "does not exist"),
        (NetnsState::NotNetns, "is not a network namespace"),
        (NetnsState::Current, "own network namespace"),
    ] {
        let w = World::new();
        w.kernel.set_netns_state(NETNS, state);
        let e = expect_error(&w.add("c1", &conf("1.1.0")), 4);
        assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"));
        assert!(e["details"].as_str().unwrap().contains(needle), "{e}");
        assert!(w.alloc_log().is_empty(), "nothing allocated");
    }
}

#[test]
fn existing_ifname_is_refused_before_allocating() {
    let w = World::new();
    assert_eq!(w.add("c1", &conf("1.1.0")).exit_code, 0);
    let before = w.allocations();
    let e = expect_error(&w.add("c2", &conf("1.1.0")), 104);
    assert!(e["details"]
        .as_str()
        .unwrap()
        .contains("eth0 already exists"));
    assert_eq!(w.allocations(), before);
    assert_eq!(w.kernel.link_names(None).len(), 2, "only c1's host veth");
}

#[test]
fn allocation_errors_map_to_codes_and_touch_no_interface() {
    for (err, code) in [
        (AllocError::Exhausted("full".into()), 100),
        (AllocError::Transient("busy".into()), 11),
        (AllocError::Failed("corrupt".into()), 101),
    ] {
        let w = World::new();
        w.alloc.borrow_mut().fail.insert("allocate", err.clone());
        expect_error(&w.add("c1", &conf("1.1.0")), code);
        assert_clean(&w);
        assert!(w.kernel.calls_of(&["create_veth"]).is_empty());
        // opening the datastore failing maps the same way
        let w = World::new();
        w.alloc.borrow_mut().open_error = Some(err);
        expect_error(&w.add("c1", &conf("1.1.0")), code);
        assert_clean(&w);
    }
}

/// Fails every kernel call of a successful ADD in turn, and checks that the plugin reports an
/// error and leaves nothing behind: no interface, no route, no allocation.
#[test]
fn rollback_after_every_possible_kernel_failure() {
    let reference = World::new();
    assert_eq!(reference.add("c1", &conf("1.1.0")).exit_code, 0);
    let mut per_op: BTreeMap<String, usize> = BTreeMap::new();
    for call in reference.kernel.calls() {
        let op = call.split('(').next().unwrap().to_string();
        *per_op.entry(op).or_default() += 1;
    }
    let mut cases = 0;
    for (op, count) in per_op {
        for nth in 0..count {
            let w = World::new();
            w.kernel.fail(&op, nth, Failure::Errno(1));
            let o = w.add("c1", &conf("1.1.0"));
            let e = expect_error(&o, 102);
            assert!(!e["details"]
                .as_str()
                .unwrap()
                .contains("rollback also failed"));
            assert_clean(&w);
            cases += 1;
        }
    }
    assert!(cases >= 20, "only {cases} failure points");
}

#[test]
fn rollback_failures_are_reported_too() {
    let w = World::new();
    w.kernel.fail("add_route", 0, Failure::Errno(13));
    // delete_link #0 is the rollback (no stale veth to sweep first)
    w.kernel.fail("delete_link", 0, Failure::Errno(16));
    w.alloc
        .borrow_mut()
        .fail
        .insert("release", AllocError::Transient("busy".into()));
    let e = expect_error(&w.add("c1", &conf("1.1.0")), 102);
    let d = e["details"].as_str().unwrap();
    assert!(d.contains("pod default route"), "{d}");
    assert!(d.contains("rollback also failed"), "{d}");
    assert!(
        d.contains("removing fny") && d.contains("releasing k8s-pod-network/c1/eth0"),
        "{d}"
    );
}

#[test]
fn veth_name_clash_at_creation_is_interface_exists() {
    let w = World::new();
    w.kernel.fail("create_veth", 0, Failure::Exists);
    expect_error(&w.add("c1", &conf("1.1.0")), 104);
    assert_clean(&w);
}

#[test]
fn a_stale_host_veth_of_the_same_attachment_is_replaced() {
    let w = World::new();
    assert_eq!(w.add("c1", &conf("1.1.0")).exit_code, 0);
    // The pod namespace went away without a DEL, the runtime made a new one and retries.
    w.kernel.remove_netns(NETNS);
    w.kernel.add_netns(NETNS);
    // Simulate a leftover: recreate the host side in another namespace.
    w.kernel.add_netns("/run/netns/elsewhere");
    w.kernel
        .create_veth(&furynet_dataplane::VethSpec {
            host_name: host_veth_name("c1", "eth0"),
            host_mac: None,
            peer_name: "eth0".into(),
            peer_netns: "/run/netns/elsewhere".into(),
            mtu: 1500,
        })
        .unwrap();
    let o = w.add("c1", &conf("1.1.0"));
    assert_eq!(o.exit_code, 0, "{}", o.stdout);
    assert_eq!(
        json_out(&o)["ips"][0]["address"],
        "10.244.0.1/32",
        "same handle keeps its address"
    );
    assert_eq!(w.kernel.link_names(Some("/run/netns/elsewhere")), ["lo"]);
}

#[test]
fn rollback_keeps_an_allocation_this_add_did_not_make() {
    let w = World::new();
    assert_eq!(w.add("c1", &conf("1.1.0")).exit_code, 0);
    w.kernel.remove_netns(NETNS);
    w.kernel.add_netns(NETNS);
    w.kernel.fail("add_address", 0, Failure::Errno(13));
    expect_error(&w.add("c1", &conf("1.1.0")), 102);
    assert_eq!(
        w.allocations().len(),
        1,
        "the earlier ADD's reservation stays"
    );
    assert!(!w.alloc_log().iter().any(|c| c.starts_with("release")));
}
