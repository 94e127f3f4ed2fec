//! Many ADDs: sequential, concurrent, and until the pool is exhausted.

use std::collections::HashSet;

use crate::harness::*;

#[test]
fn fifty_sequential_adds_get_unique_addresses() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf("1.1.0");
    let pods: Vec<Ns> = (0..50).map(|_| Ns::new("s")).collect();
    let mut seen = HashSet::new();
    for (i, pod) in pods.iter().enumerate() {
        let v = lab.add(&format!("seq{i}"), pod, &conf).ok();
        for ip in result_ips(&v) {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 100);
    assert_eq!(lab.host_veths().len(), 50);
    assert_eq!(lab.allocations().len(), 50);
    assert!(pods[49].ping(HOST_V4));
    for (i, pod) in pods.iter().enumerate() {
        lab.del(&format!("seq{i}"), Some(pod), &conf).ok_silent();
    }
    assert!(lab.host_veths().is_empty());
    assert!(lab.allocations().is_empty());
}

#[test]
fn twenty_concurrent_adds_get_unique_addresses() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.conf("1.1.0");
    let pods: Vec<Ns> = (0..20).map(|_| Ns::new("c")).collect();
    let results: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (lab, conf) = (&lab, &conf);
                s.spawn(move || lab.add(&format!("con{i}"), pod, conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for r in &results {
        for ip in result_ips(&r.ok()) {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(lab.allocations().len(), 20);
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            let (lab, conf) = (&lab, &conf);
            s.spawn(move || lab.del(&format!("con{i}"), Some(pod), conf).ok_silent());
        }
    });
    assert!(lab.host_veths().is_empty());
    assert!(lab.allocations().is_empty());
}

#[test]
fn pool_exhaustion_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let mut conf = lab.conf("1.1.0");
    // A /30: four addresses, the first and last reserved -> two pods.
    conf["ipam"] = serde_json::json!({"pools": ["10.99.0.0/30"]});
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    let pods: Vec<Ns> = (0..3).map(|_| Ns::new("x")).collect();
    let a = lab.add("ex0", &pods[0], &conf).ok();
    let b = lab.add("ex1", &pods[1], &conf).ok();
    assert_eq!(result_ips(&a), ["10.99.0.1"]);
    assert_eq!(result_ips(&b), ["10.99.0.2"]);
    let e = lab.add("ex2", &pods[2], &conf).err(100);
    assert!(
        e["details"].as_str().unwrap().contains("10.99.0.0/30"),
        "{e}"
    );
    assert!(!lab
        .host_veths()
        .contains(&furynet_cni::host_veth_name("ex2", "eth0")));
    assert_eq!(lab.host_veths().len(), 2);
    assert_eq!(pods[2].link_names(), ["lo"]);
    assert!(!lab.allocations().contains_key("k8s-pod-network/ex2/eth0"));
    lab.cni(&status, &conf.to_string()).err(50);

    lab.del("ex0", Some(&pods[0]), &conf).ok_silent();
    lab.cni(&status, &conf.to_string()).ok_silent();
    let c = lab.add("ex2", &pods[2], &conf).ok();
    assert_eq!(result_ips(&c), ["10.99.0.1"], "released address reused");
}
