//! DEL, CHECK, STATUS, GC, VERSION and the error codes.

use furynet_dataplane::fake::Failure;
use serde_json::json;

use super::*;
use crate::wiring::host_veth_name;

fn with_prev(c: &Value, prev: &Value) -> Value {
    let mut c = c.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn del_removes_everything_and_is_idempotent() {
    let w = World::new();
    let c = conf("1.1.0");
    let prev = json_out(&w.add("c1", &c));
    let o = w.run(
        &attach("DEL", "c1", Some(NETNS)),
        &with_prev(&c, &prev).to_string(),
    );
    assert_eq!(
        o,
        Outcome {
            stdout: String::new(),
            exit_code: 0
        }
    );
    assert_clean(&w);
    let o = w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string());
    assert_eq!(o.exit_code, 0, "second DEL");
}

#[test]
fn del_in_odd_states_still_releases() {
    // netns deleted before DEL
    let w = World::new();
    let c = conf("1.1.0");
    w.add("c1", &c);
    w.kernel.remove_netns(NETNS);
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_clean(&w);
    // CNI_NETNS unset
    let w = World::new();
    w.add("c1", &c);
    assert_eq!(
        w.run(&attach("DEL", "c1", None), &c.to_string()).exit_code,
        0
    );
    assert_clean(&w);
    // unknown container
    let w = World::new();
    assert_eq!(
        w.run(&attach("DEL", "never", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    // host side gone already (someone deleted the veth)
    let w = World::new();
    w.add("c1", &c);
    w.kernel
        .delete_link(
            furynet_dataplane::Netns::Current,
            &host_veth_name("c1", "eth0"),
        )
        .unwrap();
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_clean(&w);
}

#[test]
fn del_keeps_the_address_while_the_interface_cannot_be_removed() {
    for (teardown, op) in [("background", "retire_link"), ("wait", "delete_link")] {
        let w = World::new();
        let mut c = conf("1.1.0");
        c["teardown"] = teardown.into();
        w.add("c1", &c);
        w.kernel.fail(op, 0, Failure::Errno(16));
        expect_error(
            &w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string()),
            102,
        );
        assert_eq!(w.allocations().len(), 1, "{teardown}: address kept");
        assert_eq!(w.reaper_starts.get(), 0, "{teardown}");
        assert_eq!(
            w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
                .exit_code,
            0
        );
        assert_clean(&w);
    }
    let w = World::new();
    let c = conf("1.1.0");
    w.add("c1", &c);
    w.kernel.fail("retire_link", 0, Failure::Errno(16));
    expect_error(
        &w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string()),
        102,
    );
    assert_eq!(w.allocations().len(), 1);
    w.alloc
        .borrow_mut()
        .fail
        .insert("release", AllocError::Transient("busy".into()));
    expect_error(
        &w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string()),
        11,
    );
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_clean(&w);
}

#[test]
fn check_passes_after_add_and_lists_every_difference() {
    let w = World::new();
    let c = conf("1.1.0");
    let prev = json_out(&w.add("c1", &c));
    let check = with_prev(&c, &prev).to_string();
    let o = w.run(&attach("CHECK", "c1", Some(NETNS)), &check);
    assert_eq!(
        o,
        Outcome {
            stdout: String::new(),
            exit_code: 0
        },
        "{}",
        o.stdout
    );

    assert!(w
        .kernel
        .remove_address(Some(NETNS), "eth0", "10.244.0.1/32".parse().unwrap()));
    let e = expect_error(&w.run(&attach("CHECK", "c1", Some(NETNS)), &check), 103);
    assert_eq!(e["details"], "address 10.244.0.1/32 is missing from eth0");

    w.kernel
        .delete_link(
            furynet_dataplane::Netns::Current,
            &host_veth_name("c1", "eth0"),
        )
        .unwrap();
    w.alloc.borrow_mut().held.clear();
    let e = expect_error(&w.run(&attach("CHECK", "c1", Some(NETNS)), &check), 103);
    let d = e["details"].as_str().unwrap();
    for needle in ["eth0 is missing", "host interface fny", "no IP reservation"] {
        assert!(d.contains(needle), "{needle} not in {d}");
    }
}

#[test]
fn check_needs_prev_result_and_version_0_4_0() {
    let w = World::new();
    let c = conf("0.4.0");
    let prev = json_out(&w.add("c1", &c));
    let ok = w.run(
        &attach("CHECK", "c1", Some(NETNS)),
        &with_prev(&c, &prev).to_string(),
    );
    assert_eq!(ok.exit_code, 0, "{}", ok.stdout);
    expect_error(
        &w.run(&attach("CHECK", "c1", Some(NETNS)), &c.to_string()),
        7,
    );
    let old = with_prev(&conf("0.3.1"), &prev).to_string();
    let e = expect_error(&w.run(&attach("CHECK", "c1", Some(NETNS)), &old), 1);
    assert_eq!(e["cniVersion"], "0.3.1");
    // prevResult naming another sandbox
    let mut other = prev.clone();
    other["interfaces"][1]["sandbox"] = json!("/run/netns/other");
    let e = expect_error(
        &w.run(
            &attach("CHECK", "c1", Some(NETNS)),
            &with_prev(&c, &other).to_string(),
        ),
        103,
    );
    assert!(e["details"]
        .as_str()
        .unwrap()
        .contains("lists no interface eth0"));
}

#[test]
fn status_ok_and_unavailable() {
    let w = World::new();
    let c = conf("1.1.0").to_string();
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    assert_eq!(
        w.run(&status, &c),
        Outcome {
            stdout: String::new(),
            exit_code: 0
        }
    );
    w.alloc.borrow_mut().open_error = Some(AllocError::Failed("not a directory".into()));
    let e = expect_error(&w.run(&status, &c), 50);
    assert!(e["details"].as_str().unwrap().contains("not a directory"));
    w.alloc.borrow_mut().capacity = Some(1);
    w.add("c1", &conf("1.1.0"));
    expect_error(&w.run(&status, &c), 50);
    expect_error(&w.run(&status, &conf("1.0.0").to_string()), 1);
}

#[test]
fn gc_releases_what_is_not_valid_and_removes_its_interfaces() {
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let w = World::new();
        let c = conf("1.1.0");
        for (i, cid) in ["c1", "c2", "c3"].iter().enumerate() {
            let ns = format!("/run/netns/pod-{i}");
            w.kernel.add_netns(&ns);
            let o = w.run(&attach("ADD", cid, Some(&ns)), &c.to_string());
            assert_eq!(o.exit_code, 0);
        }
        let mut g = c.clone();
        g[key] = json!([{"containerID":"c2","ifname":"eth0"}]);
        let o = w.run(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")], &g.to_string());
        assert_eq!(
            o,
            Outcome {
                stdout: String::new(),
                exit_code: 0
            },
            "{}",
            o.stdout
        );
        assert_eq!(
            w.allocations(),
            vec![Handle::new("k8s-pod-network", "c2", "eth0")]
        );
        assert_eq!(
            w.kernel.link_names(None),
            vec![host_veth_name("c2", "eth0"), "lo".into()]
        );
        assert_eq!(w.kernel.link_names(Some("/run/netns/pod-0")), ["lo"]);
    }
}

#[test]
fn gc_needs_the_list_and_1_1_0_and_reports_every_failure() {
    let w = World::new();
    let c = conf("1.1.0");
    expect_error(&w.run(&[("CNI_COMMAND", "GC")], &c.to_string()), 7);
    let mut old = conf("1.0.0");
    old["cni.dev/valid-attachments"] = json!([]);
    expect_error(&w.run(&[("CNI_COMMAND", "GC")], &old.to_string()), 1);

    for (i, cid) in ["c1", "c2"].iter().enumerate() {
        let ns = format!("/run/netns/pod-{i}");
        w.kernel.add_netns(&ns);
        w.run(&attach("ADD", cid, Some(&ns)), &c.to_string());
    }
    w.kernel.fail("delete_link", 0, Failure::Errno(16));
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([]);
    let e = expect_error(&w.run(&[("CNI_COMMAND", "GC")], &g.to_string()), 102);
    let d = e["details"].as_str().unwrap();
    assert!(
        d.starts_with("fny") && !d.contains("; "),
        "one failure reported: {d}"
    );
    assert!(w.allocations().is_empty());
    assert_eq!(
        w.kernel.link_names(None).len(),
        2,
        "the other stale veth went"
    );
}

#[test]
fn version_needs_no_config_or_environment() {
    let w = World::new();
    let o = w.run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(o.exit_code, 0);
    assert_eq!(
        json_out(&o),
        json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
    );
    let o = w.run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(json_out(&o)["cniVersion"], "0.4.0");
}

#[test]
fn error_codes() {
    let w = World::new();
    let c = conf("1.1.0").to_string();
    // 4: missing or invalid variables, named
    let e = expect_error(&w.run(&[], &c), 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"));
    let e = expect_error(&w.run(&[("CNI_COMMAND", "ADD")], &c), 4);
    for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
        assert!(e["msg"].as_str().unwrap().contains(var), "{e}");
    }
    let mut env = attach("ADD", "c1", Some(NETNS));
    env.retain(|(k, _)| *k != "CNI_ARGS");
    env.push(("CNI_ARGS", "K8S_POD_NAME=x;SURPRISE=1"));
    let e = expect_error(&w.run(&env, &c), 4);
    assert!(e["details"].as_str().unwrap().contains("SURPRISE"));
    expect_error(&w.run(&[("CNI_COMMAND", "FROB")], &c), 4);
    // environment is checked before stdin is decoded
    expect_error(&w.run(&[("CNI_COMMAND", "ADD")], "garbage"), 4);
    // 6: undecodable
    expect_error(&w.run(&attach("ADD", "c1", Some(NETNS)), "garbage"), 6);
    expect_error(&w.run(&attach("ADD", "c1", Some(NETNS)), "[]"), 6);
    // 1: version
    for v in ["0.1.0", "0.2.0", "2.0.0"] {
        let e = expect_error(&w.add("c1", &conf(v)), 1);
        assert_eq!(e["cniVersion"], "1.1.0");
    }
    // 7: invalid
    let mut bad = conf("0.4.0");
    bad["ipam"]["pools"] = json!(["10.244.0.1/16"]);
    let e = expect_error(&w.add("c1", &bad), 7);
    assert_eq!(
        e["cniVersion"], "0.4.0",
        "errors speak the request's version"
    );
    assert!(w.alloc_log().is_empty());
    assert_clean(&w);
}

#[test]
fn node_name_defaults_to_the_host_name() {
    let w = World::new();
    let mut c = conf("1.1.0");
    c.as_object_mut().unwrap().remove("nodeName");
    assert_eq!(w.add("c1", &c).exit_code, 0);
    assert_eq!(
        w.alloc.borrow().held.values().next().unwrap().1.node,
        "host-a"
    );
}

#[test]
fn del_cuts_the_pod_off_at_once_and_leaves_the_deletion_to_the_reaper() {
    let w = World::new();
    let c = conf("1.1.0");
    w.add("c1", &c);
    let host = host_veth_name("c1", "eth0");
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    // Out of service, not yet deleted: down, in the reaper's group, no route, address free.
    assert_eq!(w.retired(), [host]);
    assert!(w.kernel.all_routes(None).is_empty());
    assert!(w.allocations().is_empty());
    assert_eq!(w.reaper_starts.get(), 1);
    // A second DEL finds it retired: still succeeds, starts the reaper again.
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    w.reap();
    assert_eq!(w.kernel.link_names(None), ["lo"]);
    assert_eq!(
        w.kernel.link_names(Some(NETNS)),
        ["lo"],
        "pod side gone with it"
    );
    // Nothing to retire: the reaper is not started.
    let starts = w.reaper_starts.get();
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_eq!(w.reaper_starts.get(), starts);
}

#[test]
fn del_with_teardown_wait_deletes_the_interface_itself() {
    let w = World::new();
    let mut c = conf("1.1.0");
    c["teardown"] = "wait".into();
    w.add("c1", &c);
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_eq!(w.kernel.link_names(None), ["lo"]);
    assert_eq!(w.reaper_starts.get(), 0);
    assert_clean(&w);
}

#[test]
fn add_after_del_replaces_the_retired_interface_the_reaper_has_not_deleted_yet() {
    // The runtime re-adds the same attachment in the same namespace right after DEL: the old
    // pod side still holds eth0 until the reaper runs.
    let w = World::new();
    let c = conf("1.1.0");
    w.add("c1", &c);
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_eq!(w.kernel.link_names(Some(NETNS)), ["eth0", "lo"]);
    let again = w.add("c1", &c);
    assert_eq!(again.exit_code, 0, "{}", again.stdout);
    assert!(
        w.retired().is_empty(),
        "the retired veth was deleted by ADD"
    );
    let host = host_veth_name("c1", "eth0");
    let link = w
        .kernel
        .link(furynet_dataplane::Netns::Current, &host)
        .unwrap()
        .expect("new host veth");
    assert!(link.up && link.group == 0);
    w.reap();
    assert!(
        w.kernel
            .link(furynet_dataplane::Netns::Current, &host)
            .unwrap()
            .is_some(),
        "the reaper leaves live veths alone"
    );
}

#[test]
fn gc_deletes_retired_interfaces_whose_reaper_never_ran() {
    let w = World::new();
    let c = conf("1.1.0");
    w.add("c1", &c);
    w.kernel.add_netns("/run/netns/pod-2");
    let o = w.run(
        &attach("ADD", "c2", Some("/run/netns/pod-2")),
        &c.to_string(),
    );
    assert_eq!(o.exit_code, 0, "{}", o.stdout);
    assert_eq!(
        w.run(&attach("DEL", "c1", Some(NETNS)), &c.to_string())
            .exit_code,
        0
    );
    assert_eq!(w.retired().len(), 1);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "eth0"}]);
    assert_eq!(
        w.run(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            &gc.to_string()
        )
        .exit_code,
        0
    );
    assert!(w.retired().is_empty());
    assert_eq!(
        w.kernel.link_names(None),
        [host_veth_name("c2", "eth0"), "lo".to_string()]
    );
}
