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
    // A /30 pool is smaller than a block, so it is one block of four addresses, every one of
    // them usable (pods get /32s, as with Calico's IPAM): four pods, the fifth is refused.
    conf["ipam"] = serde_json::json!({"pools": ["10.99.0.0/30"]});
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")];
    let pods: Vec<Ns> = (0..5).map(|_| Ns::new("x")).collect();
    for (i, pod) in pods.iter().take(4).enumerate() {
        let r = lab.add(&format!("ex{i}"), pod, &conf).ok();
        assert_eq!(result_ips(&r), [format!("10.99.0.{i}")]);
    }
    let e = lab.add("ex4", &pods[4], &conf).err(100);
    assert!(
        e["details"].as_str().unwrap().contains("10.99.0.0/30"),
        "{e}"
    );
    assert!(!lab
        .host_veths()
        .contains(&furynet_cni::host_veth_name("ex4", "eth0")));
    assert_eq!(lab.host_veths().len(), 4);
    assert_eq!(pods[4].link_names(), ["lo"]);
    assert!(!lab.allocations().contains_key("k8s-pod-network/ex4/eth0"));
    assert_eq!(lab.allocations().len(), 4);
    lab.cni(&status, &conf.to_string()).err(50);

    lab.del("ex1", Some(&pods[1]), &conf).ok_silent();
    lab.cni(&status, &conf.to_string()).ok_silent();
    let c = lab.add("ex4", &pods[4], &conf).ok();
    assert_eq!(result_ips(&c), ["10.99.0.1"], "released address reused");
}
