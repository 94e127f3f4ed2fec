//! ADD → traffic → CHECK → DEL, results per spec version, DEL in odd states, MTU.

use furynet_cni::host_veth_name;
use serde_json::{json, Value};

use crate::harness::*;

#[test]
fn add_ping_check_del() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    let conf = lab.conf("1.1.0");
    let res = lab.add("c1", &pod, &conf).ok();

    // The result.
    let host_if = host_veth_name("c1", "eth0");
    assert_eq!(res["cniVersion"], "1.1.0");
    assert_eq!(res["interfaces"][0]["name"], host_if.as_str());
    assert_eq!(res["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert!(res["interfaces"][0].get("sandbox").is_none());
    assert_eq!(res["interfaces"][1]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["sandbox"], pod.path_str());
    assert_eq!(res["interfaces"][1]["mtu"], 1450);
    // One address per family, from the node's block (where the block starts in the pool is
    // hashed from the node name), as /32 and /128 on the pod interface (index 1).
    let ips = res["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips.iter().all(|ip| ip["interface"] == 1));
    let v4: ipnet::IpNet = ips[0]["address"].as_str().unwrap().parse().unwrap();
    let v6: ipnet::IpNet = ips[1]["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(v4.prefix_len(), 32);
    assert_eq!(v6.prefix_len(), 128);
    let pool4: ipnet::IpNet = "10.244.0.0/16".parse().unwrap();
    let pool6: ipnet::IpNet = "fd00:10:244::/56".parse().unwrap();
    assert!(
        pool4.contains(&v4.addr()) && pool6.contains(&v6.addr()),
        "{ips:?}"
    );
    let (v4, v6) = (v4.addr().to_string(), v6.addr().to_string());
    assert_eq!(
        res["routes"],
        json!([{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"}])
    );

    // The kernel state.
    assert_eq!(lab.host_veths(), vec![host_if.clone()]);
    let link = lab.host.ip(&["link", "show", &host_if]);
    assert!(
        link.contains("link/ether ee:ee:ee:ee:ee:ee") && link.contains("mtu 1450"),
        "{link}"
    );
    let routes = lab.host.ip(&["route", "show", "proto", "154"]);
    assert_eq!(routes.trim(), format!("{v4} dev {host_if} scope link"));
    let routes6 = lab.host.ip(&["-6", "route", "show", "proto", "154"]);
    assert!(
        routes6.contains(&format!("{v6} dev {host_if}")),
        "{routes6}"
    );
    assert_eq!(
        lab.host
            .sysctl(&format!("net/ipv4/conf/{host_if}/proxy_arp")),
        "1"
    );
    assert_eq!(
        lab.host
            .sysctl(&format!("net/ipv4/neigh/{host_if}/proxy_delay")),
        "0"
    );
    assert_eq!(
        lab.host.sysctl("net/ipv4/ip_forward"),
        "0",
        "no global sysctl touched"
    );
    let pod_routes = pod.ip(&["route", "show"]);
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0 proto 154 onlink"),
        "{pod_routes}"
    );
    assert!(pod
        .ip(&["-6", "route", "show", "default"])
        .contains("via fe80::ecee:eeff:feee:eeee dev eth0"));
    assert!(pod.ip(&["link", "show", "lo"]).contains("UP"));
    let allocs = lab.allocations();
    let rec = &allocs["k8s-pod-network/c1/eth0"];
    assert_eq!(rec["podName"], "web");
    assert_eq!(rec["podNamespace"], "default");
    assert_eq!(rec["node"], "node-1");

    // Traffic both ways, both families.
    assert!(pod.ping(HOST_V4), "pod -> host over IPv4");
    assert!(lab.host.ping(&v4), "host -> pod over IPv4");
    assert!(pod.ping(HOST_V6), "pod -> host over IPv6");
    assert!(lab.host.ping(&v6), "host -> pod over IPv6");

    // CHECK against the ADD result.
    let mut check = conf.clone();
    check["prevResult"] = res.clone();
    lab.verb("CHECK", "c1", Some(&pod), &check).ok_silent();
    pod.ip(&["-6", "addr", "del", &format!("{v6}/128"), "dev", "eth0"]);
    let e = lab.verb("CHECK", "c1", Some(&pod), &check).err(103);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains(&format!("address {v6}/128 is missing from eth0")),
        "{e}"
    );

    // DEL, twice. When DEL returns the pod is cut off (host side down, its routes gone, the
    // address free); the reaper deletes the pair right after.
    lab.del("c1", Some(&pod), &check).ok_silent();
    assert!(lab.host.ip(&["route", "show", "proto", "154"]).is_empty());
    assert!(lab
        .host
        .ip(&["-6", "route", "show", "proto", "154"])
        .is_empty());
    assert!(lab.allocations().is_empty());
    if lab.retired_veths() == [host_if.clone()] {
        let link = lab.host.ip(&["link", "show", &host_if]);
        assert!(!link.contains(",UP"), "retired, so down: {link}");
    }
    assert!(
        !lab.host.ping(&v4),
        "the pod is unreachable once DEL has returned"
    );
    assert!(lab.host_veths().is_empty());
    assert_eq!(pod.link_names(), ["lo"]);
    lab.del("c1", Some(&pod), &conf).ok_silent();
}

#[test]
fn teardown_wait_deletes_before_del_returns_and_add_follows_del_at_once() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    let mut conf = lab.conf("1.1.0");
    conf["teardown"] = "wait".into();
    lab.add("c1", &pod, &conf).ok();
    lab.del("c1", Some(&pod), &conf).ok_silent();
    assert!(lab.retired_veths().is_empty());
    assert!(lab.host.link_names().iter().all(|n| !n.starts_with("fny")));
    assert_eq!(pod.link_names(), ["lo"], "gone before DEL returned");

    // Background teardown: a runtime that re-adds the same attachment in the same namespace
    // straight after DEL must not trip over the pod side the reaper has not deleted yet.
    let conf = lab.conf("1.1.0");
    for round in 0..5 {
        let res = lab.add("c2", &pod, &conf).ok();
        let v4 = result_ips(&res)[0].clone();
        assert!(lab.host.ping(&v4), "round {round}: new attachment works");
        lab.del("c2", Some(&pod), &conf).ok_silent();
    }
    assert!(lab.host_veths().is_empty());
    assert_eq!(pod.link_names(), ["lo"]);
    assert!(lab.allocations().is_empty());
}

#[test]
fn results_for_every_spec_version() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    for (i, ver) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let pod = Ns::new("p");
        let cid = format!("ver{i}");
        let conf = lab.conf(ver);
        let v = lab.add(&cid, &pod, &conf).ok();
        assert_eq!(v["cniVersion"], *ver);
        let old = ver.starts_with("0.");
        for (j, fam) in ["4", "6"].iter().enumerate() {
            let ip = &v["ips"][j];
            assert_eq!(ip["interface"], 1);
            if old {
                assert_eq!(ip["version"], *fam, "{ver}: {v}");
            } else {
                assert!(ip.get("version").is_none(), "{ver}: {v}");
            }
        }
        assert_eq!(v["interfaces"][1]["sandbox"], pod.path_str());
        assert_eq!(
            v["interfaces"][1].get("mtu").is_some(),
            *ver == "1.1.0",
            "{ver}"
        );
        if *ver != "0.3.0" && *ver != "0.3.1" {
            let mut check = conf.clone();
            check["prevResult"] = v.clone();
            lab.verb("CHECK", &cid, Some(&pod), &check).ok_silent();
        }
        lab.del(&cid, Some(&pod), &conf).ok_silent();
    }
    assert!(lab.allocations().is_empty());
    assert!(lab.host_veths().is_empty());
}

#[test]
fn del_succeeds_in_every_odd_state_and_releases() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf("1.1.0");

    // The namespace is deleted before DEL (the veth pair dies with it).
    let pod = Ns::new("p");
    lab.add("gone", &pod, &conf).ok();
    let path = pod.path_str();
    drop(pod);
    let run = lab.cni(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "gone"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &path),
        ],
        &conf.to_string(),
    );
    run.ok_silent();
    assert!(lab.allocations().is_empty());

    // CNI_NETNS unset.
    let pod = Ns::new("p");
    lab.add("nonetns", &pod, &conf).ok();
    lab.del("nonetns", None, &conf).ok_silent();
    assert!(lab.allocations().is_empty());
    assert!(lab.host_veths().is_empty());
    assert_eq!(pod.link_names(), ["lo"]);

    // A container the plugin never saw, and DEL twice.
    lab.del("never-added", Some(&pod), &conf).ok_silent();
    lab.del("never-added", None, &conf).ok_silent();
    lab.del("nonetns", Some(&pod), &conf).ok_silent();
}

#[test]
fn mtu_defaults_to_the_default_route_minus_vxlan_overhead() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    lab.host.ip(&["link", "set", "up0", "mtu", "9000"]);
    let mut conf = lab.conf("1.1.0");
    conf.as_object_mut().unwrap().remove("mtu");
    let pod = Ns::new("p");
    let v: Value = lab.add("m1", &pod, &conf).ok();
    assert_eq!(v["interfaces"][1]["mtu"], 8950);
    assert!(pod.ip(&["link", "show", "eth0"]).contains("mtu 8950"));
    lab.del("m1", Some(&pod), &conf).ok_silent();
}

#[test]
fn a_waiting_reaper_takes_later_retirements_and_the_reaper_runs_by_hand() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    let conf = lab.conf("1.1.0");
    lab.add("r1", &pod, &conf).ok();
    // Stand in for a reaper that is waiting to delete: hold its name in the host namespace
    // (an abstract unix socket, which belongs to the namespace it was bound in).
    let path = lab.host.path();
    let held = std::thread::spawn(move || {
        let ns = std::fs::File::open(path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        use std::os::linux::net::SocketAddrExt;
        let name =
            std::os::unix::net::SocketAddr::from_abstract_name(b"furynet-cni-reaper").unwrap();
        std::os::unix::net::UnixDatagram::bind_addr(&name).unwrap()
    })
    .join()
    .unwrap();
    lab.del("r1", Some(&pod), &conf).ok_silent();
    let host_if = host_veth_name("r1", "eth0");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(lab.retired_veths(), [host_if], "left to the waiting reaper");
    assert!(lab.allocations().is_empty());
    drop(held);
    let out = lab.host.exec(&[BIN, "--reap-retired"]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "the reaper prints nothing");
    assert!(lab.retired_veths().is_empty());
    assert!(lab.host.link_names().iter().all(|n| !n.starts_with("fny")));
    assert_eq!(pod.link_names(), ["lo"]);
}
