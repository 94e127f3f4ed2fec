//! Rollback, STATUS, GC, error codes on stdout, VERSION, transient datastore errors.

use furynet_cni::host_veth_name;
use serde_json::{json, Value};

use crate::harness::*;

#[test]
fn existing_ifname_in_the_pod_is_refused_and_left_alone() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let e = lab.add("c1", &pod, &lab.conf("1.1.0")).err(104);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("eth0 already exists"),
        "{e}"
    );
    assert!(lab.host_veths().is_empty());
    assert!(lab.allocations().is_empty());
    let mut names = pod.link_names();
    names.sort();
    assert_eq!(
        names,
        ["eth0", "lo", "other0"],
        "the pod's own interface is untouched"
    );
}

#[test]
fn failure_after_wiring_started_rolls_everything_back() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    // IPv6 disabled in the pod: the veth gets created, then adding the /128 fails.
    pod.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    pod.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
    let e = lab.add("c1", &pod, &lab.conf("1.1.0")).err(102);
    let d = e["details"].as_str().unwrap();
    assert!(d.contains("pod address"), "{d}");
    assert!(!d.contains("rollback also failed"), "{d}");
    assert!(lab.host_veths().is_empty(), "host veth removed");
    assert_eq!(pod.link_names(), ["lo"], "pod side gone with it");
    assert!(lab.host.ip(&["route", "show", "proto", "154"]).is_empty());
    assert!(lab.allocations().is_empty(), "address released");
}

#[test]
fn status_is_50_when_the_datastore_is_unusable() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    lab.cni(&status, &lab.conf("1.1.0").to_string()).ok_silent();
    let file = lab.datastore_path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for path in [file.clone(), file.join("below")] {
        let mut conf = lab.conf("1.1.0");
        conf["datastore"]["path"] = json!(path);
        let e = lab.cni(&status, &conf.to_string()).err(50);
        assert!(e["details"].as_str().unwrap().contains("not-a-dir"), "{e}");
        // ADD fails without leaving anything behind either.
        let pod = Ns::new("p");
        lab.add("c1", &pod, &conf).err(101);
        assert!(lab.host_veths().is_empty());
    }
    // STATUS is a 1.1.0 verb.
    lab.cni(&status, &lab.conf("1.0.0").to_string()).err(1);
}

#[test]
fn gc_releases_every_attachment_not_listed() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf("1.1.0");
    let pods: Vec<Ns> = (0..3).map(|_| Ns::new("g")).collect();
    for (i, pod) in pods.iter().enumerate() {
        lab.add(&format!("gc{i}"), pod, &conf).ok();
    }
    let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let mut g = conf.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    lab.cni(&gc, &g.to_string()).ok_silent();
    assert_eq!(
        lab.allocations().keys().cloned().collect::<Vec<_>>(),
        ["k8s-pod-network/gc1/eth0"]
    );
    assert_eq!(lab.host_veths(), vec![host_veth_name("gc1", "eth0")]);
    assert_eq!(pods[0].link_names(), ["lo"]);
    assert!(pods[1].ping(HOST_V4), "the kept attachment still works");

    // The older key, and nothing valid any more.
    let mut g = conf.clone();
    g["cni.dev/attachments"] = json!([]);
    lab.cni(&gc, &g.to_string()).ok_silent();
    assert!(lab.allocations().is_empty());
    assert!(lab.host_veths().is_empty());

    // Without the list GC refuses (it would release everything).
    lab.cni(&gc, &conf.to_string()).err(7);
}

#[test]
fn errors_are_one_json_object_on_stdout() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    let conf = lab.conf("1.1.0");

    // 1: incompatible versions
    let e = lab.add("c1", &pod, &lab.conf("0.2.0")).err(1);
    assert!(e["details"].as_str().unwrap().contains("0.2.0"));
    lab.add("c1", &pod, &lab.conf("9.9.9")).err(1);
    let mut old_check = lab.conf("0.3.1");
    old_check["prevResult"] = json!({});
    lab.verb("CHECK", "c1", Some(&pod), &old_check).err(1);

    // 4: missing / invalid environment, named
    let e = lab
        .cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", &pod.path_str()),
            ],
            &conf.to_string(),
        )
        .err(4);
    assert!(
        e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );
    let e = lab.cni(&[], &conf.to_string()).err(4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"));
    let e = lab
        .cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/run/netns/fnyt-does-not-exist"),
            ],
            &conf.to_string(),
        )
        .err(4);
    assert!(e["details"].as_str().unwrap().contains("does not exist"));
    let e = lab
        .cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", &lab.host.path_str()),
            ],
            &conf.to_string(),
        )
        .err(4);
    assert!(e["details"]
        .as_str()
        .unwrap()
        .contains("own network namespace"));

    // 6: undecodable
    lab.cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &pod.path_str()),
        ],
        "{\"cniVersion\": ",
    )
    .err(6);

    // 7: invalid
    let mut bad = conf.clone();
    bad["ipam"]["pools"] = json!(["10.244.0.0/16", "10.244.128.0/17"]);
    bad["mtu"] = json!(10);
    let e = lab.add("c1", &pod, &bad).err(7);
    let d = e["details"].as_str().unwrap();
    assert!(d.contains("overlaps") && d.contains("mtu"), "{d}");

    // Nothing happened.
    assert!(lab.host_veths().is_empty());
    assert!(lab.allocations().is_empty());
    assert_eq!(pod.link_names(), ["lo"]);
}

#[test]
fn a_busy_datastore_is_try_again_later() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let pod = Ns::new("p");
    let conf = lab.conf("1.1.0");
    // Create the database, then hold its write lock from another connection, as a stuck writer
    // would: the plugin waits out SQLite's busy timeout and answers "try again later".
    let first = Ns::new("p");
    lab.add("busy0", &first, &conf).ok();
    let db = rusqlite::Connection::open(lab.datastore_path().join("furynet.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let netns = pod.path_str();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "busy"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns.as_str()),
    ];
    let e = lab.cni(&env, &conf.to_string()).err(11);
    assert!(e["msg"].as_str().is_some(), "{e}");
    assert_eq!(lab.host_veths().len(), 1, "nothing left of the failed ADD");
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    lab.cni(&env, &conf.to_string()).ok();
}

#[test]
fn version_and_logs_stay_off_stdout() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let v: Value = lab
        .cni(&[("CNI_COMMAND", "VERSION")], "{\"cniVersion\":\"1.0.0\"}")
        .ok();
    assert_eq!(
        v,
        json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
    );
    // Debug logs to stderr, and to a file when asked; stdout holds only the result.
    let pod = Ns::new("p");
    let mut conf = lab.conf("1.1.0");
    conf["logLevel"] = json!("debug");
    let run = lab.add("log1", &pod, &conf);
    run.ok();
    assert!(run.stderr.contains("allocated"), "{}", run.stderr);
    let log = lab.datastore_path().join("logs/cni.log");
    conf["logFile"] = json!(log);
    let run = lab.del("log1", Some(&pod), &conf);
    run.ok_silent();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("host interface out of service"), "{text}");
}
